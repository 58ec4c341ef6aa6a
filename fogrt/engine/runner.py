"""The asyncio side of the engine: micro-batches in, timers, batched sink writes.

Producers (the replay reader, CoAP ingest) ``await submit(source, events)``; the bounded
queue is the backpressure: a producer waits while the engine is ``queue_size`` batches
behind. One consumer task processes each batch synchronously through the
:class:`~fogrt.engine.dataflow.Dataflow`, then awaits the sinks with what the batch produced,
in order. Timers fire from per-key watermarks (live mode) or only at the end (replay), so a
replay is deterministic given its input and the operators' seeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from fogrt.engine.dataflow import Dataflow, end_of_stream
from fogrt.errors import SinkError
from fogrt.event import Event
from fogrt.sinks import Sink
from fogrt.topology.compile import CompiledTopology
from fogrt.types import Key, Timestamp

log = structlog.get_logger("fogrt.engine")

_Batch = tuple[str, Sequence[Event]]
Tap = Callable[[str, Sequence[Event]], None]
"""An observer of the batches a sink receives."""


class Engine:
    """Runs one compiled topology: ``start``, ``submit`` batches, ``stop``.

    ``tick_interval`` enables timers in live mode: every interval each key's watermark is
    its newest event time plus the wall time since that event arrived, less
    ``idle_grace``, so the windows of a device that went quiet still close. ``None``
    (replay) fires timers only when the input ends. ``sinks``: the sink objects by node id
    instead of building the topology's (an engine partition forwards its sink batches).
    """

    def __init__(
        self,
        topology: CompiledTopology,
        *,
        output_dir: Path | None = None,
        resume_sinks: bool = False,
        queue_size: int = 64,
        tick_interval: float | None = None,
        idle_grace: float = 2.0,
        clock: Callable[[], float] = time.time,
        sinks: Mapping[str, Sink] | None = None,
    ) -> None:
        self.topology = topology
        self.flow = Dataflow(topology)
        self.sinks = build_sinks(topology, output_dir, resume_sinks, sinks)
        self.sink_writes: dict[str, int] = dict.fromkeys(self.sinks, 0)
        self.taps: list[Tap] = []
        """Observers of every batch a sink receives (dashboard feeds); must not block."""
        self._queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=queue_size)
        self._tick_interval = tick_interval
        self._idle_grace = idle_grace
        self._clock = clock
        self._latest: dict[Key, tuple[Timestamp, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self.events_submitted = 0
        self._pending = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()  # held while operators run (batches, ticks)
        self.failed = asyncio.Event()
        """Set when a sink failed: the engine stopped processing (``failure`` says why)."""
        self.failure: str | None = None

    async def start(self) -> None:
        await open_sinks(self.sinks)
        self._tasks.append(asyncio.create_task(self._consume(), name="engine-consume"))
        if self._tick_interval is not None:
            self._tasks.append(asyncio.create_task(self._ticker(), name="engine-tick"))
        self._started = True
        log.debug("engine_started", topology=self.topology.name, sinks=len(self.sinks))

    async def submit(self, source_id: str, events: Sequence[Event]) -> None:
        """Queue a batch of one source's events (waits while the engine is behind)."""
        if not self._started:
            raise RuntimeError("Engine.submit() before start()")
        if self._tick_interval is not None:
            now = self._clock()
            latest = self._latest
            for e in events:
                seen = latest.get(e.key)
                if seen is None or e.time > seen[0]:
                    latest[e.key] = (e.time, now)
        self.events_submitted += len(events)
        self._pending += 1
        self._idle.clear()
        await self._queue.put((source_id, events))

    async def idle(self) -> None:
        """Wait until every submitted batch is processed and written to the sinks."""
        await self._idle.wait()

    @contextlib.asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Operators at rest: nothing queued runs, no timer fires, until the block ends.

        The caller must stop submitting first (what is queued is processed before this
        returns), so that the state seen inside is exactly that of what was submitted.
        """
        await self.idle()
        async with self._lock:
            yield

    async def stop(self, *, flush: bool = True) -> None:
        """Process what is queued, close every open window if ``flush``, close the sinks."""
        if not self._started:
            return
        self._started = False
        consumer, *others = self._tasks
        if not consumer.done():  # after a failure nothing takes from the queue any more
            await self._queue.put(None)
        for task in others:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer  # re-raises a sink failure
        if flush:
            self.flow.tick(end_of_stream())
            await self._write_sinks()
        for sink in self.sinks.values():
            await sink.close()
        self._tasks.clear()

    @property
    def backlog(self) -> int:
        """Batches waiting to be processed."""
        return self._queue.qsize()

    def watermarks(self) -> Mapping[Key, Timestamp]:
        now = self._clock()
        grace = self._idle_grace
        return {k: t + max(0.0, now - seen - grace) for k, (t, seen) in self._latest.items()}

    async def _consume(self) -> None:
        queue = self._queue
        flow = self.flow
        while True:
            item = await queue.get()
            if item is None:
                return
            source_id, events = item
            async with self._lock:
                flow.push(source_id, events)
                await self._write_sinks()
            self._pending -= 1
            if not self._pending:
                self._idle.set()

    async def _ticker(self) -> None:
        assert self._tick_interval is not None
        while True:
            await asyncio.sleep(self._tick_interval)
            async with self._lock:
                self.flow.tick(self.watermarks())
                await self._write_sinks()

    async def _write_sinks(self) -> None:
        for sink_id, batch in self.flow.take_sink_batches().items():
            try:
                await write_sink(self.sinks[sink_id], sink_id, batch, self.taps)
            except Exception as exc:
                self.failure = sink_failure(sink_id, exc)
                self.failed.set()
                raise
            self.sink_writes[sink_id] += len(batch)

    def summary(self, metrics: bool = True) -> list[dict[str, Any]]:
        """Per node: role, use, counters, instances and (``metrics``) the operator's own
        metrics, which visit every instance."""
        rows = []
        for node in self.topology.nodes:
            st = self.flow.stats[node.id]
            row: dict[str, Any] = {
                "id": node.id,
                "role": node.role,
                "use": node.use,
                "in": st.events_in,
                "out": st.events_out,
                "filtered": st.filtered,
                "skipped": st.skipped,
                "errors": st.errors,
            }
            if node.role == "operator":
                row["instances"] = len(self.flow.instances(node.id))
                if metrics:
                    row["metrics"] = self.flow.metrics(node.id)
            if node.role == "sink":
                row["out"] = self.sink_writes[node.id]
                row["target"] = self.sinks[node.id].describe()
            rows.append(row)
        return rows


# -- sinks (also written by the node's process for engine partitions) ---------------------------


def build_sinks(
    topology: CompiledTopology,
    output_dir: Path | None,
    resume: bool,
    sinks: Mapping[str, Sink] | None = None,
) -> dict[str, Sink]:
    """The topology's sinks by node id, ready to open (``sinks``: objects to use instead of
    building them)."""
    out: dict[str, Sink] = {}
    for node in topology.by_role("sink"):
        sink = node.build() if sinks is None else sinks[node.id]
        if output_dir is not None:
            sink.base_dir = output_dir
        sink.resume = resume
        sink.input_schema = dict(node.schema)
        out[node.id] = sink
    return out


async def open_sinks(sinks: Mapping[str, Sink]) -> None:
    """Open every sink; one that cannot is a :class:`SinkError` naming it and why."""
    for sink_id, sink in sinks.items():
        try:
            await sink.open()
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            raise SinkError(sink_id, f"cannot open{where}: {exc.strerror}") from None


async def write_sink(
    sink: Sink, sink_id: str, batch: Sequence[Event], taps: Sequence[Tap] = ()
) -> None:
    """Show ``batch`` to the taps (a failing tap is logged), then write it (a failure is
    logged and raised)."""
    for tap in taps:
        try:
            tap(sink_id, batch)
        except Exception as exc:
            log.error("tap_failed", sink=sink_id, error=f"{type(exc).__name__}: {exc}")
    try:
        await sink.write(batch)
    except Exception as exc:
        log.error("sink_failed", sink=sink_id, events=len(batch), error=_describe(exc))
        raise


def sink_failure(sink_id: str, exc: BaseException) -> str:
    """Why the engine stopped, in one line."""
    return f"sink {sink_id!r} failed: {_describe(exc)}"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
