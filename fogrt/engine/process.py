"""The engine in a process of its own: ingest on one core, operators on another.

``fogrt run`` (``--engine process``, the default) starts ``python -m fogrt.engine.process``
beside the node's process, joined by a Unix socket pair. The node's process keeps the CoAP
endpoint, validation, dedup at ingest, the device registry, the durable ingest log and the
control records devices are answered from; the engine process runs a
:class:`~fogrt.engine.applier.LogApplier`: operators, sinks, the control loop's policies and
the dedup marks of applied records. The log joins them:

- node -> engine: records read back from the log once durable, in order (a bounded window
  ahead of what the engine has consumed, so a slow engine holds the log consumer, and the
  ingest lag bound answers 5.03), requests (snapshot, idle, stop) and devices whose control
  something else sets;
- engine -> node: the consumed offset; every control the policies set, in the order they set
  it, so the node's records have the same versions; the events the taps need (each sink
  batch's first event with an arrival time and its anomalies, for latency histograms and
  the anomaly feed); a status each second (node counters, policy counters, its CPU and
  memory, and operator metrics once someone reads them); and the answers to requests. A
  snapshot's answer follows every control set before it, so the node's control records are
  those of the snapshot's offset.

Checkpoints stay consistent: between two steps of its applier (128 records), with its
operators at rest, the engine process answers with its state and the offset it reflects
(records still queued in it are not in it, and are replayed after a restart); the node adds
the registry and control records and writes the checkpoint at that offset. The engine
process ends when the node tells it to (after draining) or when the socket closes: a node
killed with ``kill -9`` takes its engine with it, and a restart replays the log after the
checkpoint. It ignores SIGINT and SIGTERM (a Ctrl-C or a service manager signals the whole
group; the node drains through it first). If it dies, the node stops and exits 1.

An engine partition (``fogrt run --engines N``, :mod:`fogrt.engine.partitions`) is this
process over the devices that hash to it: its records are counted rather than numbered by
log offset, it forwards its sink batches to the node's process (``sinks``), and it answers
``snapshot_at`` barriers, so that every partition's state is at the same log offset.

Frames are a 4-byte length and a pickle; both ends are this package, over a socket pair
nobody else holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import structlog

from fogrt.control import ControlStore
from fogrt.control.loop import ControlLoop
from fogrt.engine.applier import LogApplier, Snapshot, control_loop
from fogrt.engine.runner import Engine
from fogrt.errors import FogError
from fogrt.event import Event
from fogrt.ingest.wire import Control, Limits, UplinkDecoder
from fogrt.sinks import Sink
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.node")

_LEN = struct.Struct("!I")
MAX_FRAME = (1 << 32) - 1
WINDOW = 8192
"""Records fed ahead of what the engine process has consumed."""
STEP = 128
"""Records the engine process applies at a time (a snapshot comes between two steps)."""
STATUS_EVERY = 1.0
"""Seconds between the engine process's status messages."""
MAX_TAP_EVENTS = 256
"""Anomalies passed on per sink batch (the anomaly feed keeps the newest few hundred)."""


class EngineProcessError(FogError):
    """The engine process failed or exited."""


# -- framing -----------------------------------------------------------------------------------


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=5)
    if len(body) > MAX_FRAME:
        raise EngineProcessError(f"message of {len(body)} bytes is too large for a frame")
    return _LEN.pack(len(body)) + body


async def _read(reader: asyncio.StreamReader) -> Any:
    """The next message; None at the end of the stream."""
    try:
        head = await reader.readexactly(_LEN.size)
        body = await reader.readexactly(_LEN.unpack(head)[0])
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return pickle.loads(body)


# -- the node's side ----------------------------------------------------------------------------


