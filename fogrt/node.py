"""A fog node in one process: CoAP ingest -> durable log -> engine -> sinks, with checkpoints.

Start: open the ingest log (cutting a torn tail), restore the newest checkpoint (operator
state, dedup marks, registry, control records), rebuild dedup marks and registrations from
the log after the checkpoint's offset, start the engine and the log consumer from that
offset, then open the CoAP port. Every acknowledged reading is therefore applied to the
state exactly once: either it is in the checkpoint, or it is replayed from the log.

Checkpoints are taken every ``checkpoint_every`` seconds (stretched to 20 times the last
checkpoint's duration when that is longer), or after ``checkpoint_records`` new records, and
on shutdown, between two micro-batches: the consumer and the engine pause,
the snapshot is taken (in a thread, while ingest keeps acknowledging), sealed with an HMAC
and written to the state backend. Log segments older than the oldest kept checkpoint are
then released. When the backend is unreachable (Redis down) the node keeps acknowledging
into its local log, retries with back-off, and catches up when it returns.

Stop: close the CoAP port (stop accepting), drain the log into the engine, take a final
checkpoint, stop the engine, close the log.

The engine runs in this process (``engine_process=False``: records this process appended
are not even decoded twice) or in an engine process of its own
(:mod:`fogrt.engine.process`, what ``fogrt run`` does): the node feeds it the log's durable
records, and its snapshots, taken at the records it has applied, make the checkpoints; or
in several, each over a partition of the devices (:mod:`fogrt.engine.partitions`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from fogrt.control import ControlStore
from fogrt.control.loop import ControlLoop
from fogrt.engine.applier import LogApplier, Snapshot, control_loop
from fogrt.engine.partitions import EnginePartitions
from fogrt.engine.process import (
    ControlLoopMirror,
    EngineMirror,
    EngineProcess,
    EngineProcessError,
    Restore,
)
from fogrt.engine.runner import Engine
from fogrt.errors import StateError
from fogrt.ingest import record
from fogrt.ingest.endpoint import CoapEndpoint
from fogrt.ingest.registry import DeviceRegistry
from fogrt.ingest.resources import build_site
from fogrt.ingest.service import REGISTRATION_SOURCE, IngestService
from fogrt.ingest.wire import Limits, Registration
from fogrt.log import IngestLog
from fogrt.state import StateBackend
from fogrt.state.checkpoint import Checkpoint, pack, unpack
from fogrt.state.sealed import load_key
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.node")

CONSUME_BATCH = 2048
"""Log records read per step of the consumer (one engine micro-batch per source run)."""
CHECKPOINT_BUDGET = 20.0
"""A periodic checkpoint comes at least this many times its own duration after the previous
one (at most ~5 % of the time spent checkpointing)."""


@dataclass
class NodeConfig:
    """Everything ``fogrt run`` can set (the topology says what runs; this, where and how)."""

    coap_host: str = "::"
    coap_port: int = 5683
    rcvbuf: int | None = None
    """SO_RCVBUF of the CoAP socket, bytes; None: the system's default (Linux: 208 KiB,
    about 190 small uplinks; a request is capped at ``net.core.rmem_max``, then doubled)."""
    state_dir: Path = Path(".fogrt/state")
    """Local directory of the ingest log (and of checkpoints with the file backend)."""
    state_url: str | None = None
    """``redis://...`` to keep checkpoints in Redis; None: files in ``state_dir``."""
    output_dir: Path | None = None
    registry: DeviceRegistry = field(default_factory=DeviceRegistry)
    limits: Limits = field(default_factory=Limits)
    max_lag: int = 100_000
    retry_after: int = 5
    fsync: bool = True
    fsync_interval: float = 0.002
    segment_bytes: int = 64 << 20
    max_disk_bytes: int | None = None
    dedup_lifetime: float = 60.0
    tick_interval: float | None = 1.0
    checkpoint_every: float = 5.0
    checkpoint_records: int = 200_000
    keep_checkpoints: int = 2
    state_wait: float = 60.0
    """How long start-up waits for an unreachable state backend before giving up."""
    engine_process: bool = False
    """Run the engine (operators, sinks, control policies) in a process of its own, fed
    from the ingest log, so ingest and engine each have a core (``fogrt run`` does)."""
    engines: int = 1
    """Engine processes (with ``engine_process``): more than one partitions the devices among
    them by a hash of the device id (:mod:`fogrt.engine.partitions`; every operator must be
    keyed by device)."""
    gc_tuning: bool = False
    """After start-up, freeze every object alive out of the cyclic garbage collector and
    collect the youngest generation every 20,000 net allocations instead of 700. For a
    process that serves one node for its lifetime (``fogrt run``): frozen objects are never
    collected, and the thresholds are the whole process's."""


