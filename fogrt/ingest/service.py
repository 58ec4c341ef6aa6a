"""The uplink handler: decode, admit, deduplicate, make durable, answer with control.

For every ``POST /r/<source>`` that reaches the hot path:

1. Content-Format and body are checked against the source's declared fields
   (:class:`~fogrt.ingest.wire.UplinkDecoder`): 4.15, 4.13 or 4.00 with a diagnostic;
2. the device is admitted by the registry (4.01 unknown/unregistered, 5.03 table full);
3. when the engine lags the log by more than ``max_lag`` records, or the log's disk bound
   is reached, the answer is 5.03 with Max-Age: the device backs off and resends later;
4. ``(device, boot, seq)`` is deduplicated; a new uplink is appended to the ingest log;
5. the answer — 2.04 with the device's control delta — is sent only once the record (or,
   for a duplicate, everything appended before it) is durable: the handler returns a
   :class:`~fogrt.ingest.endpoint.Later` on the group commit's shared future, so a whole
   batch of answers costs one callback, not a future per request.

Every rejection is counted by reason in :attr:`IngestService.rejected`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from fogrt.control import ControlStore
from fogrt.ingest import record
from fogrt.ingest.dedup import Deduplicator
from fogrt.ingest.endpoint import Later, Reply, Uplink
from fogrt.ingest.registry import DeviceRegistry
from fogrt.ingest.wire import (
    CONTENT_FORMAT,
    Limits,
    UplinkDecoder,
    WireError,
    check_content_format,
)
from fogrt.ingest.wire import Uplink as DecodedUplink
from fogrt.log import IngestLog, LogFullError
from fogrt.topology.compile import CompiledTopology

log = structlog.get_logger("fogrt.ingest")

REGISTRATION_SOURCE = "@reg"
"""The source name of registration records in the ingest log (never a topology source)."""

_WARN_EVERY = 1000


class IngestService:
    """The hot-path handler of the CoAP endpoint, plus the counters that describe it."""

    def __init__(
        self,
        topology: CompiledTopology,
        ingest_log: IngestLog,
        *,
        registry: DeviceRegistry | None = None,
        controls: ControlStore | None = None,
        limits: Limits | None = None,
        max_lag: int = 100_000,
        retry_after: int = 5,
        consumed: Callable[[], int] = lambda: 0,
    ) -> None:
        self.log = ingest_log
        self.registry = registry or DeviceRegistry()
        self.controls = controls or ControlStore()
        self.dedup = Deduplicator()
        self.max_lag = max_lag
        self.retry_after = retry_after
        self._consumed = consumed
        limits = limits or Limits()
        # (first path segment, the rest) -> (source id, its decoder)
        self.sources: dict[tuple[str, tuple[str, ...]], tuple[str, UplinkDecoder]] = {}
        for node in topology.by_role("source"):
            path = tuple(p for p in (node.coap or f"/r/{node.id}").split("/") if p)
            self.sources[(path[0], path[1:])] = (node.id, UplinkDecoder(node.schema, limits))
        self.prefixes = sorted({prefix for prefix, _ in self.sources})
        self.received = 0
        self.accepted = 0
        self.readings = 0
        self.duplicates = 0
        self.stale = 0
        """Duplicates older than the dedup window or the boots tracked (not applied)."""
        self.rejected: Counter[str] = Counter()
        self.on_ack: Callable[[float], None] | None = None
        """Called with the seconds from request to durable 2.04 (metrics); must be cheap."""
        self._acks: dict[asyncio.Future[None], list[float]] = {}
        # An empty 2.04 carries no Content-Format: the endpoint answers it on its inline path.
        self._ok = Reply("2.04")
        self.decoded: dict[int, tuple[str, DecodedUplink, float]] = {}
        """Uplinks this process appended and the engine has not consumed yet, by log
        offset: the consumer takes them from here instead of decoding the bytes again
        (bounded by ``max_lag``, since beyond it new uplinks are refused)."""
        self.keep_decoded = True
        """False when the engine runs in a process of its own (it decodes the log's bytes)."""

    def paths(self) -> list[str]:
        """The CoAP paths readings are accepted on."""
        return ["/" + "/".join((prefix, *rest)) for prefix, rest in self.sources]

    # -- the handler -----------------------------------------------------------------------

    def handle(self, up: Uplink) -> Reply | Later:
        self.received += 1
        entry = self.sources.get((up.prefix, up.source))
        if entry is None:
            return self._reject(
                "unknown_source",
                "4.04",
                f"no source at /{up.prefix}/{'/'.join(up.source)}".encode()[:100],
            )
        source_id, decoder = entry
        ingest_log = self.log
        if ingest_log.end_offset - self._consumed() > self.max_lag:
            # Before decoding: under overload a refusal must cost as little as possible.
            return self._busy("engine_lag", b"fog node busy, retry later")
        try:
            check_content_format(up.content_format)
            uplink = decoder.decode(up.payload)
        except WireError as exc:
            return self._reject(_reason(exc.code), exc.code, exc.diagnostic.encode())
        device = uplink.device
        refused = self.registry.admit(device)
        if refused is not None:
            if refused == "full":
                return self._busy("devices_full", b"device table full")
            return self._reject(refused, "4.01", f"device {device} is {refused}".encode())
        now = time.time()
        verdict = self.dedup.check(device, uplink.boot, uplink.seq)
        if verdict == "new":
            blob = record.encode(source_id, device, uplink.boot, uplink.seq, now, up.payload)
            try:
                offset = ingest_log.append(blob)
            except LogFullError:
                return self._busy("disk_full", b"fog node storage full, retry later")
            self.dedup.mark(device, uplink.boot, uplink.seq)
            if self.keep_decoded:
                self.decoded[offset] = (source_id, uplink, now)
            self.accepted += 1
            self.readings += len(uplink.readings)
            self.registry.seen(
                device,
                len(uplink.readings),
                uplink.battery_mv,
                uplink.battery_pct,
                now,
                uplink.control_version,
            )
        else:
            self.duplicates += 1
            if verdict == "stale":
                # Older than anything tracked: most likely a device whose boot counter went
                # backwards (flash erased). Acknowledged so it moves on, but not applied.
                self.stale += 1
                if self.stale <= 10 or self.stale % _WARN_EVERY == 0:
                    log.warning(
                        "uplink_stale",
                        device=device,
                        boot=uplink.boot,
                        seq=uplink.seq,
                        count=self.stale,
                    )
            offset = ingest_log.end_offset - 1  # the original was appended before this
        body = self.controls.delta_for(device, uplink.control_version)
        reply = self._ok if not body else Reply("2.04", body, CONTENT_FORMAT)
        if offset < ingest_log.durable_offset:
            if self.on_ack is not None:
                self.on_ack(time.time() - now)
            return reply
        durable = ingest_log.wait_durable(offset)
        if self.on_ack is not None:
            self._ack_when(durable, now)
        return Later(durable, reply)

    def _ack_when(self, durable: asyncio.Future[None], since: float) -> None:
        """Report to ``on_ack`` when ``durable`` succeeds (one callback per future)."""
        waiting = self._acks.get(durable)
        if waiting is None:
            waiting = self._acks[durable] = []
            durable.add_done_callback(self._acked)
        waiting.append(since)

    def _acked(self, durable: asyncio.Future[None]) -> None:
        waiting = self._acks.pop(durable, ())
        on_ack = self.on_ack
        if on_ack is None or durable.cancelled() or durable.exception() is not None:
            return
        now = time.time()
        for since in waiting:
            on_ack(now - since)

    def _reject(self, reason: str, code: str, diagnostic: bytes) -> Reply:
        self.rejected[reason] += 1
        n = self.rejected[reason]
        if n <= 10 or n % _WARN_EVERY == 0:
            log.warning(
                "uplink_rejected",
                reason=reason,
                code=code,
                diagnostic=diagnostic.decode(errors="replace"),
                count=n,
            )
        return Reply(code, diagnostic)

    def _busy(self, reason: str, diagnostic: bytes) -> Reply:
        self.rejected[reason] += 1
        return Reply("5.03", diagnostic, None, self.retry_after)

    def counters(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "accepted": self.accepted,
            "readings": self.readings,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "rejected": dict(self.rejected),
            "devices": len(self.registry.devices),
        }

    # -- recovery --------------------------------------------------------------------------

    def recover(self, rec: record.Record) -> None:
        """Rebuild dedup marks and the registry from one record of the log (on start)."""
        if rec.source == REGISTRATION_SOURCE:
            from fogrt.ingest.wire import decode_registration

            self.registry.register(decode_registration(rec.body))
            return
        self.dedup.mark(rec.device, rec.boot, rec.seq)
        if self.registry.admit(rec.device) is None:
            self.registry.seen(rec.device, 0, None, None, rec.arrival)


def _reason(code: str) -> str:
    return {"4.00": "malformed", "4.13": "too_large", "4.15": "content_format"}.get(code, code)
