"""Segment files: recovery at open, and the writer that runs in the log's worker thread.

Recovery rules (see :mod:`fogrt.log.format` for the bytes):

- every segment but the newest must be *sealed*: header, seal and the whole-file CRC in the
  seal check out, and the seal's record count equals the gap to the next segment's base
  (so a missing or foreign file shows up). One CRC pass per segment, no per-record work.
  Anything else is corruption in the middle of the log: ``open`` raises
  :class:`LogCorruptError` naming the file and the byte of the first bad record, and never
  skips data;
- the newest segment is scanned record by record and truncated at the first bad record
  (short header, short payload, CRC mismatch, torn seal): that is the torn tail of the last
  group commit, which was never acknowledged. The cut is logged as ``log_recovered``;
- a newest segment whose header is missing or all zeros was being created by a roll: its
  header is rewritten. A newest segment that is sealed gets a fresh successor.
"""

from __future__ import annotations

import fcntl
import os
import zlib
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import structlog

from fogrt.errors import StateError
from fogrt.log.errors import LogCorruptError
from fogrt.log.format import (
    HEADER_SIZE,
    SEAL_SIZE,
    SEG_HEADER,
    SEG_MAGIC,
    Scan,
    decode_seal,
    encode_header,
    encode_seal,
    file_crc,
    parse_segment_name,
    scan_segment,
    segment_name,
)

log = structlog.get_logger("fogrt.log")

_NOT_TAIL = "a newer segment follows, so this is not a torn tail: refusing to skip data"


@dataclass(slots=True, eq=False)
class Segment:
    """What the event-loop side knows about one segment file."""

    base: int
    path: Path
    size: int  # bytes of the file once every appended record is written
    durable_end: int  # bytes [0, durable_end) are durable (header and records)
    index: list[tuple[int, int]] | None  # sparse (offset, byte position); None: not scanned
    next_base: int | None = None  # base of the successor once this segment is rolled
    read_fd: int | None = None

    def reader(self) -> int:
        if self.read_fd is None:
            self.read_fd = os.open(self.path, os.O_RDONLY)
        return self.read_fd

    def close_reader(self) -> None:
        if self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None


@dataclass(slots=True, eq=False)
class Chunk:
    """Bytes of one group commit that go to one segment (``new``: create it first)."""

    segment: Segment
    new: bool
    data: bytearray = field(default_factory=bytearray)
    end: int = 0  # the segment's size after this chunk


@dataclass(slots=True)
class Recovered:
    segments: list[Segment]
    next_offset: int
    active_crc: int  # CRC32 of the active segment's bytes so far (for its seal)
    truncated: int  # bytes cut from the newest segment


def lock_directory(directory: Path) -> int:
    """Take the log's exclusive lock (file ``LOCK``): one process writes a log at a time.

    The kernel drops the lock when the process dies, so a crash never leaves it stale.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(f"{directory}: the ingest log is open in another process") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_segment(directory: Path, base: int, fsync: bool) -> Segment:
    path = directory / segment_name(base)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, encode_header(base))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if fsync:
        fsync_dir(directory)
    return Segment(base, path, HEADER_SIZE, HEADER_SIZE, [])


def recover(directory: Path, *, verify: bool, fsync: bool) -> Recovered:
    """Check and repair the segment files of ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    bases = sorted(
        b for name in os.listdir(directory) if (b := parse_segment_name(name)) is not None
    )
    if not bases:
        seg = create_segment(directory, 0, fsync)
        return Recovered([seg], 0, zlib.crc32(encode_header(0)), 0)
    segments = [
        check_sealed(directory / segment_name(base), base, nxt, verify)
        for base, nxt in pairwise(bases)
    ]
    newest, crc, truncated, count = recover_newest(
        directory / segment_name(bases[-1]), bases[-1], fsync
    )
    segments.append(newest)
    if newest.next_base is None:
        return Recovered(segments, newest.base + count, crc, truncated)
    # The newest segment was sealed (a roll stopped before its successor existed).
    active = create_segment(directory, newest.next_base, fsync)
    segments.append(active)
    return Recovered(segments, active.base, zlib.crc32(encode_header(active.base)), truncated)