@dataclass
class CheckpointStats:
    count: int = 0
    failures: int = 0
    last_offset: int = -1
    last_time: float = 0.0
    last_duration: float = 0.0
    last_bytes: int = 0
    backend_up: bool = True


class _Side(Protocol):
    """Where the engine runs: in this process, or in an engine process."""

    engine: Any
    control_loop: Any
    consumed: int
    failed: asyncio.Event

    async def start(self, offset: int, restore: Restore | None) -> int: ...
    async def feed(self, chunk: Sequence[tuple[int, bytes]]) -> None: ...
    async def snapshot(self) -> Snapshot: ...
    async def idle(self) -> None: ...
    async def stop(self) -> Any: ...


class _Inline:
    """The engine in the node's process: records are applied as the consumer reads them
    (uplinks this process appended are not decoded again)."""

    def __init__(self, node: FogNode, service: IngestService, loop: ControlLoop | None) -> None:
        cfg = node.config
        self.engine = Engine(
            node.topology,
            output_dir=cfg.output_dir,
            tick_interval=cfg.tick_interval,
            resume_sinks=True,  # a restart replays only what follows the checkpoint
            # Little queued between the consumer and the operators: ``consumed`` (what the
            # lag bound and checkpoints go by) stays close to what the operators have seen.
            queue_size=2,
        )
        self.control_loop = loop
        decoders = {sid: dec for sid, dec in service.sources.values()}
        self.applier = LogApplier(node.topology, self.engine, loop, decoders)
        self.decoded = service.decoded
        self.consumed = 0
        self.failed = self.engine.failed

    async def start(self, offset: int, restore: Restore | None) -> int:
        self.consumed = offset
        instances = 0
        if restore is not None:
            instances = self.applier.restore(restore.operators, restore.dedup, restore.policies)
        await self.engine.start()
        return instances

    async def feed(self, chunk: Sequence[tuple[int, bytes]]) -> None:
        await self.applier.apply(chunk, self.decoded)
        self.consumed += len(chunk)

    async def snapshot(self) -> Snapshot:
        async with self.engine.paused():
            operators, policies = await self.applier.snapshot()
            return self.consumed, operators, self.applier.applied.state(), policies

    async def idle(self) -> None:
        await self.engine.idle()

    async def stop(self) -> None:
        try:
            await self.engine.stop(flush=False)
        except Exception:  # a sink failure, logged when it happened
            if not self.engine.failed.is_set():
                raise


