"""The dashboard's HTTP side against a live node: JSON endpoints, SSE, access rules.

Every test starts a real FogNode on 127.0.0.1:0, sends real CoAP uplinks with aiocoap, and
talks to the dashboard's uvicorn server (in the same event loop) with httpx.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiocoap
import httpx
import pytest

from fogrt.dashboard import Dashboard, DashboardConfigError, DashboardError
from fogrt.ingest.wire import encode_uplink
from fogrt.node import FogNode, NodeConfig
from fogrt.topology import compile_topology

pytestmark = pytest.mark.integration

TOPOLOGY = textwrap.dedent("""\
    apiVersion: fogrt/v1
    kind: Topology
    metadata: {name: dash-test}
    sources:
      room: {coap: /r/room, fields: {temp: float, hum: float}}
    operators:
      - id: detect
        use: transform.compute
        from: room
        with: {fields: {is_anomaly: "temp > 50", score: "temp / 100"}}
      - id: clean
        use: preprocess.range_check
        from: room
        with: {limits: {temp: [-40, 85]}, action: flag}
    sinks:
      - {id: raw, use: jsonl, from: room, with: {path: raw.jsonl}}
      - {id: alerts, use: jsonl, from: detect, where: "is_anomaly", with: {path: alerts.jsonl}}
      - {id: checked, use: jsonl, from: clean, with: {path: checked.jsonl}}
    control:
      policy: {use: policy.fixed, with: {interval: 10s}}
    """)

TOKEN = "s3cret-token-for-tests-only"


ENGINE_PROCESS = False
ENGINES = 1


@pytest.fixture(params=["inline", "engine-process", "engine-partitions"])
def engine_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    """The node's engine in its process, in an engine process whose counters, operator
    metrics and tap events reach the dashboard through the node's process, or in two engine
    processes over halves of the devices (dev-hot hashes to one, dev-0..2 to the other),
    whose statuses the node adds up and whose sink batches it writes and taps itself."""
    global ENGINE_PROCESS, ENGINES
    ENGINE_PROCESS = request.param != "inline"
    ENGINES = 2 if request.param == "engine-partitions" else 1
    yield
    ENGINE_PROCESS, ENGINES = False, 1


async def start_node(
    tmp_path: Path,
    topology: str = TOPOLOGY,
    engine_process: bool | None = None,
    engines: int | None = None,
) -> FogNode:
    cfg = NodeConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        fsync=False,
        engine_process=ENGINE_PROCESS if engine_process is None else engine_process,
        engines=engines or (ENGINES if engine_process is None else 1),
    )
    node = FogNode(compile_topology(topology, "dash.yaml"), cfg)
    await node.start()
    return node


async def wait_for(
    condition: Callable[[], Awaitable[Any] | Any], timeout: float = 10.0, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns something truthy (a wait, not a timed assert)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)


class Devices:
    """Sends uplinks over real CoAP, one sequence number per device."""

    def __init__(self, ctx: aiocoap.Context, node: FogNode) -> None:
        self.ctx = ctx
        host, port = node.address[:2]
        self.uri = f"coap://{host}:{port}/r/room"
        self.seq: dict[str, int] = {}

    async def post(self, body: bytes) -> str:
        msg = aiocoap.Message(code=aiocoap.POST, uri=self.uri, payload=body)
        resp = await asyncio.wait_for(self.ctx.request(msg).response, 10)
        return str(resp.code).split()[0]

    async def send(
        self,
        device: str,
        temps: list[float],
        *,
        battery_pct: int | None = 80,
        battery_mv: int | None = 3900,
        seq: int | None = None,
    ) -> str:
        if seq is None:
            seq = self.seq.get(device, -1) + 1
            self.seq[device] = seq
        readings = [(0.0, {"temp": t, "hum": 40.0}) for t in temps]
        body = encode_uplink(
            device, 0, seq, readings, battery_pct=battery_pct, battery_mv=battery_mv
        )
        return await self.post(body)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FogNode]:
    n = await start_node(tmp_path)
    yield n
    await n.stop()


@pytest.fixture
async def devices(node: FogNode) -> AsyncIterator[Devices]:
    ctx = await aiocoap.Context.create_client_context()
    yield Devices(ctx, node)
    await ctx.shutdown()


@pytest.fixture
async def dash(node: FogNode) -> AsyncIterator[Dashboard]:
    d = Dashboard(node, "127.0.0.1", 0, sample_interval=0.2)
    await d.start()
    yield d
    await d.stop()


@pytest.fixture
async def http(dash: Dashboard) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dash.url, timeout=10) as client:
        yield client


async def get(http: httpx.AsyncClient, path: str) -> Any:
    resp = await http.get(path)
    assert resp.status_code == 200, (path, resp.status_code, resp.text)
    return resp.json()


@pytest.mark.usefixtures("engine_mode")
async def test_endpoints_describe_what_the_node_received(
    node: FogNode, devices: Devices, http: httpx.AsyncClient, dash: Dashboard
) -> None:
    assert (node.engine_pid is not None) == ENGINE_PROCESS
    for i in range(3):
        assert (
            await devices.send(f"dev-{i}", [20.0 + i, 21.0 + i], battery_pct=90 - 30 * i) == "2.04"
        )
    assert await devices.send("dev-0", [22.0], seq=0) == "2.04"  # a resend: duplicate
    assert await devices.post(b"\xc1 not msgpack") == "4.00"
    assert await devices.send("dev-hot", [99.0]) == "2.04"

    async def settled() -> Any:
        ov = await get(http, "/api/overview")
        latest = ov["latest"]
        done = latest["totals"]["events"] == 7 and latest["lag"] == 0
        return ov if done and dash.feed.total >= 1 else None

    ov = await wait_for(settled, what="the snapshot to show every uplink")
    latest = ov["latest"]
    assert latest["totals"] == {
        "received": 6,
        "accepted": 4,
        "duplicates": 1,
        "acknowledged": 5,
        "readings": 7,
        "events": 7,
        "rejected": 1,
    }
    assert latest["rejected"] == {"malformed": 1}
    assert latest["devices"] == {"known": 4, "online": 4}
    assert set(latest["checkpoint"]) == {"count", "age_s", "duration_s", "failures", "size_bytes"}
    assert latest["checkpoint"]["failures"] == 0 and latest["state_backend"]["kind"] == "file"
    assert ov["node"]["topology"] == "dash-test" and ov["node"]["coap_paths"] == ["/r/room"]
    if ENGINE_PROCESS:
        assert ov["node"]["engine"] == "process" and ov["node"]["engine_pid"] == node.engine_pid
        assert ov["node"]["engine_pids"] == node.engine_pids and len(node.engine_pids) == ENGINES
        assert ov["node"]["engine_rss_bytes"] > ENGINES * (10 << 20)
    else:
        assert ov["node"]["engine"] == "inline" and "engine_pid" not in ov["node"]
    history = ov["history"]
    assert set(history) >= {"t", "readings_rate", "uplinks_rate", "ack_p50", "ack_p99", "lag"}
    assert len({len(column) for column in history.values()}) == 1
    assert any(p is not None and 0 < p < 5 for p in history["ack_p50"]), "ACK latency sampled"
    assert history["t"] == sorted(history["t"])

    topo = await get(http, "/api/topology")
    layers = {n["id"]: n["layer"] for n in topo["nodes"]}
    assert layers == {"room": 0, "detect": 1, "clean": 1, "raw": 1, "alerts": 2, "checked": 2}
    assert {"from": "detect", "to": "alerts"} in topo["edges"]
    by_id = {n["id"]: n for n in topo["nodes"]}
    assert by_id["alerts"]["where"] == "is_anomaly"
    assert by_id["room"]["stats"]["out"] == 7 and by_id["alerts"]["stats"]["in"] == 1

    page = await get(http, "/api/devices?sort=device")
    assert (page["total"], page["matched"]) == (4, 4)
    rows = {r["device"]: r for r in page["rows"]}
    assert [r["device"] for r in page["rows"]] == ["dev-0", "dev-1", "dev-2", "dev-hot"]
    dev1 = rows["dev-1"]
    assert (dev1["uplinks"], dev1["readings"], dev1["battery_pct"]) == (1, 2, 60)
    assert (dev1["interval_s"], dev1["policy"], dev1["tx"]) == (10, "policy.fixed", "always")
    assert dev1["online"] is True and dev1["tx_saved"] == 0
    assert dev1["projected_life_s"] > rows["dev-2"]["projected_life_s"] > 0  # 60 % > 30 %
    assert dev1["control_version"] == 1

    feed = await get(http, "/api/anomalies")
    hot = [a for a in feed["items"] if a["from"] == "detect"]
    assert len(hot) == 1
    assert hot[0]["device"] == "dev-hot" and hot[0]["sink"] == "alerts"
    assert hot[0]["score"] == pytest.approx(0.99) and hot[0]["fields"]["temp"] == 99.0
    newer = await get(http, f"/api/anomalies?after={feed['last_id']}")
    assert newer["items"] == []

    models = await get(http, "/api/models")
    assert models["uses"] == {"detect": "transform.compute", "clean": "preprocess.range_check"}
    violations = models["series"]["clean"]["violations"]
    assert len(violations) == len(models["t"]) and violations[-1] == 1  # temp 99 > 85


async def test_devices_are_filtered_sorted_and_paged_on_the_server(
    devices: Devices, http: httpx.AsyncClient
) -> None:
    for i in range(12):
        assert await devices.send(f"dev-{i:02d}", [20.0], battery_pct=i * 5 + 10) == "2.04"
    await devices.send("mains-1", [20.0], battery_pct=None, battery_mv=None)

    page = await get(http, "/api/devices?sort=-battery&limit=5&offset=5")
    assert (page["total"], page["matched"], page["offset"], page["limit"]) == (13, 13, 5, 5)
    assert [r["battery_pct"] for r in page["rows"]] == [40, 35, 30, 25, 20]
    last = await get(http, "/api/devices?sort=battery&limit=5&offset=10")
    assert [r["device"] for r in last["rows"]] == ["dev-10", "dev-11", "mains-1"]  # none: last
    assert last["rows"][-1]["projected_life_s"] is None
    found = await get(http, "/api/devices?q=DEV-0&sort=device&limit=3")
    assert found["matched"] == 10 and [r["device"] for r in found["rows"]] == [
        "dev-00",
        "dev-01",
        "dev-02",
    ]
    by_life = await get(http, "/api/devices?sort=-projected_life&limit=1")
    assert by_life["rows"][0]["device"] == "dev-11"
    for bad in ("sort=colour", "limit=0", "limit=100000", "offset=-1", "offset=x"):
        resp = await http.get(f"/api/devices?{bad}")
        assert resp.status_code == 400 and "error" in resp.json(), bad


async def read_events(lines: AsyncIterator[str], n: int) -> list[dict[str, Any]]:
    out = []
    async for line in lines:
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
            if len(out) == n:
                break
    return out


async def test_stream_sends_snapshots_and_forgets_clients_that_leave(
    devices: Devices, http: httpx.AsyncClient, dash: Dashboard
) -> None:
    async with http.stream("GET", "/api/stream") as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = resp.aiter_lines()
        first = (await read_events(lines, 1))[0]
        assert first["snapshot"]["totals"]["received"] == 0 and first["anomalies"] == []
        assert dash.sampler.subscribers == 1
        await devices.send("dev-a", [20.0, 21.0])
        await devices.send("dev-hot", [99.0])
        seen: list[dict[str, Any]] = []
        while not (seen and seen[-1]["snapshot"]["totals"]["events"] == 3):
            seen += await read_events(lines, 1)
        snapshots = [first["snapshot"]] + [m["snapshot"] for m in seen]
        times = [s["t"] for s in snapshots]
        assert times == sorted(times) and len(set(times)) == len(times)
        anomalies = [a for m in seen for a in m["anomalies"] if a["from"] == "detect"]
        assert [a["device"] for a in anomalies] == ["dev-hot"], "each anomaly is sent once"
        assert any(s["readings_rate"] for s in snapshots[1:])
    # A page that already shows anomalies up to some id resumes from there.
    async with http.stream("GET", "/api/stream?after=0") as resp:
        resumed = (await read_events(resp.aiter_lines(), 1))[0]
        assert [a["device"] for a in resumed["anomalies"] if a["from"] == "detect"] == ["dev-hot"]
    await wait_for(lambda: dash.sampler.subscribers == 0, what="the clients to be forgotten")


async def test_stop_ends_open_streams(node: FogNode) -> None:
    dash = Dashboard(node, "127.0.0.1", 0, sample_interval=0.2)
    await dash.start()
    async with (
        httpx.AsyncClient(base_url=dash.url, timeout=10) as http,
        http.stream("GET", "/api/stream") as resp,
    ):
        lines = resp.aiter_lines()
        assert len(await read_events(lines, 1)) == 1
        await asyncio.wait_for(dash.stop(), 10)
        assert await read_events(lines, 10) == []  # the stream ended, no hang
    assert dash.feed.tap not in node.engine.taps  # type: ignore[union-attr]
    assert node.service is not None and node.service.on_ack is None


async def test_token_is_required_when_asked(node: FogNode) -> None:
    dash = Dashboard(node, "127.0.0.1", 0, TOKEN, require_token=True)
    await dash.start()
    try:
        async with httpx.AsyncClient(base_url=dash.url, timeout=10) as http:
            for path in ("/api/overview", "/metrics", "/", "/static/app.js", "/api/stream"):
                resp = await http.get(path)
                assert resp.status_code == 401, path
                assert resp.headers["www-authenticate"] == 'Bearer realm="fogrt"'
            wrong = await http.get("/metrics", headers={"authorization": "Bearer nope"})
            assert wrong.status_code == 401
            bearer = {"authorization": f"Bearer {TOKEN}"}
            assert (await http.get("/api/overview", headers=bearer)).status_code == 200
            assert (await http.get("/metrics", headers=bearer)).status_code == 200
            assert (await http.get(f"/api/devices?token={TOKEN}")).status_code == 200
            # A browser opens /?token=...: the token moves into a cookie, out of the URL.
            resp = await http.get(f"/?token={TOKEN}")
            assert resp.status_code == 303 and resp.headers["location"] == "/"
            cookie = resp.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            page = await http.get("/")  # httpx keeps the cookie
            assert page.status_code == 200 and "<title>fogrt dashboard</title>" in page.text
            assert (await http.get("/static/app.js")).status_code == 200
    finally:
        await dash.stop()


async def test_loopback_without_token_is_open_but_only_to_loopback_host_names(
    http: httpx.AsyncClient, dash: Dashboard
) -> None:
    assert not dash.token_required
    resp = await http.get("/")
    assert resp.status_code == 200
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert resp.headers["x-content-type-options"] == "nosniff"
    for host in ("localhost", "127.0.0.1:8080", "[::1]:80"):
        assert (await http.get("/api/overview", headers={"host": host})).status_code == 200
    # A page on another site that rebinds its DNS name to 127.0.0.1 gets nothing.
    assert (await http.get("/api/overview", headers={"host": "evil.example"})).status_code == 400
    assert (await http.post("/api/overview")).status_code == 405  # read-only


def test_a_public_address_needs_a_token(
    node_stub: FogNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FOGRT_HTTP_TOKEN", raising=False)
    for host in ("0.0.0.0", "::", "192.0.2.7", "fog.example"):
        with pytest.raises(DashboardConfigError, match="needs an access token") as exc:
            Dashboard(node_stub, host, 8080)
        assert "FOGRT_HTTP_TOKEN" in str(exc.value) and "--http-token" in str(exc.value)
    with pytest.raises(DashboardConfigError, match="only a loopback address"):
        Dashboard(node_stub, "0.0.0.0", 8080, TOKEN, require_token=False)
    with pytest.raises(DashboardConfigError, match="too short"):
        Dashboard(node_stub, "0.0.0.0", 8080, "1234")
    assert Dashboard(node_stub, "0.0.0.0", 8080, TOKEN).token_required
    monkeypatch.setenv("FOGRT_HTTP_TOKEN", TOKEN)
    assert Dashboard(node_stub, "0.0.0.0", 8080).token_required
    assert Dashboard(node_stub, "127.0.0.1", 8080).token_required  # a given token is checked
    monkeypatch.delenv("FOGRT_HTTP_TOKEN")
    assert not Dashboard(node_stub, "localhost", 8080).token_required
    with pytest.raises(DashboardConfigError, match="a token is required"):
        Dashboard(node_stub, "127.0.0.1", 8080, require_token=True)


@pytest.fixture
def node_stub() -> FogNode:
    """A node that is never started: enough to construct (not start) a Dashboard."""
    return FogNode(compile_topology(TOPOLOGY, "dash.yaml"))


async def test_a_port_in_use_is_a_clear_error(node: FogNode) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        dash = Dashboard(node, "127.0.0.1", port)
        with pytest.raises(DashboardError, match=f"127.0.0.1:{port}: cannot listen"):
            await dash.start()
    assert node.service is not None and node.service.on_ack is None  # nothing left hooked


async def test_big_device_tables_page_the_same_with_a_heap_or_a_sort(
    node: FogNode, http: httpx.AsyncClient, dash: Dashboard, monkeypatch: pytest.MonkeyPatch
) -> None:
    import random

    from fogrt.dashboard import app
    from fogrt.dashboard.devices import SORT_KEYS, query_devices
    from fogrt.ingest.registry import DeviceInfo

    assert node.service is not None
    rng = random.Random(7)
    now = dash.metrics.clock()
    for i in range(2000):  # as if 2000 devices had reported (some never, some without battery)
        node.service.registry.devices[f"d{i:04d}"] = DeviceInfo(
            now - 3600,
            rng.choice([0.0, now - rng.uniform(0, 100)]),
            None,
            rng.choice([None, rng.randrange(3300, 4200)]),
            rng.choice([None, rng.randrange(0, 101)]),
            rng.randrange(50),
            rng.randrange(500),
        )
    for sort in [*SORT_KEYS, *(f"-{k}" for k in SORT_KEYS)]:
        heap = query_devices(dash.metrics, sort=sort, limit=20)  # 20 < 2000 / 8: a heap
        full = query_devices(dash.metrics, sort=sort, limit=500)  # a full sort
        assert heap["rows"] == full["rows"][:20], sort
    monkeypatch.setattr(app, "THREAD_ABOVE", 0)  # the endpoint sorts in a worker thread
    page = await get(http, "/api/devices?sort=-battery&limit=3&q=d00")
    direct = query_devices(dash.metrics, sort="-battery", limit=3, q="d00")
    assert page["matched"] == 100 and page["rows"] == direct["rows"]