@dataclass
class Restore:
    """What a checkpoint gives the engine process."""

    operators: dict[str, dict[str, bytes]] = field(default_factory=dict)
    dedup: dict[str, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    policies: dict[str, list[Any]] = field(default_factory=dict)
    controls: dict[str, dict[str, Any]] = field(default_factory=dict)


class EngineMirror:
    """What the node's process knows of the remote engine: the parts of
    :class:`~fogrt.engine.runner.Engine` metrics and the dashboard read, as of the engine
    process's last status, and the taps its tap events are handed to."""

    def __init__(
        self, topology: CompiledTopology, want_metrics: Callable[[], None] = lambda: None
    ) -> None:
        self.topology = topology
        self._want_metrics = want_metrics
        self._wanted = False
        self.taps: list[Callable[[str, Sequence[Event]], None]] = []
        self.events_submitted = 0
        self.backlog = 0
        self.sink_writes: dict[str, int] = {n.id: 0 for n in topology.by_role("sink")}
        self._summary: list[dict[str, Any]] = []
        self.flow = SimpleNamespace(stats={}, metrics=self._metrics)
        self._update(
            {
                "summary": [
                    {"id": n.id, "role": n.role, "use": n.use, "in": 0, "out": 0, "filtered": 0}
                    | {"skipped": 0, "errors": 0}
                    for n in topology.nodes
                ],
                "events_submitted": 0,
                "backlog": 0,
                "sink_writes": self.sink_writes,
            }
        )

    def _update(self, status: Mapping[str, Any]) -> None:
        for row in status["summary"]:  # what Engine.summary() has (metrics: once wanted)
            if row["role"] == "operator":
                row.setdefault("instances", 0)
                row.setdefault("metrics", {})
            elif row["role"] == "sink":
                row.setdefault("target", "")
        self._summary = status["summary"]
        self.events_submitted = status["events_submitted"]
        self.backlog = status["backlog"]
        self.sink_writes = dict(status["sink_writes"])
        self.process_usage: tuple[float, int] = status.get("usage", (0.0, 0))
        """``(CPU seconds, resident bytes)`` of the engine process."""
        self.flow.stats = {
            r["id"]: SimpleNamespace(
                events_in=r["in"],
                events_out=r["out"],
                filtered=r["filtered"],
                skipped=r["skipped"],
                errors=r["errors"],
            )
            for r in self._summary
        }

    def want_metrics(self) -> None:
        """Have statuses carry the operators' own metrics from now on (metrics and the
        dashboard call this when they attach; reading them does too)."""
        self._want()

    def _want(self) -> None:
        if not self._wanted:
            self._wanted = True
            self._want_metrics()

    def _metrics(self, node_id: str) -> dict[str, float]:
        self._want()
        for row in self._summary:
            if row["id"] == node_id:
                return dict(row.get("metrics", {}))
        return {}

    def summary(self) -> list[dict[str, Any]]:
        self._want()
        return [dict(r) for r in self._summary]


class _External(set[str]):
    """Devices whose control something else sets; additions reach the engine process."""

    def __init__(self, tell: Callable[[list[str]], None]) -> None:
        super().__init__()
        self._tell = tell

    def add(self, device: str) -> None:
        if device not in self:
            super().add(device)
            self._tell([device])

    def update(self, *others: Iterable[str]) -> None:
        new = [d for other in others for d in other if d not in self]
        super().update(new)
        if new:
            self._tell(new)


class ControlLoopMirror:
    """The control loop as the node's process sees it: initial controls from the rules
    (computed here, as the engine process does), per-device policy and imputation counts and
    the loop's counters as of the engine process's last status."""

    def __init__(self, local: ControlLoop, tell_external: Callable[[list[str]], None]) -> None:
        self._local = local
        self.control = local.control
        self.external: set[str] = _External(tell_external)
        self._policies: dict[str, str] = {}
        self._saved: dict[str, int] = {}
        self._counters = {
            "devices": 0,
            "decisions": 0,
            "imputed": 0,
            "alerts": 0,
            "errors": 0,
            "unknown_versions": 0,
        }

    def initial(self, device: str) -> Control:
        return self._local.initial(device)

    def policy_name(self, device: str) -> str:
        return self._policies.get(device) or self._local.policy_name(device)

    def saved(self, device: str) -> int:
        return self._saved.get(device, 0)

    def counters(self) -> dict[str, int]:
        return dict(self._counters)

    def _update(self, status: Mapping[str, Any]) -> None:
        self._counters = dict(status["counters"])
        self._policies.update(status["policies"])
        self._saved.update(status["saved"])


class EngineProcess:
    """The node's handle on its engine process: start, feed, snapshot, idle, stop."""

    def __init__(
        self,
        topology: CompiledTopology,
        controls: ControlStore,
        loop: ControlLoop | None,
        *,
        output_dir: Path | None,
        tick_interval: float | None,
        limits: Limits,
        gc_tuning: bool = False,
        partition: tuple[int, int] | None = None,
        window: int = WINDOW,
    ) -> None:
        self.topology = topology
        self.controls = controls
        self.engine = EngineMirror(topology, self._want_metrics)
        self.control_loop = (
            ControlLoopMirror(loop, self._tell_external) if loop is not None else None
        )
        self.consumed = 0
        self.failed: asyncio.Event = asyncio.Event()
        """Set when the engine process exits without being asked to."""
        self.error: str | None = None
        self._init = {
            "output_dir": output_dir,
            "tick_interval": tick_interval,
            "limits": limits,
            "gc_tuning": gc_tuning,
            "partition": partition,
        }
        self._window = window
        self.partition = partition
        """``(index, count)`` of an engine partition (see :mod:`fogrt.engine.partitions`):
        it is fed its devices' records, ``consumed`` counts them, and it forwards its sink
        batches to ``on_sinks`` instead of writing them."""
        self.on_sinks: Callable[[list[tuple[str, list[Event]]]], None] | None = None
        self.on_progress: Callable[[], None] | None = None
        self.on_status: Callable[[], None] | None = None
        self.last_status: dict[str, Any] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._replies: deque[tuple[asyncio.Future[Any], Callable[[], Any] | None]] = deque()
        self._progress = asyncio.Event()
        self._sent = 0
        self._stopping = False
        self._metrics_wanted = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, offset: int, restore: Restore | None) -> int:
        """Start the process with the state of a checkpoint at ``offset`` (or none); returns
        the operator instances it restored."""
        from fogrt.logging import current

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "fogrt.engine.process",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                # What this process imports (plugins on a path added at run time too).
                env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            )
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=1 << 20)
        self.consumed = self._sent = offset
        level, fmt = current()
        message = {
            **self._init,
            "topology": self.topology,
            "offset": offset,
            "restore": restore,
            "log": (level, fmt),
            "external": sorted(self.control_loop.external) if self.control_loop else [],
            "metrics": self._metrics_wanted,
        }
        self._reader_task = asyncio.create_task(self._read(reader), name="engine-process-reader")
        instances: int = await self._request(("init", message))
        log.info("engine_process_started", pid=self._proc.pid, instances=instances)
        return instances

    async def feed(self, chunk: Sequence[tuple[int, bytes]]) -> None:
        """Send records (consecutive, in log order); waits while the engine process is a
        window behind."""
        if chunk:
            assert chunk[0][0] == self._sent, (chunk[0][0], self._sent)
            await self.feed_blobs([blob for _, blob in chunk])

    async def feed_blobs(self, blobs: list[bytes]) -> None:
        """Send the next records (a partition's: counted, not log offsets)."""
        while self._sent - self.consumed >= self._window:
            self._check()
            self._progress.clear()
            await self._progress.wait()
        self._check()
        self._send(("records", self._sent, blobs))
        self._sent += len(blobs)

    def barrier(self, capture: Callable[[], Any]) -> asyncio.Future[Any]:
        """Ask for a snapshot once every record sent so far is applied, and no other: the
        future's result is ``(snapshot, capture())``, ``capture`` called as the answer
        arrives (before any later message is handled)."""
        self._check()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies.append((future, capture))
        self._send(("snapshot_at", self._sent))
        return future

    async def snapshot(self) -> Snapshot:
        """The engine process's state after the records it has applied (``offset``;
        records it holds queued come after)."""
        snapshot: Snapshot = await self._request(("snapshot",))
        return snapshot

    async def idle(self) -> None:
        """Wait until the engine process has processed everything fed (status updated)."""
        await self._request(("idle",))

    async def stop(self, timeout: float = 30.0) -> int | None:
        """Close the sinks and end the process; returns its exit code."""
        self._stopping = True
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None and self.error is None:
            with contextlib.suppress(EngineProcessError, TimeoutError):
                await asyncio.wait_for(self._request(("stop",)), timeout)
        if self._writer is not None:
            self._writer.close()
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            code = await proc.wait()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        return code

    # -- plumbing ---------------------------------------------------------------------------

    def _check(self) -> None:
        if self.error is not None:
            raise EngineProcessError(self.error)

    def _send(self, message: Any) -> None:
        assert self._writer is not None
        self._writer.write(_frame(message))

    async def _request(self, message: Any) -> Any:
        self._check()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._replies.append((future, None))
        self._send(message)
        return await future

    def _want_metrics(self) -> None:
        self._metrics_wanted = True
        if self._writer is not None and self.error is None:
            self._send(("metrics",))

    def _tell_external(self, devices: list[str]) -> None:
        if self._writer is not None and self.error is None:
            self._send(("external", devices))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (message := await _read(reader)) is not None:
                self._dispatch(message)
        except Exception as exc:  # a bug here must not go unnoticed
            self._fail(f"engine process link failed: {type(exc).__name__}: {exc}")
            raise
        proc = self._proc
        code = await proc.wait() if proc is not None else None
        if not self._stopping or self._replies:
            self._fail(f"the engine process exited (code {code})")

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "consumed":
            self.consumed = message[1]
            self._progress.set()
            if self.on_progress is not None:
                self.on_progress()
        elif kind == "sinks":
            assert self.on_sinks is not None, "sink batches from an engine that writes its own"
            self.on_sinks(message[1])
        elif kind == "controls":
            store = self.controls
            for device, control in message[1]:
                store.set(device, control)
        elif kind == "taps":
            for sink_id, events in message[1]:
                for tap in self.engine.taps:
                    try:
                        tap(sink_id, events)
                    except Exception as exc:
                        log.error("tap_failed", sink=sink_id, error=f"{type(exc).__name__}: {exc}")
        elif kind == "status":
            self.last_status = message[1]
            self.engine._update(message[1])
            if self.control_loop is not None and message[1].get("loop") is not None:
                self.control_loop._update(message[1]["loop"])
            if self.on_status is not None:
                self.on_status()
        elif kind == "reply":
            future, capture = self._replies.popleft()
            if not future.done():
                future.set_result(message[1] if capture is None else (message[1], capture()))
        elif kind == "failed":
            self._fail(message[1])
        else:  # pragma: no cover - both ends are this module
            raise EngineProcessError(f"unknown message {kind!r}")

    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
            log.error("engine_process_failed", error=why)
        self.failed.set()
        self._progress.set()
        while self._replies:
            future, _ = self._replies.popleft()
            if not future.done():
                future.set_exception(EngineProcessError(why))