class FogNode:
    """One topology served on one CoAP port, with its ingest log, engine and state."""

    def __init__(self, topology: CompiledTopology, config: NodeConfig | None = None) -> None:
        self.topology = topology
        self.config = config or NodeConfig()
        self.controls = ControlStore()
        self._loop = control_loop(topology, self.controls)
        self._process: EngineProcess | EnginePartitions | None = None
        self.control_loop: ControlLoop | ControlLoopMirror | None = self._loop
        if self.config.engine_process and self.config.engines > 1:
            self._process = EnginePartitions(
                topology,
                self.controls,
                self._loop,
                self.config.engines,
                output_dir=self.config.output_dir,
                tick_interval=self.config.tick_interval,
                limits=self.config.limits,
                gc_tuning=self.config.gc_tuning,
            )
            self.control_loop = self._process.control_loop
        elif self.config.engines > 1:
            raise ValueError("engine partitions (engines > 1) need engine_process=True")
        elif self.config.engine_process:
            self._process = EngineProcess(
                topology,
                self.controls,
                self._loop,
                output_dir=self.config.output_dir,
                tick_interval=self.config.tick_interval,
                limits=self.config.limits,
                gc_tuning=self.config.gc_tuning,
            )
            self.control_loop = self._process.control_loop
        self._side: _Side | EnginePartitions | None = None
        self.ingest_log: IngestLog | None = None
        self.engine: Engine | EngineMirror | None = None
        self.service: IngestService | None = None
        self.endpoint: CoapEndpoint | None = None
        self.backend: StateBackend | None = None
        self.checkpoints = CheckpointStats()
        self._key = b""
        self._kept: list[int] = []
        self._fed = 0
        """Records handed to the engine side (the engine process may not have applied them
        yet: ``consumed`` says how far it has)."""
        self._consume_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = 0.0
        self.failed = asyncio.Event()
        """Set when the engine failed (a sink failed, or the engine process died): the node
        cannot apply readings any more (``fogrt run`` stops and exits 1)."""

    @property
    def consumed(self) -> int:
        """Records of the log the engine has taken in (its checkpoint offset if stopped
        now)."""
        return self._side.consumed if self._side is not None else self._fed

    @property
    def engine_pid(self) -> int | None:
        """The engine process's pid (the first partition's; None: the engine runs in this
        process)."""
        pids = self.engine_pids
        return pids[0] if pids else None

    @property
    def engine_pids(self) -> list[int]:
        """The pids of the engine processes (one per partition; none when inline)."""
        process = self._process
        if isinstance(process, EnginePartitions):
            return process.pids
        return [process.pid] if process is not None and process.pid is not None else []

    @property
    def address(self) -> tuple[Any, ...]:
        assert self.endpoint is not None, "the node is not started"
        return self.endpoint.address

    # -- start -------------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        self.started_at = time.time()
        self.ingest_log = IngestLog.open(
            cfg.state_dir / "log",
            fsync=cfg.fsync,
            fsync_interval=cfg.fsync_interval,
            segment_bytes=cfg.segment_bytes,
            max_disk_bytes=cfg.max_disk_bytes,
        )
        self.service = IngestService(
            self.topology,
            self.ingest_log,
            registry=cfg.registry,
            controls=self.controls,
            limits=cfg.limits,
            max_lag=cfg.max_lag,
            retry_after=cfg.retry_after,
            consumed=lambda: self.consumed,
        )
        side: _Side | EnginePartitions
        if self._process is not None:
            self.service.keep_decoded = False
            side = self._process
        else:
            side = _Inline(self, self.service, self._loop)
        self.engine = side.engine
        self.failed = side.failed
        self.backend = _backend(cfg, self.topology.name)
        self._key = load_key(cfg.state_dir)
        restored, restore = await self._restore()
        self._fed = self.ingest_log.start_offset if restored is None else restored
        recovered = self._recover()
        try:
            instances = await side.start(self._fed, restore)
        except BaseException:
            await side.stop()  # the engine process, if it started, is told to go
            await self.ingest_log.close()
            self.ingest_log = None
            raise
        self._side = side
        if restore is not None:
            log.info(
                "checkpoint_restored",
                offset=restored,
                instances=instances,
                devices=len(self.service.registry.devices),
            )
        self._tasks = [
            asyncio.create_task(self._consume(), name="log-consumer"),
            asyncio.create_task(self._checkpointer(), name="checkpointer"),
        ]
        site, _ = build_site(self.service, self._register, self.controls)
        self.endpoint = CoapEndpoint(
            self.service.handle,
            site,
            host=cfg.coap_host,
            port=cfg.coap_port,
            prefixes=self.service.prefixes,
            dedup_lifetime=cfg.dedup_lifetime,
            max_body=cfg.limits.max_payload,
            rcvbuf=cfg.rcvbuf,
        )
        await self.endpoint.start()
        if cfg.gc_tuning:
            _tune_gc()
        log.info(
            "node_started",
            topology=self.topology.name,
            coap=_show(self.address),
            state=self.backend.url,
            checkpoint_offset=restored,
            replay_records=recovered,
            paths=self.service.paths(),
            engine="inline" if self._process is None else "process",
            engine_pids=self.engine_pids,
        )

    async def _restore(self) -> tuple[int | None, Restore | None]:
        """Load the newest checkpoint: its offset and the engine's part of it (None, None if
        there is none). Refuses anything untrusted."""
        assert self.backend is not None and self.ingest_log is not None
        assert self.service is not None
        stored = await self._stored_checkpoints()
        if not stored:
            return None, None
        newest = stored[0]
        what = f"checkpoint {newest.offset} in {self.backend.url}"
        ckpt = unpack(newest.blob, self.topology, self._key, what=what)
        if ckpt.offset < self.ingest_log.start_offset:
            raise StateError(
                f"{what} needs the ingest log from offset {ckpt.offset}, but it "
                f"starts at {self.ingest_log.start_offset}"
            )
        if ckpt.offset > self.ingest_log.durable_offset:
            raise StateError(
                f"{what} is ahead of the ingest log ({ckpt.offset} > "
                f"{self.ingest_log.durable_offset}): it belongs to another log"
            )
        self.service.dedup.load(ckpt.dedup)
        self.service.registry.load(ckpt.devices)
        self.controls.load(ckpt.controls)
        self._kept = sorted(c.offset for c in stored)[-self.config.keep_checkpoints :]
        self.checkpoints.last_offset = ckpt.offset
        self.checkpoints.last_time = ckpt.created
        log.debug("checkpoint_loaded", offset=ckpt.offset, nbytes=len(newest.blob))
        restore = Restore(ckpt.operators, ckpt.dedup, ckpt.policies, ckpt.controls)
        return ckpt.offset, restore

    async def _stored_checkpoints(self) -> list[Any]:
        """The backend's checkpoints; waits (with back-off) while it is unreachable."""
        assert self.backend is not None
        deadline = time.monotonic() + self.config.state_wait
        delay = 0.5
        while True:
            try:
                return await self.backend.checkpoints()
            except StateError:
                raise
            except Exception as exc:
                if time.monotonic() + delay > deadline:
                    raise StateError(
                        f"state backend {self.backend.url} unreachable for "
                        f"{self.config.state_wait:g} s: {exc}"
                    ) from None
                self.checkpoints.backend_up = False
                log.warning(
                    "state_backend_unavailable",
                    url=self.backend.url,
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _recover(self) -> int:
        """Dedup marks and registrations from the records after the restored offset."""
        assert self.ingest_log is not None and self.service is not None
        offset, end, n = self._fed, self.ingest_log.durable_offset, 0
        while offset < end:
            chunk = self.ingest_log.read(offset, end, max_records=8192)
            for _, blob in chunk:
                self.service.recover(record.decode(blob))
            n += len(chunk)
            offset += len(chunk)
        return n

    async def _register(self, reg: Registration, body: bytes) -> str | None:
        """``POST /reg``: admit, log (durably, so it survives a restart), answer."""
        assert self.ingest_log is not None and self.service is not None
        refused = self.service.registry.register(reg)
        if refused is None:
            blob = record.encode(REGISTRATION_SOURCE, reg.device, 0, 0, time.time(), body)
            await self.ingest_log.append_durable(blob)
        return refused

    # -- the log consumer ------------------------------------------------------------------

    async def _consume(self) -> None:
        """Hand the engine every durable record of the log, in order, exactly once."""
        assert self.ingest_log is not None and self._side is not None
        ingest_log, side = self.ingest_log, self._side
        try:
            while True:
                await ingest_log.wait_for(self._fed)
                async with self._consume_lock:
                    chunk = ingest_log.read(self._fed, max_records=CONSUME_BATCH)
                    await side.feed(chunk)
                    self._fed += len(chunk)
        except EngineProcessError:
            self.failed.set()

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the engine has consumed everything appended; False on timeout (or if
        the engine process failed)."""
        assert self.ingest_log is not None and self._side is not None
        deadline = time.monotonic() + timeout
        while self.consumed < self.ingest_log.end_offset:
            if time.monotonic() > deadline or self._side.failed.is_set():
                return False
            await asyncio.sleep(0.01)
        try:
            await asyncio.wait_for(self._side.idle(), max(0.0, deadline - time.monotonic()))
        except (TimeoutError, EngineProcessError):
            return False
        return True

    # -- checkpoints -----------------------------------------------------------------------

    async def checkpoint(self) -> int:
        """Take a checkpoint now; returns its offset. Raises if the backend fails."""
        assert self._side is not None and self.service is not None
        assert self.backend is not None and self.ingest_log is not None
        started = time.perf_counter()
        side = self._side
        if isinstance(side, EnginePartitions):  # feeding goes on while partitions answer
            (offset, operators, dedup, policies), controls = await side.snapshot(self._consume_lock)
            registry = self.service.registry.state()
        else:
            async with self._consume_lock:
                offset, operators, dedup, policies = await side.snapshot()
                registry, controls = self.service.registry.state(), self.controls.state()
        ckpt = Checkpoint(offset, operators, dedup, registry, controls, policies=policies)
        blob = await asyncio.to_thread(pack, ckpt, self.topology, self._key)
        await self.backend.write(offset, blob)
        self._kept = sorted({*self._kept, offset})[-self.config.keep_checkpoints :]
        self.ingest_log.release(self._kept[0])
        stats = self.checkpoints
        stats.count += 1
        stats.last_offset = offset
        stats.last_time = time.time()
        stats.last_duration = time.perf_counter() - started
        stats.last_bytes = len(blob)
        if not stats.backend_up:
            log.info("state_backend_recovered", url=self.backend.url)
        stats.backend_up = True
        log.info(
            "checkpoint_written",
            offset=offset,
            nbytes=len(blob),
            seconds=round(stats.last_duration, 3),
            instances=sum(map(len, operators.values())),
        )
        return offset

    def _checkpoint_period(self) -> float:
        """Seconds until the next periodic checkpoint: ``checkpoint_every``, stretched so that
        checkpoints take at most ``1 / CHECKPOINT_BUDGET`` of the time (with thousands of
        devices a checkpoint of every instance takes a while, and competes with ingest for
        the one core and for the disk's fsyncs)."""
        return max(self.config.checkpoint_every, CHECKPOINT_BUDGET * self.checkpoints.last_duration)

    async def _checkpointer(self) -> None:
        cfg = self.config
        backoff = 1.0
        due = time.monotonic() + cfg.checkpoint_every
        while True:
            await asyncio.sleep(0.2)
            behind = self.consumed - max(self.checkpoints.last_offset, 0)
            if time.monotonic() < due and behind < cfg.checkpoint_records:
                continue
            if self.consumed == self.checkpoints.last_offset:
                due = time.monotonic() + cfg.checkpoint_every
                continue
            try:
                await self.checkpoint()
                backoff = 1.0
                due = time.monotonic() + self._checkpoint_period()
            except EngineProcessError:
                self.failed.set()
                return
            except Exception as exc:  # backend down: keep serving, retry with back-off
                self.checkpoints.failures += 1
                self.checkpoints.backend_up = False
                log.warning(
                    "checkpoint_failed",
                    url=self.backend.url if self.backend else "",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in=backoff,
                )
                due = time.monotonic() + backoff
                backoff = min(backoff * 2, 30.0)

    # -- stop --------------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop accepting, drain, take a final checkpoint, stop the engine, close the log."""
        if self.endpoint is not None:
            await self.endpoint.stop()
        side = self._side
        failed = side is not None and side.failed.is_set()
        drained = False
        if side is not None and not failed:
            drained = await self.drain()
        consumer, checkpointer = self._tasks if self._tasks else (None, None)
        if checkpointer is not None:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
        ok = side is not None and not side.failed.is_set()
        if ok and self.consumed != self.checkpoints.last_offset:
            try:
                await self.checkpoint()
            except Exception as exc:
                log.warning(
                    "checkpoint_failed", error=f"{type(exc).__name__}: {exc}", at="shutdown"
                )
        if consumer is not None:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
        if side is not None:
            await side.stop()
        if self.backend is not None:
            await self.backend.close()
        if self.ingest_log is not None:
            await self.ingest_log.close()
        log.info("node_stopped", drained=drained, consumed=self.consumed)


def _tune_gc() -> None:
    """Start-up objects (modules, topology, models) leave the collector's scans, and the
    batches the log consumer holds trigger far fewer young collections."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def _backend(cfg: NodeConfig, name: str) -> StateBackend:
    if cfg.state_url is None:
        from fogrt.state.files import FileBackend

        return FileBackend(cfg.state_dir, keep=cfg.keep_checkpoints)
    from fogrt.state.redis import RedisBackend

    return RedisBackend(cfg.state_url, name, keep=cfg.keep_checkpoints)


def _show(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
