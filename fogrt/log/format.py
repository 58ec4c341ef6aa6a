"""The on-disk format of ingest-log segments, and the record scanner used by recovery.

A segment file is named by the offset of its first record, zero-padded to 20 digits
(``00000000000000004096.seg``) and holds::

    segment header  16 bytes   magic b"FOGLOG\\x00\\x01" (8), u64 base offset
    record          8 + n      u32 payload length n, u32 CRC32(length bytes || payload), payload
    record          ...
    seal            28 bytes   only in a segment that was rolled (see below)

All integers are little-endian. The CRC covers the 4 length bytes and the payload, so a
zero-filled tail (a file extended by a crash but never written) never reads as a valid
empty record. Record offsets are implicit: the base offset plus the record's index.

The *seal* is written when a segment is rolled, before its successor is created::

    u32 0xFFFFFFFF      (a length no record may have: marks the seal)
    u32 CRC32 of the next 20 bytes
    u64 record count    (must equal the successor's base minus this base)
    u64 data length     (byte position of the seal = size of header + records)
    u32 CRC32 of bytes [0, data length)

A sealed segment is therefore verified with one C-speed CRC pass and no per-record Python
work. Only the newest segment is unsealed; recovery scans it record by record.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

SEG_MAGIC = b"FOGLOG\x00\x01"
SEG_HEADER = struct.Struct("<8sQ")
REC_HEADER = struct.Struct("<II")
SEAL = struct.Struct("<IIQQI")
SEAL_BODY = struct.Struct("<QQI")
SEAL_MARK = 0xFFFFFFFF
SEG_SUFFIX = ".seg"

HEADER_SIZE = SEG_HEADER.size  # 16
RECORD_OVERHEAD = REC_HEADER.size  # 8
SEAL_SIZE = SEAL.size  # 28
MAX_PAYLOAD = (1 << 30) - 1

# Sparse in-memory index: the byte position of every record whose offset is a multiple of
# INDEX_EVERY, so that a seek parses at most INDEX_EVERY record headers.
INDEX_EVERY = 1024
INDEX_MASK = INDEX_EVERY - 1

_U32 = struct.Struct("<I")
# CRC32 of the 4 length bytes, precomputed for small payloads (the hot path).
LEN_CRC = [zlib.crc32(_U32.pack(n)) for n in range(4096)]

READ_CHUNK = 1 << 20


def length_crc(n: int) -> int:
    """CRC32 of the little-endian u32 ``n`` (the seed of a record's CRC)."""
    return LEN_CRC[n] if n < 4096 else zlib.crc32(_U32.pack(n))


def record_crc(payload: bytes | memoryview, n: int) -> int:
    return zlib.crc32(payload, length_crc(n))


def encode_record(payload: bytes) -> bytes:
    n = len(payload)
    return REC_HEADER.pack(n, record_crc(payload, n)) + payload


def encode_header(base: int) -> bytes:
    return SEG_HEADER.pack(SEG_MAGIC, base)


def encode_seal(count: int, data_len: int, data_crc: int) -> bytes:
    body = SEAL_BODY.pack(count, data_len, data_crc)
    return SEAL.pack(SEAL_MARK, zlib.crc32(body), count, data_len, data_crc)


def segment_name(base: int) -> str:
    return f"{base:020d}{SEG_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    stem = name[: -len(SEG_SUFFIX)]
    if name.endswith(SEG_SUFFIX) and len(stem) == 20 and stem.isdigit():
        return int(stem)
    return None


@dataclass(frozen=True, slots=True)
class Seal:
    count: int
    data_len: int
    data_crc: int


def decode_seal(raw: bytes | memoryview) -> Seal | None:
    """The seal in ``raw`` (exactly SEAL_SIZE bytes), or None when it is not a valid seal."""
    mark, crc, count, data_len, data_crc = SEAL.unpack(raw)
    if mark != SEAL_MARK or zlib.crc32(raw[8:]) != crc:
        return None
    return Seal(count, data_len, data_crc)


class Window:
    """Buffered positional reads over a file descriptor (no shared file position)."""

    __slots__ = ("buf", "fd", "start")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.start = 0

    def get(self, pos: int, n: int, limit: int) -> memoryview:
        """Bytes [pos, pos + n) (the caller ensures pos + n <= limit, the readable end)."""
        rel = pos - self.start
        if rel < 0 or rel + n > len(self.buf):
            self.load(pos, n, limit)
            rel = 0
        return memoryview(self.buf)[rel : rel + n]

    def load(self, pos: int, n: int, limit: int) -> None:
        """Fill the buffer from ``pos`` with at least ``n`` bytes (up to a chunk, or ``limit``)."""
        self.buf = os.pread(self.fd, min(max(n, READ_CHUNK), limit - pos), pos)
        self.start = pos
        if len(self.buf) < n:
            raise OSError(f"short read at byte {pos}: the file changed underneath the log")


def file_crc(fd: int, end: int) -> int:
    """CRC32 of bytes [0, end) of the file, read in large chunks (releases the GIL)."""
    crc, pos = 0, 0
    while pos < end:
        chunk = os.pread(fd, min(8 * READ_CHUNK, end - pos), pos)
        if not chunk:
            raise OSError(f"short read at byte {pos}")
        crc = zlib.crc32(chunk, crc)
        pos += len(chunk)
    return crc


@dataclass(slots=True)
class Scan:
    """What a record-by-record scan of one segment found."""

    count: int = 0
    end: int = HEADER_SIZE  # byte position after the last good record
    index: list[tuple[int, int]] = field(default_factory=list)
    bad: str | None = None  # why the scan stopped before the end of the file
    seal: Seal | None = None  # a valid seal found at ``end`` (the scan stops there)


def scan_segment(path: Path, fd: int, base: int, size: int) -> Scan:
    """Parse and CRC-check every record from the header to the first bad one or the seal."""
    win = Window(fd)
    out = Scan()
    unpack, crc32, len_crc = REC_HEADER.unpack_from, zlib.crc32, LEN_CRC
    pos, offset = HEADER_SIZE, base
    buf, rel = win.buf, 0
    while pos < size:
        if rel + RECORD_OVERHEAD > len(buf):
            if size - pos < RECORD_OVERHEAD:
                out.bad = "short record header"
                break
            win.load(pos, RECORD_OVERHEAD, size)
            buf, rel = win.buf, 0
        n, crc = unpack(buf, rel)
        if n == SEAL_MARK:
            _scan_seal(out, win, pos, size)
            break
        end = rel + RECORD_OVERHEAD + n
        if end > len(buf):
            if n > size - pos - RECORD_OVERHEAD:
                out.bad = f"short payload (length field {n}, {size - pos - 8} bytes left)"
                break
            win.load(pos, RECORD_OVERHEAD + n, size)
            buf, rel, end = win.buf, 0, RECORD_OVERHEAD + n
        if crc32(memoryview(buf)[rel + 8 : end], len_crc[n] if n < 4096 else length_crc(n)) != crc:
            out.bad = "record CRC mismatch"
            break
        if not offset & INDEX_MASK:
            out.index.append((offset, pos))
        pos += end - rel
        rel = end
        offset += 1
    out.count, out.end = offset - base, pos
    return out


def _scan_seal(out: Scan, win: Window, pos: int, size: int) -> None:
    if size - pos < SEAL_SIZE:
        out.bad = "short seal"
        return
    seal = decode_seal(win.get(pos, SEAL_SIZE, size))
    if seal is None:
        out.bad = "seal CRC mismatch"
    else:
        out.seal = seal
