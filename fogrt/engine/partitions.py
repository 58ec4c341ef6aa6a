"""Engine partitions: the engine in several processes, each over the devices hashing to it.

``fogrt run --engines N`` starts N engine processes (:mod:`fogrt.engine.process`) instead of
one. The node's log consumer routes each durable record to partition ``hash(device) % N``
(BLAKE2b of the id); every partition runs the whole topology over its devices (their
operator instances, windows, models, control policies and dedup marks) on a core of its own.
That gives the same results as one engine only when no state spans devices, so every
operator must be keyed by device (``key: device``, the default; :func:`unpartitionable`
says which is not).

What stays in the node's process:

- the sinks (:class:`SinkHost`): partitions forward their sink batches, and the node
  writes them to the one set of files or streams, in the order they arrive (each device's
  events in order), and shows them to the taps (dashboard, metrics);
- the offset the engine side has consumed (the ingest lag bound, checkpoints, log
  retention): the lowest log offset some partition has not applied yet;
- checkpoints at one log offset for all partitions: a barrier after the records fed so far
  goes to each partition (feeding goes on meanwhile); each answers with its state once it
  has applied exactly its records before the barrier. The node merges them, with each
  partition's devices' control records as of its answer, and writes one checkpoint. A
  checkpoint does not depend on N: a restart with another ``--engines`` splits it by the
  same hash.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Sequence
from functools import partial
from hashlib import blake2b
from pathlib import Path
from typing import Any, cast

import structlog

from fogrt.control import ControlStore
from fogrt.control.loop import ControlLoop
from fogrt.engine.applier import Snapshot
from fogrt.engine.dataflow import merge_metrics
from fogrt.engine.process import (
    WINDOW,
    ControlLoopMirror,
    EngineMirror,
    EngineProcess,
    EngineProcessError,
    Restore,
)
from fogrt.engine.runner import Tap, build_sinks, open_sinks, sink_failure, write_sink
from fogrt.event import Event
from fogrt.ingest.wire import Limits
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.node")

MAX_ENGINES = 64
_KNOWN_MAX = 1 << 20

_Batches = list[tuple[str, list[Event]]]


def partition_of(device: str, count: int) -> int:
    """The partition of ``device`` among ``count``."""
    return _partition(device.encode(), count)


def _partition(device: bytes, count: int) -> int:
    # BLAKE2b, not CRC-32: a CRC is linear, and ids that differ in one character (dev-0,
    # dev-1, dev-2...) can all have the same low bits. Stable across runs and machines.
    return int.from_bytes(blake2b(device, digest_size=8).digest(), "little") % count


def unpartitionable(topology: CompiledTopology) -> str | None:
    """Why ``topology`` cannot run in device partitions (None: it can)."""
    for node in topology.by_role("operator"):
        if node.key != "device":
            return (
                f"operator {node.id!r} has key: {node.key} (its state spans devices); "
                "engine partitions need every operator keyed by device"
            )
    return None


class SinkHost:
    """The topology's sinks in the node's process, written with the partitions' batches."""

    def __init__(self, topology: CompiledTopology, output_dir: Path | None) -> None:
        self.sinks = build_sinks(topology, output_dir, resume=True)
        self.writes: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self.taps: list[Tap] = []
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self._queue: asyncio.Queue[_Batches | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await open_sinks(self.sinks)
        self._task = asyncio.create_task(self._write(), name="sink-writer")

    def put(self, batches: _Batches) -> None:
        self._queue.put_nowait(batches)

    async def flushed(self) -> None:
        """Everything put so far is written (or the sinks failed)."""
        if self._task is not None:
            await self._queue.join()

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._queue.put_nowait(None)
            await task
        for sink in self.sinks.values():
            await sink.close()

    async def _write(self) -> None:
        queue = self._queue
        while (batches := await queue.get()) is not None:
            try:
                if not self.failed.is_set():
                    for sink_id, events in batches:
                        await write_sink(self.sinks[sink_id], sink_id, events, self.taps)
                        self.writes[sink_id] += len(events)
            except Exception as exc:  # logged by write_sink; the node stops
                self.failure = sink_failure(sink_id, exc)
                self.failed.set()
            finally:
                queue.task_done()
        queue.task_done()


class _MergedMirror(EngineMirror):
    """What metrics and the dashboard read of the engine: the partitions' statuses added up,
    the sinks' counts and targets from the node's own sinks."""

    def __init__(
        self, topology: CompiledTopology, parts: list[EngineProcess], sinks: SinkHost
    ) -> None:
        super().__init__(topology, self._want_all)
        self.taps = sinks.taps
        self._parts = parts
        self._sinks = sinks

    def _want_all(self) -> None:
        for part in self._parts:
            part.engine.want_metrics()

    def merge(self) -> None:
        statuses = [p.last_status for p in self._parts if p.last_status is not None]
        if statuses:
            self._update(_merge_statuses(statuses, self._sinks))


class _MergedLoop(ControlLoopMirror):
    """The control loop over every partition: each device's policy from its partition."""

    def __init__(self, local: ControlLoop, parts: list[EngineProcess]) -> None:
        super().__init__(local, self._tell_all)
        self._parts = parts

    def _tell_all(self, devices: list[str]) -> None:
        for part in self._parts:
            part._tell_external(devices)

    def _part(self, device: str) -> ControlLoopMirror:
        mirror = self._parts[partition_of(device, len(self._parts))].control_loop
        assert mirror is not None
        return mirror

    def policy_name(self, device: str) -> str:
        return self._part(device).policy_name(device)

    def saved(self, device: str) -> int:
        return self._part(device).saved(device)

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for part in self._parts:
            assert part.control_loop is not None
            for name, value in part.control_loop.counters().items():
                total[name] = total.get(name, 0) + value
        return total


class EnginePartitions:
    """The node's handle on N engine processes, one per device partition: start, feed,
    snapshot, idle, stop (what :class:`EngineProcess` offers for one)."""

    def __init__(
        self,
        topology: CompiledTopology,
        controls: ControlStore,
        loop: ControlLoop | None,
        count: int,
        *,
        output_dir: Path | None,
        tick_interval: float | None,
        limits: Limits,
        gc_tuning: bool = False,
    ) -> None:
        if not 2 <= count <= MAX_ENGINES:
            raise ValueError(f"engine partitions: expected 2..{MAX_ENGINES}, got {count}")
        why = unpartitionable(topology)
        if why is not None:
            raise ValueError(why)
        self.count = count
        self.controls = controls
        self.failed = asyncio.Event()
        self.sinks = SinkHost(topology, output_dir)
        self.sinks.failed = self.failed
        self.parts = [
            EngineProcess(
                topology,
                controls,
                loop,
                output_dir=output_dir,
                tick_interval=tick_interval,
                limits=limits,
                gc_tuning=gc_tuning,
                partition=(i, count),
                window=max(WINDOW // count, 512),
            )
            for i in range(count)
        ]
        self.engine = _MergedMirror(topology, self.parts, self.sinks)
        self.control_loop = _MergedLoop(loop, self.parts) if loop is not None else None
        for i, part in enumerate(self.parts):
            part.failed = self.failed  # any partition failing stops the node
            part.on_sinks = self.sinks.put
            part.on_progress = partial(self._progress, i)
            part.on_status = self.engine.merge
        self.consumed = 0
        """The lowest log offset not applied yet by every partition."""
        self._fed = 0
        self._offsets: list[deque[int]] = [deque() for _ in range(count)]
        """Per partition: the log offsets of the records fed and not known to be applied."""
        self._applied = [0] * count
        self._known: dict[bytes, int] = {}
        """Partitions of the device ids seen in records (a hash each otherwise)."""
        self._devices: dict[str, int] = {}
        """The same, by device id (control records)."""

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.parts if p.pid is not None]

    @property
    def error(self) -> str | None:
        errors = [p.error for p in self.parts if p.error is not None]
        return errors[0] if errors else self.sinks.failure

    async def start(self, offset: int, restore: Restore | None) -> int:
        """Start every partition with its part of a checkpoint at ``offset``."""
        self.consumed = self._fed = offset
        await self.sinks.open()
        parts = _split(restore, self.count) if restore is not None else [None] * self.count
        external = sorted(self.control_loop.external) if self.control_loop is not None else []
        for part in self.parts:
            if part.control_loop is not None:
                part.control_loop.external.update(external)
        started = await asyncio.gather(
            *(p.start(0, r) for p, r in zip(self.parts, parts, strict=True)),
            return_exceptions=True,
        )
        for result in started:
            if isinstance(result, BaseException):
                raise result
        log.info("engine_partitions_started", count=self.count, pids=self.pids)
        return sum(cast(int, n) for n in started)

    async def feed(self, chunk: Sequence[tuple[int, bytes]]) -> None:
        """Route records (consecutive, in log order) to their partitions."""
        if not chunk:
            return
        count = self.count
        groups: list[list[bytes]] = [[] for _ in range(count)]
        offsets = self._offsets
        known = self._known
        for offset, blob in chunk:
            # The record's device id (fogrt.ingest.record): length-prefixed after the source.
            i = 2 + blob[1]
            device = blob[i + 1 : i + 1 + blob[i]]
            p = known.get(device)
            if p is None:
                if len(known) >= _KNOWN_MAX:
                    known.clear()
                p = known[device] = _partition(device, count)
            groups[p].append(blob)
            offsets[p].append(offset)
        self._fed = chunk[-1][0] + 1
        for part, blobs in zip(self.parts, groups, strict=True):
            if blobs:
                await part.feed_blobs(blobs)
        self._advance()

    def _progress(self, index: int) -> None:
        part, offsets = self.parts[index], self._offsets[index]
        for _ in range(part.consumed - self._applied[index]):
            offsets.popleft()
        self._applied[index] = part.consumed
        self._advance()

    def _advance(self) -> None:
        fed = self._fed
        self.consumed = min(q[0] if q else fed for q in self._offsets)

    async def snapshot(self, feeding: asyncio.Lock) -> tuple[Snapshot, dict[str, Any]]:
        """The merged state at one log offset, and the control records that go with it.
        ``feeding`` (the node's log consumer's lock) is held only while the barriers go out."""
        async with feeding:
            offset = self._fed
            waiting = [p.barrier(partial(self._controls_of, i)) for i, p in enumerate(self.parts)]
        answers = await asyncio.gather(*waiting)
        await self.sinks.flushed()  # what they wrote before their answers is in the files
        operators: dict[str, dict[str, bytes]] = {}
        dedup: dict[str, list[tuple[int, int, bytes]]] = {}
        policies: dict[str, Any] = {}
        controls: dict[str, Any] = {}
        for (_, ops, marks, pols), ctl in answers:
            for nid, instances in ops.items():
                operators.setdefault(nid, {}).update(instances)
            dedup.update(marks)
            policies.update(pols)
            controls.update(ctl)
        return (offset, operators, dedup, policies), controls

    def _controls_of(self, index: int) -> dict[str, Any]:
        """The control records of partition ``index``'s devices (called as its snapshot
        arrives: later controls of its devices come from records after the barrier)."""
        return self.controls.state(lambda device: self._partition_of(device) == index)

    def _partition_of(self, device: str) -> int:
        p = self._devices.get(device)
        if p is None:
            if len(self._devices) >= _KNOWN_MAX:
                self._devices.clear()
            p = self._devices[device] = partition_of(device, self.count)
        return p

    async def idle(self) -> None:
        await asyncio.gather(*(p.idle() for p in self.parts))
        await self.sinks.flushed()
        self.engine.merge()

    async def stop(self) -> None:
        codes = await asyncio.gather(*(p.stop() for p in self.parts), return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.sinks.close()
        for part, code in zip(self.parts, codes, strict=True):
            if isinstance(code, BaseException):
                log.error("engine_partition_stop_failed", pid=part.pid, error=str(code))
        self.engine.merge()


def _split(restore: Restore, count: int) -> list[Restore]:
    """A checkpoint's engine state, split by device partition."""
    parts = [Restore() for _ in range(count)]
    for nid, instances in restore.operators.items():
        for key, blob in instances.items():
            parts[partition_of(key, count)].operators.setdefault(nid, {})[key] = blob
    for name in ("dedup", "policies", "controls"):
        for device, value in getattr(restore, name).items():
            getattr(parts[partition_of(device, count)], name)[device] = value
    return parts


def _merge_statuses(statuses: list[dict[str, Any]], sinks: SinkHost) -> dict[str, Any]:
    summary = []
    for rows in zip(*(s["summary"] for s in statuses), strict=True):
        row = dict(rows[0])
        for name in ("in", "out", "filtered", "skipped", "errors", "instances"):
            if name in row:
                row[name] = sum(r[name] for r in rows)
        if "metrics" in row:
            row["metrics"] = merge_metrics(r.get("metrics", {}) for r in rows)
        if row["role"] == "sink":
            row["out"] = sinks.writes[row["id"]]
            row["target"] = sinks.sinks[row["id"]].describe()
        summary.append(row)
    usage = [s.get("usage", (0.0, 0)) for s in statuses]
    return {
        "summary": summary,
        "events_submitted": sum(s["events_submitted"] for s in statuses),
        "backlog": sum(s["backlog"] for s in statuses),
        "sink_writes": dict(sinks.writes),
        "usage": (sum(u[0] for u in usage), sum(u[1] for u in usage)),
    }


__all__ = [
    "EnginePartitions",
    "EngineProcessError",
    "SinkHost",
    "partition_of",
    "unpartitionable",
]
