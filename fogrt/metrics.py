"""Prometheus metrics of one fog node, read from its live state at scrape time.

Nothing here runs per event except two cheap hooks: the ACK latency observer
(``IngestService.on_ack``, one bisect per acknowledgement) and an engine tap that records,
per sink micro-batch, how long its oldest event took from arrival to the sink. Everything
else (counters, gauges, operator metrics, devices) is read when ``/metrics`` is scraped, by
a custom collector over the node's own counters, so an idle Prometheus costs nothing.

Each node gets its own :class:`~prometheus_client.CollectorRegistry` (never the global
default), so several nodes can run in one process (tests do).

Names follow the Prometheus conventions: base units (seconds, bytes, volts, ratios),
``_total`` for counters. Rates (events/s) are left to PromQL (``rate(...[1m])``); the
dashboard computes its own.

Per-device series are bounded: at most ``max_device_series`` devices (default
:data:`MAX_DEVICE_SERIES`), the most recently seen first; the rest are counted in
``fogrt_devices_unexported``.

Projected battery life comes from the ESP32 energy model (:class:`EnergyModel`);
transmissions saved are the samples the control loop imputed for the device (readings it
took and did not have to send).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from fogrt import __version__
from fogrt.ingest.wire import Control
from fogrt.sim.energy import (
    EMPTY_MV,
    FULL_MV,
    Board,
    battery_life_days,
    daily_charge_mah,
    state_of_charge,
)

if TYPE_CHECKING:
    from fogrt.event import Event
    from fogrt.ingest.registry import DeviceInfo
    from fogrt.node import FogNode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of :meth:`NodeMetrics.render` (Prometheus text format 0.0.4)."""

MAX_DEVICE_SERIES = 1000
"""Devices exported with per-device series, most recently seen first."""

ONLINE_FACTOR = 3.0
"""A device is online if it was seen within this many of its report intervals."""

ACK_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
"""Upper bounds (s) of the ACK latency histogram: fsync on an SSD to a stalled disk."""

SINK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
"""Upper bounds (s) of the arrival-to-sink latency histogram (windows hold events)."""

RECENT = 8192
"""Raw ACK latencies kept between two dashboard samples (for exact p50/p99)."""


@dataclass(frozen=True)
class EnergyModel:
    """Projected battery life of a device, from its control and its reported battery, with
    the ESP32 model of :mod:`fogrt.sim.energy` (cited figures; override with ``board``).

    Per day the device wakes every ``sample_period`` (boot + one sensor reading) and sends
    ``uplinks_per_day`` uplinks (measured by the registry when given, else what its control
    implies: every reading in batches of ``batch`` under ``tx: always``, one per report
    interval otherwise). Its remaining charge is the capacity (its registration's, else the
    board's) times the reported state of charge (the percentage, else a linear Li-ion
    estimate between ``empty_mv`` and ``full_mv``); self-discharge is included.

    A full 2000 mAh battery sampling and sending every minute, then every ten (days):

    >>> [round(ENERGY_MODEL.projected_life_s(Control(interval=s, sample_period=s), 100, None,
    ...     None) / 86400) for s in (60, 600)]
    [35, 300]
    """

    board: Board = field(default_factory=Board)
    empty_mv: float = EMPTY_MV
    full_mv: float = FULL_MV

    def state_of_charge(self, battery_pct: int | None, battery_mv: int | None) -> float | None:
        """0..1 from the reported percentage or voltage; None when neither is known."""
        return state_of_charge(battery_pct, battery_mv, self.empty_mv, self.full_mv)

    def projected_life_s(
        self,
        control: Control,
        battery_pct: int | None,
        battery_mv: int | None,
        capacity_mah: int | None,
        uplinks_per_day: float | None = None,
    ) -> float | None:
        """Seconds until empty under ``control``; None without battery data."""
        fraction = self.state_of_charge(battery_pct, battery_mv)
        if fraction is None:
            return None
        wakes = 86400.0 / control.sample_period
        if uplinks_per_day is None:
            if control.tx == "always":
                uplinks_per_day = wakes / max(control.batch, 1)
            else:
                uplinks_per_day = 86400.0 / max(control.interval, 1)
        load = daily_charge_mah(
            self.board,
            wakes=wakes,
            uplinks=min(uplinks_per_day, wakes),
            power_mode=control.power_mode,
        )
        capacity = capacity_mah or self.board.capacity_mah
        now = self.board.replace(capacity_mah=capacity * fraction)
        return battery_life_days(load, now) * 86400.0