# -- the engine process --------------------------------------------------------------------------


class _RecordingStore(ControlStore):
    """A control store that remembers every change, for the node's process to replay."""

    def __init__(self) -> None:
        super().__init__()
        self.changes: list[tuple[str, Control]] = []

    def set(self, device: str, control: Control) -> int:
        before = self.get(device)[0]
        version = super().set(device, control)
        if version != before:
            self.changes.append((device, control))
        return version


class _Forward(Sink):
    """An engine partition's sink: its batches go to the node's process, which writes them
    (with every other partition's) to the real sink."""

    kind = "forward"

    def __init__(self, sink_id: str, out: list[tuple[str, list[Event]]]) -> None:
        self.sink_id = sink_id
        self._out = out

    async def write(self, events: Sequence[Event]) -> None:
        self._out.append((self.sink_id, list(events)))


class _Child:
    """The engine process: a reader takes messages as they come (records queue up), an
    applier feeds the queued records to the engine a step at a time."""

    def __init__(self, writer: asyncio.StreamWriter, init: dict[str, Any]) -> None:
        self.writer = writer
        topology: CompiledTopology = init["topology"]
        self.partitioned = init.get("partition") is not None
        self.forwarded: list[tuple[str, list[Event]]] = []
        """Sink batches of a partition, for the node's process to write."""
        self.engine = Engine(
            topology,
            output_dir=init["output_dir"],
            tick_interval=init["tick_interval"],
            resume_sinks=True,
            # Few batches in flight: a snapshot waits for the engine to be idle.
            queue_size=1,
            sinks=(
                {n.id: _Forward(n.id, self.forwarded) for n in topology.by_role("sink")}
                if self.partitioned
                else None
            ),
        )
        for node in topology.by_role("operator"):
            node.build()  # imports its libraries now, not at the first reading (River: ~1 s)
        self.store = _RecordingStore()
        self.loop = control_loop(topology, self.store)
        limits: Limits = init["limits"]
        decoders = {n.id: UplinkDecoder(n.schema, limits) for n in topology.by_role("source")}
        self.applier = LogApplier(topology, self.engine, self.loop, decoders)
        self.consumed: int = init["offset"]
        """Records applied (given to the engine) so far; what a snapshot reflects."""
        self.received: int = init["offset"]
        self.pending: deque[bytes] = deque()
        self.barriers: deque[int] = deque()
        """Snapshots asked for at a number of records applied (``snapshot_at``)."""
        self._more = asyncio.Event()
        self._applying = asyncio.Lock()
        self._drained = asyncio.Event()
        self._drained.set()
        self.instances = 0
        restore: Restore | None = init["restore"]
        if restore is not None:
            self.store.load(restore.controls)
            self.instances = self.applier.restore(
                restore.operators, restore.dedup, restore.policies
            )
        self.store.changes.clear()
        if self.loop is not None:
            self.loop.external.update(init["external"])
        self.tapped: list[tuple[str, list[Event]]] = []
        # Only these sinks can carry anomalies (the anomaly feed reads no others): the other
        # sinks' batches are not scanned event by event.
        self._anomaly_sinks = {n.id for n in topology.by_role("sink") if "is_anomaly" in n.schema}
        if not self.partitioned:  # a partition's node taps the batches it writes itself
            self.engine.taps.append(self._tap)
        self._sent_devices: dict[str, tuple[str, int]] = {}
        self.metrics: bool = init["metrics"]
        """Whether statuses carry the operators' metrics (someone reads them: dashboard,
        /metrics); they visit every instance."""

    def _tap(self, sink_id: str, batch: Sequence[Event]) -> None:
        first = next((e for e in batch if e.arrival > 0), None)
        picked = (
            [e for e in batch if e.fields.get("is_anomaly") is True][-MAX_TAP_EVENTS:]
            if sink_id in self._anomaly_sinks
            else []
        )
        if first is not None and (not picked or picked[0] is not first):
            picked.insert(0, first)
        if picked:
            self.tapped.append((sink_id, picked))

    def send(self, message: Any) -> None:
        """Send ``message`` after the controls set and the tap events gathered before it."""
        if self.store.changes:
            changes, self.store.changes = self.store.changes, []
            self.writer.write(_frame(("controls", changes)))
        if self.tapped:
            tapped, self.tapped = self.tapped, []
            self.writer.write(_frame(("taps", tapped)))
        if self.forwarded:  # the _Forward sinks hold this list: emptied in place
            self.writer.write(_frame(("sinks", self.forwarded[:])))
            self.forwarded.clear()
        if message is not None:
            self.writer.write(_frame(message))

    def status(self) -> dict[str, Any]:
        engine = self.engine
        out: dict[str, Any] = {
            "summary": engine.summary(self.metrics),
            "events_submitted": engine.events_submitted,
            "backlog": engine.backlog + len(self.pending),
            "sink_writes": dict(engine.sink_writes),
            "loop": None,
            "usage": (time.process_time(), _rss_bytes()),
        }
        loop = self.loop
        if loop is not None:
            sent = self._sent_devices
            policies, saved = {}, {}
            for device, entry in loop._devices.items():
                now = (entry.rule.use, entry.imputed)
                if sent.get(device) != now:
                    sent[device] = now
                    policies[device], saved[device] = now
            out["loop"] = {"counters": loop.counters(), "policies": policies, "saved": saved}
        return out

    async def statuses(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY)
            self.send(("status", self.status()))

    async def apply_forever(self) -> None:
        """Feed queued records to the engine, ``STEP`` at a time, in order, stopping at each
        barrier for its snapshot."""
        pending, barriers = self.pending, self.barriers
        while True:
            if barriers and barriers[0] <= self.consumed:
                barriers.popleft()
                async with self._applying:
                    await self._snapshot()
                continue
            if not pending:
                self._drained.set()
                self._more.clear()
                await self._more.wait()
                continue
            async with self._applying:
                n = min(STEP, len(pending))
                if barriers:
                    n = min(n, barriers[0] - self.consumed)
                start = self.consumed
                step = [(start + i, pending.popleft()) for i in range(n)]
                await self.applier.apply(step)
                self.consumed += n
            self.send(("consumed", self.consumed))

    async def _snapshot(self) -> None:
        """Answer with the state after the records applied so far (call between steps)."""
        async with self.engine.paused():
            operators, policies = await self.applier.snapshot()
            dedup = self.applier.applied.state()
            self.send(("reply", (self.consumed, operators, dedup, policies)))

    async def watch_engine(self) -> None:
        """Raise when the engine fails (a sink): this process cannot go on."""
        await self.engine.failed.wait()
        raise EngineProcessError(self.engine.failure or "the engine failed")

    async def idle(self) -> None:
        """Everything received is applied and through the sinks."""
        while self.pending or self._applying.locked():
            await self._drained.wait()
            await asyncio.sleep(0)
        await self.engine.idle()

    async def handle(self, message: tuple[Any, ...]) -> bool:
        """One message from the node; False when it is time to stop."""
        kind = message[0]
        if kind == "records":
            start, blobs = message[1], message[2]
            if start != self.received:
                raise EngineProcessError(f"records from {start}, expected {self.received}")
            self.received += len(blobs)
            self.pending.extend(blobs)
            self._drained.clear()
            self._more.set()
        elif kind == "snapshot":
            # At the records applied so far (not those still queued), between two steps.
            async with self._applying:
                await self._snapshot()
        elif kind == "snapshot_at":
            # Once exactly this many records are applied (a partition's part of a checkpoint
            # at one log offset for all partitions).
            if message[1] > self.received:
                raise EngineProcessError(f"snapshot at {message[1]}, received {self.received}")
            self.barriers.append(message[1])
            self._more.set()
        elif kind == "idle":
            await self.idle()
            self.send(("status", self.status()))
            self.send(("reply", None))
        elif kind == "metrics":
            self.metrics = True
            self.send(("status", self.status()))
        elif kind == "external":
            if self.loop is not None:
                self.loop.external.update(message[1])
        elif kind == "stop":
            await self.idle()
            await self.engine.stop(flush=False)
            self.send(("status", self.status()))
            self.send(("reply", None))
            return False
        else:
            raise EngineProcessError(f"unknown message {kind!r}")
        return True


