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
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import structlog

from fogrt.control import ControlStore
from fogrt.control.loop import ControlLoop
from fogrt.engine.runner import Engine
from fogrt.errors import StateError
from fogrt.event import Event
from fogrt.ingest import record
from fogrt.ingest.dedup import Deduplicator
from fogrt.ingest.endpoint import CoapEndpoint
from fogrt.ingest.registry import DeviceRegistry
from fogrt.ingest.resources import build_site
from fogrt.ingest.service import REGISTRATION_SOURCE, IngestService
from fogrt.ingest.wire import Limits, Registration, WireError
from fogrt.log import IngestLog
from fogrt.state import StateBackend
from fogrt.state.checkpoint import Checkpoint, pack, unpack
from fogrt.state.sealed import load_key
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.node")

T = TypeVar("T")

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


class FogNode:
    """One topology served on one CoAP port, with its ingest log, engine and state."""

    def __init__(self, topology: CompiledTopology, config: NodeConfig | None = None) -> None:
        self.topology = topology
        self.config = config or NodeConfig()
        self.controls = ControlStore()
        self.control_loop: ControlLoop | None = None
        if topology.control is not None:
            schemas = {n.id: dict(n.schema) for n in topology.by_role("source")}
            self.control_loop = ControlLoop(topology.control, self.controls, schemas)
        self.consumed = 0
        self.ingest_log: IngestLog | None = None
        self.engine: Engine | None = None
        self.service: IngestService | None = None
        self.endpoint: CoapEndpoint | None = None
        self.backend: StateBackend | None = None
        self.checkpoints = CheckpointStats()
        self._key = b""
        self._kept: list[int] = []
        # Dedup marks of the records the engine has applied (the ingest side marks records
        # as they are appended, before they are durable): checkpoints save these, so a
        # reading lost with the log's unsynced tail is never taken for a duplicate.
        self._applied = Deduplicator()
        self._consume_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._decoders: dict[str, Any] = {}
        self.started_at = 0.0

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
        self._decoders = {sid: dec for sid, dec in self.service.sources.values()}
        self.engine = Engine(
            self.topology,
            output_dir=cfg.output_dir,
            tick_interval=cfg.tick_interval,
            resume_sinks=True,  # a restart replays only what follows the checkpoint
        )
        self.backend = _backend(cfg, self.topology.name)
        self._key = load_key(cfg.state_dir)
        if self.control_loop is not None:
            for nid in self.control_loop.control.alerts:
                self.engine.flow.watch(nid, self.control_loop.alert_one)
        restored = await self._restore()
        recovered = self._recover()
        await self.engine.start()
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
            import gc

            # Start-up objects (modules, topology, models) leave the collector's scans, and
            # the batches the log consumer holds trigger far fewer young collections.
            gc.collect()
            gc.freeze()
            gc.set_threshold(20_000, 10, 10)
        log.info(
            "node_started",
            topology=self.topology.name,
            coap=_show(self.address),
            state=self.backend.url,
            checkpoint_offset=restored,
            replay_records=recovered,
            paths=self.service.paths(),
        )

    async def _restore(self) -> int | None:
        """Load the newest checkpoint; None if there is none. Refuses anything untrusted."""
        assert self.backend is not None and self.ingest_log is not None
        assert self.engine is not None and self.service is not None
        stored = await self._stored_checkpoints()
        self.consumed = self.ingest_log.start_offset
        if not stored:
            return None
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
        instances = self.engine.flow.restore(ckpt.operators)
        self.service.dedup.load(ckpt.dedup)
        self._applied.load(ckpt.dedup)
        self.service.registry.load(ckpt.devices)
        self.controls.load(ckpt.controls)
        if self.control_loop is not None:
            self.control_loop.load(ckpt.policies)
        self.consumed = ckpt.offset
        self._kept = sorted(c.offset for c in stored)[-self.config.keep_checkpoints :]
        self.checkpoints.last_offset = ckpt.offset
        self.checkpoints.last_time = ckpt.created
        log.info(
            "checkpoint_restored",
            offset=ckpt.offset,
            instances=instances,
            devices=len(ckpt.devices),
            nbytes=len(newest.blob),
        )
        return ckpt.offset

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
        offset, end, n = self.consumed, self.ingest_log.durable_offset, 0
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
        """Feed the engine every durable record of the log, in order, exactly once."""
        assert self.ingest_log is not None
        while True:
            await self.ingest_log.wait_for(self.consumed)
            async with self._consume_lock:
                await self._consume_chunk()

    async def _consume_chunk(self) -> None:
        assert self.ingest_log is not None and self.engine is not None
        assert self.service is not None
        chunk = self.ingest_log.read(self.consumed, max_records=CONSUME_BATCH)
        decoded = self.service.decoded
        loop = self.control_loop
        run_source: str | None = None
        run: list[Event] = []
        for offset, blob in chunk:
            cached = decoded.pop(offset, None)
            if cached is not None:  # appended by this process: decoded once, at ingest
                source, uplink, arrival = cached
            else:
                rec = record.decode(blob)
                source, arrival = rec.source, rec.arrival
                decoder = self._decoders.get(source)
                if decoder is None:
                    continue  # registrations, or a source no longer in the topology
                try:
                    uplink = decoder.decode(rec.body)
                except WireError as exc:  # the schema changed since it was accepted
                    self._applied.mark(rec.device, rec.boot, rec.seq)
                    log.warning(
                        "record_undecodable",
                        source=rec.source,
                        device=rec.device,
                        diagnostic=exc.diagnostic,
                    )
                    continue
            self._applied.mark(uplink.device, uplink.boot, uplink.seq)
            events = uplink.events(arrival)
            if loop is not None:
                events = loop.observe(source, uplink, events)
            if source != run_source and run_source is not None and run:
                await self.engine.submit(run_source, run)
                run = []
            run_source = source
            run.extend(events)
        if run_source is not None and run:
            await self.engine.submit(run_source, run)
        self.consumed += len(chunk)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the engine has consumed everything appended; False on timeout."""
        assert self.ingest_log is not None and self.engine is not None
        deadline = time.monotonic() + timeout
        while self.consumed < self.ingest_log.end_offset:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        await self.engine.idle()
        return True

    # -- checkpoints -----------------------------------------------------------------------

    async def checkpoint(self) -> int:
        """Take a checkpoint now; returns its offset. Raises if the backend fails."""
        assert self.engine is not None and self.service is not None
        assert self.backend is not None and self.ingest_log is not None
        started = time.perf_counter()
        async with self._consume_lock, self.engine.paused():
            offset = self.consumed
            operators = await _snapshot(self.engine)
            policies = (
                dict(await _sliced(self.control_loop.state_items())) if self.control_loop else {}
            )
            ckpt = Checkpoint(
                offset,
                operators,
                self._applied.state(),
                self.service.registry.state(),
                self.controls.state(),
                policies=policies,
            )
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
        drained = await self.drain() if self.ingest_log is not None else True
        consumer, checkpointer = self._tasks if self._tasks else (None, None)
        if checkpointer is not None:
            checkpointer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpointer
        if self.engine is not None and self.consumed != self.checkpoints.last_offset:
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
        if self.engine is not None:
            await self.engine.stop(flush=False)
        if self.backend is not None:
            await self.backend.close()
        if self.ingest_log is not None:
            await self.ingest_log.close()
        log.info("node_stopped", drained=drained, consumed=self.consumed)


async def _snapshot(engine: Engine) -> dict[str, dict[str, bytes]]:
    """Every operator instance's snapshot, by node id and key (taken in slices)."""
    pairs = ((nid, key, op.snapshot()) for nid, key, op in engine.flow.operator_instances())
    out: dict[str, dict[str, bytes]] = {}
    for nid, key, blob in await _sliced(pairs):
        out.setdefault(nid, {})[key] = blob
    return out


async def _sliced(items: Iterator[T], slice_s: float = 0.002) -> list[T]:
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


def _backend(cfg: NodeConfig, name: str) -> StateBackend:
    if cfg.state_url is None:
        from fogrt.state.files import FileBackend

        return FileBackend(cfg.state_dir, keep=cfg.keep_checkpoints)
    from fogrt.state.redis import RedisBackend

    return RedisBackend(cfg.state_url, name, keep=cfg.keep_checkpoints)


def _show(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