def check_sealed(path: Path, base: int, next_base: int, verify: bool) -> Segment:
    """A segment that is not the newest: it must be sealed and intact."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        problem = _sealed_problem(fd, base, next_base - base, size, verify)
        if problem is not None:
            position, reason = _locate(path, fd, base, next_base - base, size, problem)
            raise LogCorruptError(path, position, f"{reason}; {_NOT_TAIL}")
    finally:
        os.close(fd)
    return Segment(base, path, size, size - SEAL_SIZE, None, next_base)


def _header_problem(fd: int, base: int) -> str | None:
    magic, stored = SEG_HEADER.unpack(os.pread(fd, HEADER_SIZE, 0))
    if magic != SEG_MAGIC:
        return "not an ingest-log segment (bad magic)"
    if stored != base:
        return f"header says base offset {stored}, file name says {base}"
    return None


def _sealed_problem(fd: int, base: int, count: int, size: int, verify: bool) -> str | None:
    if size < HEADER_SIZE + SEAL_SIZE:
        return "too short for a sealed segment"
    if (problem := _header_problem(fd, base)) is not None:
        return problem
    seal = decode_seal(os.pread(fd, SEAL_SIZE, size - SEAL_SIZE))
    if seal is None or seal.data_len != size - SEAL_SIZE:
        return "no valid seal at the end of the file"
    if seal.count != count:
        return _gap(seal.count, count)
    if verify and file_crc(fd, seal.data_len) != seal.data_crc:
        return "segment checksum mismatch"
    return None


def _locate(path: Path, fd: int, base: int, count: int, size: int, problem: str) -> tuple[int, str]:
    """Byte position and reason of the first problem in a sealed segment."""
    if size < HEADER_SIZE or _header_problem(fd, base) is not None:
        return 0, problem
    scan = scan_segment(path, fd, base, size)
    if scan.bad is not None:
        return scan.end, f"{scan.bad} (record {base + scan.count})"
    if scan.seal is None:
        return scan.end, "the segment ends without a seal"
    if scan.end + SEAL_SIZE != size:
        return scan.end + SEAL_SIZE, "bytes after the seal"
    if scan.seal.count != scan.count:
        return scan.end, f"the seal counts {scan.seal.count} records, the file holds {scan.count}"
    if scan.count != count:
        return scan.end, _gap(scan.count, count)
    return scan.end, problem


def _gap(held: int, count: int) -> str:
    return (
        f"the segment holds {held} records but the next segment starts {count} offsets later "
        "(a segment file is missing, or does not belong here)"
    )


def recover_newest(path: Path, base: int, fsync: bool) -> tuple[Segment, int, int, int]:
    """Scan the newest segment and cut its torn tail: (segment, crc, bytes cut, records)."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        header = os.pread(fd, HEADER_SIZE, 0)
        if len(header) < HEADER_SIZE or header == bytes(HEADER_SIZE):
            # Created by a roll that did not finish: nothing in it was acknowledged.
            scan, reason = Scan(), "torn segment header"
            os.ftruncate(fd, 0)
            os.pwrite(fd, encode_header(base), 0)
            keep = 0
        elif (problem := _header_problem(fd, base)) is not None:
            raise LogCorruptError(path, 0, problem)
        else:
            scan = scan_segment(path, fd, base, size)
            reason = scan.bad or "bytes after the seal"
            keep = scan.end + (SEAL_SIZE if scan.seal else 0)
            if keep < size:
                os.ftruncate(fd, keep)
        crc = file_crc(fd, scan.end)
        _check_newest_seal(path, scan, crc)
        if fsync and (keep < size or keep == 0):  # cut, or header rewritten
            os.fsync(fd)
    finally:
        os.close(fd)
    if keep < size:
        log.warning(
            "log_recovered",
            segment=path.name,
            bytes_truncated=size - keep,
            position=keep,
            reason=reason,
            records=scan.count,
        )
    size_now = max(keep, HEADER_SIZE)
    next_base = base + scan.count if scan.seal else None
    seg = Segment(base, path, size_now, scan.end, scan.index, next_base)
    return seg, crc, max(size - keep, 0), scan.count


def _check_newest_seal(path: Path, scan: Scan, crc: int) -> None:
    seal = scan.seal
    if seal is None:
        return
    if seal.count != scan.count or seal.data_len != scan.end or seal.data_crc != crc:
        raise LogCorruptError(path, scan.end, "the seal does not match the records before it")


class SegmentWriter:
    """Owns the active segment's file; every method but ``close`` runs in the worker thread."""

    def __init__(self, directory: Path, active: Segment, crc: int, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.base = active.base
        self.pos = active.size
        self.crc = crc
        self.fd = os.open(active.path, os.O_WRONLY)
        self.fsync_count = 0
        self.batch_count = 0

    def write_batch(self, chunks: list[Chunk]) -> None:
        created = False
        for chunk in chunks:
            if chunk.new:
                self._roll(chunk.segment)
                created = True
            if chunk.data:
                self._write(chunk.data)
        if self.fsync:
            os.fsync(self.fd)
            self.fsync_count += 1
            if created:
                fsync_dir(self.directory)
        self.batch_count += 1

    def _write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        pos = self.pos
        while view:
            n = os.pwrite(self.fd, view, pos)
            pos += n
            view = view[n:]
        self.pos = pos
        self.crc = zlib.crc32(data, self.crc)

    def _roll(self, successor: Segment) -> None:
        """Seal the active segment (durably), then create ``successor`` and make it active."""
        self._write(encode_seal(successor.base - self.base, self.pos, self.crc))
        if self.fsync:
            os.fsync(self.fd)
            self.fsync_count += 1
        os.close(self.fd)
        self.fd = -1
        self.fd = os.open(successor.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self.base, self.pos, self.crc = successor.base, 0, 0
        self._write(encode_header(successor.base))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
