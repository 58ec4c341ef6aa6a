"""The ingest-log record: encode/decode round trips, including the cached header bytes."""

from __future__ import annotations

import pytest

from fogrt.errors import StateError
from fogrt.ingest import record


def test_round_trip_for_many_sources_and_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "_HEADS_MAX", 16)  # the header cache fills and starts over
    for n in range(300):
        source, device = f"s{n % 7}", f"dev-{n:05d}"
        body = bytes([n & 0xFF]) * (n % 5)
        blob = record.encode(source, device, n % 9, n, 1.5 * n, body)
        assert record.decode(blob) == record.Record(source, device, n % 9, n, 1.5 * n, body)
        assert blob == record.encode(source, device, n % 9, n, 1.5 * n, body)  # cached head


def test_header_layout_and_refusals() -> None:
    blob = record.encode("src", "dév", 1, 2, 0.5, b"\x81")
    assert blob[:10] == b"\x01\x03src\x04d\xc3\xa9v"
    with pytest.raises(StateError, match="unknown format version"):
        record.decode(b"\x02" + blob[1:])
    with pytest.raises(StateError, match="malformed"):
        record.decode(blob[:12])
