"""The engine side of a fog node: log records in, operator state, controls and sinks out.

A :class:`LogApplier` owns what the log's records change: the engine (operators and sinks),
the control loop with its policies, and the dedup marks of the records applied so far
(checkpoints save these, not the ingest side's marks, so a reading lost with the log's
unsynced tail is never taken for a duplicate). It runs in the node's process, or in an
engine process of its own (:mod:`fogrt.engine.process`) so that ingest and engine each
have a core.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import structlog

from fogrt.control import ControlStore
from fogrt.control.loop import ControlLoop
from fogrt.engine.runner import Engine
from fogrt.event import Event
from fogrt.ingest import record
from fogrt.ingest.dedup import Deduplicator
from fogrt.ingest.wire import Uplink, UplinkDecoder, WireError
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.node")

T = TypeVar("T")

Decoded = tuple[str, Uplink, float]
"""``(source id, uplink, arrival)`` of a record, as ingest decoded it."""

Snapshot = tuple[
    int, dict[str, dict[str, bytes]], dict[str, list[tuple[int, int, bytes]]], dict[str, Any]
]
"""``(offset, operators, dedup marks, policies)``: the engine's state after the records up to
``offset`` (what a checkpoint takes from the engine side)."""


class LogApplier:
    """Applies log records, in order, exactly once: see the module docstring."""

    def __init__(
        self,
        topology: CompiledTopology,
        engine: Engine,
        control_loop: ControlLoop | None,
        decoders: Mapping[str, UplinkDecoder],
    ) -> None:
        self.topology = topology
        self.engine = engine
        self.control_loop = control_loop
        if control_loop is not None:
            for nid in control_loop.control.alerts:
                engine.flow.watch(nid, control_loop.alert_one)
        self.applied = Deduplicator()
        self.decoders = dict(decoders)

    def restore(
        self,
        operators: dict[str, dict[str, bytes]],
        dedup: dict[str, list[tuple[int, int, bytes]]],
        policies: dict[str, list[Any]],
    ) -> int:
        """State of a checkpoint (the control store is loaded by its owner); returns the
        number of operator instances restored."""
        instances = self.engine.flow.restore(operators)
        self.applied.load(dedup)
        if self.control_loop is not None:
            self.control_loop.load(policies)
        return instances

    async def apply(
        self, chunk: Sequence[tuple[int, bytes]], decoded: dict[int, Decoded] | None = None
    ) -> None:
        """Feed the engine the records of ``chunk`` (consecutive, in log order), one
        micro-batch per run of one source. ``decoded``: uplinks ingest already decoded, by
        offset (taken out of it)."""
        cache: dict[int, Decoded] = decoded if decoded is not None else {}
        engine, loop, applied = self.engine, self.control_loop, self.applied
        run_source: str | None = None
        run: list[Event] = []
        for offset, blob in chunk:
            cached = cache.pop(offset, None)
            if cached is not None:  # appended by this process: decoded once, at ingest
                source, uplink, arrival = cached
            else:
                rec = record.decode(blob)
                source, arrival = rec.source, rec.arrival
                decoder = self.decoders.get(source)
                if decoder is None:
                    continue  # registrations, or a source no longer in the topology
                try:
                    uplink = decoder.decode(rec.body)
                except WireError as exc:  # the schema changed since it was accepted
                    applied.mark(rec.device, rec.boot, rec.seq)
                    log.warning(
                        "record_undecodable",
                        source=rec.source,
                        device=rec.device,
                        diagnostic=exc.diagnostic,
                    )
                    continue
            applied.mark(uplink.device, uplink.boot, uplink.seq)
            events = uplink.events(arrival)
            if loop is not None:
                events = loop.observe(source, uplink, events)
            if source != run_source and run_source is not None and run:
                await engine.submit(run_source, run)
                run = []
            run_source = source
            run.extend(events)
        if run_source is not None and run:
            await engine.submit(run_source, run)

    async def snapshot(self) -> tuple[dict[str, dict[str, bytes]], dict[str, list[Any]]]:
        """Every operator instance's snapshot by node id and key, and every policy's state.
        Call with the engine paused (``engine.paused()``)."""
        pairs = (
            (nid, key, op.snapshot()) for nid, key, op in self.engine.flow.operator_instances()
        )
        operators: dict[str, dict[str, bytes]] = {}
        for nid, key, blob in await sliced(pairs):
            operators.setdefault(nid, {})[key] = blob
        loop = self.control_loop
        policies = dict(await sliced(loop.state_items())) if loop is not None else {}
        return operators, policies


async def sliced(items: Iterator[T], slice_s: float = 0.002) -> list[T]:
    """``list(items)``, yielding to the event loop every few milliseconds.

    Pickling holds the GIL for a whole ``dumps`` call, so a worker thread would starve the
    loop; small slices on the loop keep ingest acknowledging while a checkpoint is taken.
    """
    out: list[T] = []
    deadline = time.perf_counter() + slice_s
    for item in items:
        out.append(item)
        if time.perf_counter() > deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + slice_s
    return out


def control_loop(topology: CompiledTopology, store: ControlStore) -> ControlLoop | None:
    """The topology's control loop deciding into ``store`` (None without ``control:``)."""
    if topology.control is None:
        return None
    schemas = {n.id: dict(n.schema) for n in topology.by_role("source")}
    return ControlLoop(topology.control, store, schemas)