def _rss_bytes() -> int:
    """This process's resident memory (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


async def _serve(sock: socket.socket) -> int:
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
    init = await _read(reader)
    if init is None:
        return 0
    from fogrt.logging import configure

    configure(*init[1]["log"])
    structlog.contextvars.bind_contextvars(process="engine")
    try:
        child = _Child(writer, init[1])
        await child.engine.start()
    except Exception as exc:
        why = str(exc) if isinstance(exc, FogError) else f"{type(exc).__name__}: {exc}"
        log.error("engine_process_failed", error=why)
        writer.write(_frame(("failed", f"the engine process could not start: {why}")))
        await writer.drain()
        return 1
    if init[1]["gc_tuning"]:
        from fogrt.node import _tune_gc

        _tune_gc()
    child.send(("reply", child.instances))
    tasks = [
        asyncio.create_task(child.statuses()),
        asyncio.create_task(child.apply_forever()),
        asyncio.create_task(child.watch_engine()),
    ]
    try:
        while True:
            reading = asyncio.ensure_future(_read(reader))
            done, _ = await asyncio.wait([reading, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                if task in done:
                    reading.cancel()
                    task.result()  # raises why the engine stopped
            message = reading.result()
            if message is None:  # the node is gone (killed): exit like a crash, at once
                log.warning("engine_process_orphaned", consumed=child.consumed)
                os._exit(3)
            if not await child.handle(message):
                break
            await writer.drain()
    except Exception as exc:
        why = str(exc) if isinstance(exc, FogError) else f"{type(exc).__name__}: {exc}"
        log.error("engine_process_failed", error=why)
        with contextlib.suppress(Exception):
            writer.write(_frame(("failed", why)))
            await writer.drain()
        return 1
    finally:
        for task in tasks:
            task.cancel()
    await writer.drain()
    writer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m fogrt.engine.process FD (started by `fogrt run`)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(args[0]))
    # Ctrl-C reaches the whole process group, and a service manager may signal every
    # process of the node: the node drains and checkpoints through this process, so only
    # the node's "stop" (or its end: the socket closes) ends it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from fogrt import aio

    started = time.monotonic()
    code: int = aio.run(_serve(sock))
    log.debug("engine_process_exit", code=code, seconds=round(time.monotonic() - started, 3))
    return code


if __name__ == "__main__":
    sys.exit(main())
