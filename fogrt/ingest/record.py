"""The ingest-log record: what is made durable before a reading is acknowledged.

One record per accepted uplink::

    u8   format version (1)
    u8   length of the source id, then the source id (UTF-8)
    u8   length of the device id, then the device id (UTF-8)
    u32  boot epoch          (little-endian)
    u32  sequence number
    f64  arrival time at the fog node (epoch seconds)
    ...  the uplink body exactly as received and validated (msgpack)

Keeping the body as received makes the append cheap and the record self-describing; the
header lets recovery rebuild deduplication marks without decoding bodies.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from fogrt.errors import StateError

VERSION = 1
_TAIL = struct.Struct("<IId")
_pack_tail = _TAIL.pack


@dataclass(slots=True)
class Record:
    """One decoded record. Read-only by convention: not ``frozen``, which would make each
    construction several times slower (recovery and replay build one per record)."""

    source: str
    device: str
    boot: int
    seq: int
    arrival: float
    body: bytes


_HEADS_MAX = 1 << 15
_heads: dict[str, dict[str, bytes]] = {}
"""The header bytes before the boot epoch, by source then device (bounded, rebuilt at will)."""


def encode(source: str, device: str, boot: int, seq: int, arrival: float, body: bytes) -> bytes:
    by_device = _heads.get(source)
    if by_device is None:
        if len(_heads) >= 256:
            _heads.clear()
        by_device = _heads[source] = {}
    head = by_device.get(device)
    if head is None:
        s = source.encode()
        d = device.encode()
        head = bytes((VERSION, len(s))) + s + bytes((len(d),)) + d
        if len(by_device) >= _HEADS_MAX:
            by_device.clear()
        by_device[device] = head
    return b"".join((head, _pack_tail(boot, seq, arrival), body))


def decode(blob: bytes) -> Record:
    """Parse a record written by :func:`encode` (raises StateError on anything else)."""
    try:
        if blob[0] != VERSION:
            raise StateError(f"ingest record of unknown format version {blob[0]}")
        n = blob[1]
        source = blob[2 : 2 + n].decode()
        i = 2 + n
        m = blob[i]
        device = blob[i + 1 : i + 1 + m].decode()
        i += 1 + m
        boot, seq, arrival = _TAIL.unpack_from(blob, i)
        return Record(source, device, boot, seq, arrival, blob[i + _TAIL.size :])
    except (IndexError, UnicodeDecodeError, struct.error) as exc:
        raise StateError(f"malformed ingest record: {exc}") from None
