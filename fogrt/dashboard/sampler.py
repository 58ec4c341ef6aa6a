"""Once a second, one snapshot of the node for the dashboard, with rates and history.

The sampler reads the same live counters as ``/metrics`` and turns them into what a person
wants to look at: rates (per second, from the difference with the previous sample), ACK
latency p50/p99 over the last interval, log lag, per-operator rates, and each operator's
own metrics. It keeps the last ``history`` samples (ten minutes by default) so that a page
opened now starts with full charts, and it pushes each new snapshot to the Server-Sent
Events subscribers (bounded queues: a slow client skips snapshots, it never holds memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from fogrt.dashboard.feed import AnomalyFeed
from fogrt.metrics import NodeMetrics

if TYPE_CHECKING:
    from fogrt.node import FogNode

log = structlog.get_logger("fogrt.dashboard")

HISTORY = 600
"""Samples kept for the charts (at 1 Hz: ten minutes)."""

MAX_SUBSCRIBERS = 64
"""Concurrent ``/api/stream`` clients; more are refused with 503."""

Snapshot = dict[str, Any]

_SERIES = ("uplinks_rate", "readings_rate", "events_rate", "rejected_rate", "lag")


class TooManySubscribers(Exception):
    """Raised by :meth:`Sampler.subscribe` past :data:`MAX_SUBSCRIBERS`."""


class Sampler:
    """Samples a started node every ``interval`` seconds while :meth:`run` runs."""

    def __init__(
        self,
        node: FogNode,
        metrics: NodeMetrics,
        feed: AnomalyFeed,
        *,
        interval: float = 1.0,
        history: int = HISTORY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.metrics = metrics
        self.feed = feed
        self.interval = interval
        self.clock = clock
        self.history: deque[Snapshot] = deque(maxlen=history)
        self.latest: Snapshot | None = None
        self._previous: tuple[float, dict[str, float], dict[str, tuple[int, int]]] | None = None
        self._subscribers: set[asyncio.Queue[Snapshot | None]] = set()
        self._closed = False

    # -- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sample every ``interval`` (the first sample is taken by whoever starts this)."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                snapshot = self.sample()
            except Exception as exc:  # a dashboard bug must not take the node down
                log.error("dashboard_sample_failed", error=f"{type(exc).__name__}: {exc}")
            else:
                self._publish(snapshot)

    def sample(self) -> Snapshot:
        """Take one snapshot now, append it to the history and return it."""
        node, m = self.node, self.metrics
        assert node.service is not None and node.engine is not None
        assert node.ingest_log is not None
        now = self.clock()
        service, engine, ingest_log = node.service, node.engine, node.ingest_log
        rejected = dict(service.rejected)
        totals = {
            "received": service.received,
            "accepted": service.accepted,
            "duplicates": service.duplicates,
            "acknowledged": m.acks,
            "readings": service.readings,
            "events": engine.events_submitted,
            "rejected": sum(rejected.values()),
        }
        flow_stats = {nid: (st.events_in, st.events_out) for nid, st in engine.flow.stats.items()}
        for sink_id, written in engine.sink_writes.items():
            flow_stats[sink_id] = (flow_stats[sink_id][0], written)
        previous = self._previous
        self._previous = (now, {k: float(v) for k, v in totals.items()}, flow_stats)
        dt = now - previous[0] if previous is not None else 0.0

        def rate(key: str) -> float | None:
            if previous is None or dt <= 0:
                return None
            return max(0.0, (totals[key] - previous[1].get(key, 0.0)) / dt)

        latencies = sorted(m.ack_latency.take_recent())
        snapshot: Snapshot = {
            "t": now,
            "uptime_s": now - node.started_at,
            "totals": totals,
            "uplinks_rate": rate("received"),
            "readings_rate": rate("readings"),
            "events_rate": rate("events"),
            "rejected_rate": rate("rejected"),
            "ack_p50": _quantile(latencies, 0.50),
            "ack_p99": _quantile(latencies, 0.99),
            "acks": len(latencies),
            "rejected": rejected,
            "lag": ingest_log.end_offset - node.consumed,
            "disk_bytes": ingest_log.disk_usage,
            "log_end": ingest_log.end_offset,
            "devices": {"known": len(m.devices()), "online": m.online_count(now)},
            "checkpoint": dataclasses.asdict(m.checkpoint_status()),
            "state_backend": dict(zip(("kind", "up"), m.state_backend(), strict=True)),
            "nodes": self._nodes(flow_stats, previous[2] if previous else None, dt),
            "models": {n.id: engine.flow.metrics(n.id) for n in node.topology.by_role("operator")},
            "anomalies": {"total": self.feed.total, "last_id": self.feed.last_id},
        }
        self.history.append(snapshot)
        self.latest = snapshot
        return snapshot

    def _nodes(
        self,
        now: dict[str, tuple[int, int]],
        before: dict[str, tuple[int, int]] | None,
        dt: float,
    ) -> dict[str, dict[str, Any]]:
        engine = self.node.engine
        assert engine is not None
        out = {}
        for nid, (n_in, n_out) in now.items():
            st = engine.flow.stats[nid]
            row: dict[str, Any] = {
                "in": n_in,
                "out": n_out,
                "filtered": st.filtered,
                "errors": st.errors,
                "in_rate": None,
                "out_rate": None,
            }
            if before is not None and dt > 0 and nid in before:
                row["in_rate"] = max(0.0, (n_in - before[nid][0]) / dt)
                row["out_rate"] = max(0.0, (n_out - before[nid][1]) / dt)
            out[nid] = row
        return out

    # -- subscribers ---------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Snapshot | None]:
        if self._closed or len(self._subscribers) >= MAX_SUBSCRIBERS:
            raise TooManySubscribers
        queue: asyncio.Queue[Snapshot | None] = asyncio.Queue(maxsize=4)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Snapshot | None]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _publish(self, item: Snapshot | None) -> None:
        for queue in self._subscribers:
            if queue.full():  # a slow client skips the oldest snapshot
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(item)

    def close(self) -> None:
        """End every stream (each subscriber gets ``None``); refuse new ones."""
        self._closed = True
        self._publish(None)

    # -- views ---------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """The latest snapshot and the history of the overview charts, as columns."""
        history = list(self.history)
        columns: dict[str, list[Any]] = {"t": [s["t"] for s in history]}
        for name in _SERIES:
            columns[name] = [s[name] for s in history]
        for name in ("ack_p50", "ack_p99"):
            columns[name] = [s[name] for s in history]
        return {"latest": self.latest, "history": columns}

    def models(self) -> dict[str, Any]:
        """Per operator and metric, its values over the history (None where absent)."""
        history = list(self.history)
        names: dict[str, dict[str, None]] = {}
        for s in history:
            for nid, values in s["models"].items():
                names.setdefault(nid, {}).update(dict.fromkeys(values))
        series = {
            nid: {name: [s["models"].get(nid, {}).get(name) for s in history] for name in metrics}
            for nid, metrics in names.items()
        }
        uses = {n.id: n.use for n in self.node.topology.by_role("operator")}
        return {"t": [s["t"] for s in history], "uses": uses, "series": series}

    def topology(self) -> dict[str, Any]:
        """Nodes with a layer for a left-to-right layout, edges, and the latest rates."""
        topo = self.node.topology
        layer: dict[str, int] = {}
        for n in topo.nodes:  # topological order: inputs come first
            layer[n.id] = 1 + max((layer[i] for i in n.inputs), default=-1)
        latest = (self.latest or {}).get("nodes", {})
        nodes = [
            {
                "id": n.id,
                "role": n.role,
                "use": n.use,
                "inputs": list(n.inputs),
                "layer": layer[n.id],
                "where": n.where.source if n.where is not None else None,
                "stats": latest.get(n.id),
            }
            for n in topo.nodes
        ]
        edges = [{"from": i, "to": n.id} for n in topo.nodes for i in n.inputs]
        return {"name": topo.name, "nodes": nodes, "edges": edges}


def _quantile(ordered: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted values (nearest rank); None when there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
