"""A compiled topology wired for execution: keyed operator instances and delivery.

Each node gets a *deliver* closure: filter with ``where``, pick the instance for the event's
key (created on first use), call ``process``, hand every output to the children. The
closures capture what they need as locals because this is the hot path: one call per event
per node. Sinks do not run here: their events are collected in order into per-sink buffers,
which the runner writes after each micro-batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from fogrt.errors import SkipRecord
from fogrt.event import Event
from fogrt.operator import Operator
from fogrt.topology.compile import CompiledNode, CompiledTopology
from fogrt.types import Key, Timestamp

log = structlog.get_logger("fogrt.engine")

Deliver = Callable[[Event], None]

GLOBAL_KEY = "*"
"""The key of instances of nodes with ``key: global`` (one shared instance)."""

_LOGGED_ERRORS = 10
"""Operator failures logged in full per node; after that one in every 1000 (all counted)."""


@dataclass(slots=True)
class NodeStats:
    """Counters of one node; read by the replay summary and by metrics."""

    events_in: int = 0
    events_out: int = 0
    filtered: int = 0
    skipped: int = 0
    errors: int = 0


@dataclass
class _Node:
    spec: CompiledNode
    stats: NodeStats
    instances: dict[Key, Operator] = field(default_factory=dict)
    children: list[Deliver] = field(default_factory=list)


class Dataflow:
    """Synchronous execution of one topology over events, keyed per device by default."""

    def __init__(self, topology: CompiledTopology) -> None:
        self.topology = topology
        self.stats: dict[str, NodeStats] = {n.id: NodeStats() for n in topology.nodes}
        self.sink_buffers: dict[str, list[Event]] = {n.id: [] for n in topology.by_role("sink")}
        self._nodes: dict[str, _Node] = {}
        self._deliver: dict[str, Deliver] = {}
        # Children are wired before parents, so walk the topological order backwards.
        for spec in reversed(topology.nodes):
            node = _Node(spec, self.stats[spec.id])
            node.children = [self._deliver[c] for c in topology.children(spec.id)]
            self._nodes[spec.id] = node
            self._deliver[spec.id] = self._make_deliver(node)
        self._watermarks: dict[Key, Timestamp] = {}

    def watch(self, node_id: str, callback: Callable[[Event], None]) -> None:
        """Call ``callback`` with every event ``node_id`` emits (after its children)."""
        self._nodes[node_id].children.append(callback)

    # -- the hot path --------------------------------------------------------------------

    def _make_deliver(self, node: _Node) -> Deliver:
        spec = node.spec
        stats = node.stats
        children = node.children
        where = spec.where
        if spec.role == "source":

            def deliver_source(event: Event) -> None:
                stats.events_in += 1
                stats.events_out += 1
                for child in children:
                    child(event)

            return deliver_source
        if spec.role == "sink":
            buffer = self.sink_buffers[spec.id]
            append = buffer.append

            def deliver_sink(event: Event) -> None:
                if where is not None and not where(event.fields):
                    stats.filtered += 1
                    return
                stats.events_in += 1
                append(event)

            return deliver_sink

        instances = node.instances
        key_of = _key_function(spec.key)
        build = spec.build
        on_error = self._error_handler(node)

        def deliver(event: Event) -> None:
            if where is not None and not where(event.fields):
                stats.filtered += 1
                return
            stats.events_in += 1
            key = event.key if key_of is None else key_of(event)
            op = instances.get(key)
            if op is None:
                op = instances[key] = build()
            try:
                outputs = op.process(event)
            except SkipRecord:
                stats.skipped += 1
                return
            except Exception as exc:  # one bad event must not stop the node
                on_error(event, exc)
                return
            for out in outputs:
                stats.events_out += 1
                for child in children:
                    child(out)

        return deliver

    def _error_handler(self, node: _Node) -> Callable[[Event, Exception], None]:
        stats = node.stats

        def on_error(event: Event, exc: Exception) -> None:
            stats.errors += 1
            if stats.errors <= _LOGGED_ERRORS or stats.errors % 1000 == 0:
                log.warning(
                    "operator_failed",
                    node=node.spec.id,
                    device=event.key,
                    seq=event.seq,
                    error=f"{type(exc).__name__}: {exc}",
                    errors=stats.errors,
                )

        return on_error

    # -- driving it ----------------------------------------------------------------------

    def source(self, source_id: str) -> Deliver:
        """The function that feeds one event of ``source_id`` into the graph."""
        return self._deliver[source_id]

    def push(self, source_id: str, events: Iterable[Event]) -> None:
        """Process events of one source, in order (a micro-batch)."""
        deliver = self._deliver[source_id]
        for event in events:
            deliver(event)

    def tick(self, watermarks: Mapping[Key, Timestamp] | Timestamp) -> None:
        """Fire timers (``on_tick``) with each key's watermark, in topological order.

        ``watermarks`` maps device keys to their watermark, or is one value for every key
        (``math.inf`` at end of stream flushes every open window).
        """
        for spec in self.topology.nodes:
            if spec.role != "operator" or not _has_timers(spec.cls):
                continue
            node = self._nodes[spec.id]
            for key, op in list(node.instances.items()):
                now = _watermark_for(watermarks, key, spec.key)
                if now is None:
                    continue
                try:
                    outputs = op.on_tick(now)
                    for out in outputs:
                        node.stats.events_out += 1
                        for child in node.children:
                            child(out)
                except Exception as exc:
                    self._error_handler(node)(Event(key, -1, now), exc)

    def snapshot(self) -> dict[str, dict[Key, bytes]]:
        """Every operator instance's ``snapshot()``, by node and key (engine must be idle)."""
        return {
            nid: {key: op.snapshot() for key, op in node.instances.items()}
            for nid, node in self._nodes.items()
            if node.spec.role == "operator" and node.instances
        }

    def operator_instances(self) -> list[tuple[str, Key, Operator]]:
        """Every live operator instance as (node id, key, instance)."""
        return [
            (nid, key, op)
            for nid, node in self._nodes.items()
            if node.spec.role == "operator"
            for key, op in node.instances.items()
        ]

    def restore(self, state: dict[str, dict[Key, bytes]]) -> int:
        """Recreate instances from a ``snapshot()``; returns how many were restored.

        Nodes the topology no longer has are an error: the caller checks the topology
        digest first, so this only happens with a checkpoint that was tampered with.
        """
        restored = 0
        for nid, blobs in state.items():
            node = self._nodes[nid]
            for key, blob in blobs.items():
                op = node.spec.build()
                op.restore(blob)
                node.instances[key] = op
                restored += 1
        return restored

    def take_sink_batches(self) -> dict[str, list[Event]]:
        """The events collected for each sink since the last call (buffers are emptied)."""
        out = {}
        for sink_id, buffer in self.sink_buffers.items():
            if buffer:
                out[sink_id] = buffer.copy()
                buffer.clear()
        return out

    def instances(self, node_id: str) -> Mapping[Key, Operator]:
        """The live operator instances of one node, by key."""
        return self._nodes[node_id].instances

    def metrics(self, node_id: str) -> dict[str, float]:
        """An operator node's own metrics (``Operator.metrics``) over all its instances.

        Counters (events, anomalies, drops...) are summed; levels (accuracy, F1, ROC AUC,
        MAE, RMSE, thresholds) are averaged, weighted by each instance's ``events`` when it
        reports them: ten devices at MAE 0.1 make MAE 0.1, not 1.0.
        """
        return merge_metrics(op.metrics() for op in self._nodes[node_id].instances.values())


