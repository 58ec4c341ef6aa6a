"""A fog node in one process: CoAP ingest -> durable log -> engine -> sinks.

Start order: open the ingest log (recovering a torn tail), rebuild deduplication marks and
registrations from it, start the engine and the log consumer, then open the CoAP port.
Stop order: close the CoAP port (stop accepting), wait until everything acknowledged has
been consumed by the engine (drain), stop the engine, close the log.

Until durable state checkpoints exist, the engine rebuilds its state on start by replaying
every retained record of the log in order (so each acknowledged reading is applied once to
the rebuilt models); file sinks are rewritten from the start by that replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from fogrt.control import ControlStore
from fogrt.engine.runner import Engine
from fogrt.event import Event
from fogrt.ingest import record
from fogrt.ingest.endpoint import CoapEndpoint
from fogrt.ingest.registry import DeviceRegistry
from fogrt.ingest.resources import build_site
from fogrt.ingest.service import REGISTRATION_SOURCE, IngestService
from fogrt.ingest.wire import Control, Limits, Registration, WireError
from fogrt.log import IngestLog
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.node")

CONSUME_BATCH = 2048
"""Log records read per step of the consumer (one engine micro-batch per source run)."""


@dataclass
class NodeConfig:
    """Everything ``fogrt run`` can set (the topology says what runs; this, where and how)."""

    coap_host: str = "::"
    coap_port: int = 5683
    state_dir: Path = Path(".fogrt/state")
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
    tick_interval: float = 1.0


class FogNode:
    """One topology served on one CoAP port, with its ingest log and engine."""

    def __init__(self, topology: CompiledTopology, config: NodeConfig | None = None) -> None:
        self.topology = topology
        self.config = config or NodeConfig()
        self.controls = ControlStore(_default_control(topology))
        self.consumed = 0
        self.ingest_log: IngestLog | None = None
        self.engine: Engine | None = None
        self.service: IngestService | None = None
        self.endpoint: CoapEndpoint | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._decoders: dict[str, Any] = {}
        self.started_at = 0.0

    @property
    def address(self) -> tuple[Any, ...]:
        assert self.endpoint is not None, "the node is not started"
        return self.endpoint.address

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
        recovered = self._recover()
        self.consumed = self.ingest_log.start_offset
        self.engine = Engine(
            self.topology, output_dir=cfg.output_dir, tick_interval=cfg.tick_interval
        )
        await self.engine.start()
        self._consumer = asyncio.create_task(self._consume(), name="log-consumer")
        site, _ = build_site(self.service, self._register, self.controls)
        self.endpoint = CoapEndpoint(
            self.service.handle,
            site,
            host=cfg.coap_host,
            port=cfg.coap_port,
            prefixes=self.service.prefixes,
            dedup_lifetime=cfg.dedup_lifetime,
        )
        await self.endpoint.start()
        log.info(
            "node_started",
            topology=self.topology.name,
            coap=_show(self.address),
            state=str(cfg.state_dir),
            recovered_records=recovered,
            paths=self.service.paths(),
        )

    def _recover(self) -> int:
        """Dedup marks and registrations from every retained record (headers only)."""
        assert self.ingest_log is not None and self.service is not None
        offset, end, n = self.ingest_log.start_offset, self.ingest_log.durable_offset, 0
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

    async def _consume(self) -> None:
        """Feed the engine every durable record of the log, in order, exactly once."""
        assert self.ingest_log is not None and self.engine is not None
        ingest_log, engine, decoders = self.ingest_log, self.engine, self._decoders
        while True:
            await ingest_log.wait_for(self.consumed)
            chunk = ingest_log.read(self.consumed, max_records=CONSUME_BATCH)
            run_source: str | None = None
            run: list[Event] = []
            for _, blob in chunk:
                rec = record.decode(blob)
                decoder = decoders.get(rec.source)
                if decoder is None:
                    continue  # registrations, or a source no longer in the topology
                try:
                    events = decoder.decode(rec.body).events(rec.arrival)
                except WireError as exc:  # the schema changed since it was accepted
                    log.warning(
                        "record_undecodable",
                        source=rec.source,
                        device=rec.device,
                        diagnostic=exc.diagnostic,
                    )
                    continue
                if rec.source != run_source and run:
                    await engine.submit(run_source, run)  # type: ignore[arg-type]
                    run = []
                run_source = rec.source
                run.extend(events)
            if run:
                await engine.submit(run_source, run)  # type: ignore[arg-type]
            self.consumed += len(chunk)

    async def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the engine has consumed everything appended; False on timeout."""
        assert self.ingest_log is not None
        deadline = time.monotonic() + timeout
        while self.consumed < self.ingest_log.end_offset:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self) -> None:
        """Stop accepting, drain, stop the engine, close the log."""
        if self.endpoint is not None:
            await self.endpoint.stop()
        drained = await self.drain() if self.ingest_log is not None else True
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
        if self.engine is not None:
            await self.engine.stop(flush=False)
        if self.ingest_log is not None:
            await self.ingest_log.close()
        log.info("node_stopped", drained=drained, consumed=self.consumed)


def _default_control(topology: CompiledTopology) -> Control:
    control = topology.spec.control
    if control is None or control.policy is None:
        return Control()
    params = control.policy.with_
    interval = params.get("interval")
    if control.policy.use == "policy.fixed" and interval is not None:
        from fogrt.types import parse_duration

        seconds = max(1, round(parse_duration(interval)))
        return Control(interval=seconds, sample_period=float(seconds))
    return Control()


def _show(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