ENERGY_MODEL = EnergyModel()
"""The model used by :class:`NodeMetrics` unless another is given."""

MIN_RATE_UPLINKS = 10
"""Uplinks a device must have sent before its measured rate replaces its control's."""


def uplink_rate(info: Any) -> float | None:
    """Uplinks per day measured between the device's first and last uplink (None until it
    has sent :data:`MIN_RATE_UPLINKS`)."""
    span = (info.last_seen or 0.0) - info.first_seen
    if info.uplinks < MIN_RATE_UPLINKS or span <= 0.0:
        return None
    return float((info.uplinks - 1) / span * 86400.0)


class LatencyHistogram:
    """A Prometheus-style histogram cheap enough for the hot path (no lock, no labels).

    Calling it observes one value (it is the ``on_ack`` callback). ``recent`` keeps the
    latest raw values so the dashboard can show exact quantiles of the last second.
    """

    def __init__(self, buckets: Sequence[float], keep_recent: int = 0) -> None:
        self.bounds = list(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0
        self.recent: deque[float] = deque(maxlen=keep_recent or 1)
        self._keep = keep_recent > 0

    def __call__(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1
        if self._keep:
            self.recent.append(seconds)

    def take_recent(self) -> list[float]:
        """The raw values observed since the last call (at most ``keep_recent``)."""
        values = list(self.recent)
        self.recent.clear()
        return values

    def cumulative(self) -> list[tuple[str, float]]:
        out, total = [], 0
        for bound, n in zip([*self.bounds, math.inf], self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == math.inf else repr(bound), float(total)))
        return out


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    count: int
    age_s: float | None
    """Since the newest checkpoint, written or restored (None: there is none)."""
    duration_s: float | None
    failures: int
    size_bytes: int | None


@dataclass(slots=True)
class DeviceFacts:
    """What the node knows about one device, as the dashboard and metrics show it."""

    device: str
    first_seen: float
    last_seen: float | None
    online: bool
    uplinks: int
    readings: int
    battery_mv: int | None
    battery_pct: int | None
    interval_s: int
    policy: str
    tx: str
    control_version: int
    applied_version: int | None
    """The control version the device last said it applies (None: not tracked yet)."""
    pending: bool | None
    """Whether the device has yet to apply its current control (None: unknown)."""
    projected_life_s: float | None
    tx_saved: int
    firmware: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class NodeMetrics:
    """The metrics of one :class:`~fogrt.node.FogNode`, in a registry of its own.

    ``attach()`` (after ``node.start()``) installs the ACK latency hook and the sink tap;
    ``render()`` is the ``/metrics`` body. Checkpoints are read from the node's own
    ``checkpoints`` statistics when it keeps them; anything else that writes checkpoints
    reports them with :meth:`checkpoint_done`.
    """

    def __init__(
        self,
        node: FogNode,
        *,
        max_device_series: int = MAX_DEVICE_SERIES,
        online_factor: float = ONLINE_FACTOR,
        energy: EnergyModel = ENERGY_MODEL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.max_device_series = max_device_series
        self.online_factor = online_factor
        self.energy = energy
        self.clock = clock
        self.ack_latency = LatencyHistogram(ACK_BUCKETS, keep_recent=RECENT)
        self.acks = 0
        self.sink_latency: dict[str, LatencyHistogram] = {}
        self._checkpoints = 0
        self._checkpoint_at: float | None = None
        self._checkpoint_duration: float | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._hooked: Any = None
        self._previous_on_ack: Callable[[float], None] | None = None

    # -- wiring ------------------------------------------------------------------------------

    def attach(self) -> None:
        """Hook into the started node: ACK latencies and sink latencies (idempotent)."""
        service, engine = self.node.service, self.node.engine
        if service is None or engine is None:
            raise RuntimeError("NodeMetrics.attach() needs a started node")
        if self._hooked is not service:
            previous = service.on_ack
            self._previous_on_ack = previous
            service.on_ack = self._on_ack if previous is None else self._chained_on_ack
            self._hooked = service
        if self._tap not in engine.taps:
            engine.taps.append(self._tap)
        want = getattr(engine, "want_metrics", None)
        if want is not None:  # an engine process: its statuses carry operator metrics now
            want()

    def detach(self) -> None:
        service, engine = self.node.service, self.node.engine
        if service is not None and self._hooked is service:
            service.on_ack = self._previous_on_ack
        self._hooked = None
        if engine is not None and self._tap in engine.taps:
            engine.taps.remove(self._tap)

    def _on_ack(self, seconds: float) -> None:
        self.acks += 1
        self.ack_latency(seconds)

    def _chained_on_ack(self, seconds: float) -> None:
        self._on_ack(seconds)
        if self._previous_on_ack is not None:
            self._previous_on_ack(seconds)

    def _tap(self, sink_id: str, batch: Sequence[Event]) -> None:
        # Batches are in log order: the first event with an arrival time is the oldest.
        arrival = next((e.arrival for e in batch if e.arrival > 0), None)
        if arrival is None:
            return
        hist = self.sink_latency.get(sink_id)
        if hist is None:
            hist = self.sink_latency[sink_id] = LatencyHistogram(SINK_BUCKETS)
        hist(max(0.0, self.clock() - arrival))

    # -- reported by other parts of the node -------------------------------------------------

    def checkpoint_done(self, duration_s: float, at: float | None = None) -> None:
        """A checkpoint was written (``duration_s`` from start to durable)."""
        self._checkpoints += 1
        self._checkpoint_duration = duration_s
        self._checkpoint_at = self.clock() if at is None else at

    # -- reading -----------------------------------------------------------------------------

    def collect(self) -> list[Metric]:
        """Every metric family, read now (on the event loop: the node's state is live)."""
        return list(self.registry.collect())

    def render(self, families: list[Metric] | None = None) -> bytes:
        """The Prometheus text exposition of ``families`` (default: collected now).

        Formatting is most of the cost of a big scrape; it touches nothing of the node,
        so ``/metrics`` does it in a worker thread.
        """
        if families is None:
            return generate_latest(self.registry)
        frozen = CollectorRegistry(auto_describe=False)
        frozen.register(_Collected(families))
        return generate_latest(frozen)

    def checkpoint_status(self) -> CheckpointStatus:
        """The node's checkpoint statistics merged with :meth:`checkpoint_done` reports."""
        count, at, duration = self._checkpoints, self._checkpoint_at, self._checkpoint_duration
        failures, size = 0, None
        # FogNode.checkpoints (CheckpointStats) once the node checkpoints; read defensively.
        stats = getattr(self.node, "checkpoints", None)
        if stats is not None:
            written = int(getattr(stats, "count", 0))
            failures = int(getattr(stats, "failures", 0))
            last = float(getattr(stats, "last_time", 0.0))
            if last > 0 and (at is None or last >= at):  # a restored one has an age too
                at = last
                duration = float(stats.last_duration) if written else None
                size = int(stats.last_bytes) if written else None
            count += written
        age = None if at is None else max(0.0, self.clock() - at)
        return CheckpointStatus(count, age, duration, failures, size)

    def state_backend(self) -> tuple[str, bool | None]:
        """``(file|redis, up)``: the kind of state backend and whether its last use worked
        (None: not known yet)."""
        url = getattr(self.node.config, "state_url", None)
        kind = "redis" if isinstance(url, str) and url.startswith("redis") else "file"
        stats = getattr(self.node, "checkpoints", None)
        up = getattr(stats, "backend_up", None)
        return kind, None if up is None else bool(up)

    def policy(self, device: str | None = None) -> str:
        """The policy that decides ``device``'s control (without a device: the topology's
        default policy, or "groups" when only groups have one; "none")."""
        loop = getattr(self.node, "control_loop", None)
        if device is not None and loop is not None:
            name: str = loop.policy_name(device)
            return name
        control = self.node.topology.spec.control
        if control is None:
            return "none"
        if control.policy is not None:
            return str(control.policy.use)
        return "groups" if control.groups else "none"

    def devices(self) -> dict[str, DeviceInfo]:
        service = self.node.service
        return {} if service is None else service.registry.devices

    def is_online(self, device: str, info: DeviceInfo, now: float) -> bool:
        if not info.last_seen:
            return False
        interval = self.node.controls.get(device)[1].interval
        return now - info.last_seen <= self.online_factor * interval

    def online_count(self, now: float | None = None) -> int:
        """Devices seen within ``online_factor`` report intervals (one vectorised pass)."""
        import numpy as np  # a dependency anyway; kept off the import path of the CLI

        now = self.clock() if now is None else now
        devices, controls = self.devices(), self.node.controls
        if getattr(controls, "initial", None) is not None:  # per-device initial controls
            return sum(self.is_online(d, info, now) for d, info in devices.items())
        cutoff = now - self.online_factor * Control().interval  # devices on the defaults
        seen = np.fromiter(map(attrgetter("last_seen"), devices.values()), float, len(devices))
        count = int(np.count_nonzero((seen >= cutoff) & (seen > 0)))
        for device in controls.devices():  # the few with a control of their own
            info = devices.get(device)
            if info is not None and info.last_seen:
                count += self.is_online(device, info, now) - (info.last_seen >= cutoff)
        return count

    def device_facts(self, device: str, info: DeviceInfo, now: float | None = None) -> DeviceFacts:
        now = self.clock() if now is None else now
        version, control = self.node.controls.get(device)
        # The applied version is not tracked by the registry yet; read it when it is.
        applied: int | None = getattr(info, "control_version", None)
        reg = info.registration
        life = self.energy.projected_life_s(
            control,
            info.battery_pct,
            info.battery_mv,
            reg.capacity_mah if reg is not None else None,
            uplink_rate(info),
        )
        loop = getattr(self.node, "control_loop", None)
        return DeviceFacts(
            device=device,
            first_seen=info.first_seen,
            last_seen=info.last_seen or None,
            online=self.is_online(device, info, now),
            uplinks=info.uplinks,
            readings=info.readings,
            battery_mv=info.battery_mv,
            battery_pct=info.battery_pct,
            interval_s=control.interval,
            policy=self.policy(device),
            tx=control.tx,
            control_version=version,
            applied_version=applied,
            pending=None if applied is None else applied != version,
            projected_life_s=life,
            tx_saved=loop.saved(device) if loop is not None else 0,
            firmware=reg.firmware if reg is not None else None,
        )

    def recent_devices(self, limit: int) -> list[tuple[str, DeviceInfo]]:
        """The ``limit`` most recently seen devices, newest first (O(n), in numpy)."""
        import numpy as np  # a dependency anyway; kept off the import path of the CLI

        devices = self.devices()
        names = list(devices)
        if len(names) <= limit:
            chosen = names
        else:
            seen = np.fromiter(map(attrgetter("last_seen"), devices.values()), float, len(names))
            top = np.argpartition(seen, len(names) - limit)[len(names) - limit :]
            chosen = [names[i] for i in top[np.argsort(-seen[top], kind="stable")]]
        return [(d, devices[d]) for d in chosen]


class _Collected(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


class _NodeCollector(Collector):
    """Reads the node's live counters when the registry is collected."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return ()  # a dedicated registry: nothing to check names against

    def collect(self) -> Iterator[Metric]:
        m, node = self.m, self.m.node
        yield _labelled(
            "gauge",
            "fogrt_build_info",
            "fogrt version and topology (always 1)",
            ["version", "topology"],
            {(__version__, node.topology.name): 1.0},
        )
        for name, doc, value in _scalars(m):
            kind = CounterMetricFamily if name.endswith("_total") else GaugeMetricFamily
            yield kind(name.removesuffix("_total"), doc, value=value)
        if node.service is not None:
            rejected = {(r,): n for r, n in node.service.rejected.items()}
            yield _labelled(
                "counter", "fogrt_uplinks_rejected", "Uplinks refused", ["reason"], rejected
            )
            yield _histogram("fogrt_ack_latency", "Request to durable 2.04", {(): m.ack_latency})
        if node.endpoint is not None:
            outcomes = {(k,): n for k, n in node.endpoint.stats.items()}
            yield _labelled(
                "counter", "fogrt_coap_messages", "CoAP outcomes", ["outcome"], outcomes
            )
        yield from _engine(m)
        yield from _state(m)
        yield from _devices(m)


def _scalars(m: NodeMetrics) -> list[tuple[str, str, float]]:
    """``(name, help, value)`` of the unlabelled series; ``_total`` names are counters."""
    node = m.node
    rows = [("fogrt_node_start_time_seconds", "When the node started", node.started_at)]
    if (s := node.service) is not None:
        rows += [
            ("fogrt_uplinks_received_total", "Uplink requests handled", s.received),
            ("fogrt_uplinks_accepted_total", "New uplinks appended to the log", s.accepted),
            ("fogrt_uplinks_duplicate_total", "Resent uplinks answered, not applied", s.duplicates),
            ("fogrt_uplinks_acknowledged_total", "2.04 answers sent once durable", m.acks),
            ("fogrt_readings_received_total", "Readings in accepted uplinks", s.readings),
        ]
    if (log := node.ingest_log) is not None:
        rows += [
            ("fogrt_log_lag_records", "Records not consumed yet", log.end_offset - node.consumed),
            ("fogrt_log_end_offset_records", "Offset of the next append", log.end_offset),
            ("fogrt_log_durable_offset_records", "Records made durable", log.durable_offset),
            ("fogrt_log_disk_usage_bytes", "Bytes of log segments", log.disk_usage),
            ("fogrt_log_fsyncs_total", "fsync calls on log segments", log.fsync_count),
        ]
    if (engine := node.engine) is not None:
        rows += [
            ("fogrt_engine_events_submitted_total", "Events fed in", engine.events_submitted),
            ("fogrt_engine_backlog_batches", "Micro-batches queued", engine.backlog),
        ]
        usage = getattr(engine, "process_usage", None)
        if usage is not None:  # an engine process: process_* above are the node's own
            rows += [
                ("fogrt_engine_process_cpu_seconds_total", "CPU of the engine process", usage[0]),
                ("fogrt_engine_process_resident_memory_bytes", "Its RSS", usage[1]),
            ]
    return rows


def _labelled(
    kind: str, name: str, doc: str, labels: list[str], values: Mapping[tuple[Any, ...], float]
) -> Metric:
    family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
        name, doc, labels=labels
    )
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _histogram(name: str, doc: str, hists: Mapping[tuple[Any, ...], LatencyHistogram]) -> Metric:
    labels = ["sink"] if any(hists) else []
    family = HistogramMetricFamily(name, doc, labels=labels, unit="seconds")
    for key, hist in sorted(hists.items()):
        family.add_metric(list(key), hist.cumulative(), hist.sum)
    return family


def _engine(m: NodeMetrics) -> Iterator[Metric]:
    engine = m.node.engine
    if engine is None:
        return
    rows = engine.summary()
    for column, name, doc in (
        ("in", "fogrt_node_events_in", "Events into a node (after where:)"),
        ("out", "fogrt_node_events_out", "Events out of a node (sinks: written)"),
        ("filtered", "fogrt_node_events_filtered", "Events dropped by a node's where:"),
        ("skipped", "fogrt_node_events_skipped", "Events an operator skipped on purpose"),
        ("errors", "fogrt_node_errors", "Events an operator failed on"),
    ):
        values = {(r["id"], r["role"]): r[column] for r in rows}
        yield _labelled("counter", name, doc, ["node", "role"], values)
    ops = [r for r in rows if r["role"] == "operator"]
    instances = {(r["id"],): r["instances"] for r in ops}
    yield _labelled("gauge", "fogrt_operator_instances", "Keyed instances", ["node"], instances)
    metrics = {(r["id"], k): v for r in ops for k, v in r["metrics"].items()}
    doc = "Operator.metrics() of a node: counts summed, levels averaged by events"
    yield _labelled("gauge", "fogrt_operator_metric", doc, ["node", "metric"], metrics)
    sinks = {(sink,): hist for sink, hist in m.sink_latency.items()}
    yield _histogram("fogrt_sink_latency", "Arrival to sink, oldest event of a batch", sinks)


def _state(m: NodeMetrics) -> Iterator[Metric]:
    ckpt = m.checkpoint_status()
    for name, doc, value in (
        ("fogrt_checkpoint_age_seconds", "Since the newest checkpoint", ckpt.age_s),
        ("fogrt_checkpoint_duration_seconds", "Time to write the last one", ckpt.duration_s),
        ("fogrt_checkpoint_size_bytes", "Size of the last one written", ckpt.size_bytes),
    ):
        yield GaugeMetricFamily(name, doc + " (NaN: none yet)", value=_nan(value))
    yield CounterMetricFamily("fogrt_checkpoints", "Checkpoints written", value=ckpt.count)
    yield CounterMetricFamily("fogrt_checkpoint_failures", "Failed", value=ckpt.failures)
    loop = getattr(m.node, "control_loop", None)
    if loop is not None:
        for key, name, doc in (
            ("decisions", "fogrt_control_decisions", "Readings the control policies decided on"),
            ("imputed", "fogrt_control_imputed", "Samples imputed for readings not sent"),
            ("alerts", "fogrt_control_alerts", "Anomalies passed to the control policies"),
            ("errors", "fogrt_control_policy_errors", "Readings a control policy failed on"),
        ):
            yield CounterMetricFamily(name, doc, value=loop.counters()[key])
    kind, up = m.state_backend()
    doc = "1 if state is kept in Redis"
    yield GaugeMetricFamily("fogrt_redis_configured", doc, value=kind == "redis")
    if up is not None:
        doc = "1 if the last use of the state backend worked"
        yield _labelled("gauge", "fogrt_state_backend_up", doc, ["backend"], {(kind,): up})


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


DEVICE_SERIES: tuple[tuple[str, str, str, float], ...] = (
    # (name, help, DeviceFacts attribute, scale); a None value leaves the device out.
    ("fogrt_device_last_seen_timestamp_seconds", "Last uplink", "last_seen", 1.0),
    ("fogrt_device_battery_volts", "Reported battery voltage", "battery_mv", 0.001),
    ("fogrt_device_battery_ratio", "Reported battery charge, 0..1", "battery_pct", 0.01),
    ("fogrt_device_report_interval_seconds", "Commanded report interval", "interval_s", 1.0),
    (
        "fogrt_device_projected_battery_life_seconds",
        "ESP32 energy model, at the device's control and uplink rate",
        "projected_life_s",
        1.0,
    ),
    ("fogrt_device_uplinks_total", "Uplinks accepted from the device", "uplinks", 1.0),
    ("fogrt_device_transmissions_saved_total", "Avoided by duty cycling", "tx_saved", 1.0),
    ("fogrt_device_control_pending", "1 until the device applies its control", "pending", 1.0),
)
"""Per-device series (bounded by ``max_device_series``), besides ``fogrt_device_info``."""


def _devices(m: NodeMetrics) -> Iterator[Metric]:
    now = m.clock()
    devices = m.devices()
    exported = m.recent_devices(m.max_device_series)
    for name, doc, value in (
        ("fogrt_devices_known", "Devices the node tracks", len(devices)),
        ("fogrt_devices_online", "Seen within online_factor intervals", m.online_count(now)),
        ("fogrt_devices_unexported", "Left out of per-device series", len(devices) - len(exported)),
    ):
        yield GaugeMetricFamily(name, doc, value=value)
    facts = [m.device_facts(device, info, now) for device, info in exported]
    labels = {(f.device, f.policy, f.tx, f.firmware or ""): 1.0 for f in facts}
    doc = "Device policy, transmit mode and firmware (always 1)"
    yield _labelled(
        "gauge", "fogrt_device_info", doc, ["device", "policy", "tx", "firmware"], labels
    )
    for name, doc, attr, scale in DEVICE_SERIES:
        values = {
            (f.device,): float(v) * scale for f in facts if (v := getattr(f, attr)) is not None
        }
        kind = "counter" if name.endswith("_total") else "gauge"
        yield _labelled(kind, name.removesuffix("_total"), doc, ["device"], values)
