"""The fog side of a simulation: where the devices send, and what the fog got from them.

- :class:`Target`: the fog node (in this process, or remote) and the source the devices
  post to; :func:`select_source` checks that source against what the edge agent can send.
- :func:`ping`: a CoAP ping, before the devices are pointed at a remote node.
- :func:`fog_view`: what the fog node made durable for the devices, read back from its
  ingest log; :func:`acked_view`: the same as the devices saw it (a remote node's log is
  out of reach, but every 2.04 means durable there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fogrt.errors import FogError, InputError
from fogrt.ingest.wire import UplinkDecoder, WireError
from fogrt.sim.device import VirtualDevice
from fogrt.topology.compile import CompiledTopology
from fogrt.types import FieldType, Value

__all__ = [
    "SYNTHETIC_EPOCH",
    "Target",
    "acked_view",
    "fog_view",
    "ping",
    "select_source",
]

SYNTHETIC_EPOCH = 1_704_067_200.0
"""2024-01-01T00:00Z: simulated time 0 of synthetic data (the daily cycle starts at
midnight), as the device clock the policies see."""


@dataclass
class Target:
    """Where the devices send: a fog node (in this process or not) and its source."""

    host: str
    port: int
    source: str
    schema: Mapping[str, FieldType]
    flash: Path
    """Parent directory of the devices' flash (their boot epochs live there)."""
    node: Any = None
    """The in-process ``FogNode``, or None for a remote one."""
    epoch0: float = SYNTHETIC_EPOCH

    @property
    def remote(self) -> bool:
        return self.node is None


def select_source(
    topology: CompiledTopology, source: str | None
) -> tuple[str, dict[str, FieldType]]:
    """The source the devices post to, checked against what the agent can send."""
    sources = topology.by_role("source")
    ids = [n.id for n in sources]
    if source is None:
        if len(ids) != 1:
            raise InputError(
                f"{topology.file}: the topology has several sources ({', '.join(ids)}); "
                "choose the one the devices post to with --source"
            )
        source = ids[0]
    if source not in ids:
        raise InputError(f"--source {source!r}: the topology's sources are {', '.join(ids)}")
    node = topology.node(source)
    if node.coap not in (None, f"/r/{source}"):
        raise InputError(
            f"{topology.file}: source {source!r} listens on {node.coap}, but the edge agent "
            f"posts to /r/<source> (/r/{source}): set `coap: /r/{source}` or drop it"
        )
    schema = dict(node.schema)
    if len(schema) > 8:
        raise InputError(
            f"{topology.file}: source {source!r} has {len(schema)} fields; the edge agent "
            "sends at most 8 (its RTC memory budget)"
        )
    return source, schema


def ping(host: str, port: int, timeout: float = 1.0, tries: int = 3) -> None:
    """A CoAP ping (an Empty CON, answered with a RST): raises FogError when nothing answers.

    Checked before a run against ``--fog``: the agent would otherwise spend its full CoAP
    retransmission schedule (seconds of real time) on every device before giving up.
    """
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
    except OSError as exc:
        raise FogError(f"--fog {host}:{port}: cannot resolve {host!r}: {exc}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.settimeout(timeout)
        sock.connect(addr)  # connected: an ICMP port unreachable fails the recv at once
        for mid in range(0x5A00, 0x5A00 + tries):
            try:
                sock.send(bytes((0x40, 0x00, mid >> 8, mid & 0xFF)))
                data = sock.recv(64)
            except ConnectionRefusedError:
                break  # nothing listens on that port
            except OSError:
                continue  # a timeout: try again
            if len(data) >= 4 and data[0] >> 4 & 3 == 3 and data[2] << 8 | data[3] == mid:
                return
    raise FogError(
        f"no CoAP answer from {host}:{port} (a ping went unanswered): is a fog node "
        "(`fogrt run TOPOLOGY --coap HOST:PORT`) serving there?"
    )


def fog_view(
    node: Any,
    start: int,
    source: str,
    schema: Mapping[str, FieldType],
    devices: list[VirtualDevice],
) -> dict[str, dict[int, list[Value]]]:
    """What the fog made durable for these devices: device -> sample time (ms) -> values.

    Read back from the node's ingest log (what a 2.04 acknowledged), decoded with the
    source's schema; the sample time of each reading comes from the device's books (the
    uplink's (boot, seq) and the reading's index).
    """
    from fogrt.ingest import record

    by_id = {d.id: d for d in devices}
    out: dict[str, dict[int, list[Value]]] = {d.id: {} for d in devices}
    decoder = UplinkDecoder(schema)
    names = list(schema)
    ingest_log = node.ingest_log
    offset, end = start, ingest_log.durable_offset
    while offset < end:
        chunk = ingest_log.read(offset, end, max_records=8192)
        if not chunk:
            break
        for _, blob in chunk:
            rec = record.decode(blob)
            dev = by_id.get(rec.device)
            if rec.source != source or dev is None:
                continue
            try:
                up = decoder.decode(rec.body)
            except WireError:
                continue
            times = dev.trace.taken.get((rec.boot, rec.seq))
            if times is None:
                continue  # an uplink of an earlier run of the same device id (--state)
            view = out[rec.device]
            for t, (_, fields) in zip(times, up.readings, strict=False):
                view[t] = [fields[n] for n in names]
        offset += len(chunk)
    return out


def acked_view(devices: list[VirtualDevice]) -> dict[str, dict[int, list[Value]]]:
    """A remote fog's view as the devices saw it: every reading of an acknowledged uplink
    (a 2.04 means the reading is durable at the fog node)."""
    out: dict[str, dict[int, list[Value]]] = {}
    for d in devices:
        tr = d.trace
        index = {t: k for k, t in enumerate(tr.sample_ms)}
        view: dict[int, list[Value]] = {}
        for key in tr.acked:
            for t in tr.taken.get(key, ()):
                k = index.get(t)
                if k is not None:
                    view[t] = [None if math.isnan(col[k]) else col[k] for col in tr.values]
        out[d.id] = view
    return out