def merge_metrics(parts: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Metrics of several instances (or engine partitions) as one: counters summed, levels
    (:data:`LEVEL_METRICS`) averaged weighted by each part's ``events`` (1 without)."""
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    for values in parts:
        weight = float(values.get("events", 1.0)) or 1.0
        for name, value in values.items():
            if name in LEVEL_METRICS:
                sums[name] = sums.get(name, 0.0) + weight * value
                weights[name] = weights.get(name, 0.0) + weight
            else:
                sums[name] = sums.get(name, 0.0) + value
    for name, weight in weights.items():
        sums[name] /= weight
    return sums


LEVEL_METRICS = frozenset(
    {"accuracy", "macro_f1", "f1", "roc_auc", "mae", "rmse", "threshold", "precision", "recall"}
)
"""Operator metrics that are levels, not counts: averaged over instances, not summed."""


def _key_function(key: str) -> Callable[[Event], Key] | None:
    if key == "device":
        return None
    if key == "global":
        return lambda event: GLOBAL_KEY
    name = key

    def by_field(event: Event) -> Key:
        return str(event.fields.get(name))

    return by_field


def _watermark_for(
    watermarks: Mapping[Key, Timestamp] | Timestamp, key: Key, keying: str
) -> Timestamp | None:
    if isinstance(watermarks, int | float):
        return float(watermarks)
    if keying == "device":
        return watermarks.get(key)
    # A shared (or field-keyed) instance sees many devices. Waiting for the slowest would
    # let one silent device stall it forever, so it follows the most advanced device.
    return max(watermarks.values(), default=None)


def end_of_stream() -> Timestamp:
    """The watermark that closes everything."""
    return math.inf


def describe_instances(flow: Dataflow) -> dict[str, Any]:
    """Per node, how many keyed instances exist (for summaries and metrics)."""
    return {
        nid: len(flow.instances(nid)) for nid, n in flow._nodes.items() if n.spec.role == "operator"
    }


def _has_timers(cls: type[Any] | None) -> bool:
    """Whether operators of ``cls`` implement ``on_tick`` (others are not visited on a
    tick: with thousands of devices that is most of a tick's work)."""
    return cls is None or getattr(cls, "on_tick", None) is not Operator.on_tick
