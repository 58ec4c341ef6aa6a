/* fogrt dashboard: live over Server-Sent Events, charts with uPlot (vendored), no build step.
 *
 * On load it fetches the history (api/overview, api/models) so charts start full, then
 * appends one point per snapshot from api/stream (about once a second). The device table
 * is paged on the server (api/devices). All text goes in with textContent: device ids and
 * field values are data, never markup. URLs are relative so a reverse proxy may mount the
 * dashboard under a prefix.
 */
(function () {
  "use strict";

  const HISTORY = 600;
  const COLORS = {
    readings: "#2563eb", uplinks: "#16a34a", p50: "#7c3aed", p99: "#dc2626",
    lag: "#ea580c", metric: "#0891b2",
  };

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    return e;
  };

  // -- formatting -------------------------------------------------------------------------

  function fmtNum(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
    if (a >= 100 || Number.isInteger(v)) return Math.round(v).toLocaleString("en");
    return v.toFixed(digits === undefined ? 1 : digits);
  }
  function fmtMs(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const ms = seconds * 1000;
    return (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2)) + " ms";
  }
  function fmtBytes(b) {
    if (b === null || b === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i ? b.toFixed(1) : b) + " " + units[i];
  }
  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    if (s < 3600) return (s / 60).toFixed(0) + " min";
    if (s < 86400 * 2) return (s / 3600).toFixed(1) + " h";
    return (s / 86400).toFixed(0) + " d";
  }
  function fmtAgo(t) {
    if (!t) return "never";
    const age = Date.now() / 1000 - t;
    return age < 1 ? "just now" : fmtDuration(age) + " ago";
  }
  function fmtTime(t) {
    if (!t) return "–";
    const d = new Date(t * 1000);
    return d.toLocaleTimeString("en-GB", { hour12: false }) + "." +
      String(d.getMilliseconds()).padStart(3, "0");
  }
  function fmtMetric(v) {
    if (v === null || v === undefined || !isFinite(v)) return "–";
    return Math.abs(v) >= 100 ? fmtNum(v) : String(Number(v.toPrecision(3)));
  }
  function fmtValue(v) {
    if (typeof v === "number") return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)));
    if (v === null) return "null";
    return String(v);
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store", credentials: "same-origin" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  // -- charts -----------------------------------------------------------------------------

  const charts = [];
  window.fogrtCharts = charts; // for people poking around in devtools (and the tests)

  const TIME_INCRS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];
  const INT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 1e6, 1e7];

  function makeChart(container, series, fmt, o) {
    o = o || {};
    const yAxis = { stroke: "#6b7685", grid: { stroke: "#eef1f5" }, size: 64, values: (u, vals) => vals.map(fmt) };
    if (o.integer) yAxis.incrs = INT_INCRS;
    const opts = {
      width: Math.max(200, container.clientWidth || 400),
      height: o.height || 200,
      legend: { live: false, show: o.legend !== false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        { stroke: "#6b7685", grid: { stroke: "#eef1f5" }, space: 70, incrs: TIME_INCRS },
        yAxis,
      ],
      series: [{}].concat(series.map((s) => ({
        label: s.label, stroke: s.color, width: 2, spanGaps: false,
        fill: s.fill ? s.color + "18" : undefined, value: (u, v) => fmt(v),
      }))),
    };
    const data = [[]].concat(series.map(() => []));
    const chart = { u: new uPlot(opts, data, container), data, container, height: opts.height };
    charts.push(chart);
    return chart;
  }
  function pushPoint(chart, t, values) {
    chart.data[0].push(t);
    values.forEach((v, i) => chart.data[i + 1].push(v === undefined ? null : v));
    if (chart.data[0].length > HISTORY) chart.data.forEach((col) => col.shift());
  }
  function redraw(chart) {
    if (chart.container.offsetParent !== null) chart.u.setData(chart.data);
    else chart.stale = true; // hidden: draw when shown
  }
  function resizeVisible() {
    for (const c of charts) {
      if (c.container.offsetParent === null) continue;
      const w = Math.max(200, c.container.clientWidth);
      if (w !== c.u.width) c.u.setSize({ width: w, height: c.height });
      if (c.stale) { c.u.setData(c.data); c.stale = false; }
    }
  }
  window.addEventListener("resize", resizeVisible);

  // -- overview ---------------------------------------------------------------------------

  let throughput, latency, lag;

  function initOverview(ov) {
    throughput = makeChart($("#chart-throughput"), [
      { label: "readings/s", color: COLORS.readings, fill: true },
      { label: "uplinks/s", color: COLORS.uplinks },
    ], (v) => fmtNum(v));
    latency = makeChart($("#chart-latency"), [
      { label: "p50", color: COLORS.p50 },
      { label: "p99", color: COLORS.p99 },
    ], (v) => (v === null || v === undefined ? "–" : fmtNum(v, 2)));
    lag = makeChart($("#chart-lag"), [{ label: "lag", color: COLORS.lag, fill: true }],
      (v) => fmtNum(v), { integer: true });
    const h = ov.history;
    for (let i = 0; i < h.t.length; i++) addOverviewPoint(h, i);
    [throughput, latency, lag].forEach(redraw);
    $("#topology-name").textContent = ov.node.topology;
    nodeInfo = ov.node;
    document.title = "fogrt · " + ov.node.topology;
    if (ov.latest) showTiles(ov.latest);
  }
  function ms(v) { return v === null || v === undefined ? null : v * 1000; }
  function addOverviewPoint(h, i) {
    pushPoint(throughput, h.t[i], [h.readings_rate[i], h.uplinks_rate[i]]);
    pushPoint(latency, h.t[i], [ms(h.ack_p50[i]), ms(h.ack_p99[i])]);
    pushPoint(lag, h.t[i], [h.lag[i]]);
  }
  function showTiles(s) {
    $("#v-readings").textContent = fmtNum(s.readings_rate);
    $("#v-readings-total").textContent = fmtNum(s.totals.readings) + " total";
    $("#v-uplinks").textContent = fmtNum(s.uplinks_rate);
    $("#v-uplinks-total").textContent = fmtNum(s.totals.received) + " received, " +
      fmtNum(s.totals.duplicates) + " resent";
    $("#v-p50").textContent = fmtMs(s.ack_p50);
    $("#v-p99").textContent = fmtMs(s.ack_p99);
    $("#v-acks").textContent = fmtNum(s.acks) + " ACKs in the last sample";
    $("#v-lag").textContent = fmtNum(s.lag);
    $("#v-disk").textContent = "log on disk: " + fmtBytes(s.disk_bytes);
    $("#v-online").textContent = fmtNum(s.devices.online);
    $("#v-known").textContent = "of " + fmtNum(s.devices.known) + " known";
    $("#v-rejected").textContent = fmtNum(s.rejected_rate);
    $("#v-rejected-total").textContent = fmtNum(s.totals.rejected) + " total";
    const cp = s.checkpoint;
    $("#v-checkpoint").textContent = cp.age_s === null ? "none" : fmtDuration(cp.age_s);
    $("#v-checkpoint-sub").textContent = cp.count
      ? "took " + fmtMs(cp.duration_s) + ", " + cp.count + " written" +
        (cp.failures ? ", " + cp.failures + " FAILED" : "")
      : cp.age_s !== null ? "restored at start" : "no checkpoint yet";
    showRejections(s.rejected);
    showNode(s);
  }
  let nodeInfo = null;
  function showNode(s) {
    if (!nodeInfo) return;
    const sb = s.state_backend;
    const backend = sb.kind + (sb.up === null ? "" : sb.up ? " (up)" : " (DOWN)");
    const rows = [
      ["topology", nodeInfo.topology], ["fogrt", nodeInfo.version],
      ["uptime", fmtDuration(s.uptime_s)], ["CoAP paths", nodeInfo.coap_paths.join(", ")],
      ["engine", nodeInfo.engine === "process"
        ? (nodeInfo.engine_pids.length > 1
          ? nodeInfo.engine_pids.length + " processes (" + nodeInfo.engine_pids.join(", ") + ")"
          : "process " + nodeInfo.engine_pid)
          + (nodeInfo.engine_rss_bytes ? ", " + fmtBytes(nodeInfo.engine_rss_bytes) : "")
        : "inline"],
      ["control policy", nodeInfo.policy], ["log", fmtNum(s.log_end) + " records, " + fmtBytes(s.disk_bytes)],
      ["anomalies", fmtNum(s.anomalies.total)], ["state backend", backend],
    ];
    $("#node-info tbody").replaceChildren(...rows.map(([k, v]) => {
      const tr = el("tr");
      tr.append(el("th", null, k), el("td", null, v));
      return tr;
    }));
  }
  function showRejections(byReason) {
    const body = $("#rejections tbody");
    const rows = Object.entries(byReason).sort((a, b) => b[1] - a[1]);
    const max = rows.length ? rows[0][1] : 0;
    body.replaceChildren(...rows.map(([reason, n]) => {
      const tr = el("tr");
      tr.append(el("td", "reason", reason));
      const cell = el("td");
      const bar = el("div", "bar");
      bar.style.width = Math.max(1, (100 * n) / max) + "%";
      cell.append(bar);
      tr.append(cell, el("td", "num", fmtNum(n)));
      return tr;
    }));
    $("#rejections-empty").hidden = rows.length > 0;
  }

  // -- topology ---------------------------------------------------------------------------

  let topo = null;
  const topoText = {};

  function drawTopology(t) {
    topo = t;
    const W = 200, H = 70, GX = 90, GY = 26, PAD = 16;
    const layers = {};
    for (const n of t.nodes) (layers[n.layer] = layers[n.layer] || []).push(n);
    const pos = {};
    let maxRows = 0, maxLayer = 0;
    for (const [layer, nodes] of Object.entries(layers)) {
      nodes.forEach((n, i) => { pos[n.id] = { x: PAD + layer * (W + GX), y: PAD + i * (H + GY) }; });
      maxRows = Math.max(maxRows, nodes.length);
      maxLayer = Math.max(maxLayer, Number(layer));
    }
    const width = PAD * 2 + (maxLayer + 1) * W + maxLayer * GX;
    const height = PAD * 2 + maxRows * H + (maxRows - 1) * GY;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
    for (const e of t.edges) {
      const a = pos[e.from], b = pos[e.to];
      const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
      root.append(svg("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
    }
    for (const n of t.nodes) {
      const p = pos[n.id];
      const g = svg("g", { class: "node " + n.role, transform: `translate(${p.x},${p.y})`, "data-node": n.id });
      g.append(svg("rect", { width: W, height: H, rx: 8 }));
      const title = svg("title"); title.textContent = n.where ? "where: " + n.where : n.use;
      g.append(title);
      const id = svg("text", { class: "id", x: 10, y: 19 }); id.textContent = n.id;
      const use = svg("text", { class: "use", x: 10, y: 35 }); use.textContent = n.role === "source" ? "source" : n.use;
      const rate = svg("text", { class: "rate", x: 10, y: 55 });
      const err = svg("text", { class: "err", x: W - 10, y: 19, "text-anchor": "end" });
      g.append(id, use, rate, err);
      if (n.where) {
        const w = svg("text", { class: "where", x: W - 10, y: 35, "text-anchor": "end" });
        w.textContent = "where";
        g.append(w);
      }
      topoText[n.id] = { rate, err, g, role: n.role };
      root.append(g);
    }
    $("#topology-graph").replaceChildren(root);
    for (const n of t.nodes) if (n.stats) updateNode(n.id, n.stats);
  }
  function updateNode(id, st) {
    const t = topoText[id];
    if (!t || !st) return;
    const rin = fmtNum(st.in_rate), rout = fmtNum(st.out_rate);
    t.rate.textContent = t.role === "source" ? rout + " /s" :
      t.role === "sink" ? rin + " /s  (" + fmtNum(st.out) + " written)" : rin + " → " + rout + " /s";
    t.err.textContent = st.errors ? st.errors + " errors" : "";
    t.g.classList.toggle("errors", st.errors > 0);
  }

  // -- devices ----------------------------------------------------------------------------

  const dev = { offset: 0, limit: 50, sort: "-last_seen", q: "", timer: null, busy: false };

  async function loadDevices() {
    if (dev.busy) return;
    dev.busy = true;
    try {
      const qs = new URLSearchParams({ offset: dev.offset, limit: dev.limit, sort: dev.sort, q: dev.q });
      showDevices(await getJSON("api/devices?" + qs));
    } catch (e) {
      console.warn("devices:", e.message);
    } finally {
      dev.busy = false;
    }
  }
  function battery(row) {
    const span = el("span");
    if (row.battery_pct === null && row.battery_mv === null) { span.textContent = "–"; return span; }
    if (row.battery_pct !== null) {
      const b = el("span", "batt" + (row.battery_pct < 20 ? " low" : row.battery_pct < 50 ? " mid" : ""));
      const fill = el("span"); fill.style.width = row.battery_pct + "%"; b.append(fill);
      span.append(b, row.battery_pct + "%");
    }
    if (row.battery_mv !== null) span.append(el("span", "muted", " " + (row.battery_mv / 1000).toFixed(2) + " V"));
    return span;
  }
  function showDevices(page) {
    const body = $("#devices tbody");
    body.replaceChildren(...page.rows.map((r) => {
      const tr = el("tr");
      tr.dataset.device = r.device;
      const status = el("span", "pill " + (r.online ? "online" : "offline"), r.online ? "online" : "offline");
      const td = (child) => { const c = el("td"); c.append(child); return c; };
      const pending = r.pending === null ? el("span", "muted", "v" + r.control_version)
        : el("span", "pill " + (r.pending ? "pending" : "applied"),
          r.pending ? "pending v" + r.control_version : "applied v" + r.control_version);
      tr.append(
        el("td", "mono", r.device), td(status), el("td", null, fmtAgo(r.last_seen)), td(battery(r)),
        el("td", null, fmtDuration(r.interval_s)), el("td", null, r.policy + " · " + r.tx),
        el("td", null, fmtDuration(r.projected_life_s)), td(pending),
        el("td", null, fmtNum(r.uplinks)), el("td", null, fmtNum(r.tx_saved)),
      );
      return tr;
    }));
    const end = page.offset + page.rows.length;
    $("#device-count").textContent = page.q
      ? page.matched + " of " + page.total + " devices match"
      : page.total + " devices";
    $("#device-page").textContent = page.matched ? (page.offset + 1) + "–" + end + " of " + page.matched : "";
    $("#device-prev").disabled = page.offset === 0;
    $("#device-next").disabled = end >= page.matched;
    $("#devices-empty").hidden = page.total > 0;
    for (const th of document.querySelectorAll("#devices th[data-sort]")) {
      const key = th.dataset.sort;
      th.classList.toggle("sorted-asc", page.sort === key);
      th.classList.toggle("sorted-desc", page.sort === "-" + key);
    }
  }
  function initDevices() {
    let debounce = null;
    $("#device-filter").addEventListener("input", (e) => {
      clearTimeout(debounce);
      debounce = setTimeout(() => { dev.q = e.target.value.trim(); dev.offset = 0; loadDevices(); }, 200);
    });
    $("#device-prev").addEventListener("click", () => { dev.offset = Math.max(0, dev.offset - dev.limit); loadDevices(); });
    $("#device-next").addEventListener("click", () => { dev.offset += dev.limit; loadDevices(); });
    for (const th of document.querySelectorAll("#devices th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        const textual = key === "device" || key === "policy";
        dev.sort = dev.sort === "-" + key ? key : dev.sort === key ? "-" + key : (textual ? key : "-" + key);
        dev.offset = 0;
        loadDevices();
      });
    }
  }

  // -- anomalies --------------------------------------------------------------------------

  const MAX_SHOWN = 200;
  let unseen = 0;
  let lastAnomalyId = 0;

  function addAnomalies(items, fresh) {
    items = items.filter((a) => a.id > lastAnomalyId); // a reconnect may resend some
    if (!items.length) return;
    lastAnomalyId = items[0].id;
    const body = $("#anomalies tbody");
    const rows = items.map((a) => {
      const tr = el("tr", fresh ? "fresh" : null);
      tr.dataset.id = a.id;
      const values = Object.entries(a.fields).map(([k, v]) => k + "=" + fmtValue(v)).join("  ");
      tr.append(
        el("td", null, fmtTime(a.time)), el("td", "mono", a.device), el("td", null, a.from),
        el("td", null, a.score === null ? "–" : fmtValue(a.score)), el("td", "values", values),
      );
      return tr;
    });
    body.prepend(...rows); // items come newest first
    while (body.rows.length > MAX_SHOWN) body.deleteRow(-1);
    $("#anomalies-empty").hidden = true;
    if (fresh && currentView !== "anomalies") {
      unseen += items.length;
      const badge = $("#anomaly-badge");
      badge.textContent = unseen > 99 ? "99+" : String(unseen);
      badge.hidden = false;
    }
  }

  // -- models -----------------------------------------------------------------------------

  const modelCharts = {};

  function modelChart(node, use, metric) {
    const key = node + "\u0000" + metric;
    if (modelCharts[key]) return modelCharts[key];
    let card = document.querySelector(`.model-card[data-node="${CSS.escape(node)}"]`);
    if (!card) {
      card = el("div", "card model-card");
      card.dataset.node = node;
      const h = el("h2", null, node + " ");
      h.append(el("span", "muted", use || ""));
      card.append(h);
      $("#models").append(card);
      $("#models-empty").hidden = true;
    }
    const box = el("div", "metric");
    box.append(el("h3", null, metric));
    const area = el("div", "chart");
    box.append(area);
    card.append(box);
    const c = makeChart(area, [{ label: metric, color: COLORS.metric, fill: true }],
      fmtMetric, { height: 140, legend: false });
    modelCharts[key] = c;
    return c;
  }
  let modelUses = {};
  function initModels(m) {
    modelUses = m.uses;
    for (const [node, metrics] of Object.entries(m.series)) {
      for (const [metric, values] of Object.entries(metrics)) {
        const c = modelChart(node, m.uses[node], metric);
        m.t.forEach((t, i) => pushPoint(c, t, [values[i]]));
        redraw(c);
      }
    }
  }
  function addModelPoint(t, models) {
    for (const [node, metrics] of Object.entries(models)) {
      for (const [metric, v] of Object.entries(metrics)) {
        const c = modelChart(node, modelUses[node], metric);
        pushPoint(c, t, [v]);
        redraw(c);
      }
    }
  }

  // -- views ------------------------------------------------------------------------------

  let currentView = "overview";
  function showView() {
    const name = (location.hash || "#overview").slice(1);
    currentView = document.getElementById("view-" + name) ? name : "overview";
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + currentView;
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === currentView);
    if (currentView === "anomalies") { unseen = 0; $("#anomaly-badge").hidden = true; }
    if (currentView === "devices") loadDevices();
    resizeVisible();
  }
  window.addEventListener("hashchange", showView);

  // -- the stream -------------------------------------------------------------------------

  function onSnapshot(msg) {
    const s = msg.snapshot;
    const times = throughput.data[0];
    if (!times.length || s.t > times[times.length - 1]) { // the first one may be in the history
      pushPoint(throughput, s.t, [s.readings_rate, s.uplinks_rate]);
      pushPoint(latency, s.t, [ms(s.ack_p50), ms(s.ack_p99)]);
      pushPoint(lag, s.t, [s.lag]);
      [throughput, latency, lag].forEach(redraw);
      addModelPoint(s.t, s.models);
    }
    showTiles(s);
    for (const [id, st] of Object.entries(s.nodes)) updateNode(id, st);
    if (s.anomalies.last_id < lastAnomalyId) lastAnomalyId = 0; // the node restarted
    addAnomalies(msg.anomalies, true);
    showAnomalyTotal(s.anomalies.total);
  }
  function showAnomalyTotal(n) {
    $("#anomaly-total").textContent = n ? "(" + fmtNum(n) + " since start, newest first)" : "";
  }
  function connect() {
    // From the last anomaly already shown: none is lost between the fetch and the stream.
    const es = new EventSource("api/stream?after=" + lastAnomalyId);
    es.onopen = () => { $("#live-dot").className = "dot live"; $("#live-text").textContent = "live"; };
    es.onerror = () => { $("#live-dot").className = "dot down"; $("#live-text").textContent = "reconnecting…"; };
    es.onmessage = (e) => {
      try { onSnapshot(JSON.parse(e.data)); } catch (err) { console.error("snapshot:", err); }
    };
  }

  async function main() {
    initDevices();
    showView();
    const [ov, t, m, an] = await Promise.all([
      getJSON("api/overview"), getJSON("api/topology"), getJSON("api/models"), getJSON("api/anomalies?limit=200"),
    ]);
    initOverview(ov);
    drawTopology(t);
    initModels(m);
    addAnomalies(an.items, false);
    showAnomalyTotal(an.total);
    connect();
    setInterval(() => { if (currentView === "devices") loadDevices(); }, 2000);
    resizeVisible();
  }
  main().catch((e) => {
    console.error("dashboard:", e);
    $("#live-text").textContent = "failed: " + e.message;
  });
})();
