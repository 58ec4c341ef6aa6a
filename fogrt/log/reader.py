"""Reading durable records: cursors that remember where the last read stopped.

A read that starts where an earlier one ended continues from that cursor's byte position and
buffer (no seek, no rescan). Any other start offset seeks: the segment is found by bisection,
then the byte position through the segment's sparse index (one entry per ``INDEX_EVERY``
offsets, built while appending or scanning), then at most ``INDEX_EVERY`` headers are skipped.
A segment that was verified at open by its whole-file CRC only is indexed on its first seek.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right

from fogrt.log.errors import LogCorruptError
from fogrt.log.format import (
    HEADER_SIZE,
    LEN_CRC,
    REC_HEADER,
    SEAL_MARK,
    Window,
    length_crc,
    scan_segment,
)
from fogrt.log.segments import Segment

_unpack_header = REC_HEADER.unpack_from
_crc32 = zlib.crc32
MAX_CURSORS = 8


class _Cursor:
    __slots__ = ("offset", "pos", "segment", "window")

    def __init__(self, segment: Segment, offset: int, pos: int) -> None:
        self.segment = segment
        self.offset = offset
        self.pos = pos
        self.window = Window(segment.reader())


class LogReader:
    """Reads records of ``segments`` (the list shared with the write side)."""

    def __init__(self, segments: list[Segment]) -> None:
        self._segments = segments
        self._cursors: dict[int, _Cursor] = {}

    def read(self, start: int, stop: int) -> list[tuple[int, bytes]]:
        """Records [start, stop); the caller checks that all of them are retained and durable."""
        cursor = self._cursors.pop(start, None) or self._seek(start)
        out: list[tuple[int, bytes]] = []
        while cursor.offset < stop:
            seg = cursor.segment
            if seg.next_base is not None and cursor.offset >= seg.next_base:
                cursor = self._next_segment(cursor)
                continue
            seg_stop = stop if seg.next_base is None else min(stop, seg.next_base)
            self._read_segment(cursor, seg_stop, out)
        self._cursors[cursor.offset] = cursor
        if len(self._cursors) > MAX_CURSORS:
            del self._cursors[next(iter(self._cursors))]
        return out

    def forget(self, released: list[Segment]) -> None:
        """Drop cursors into released segments and close their file descriptors."""
        gone = {id(s) for s in released}
        for key, cursor in list(self._cursors.items()):
            if id(cursor.segment) in gone:
                del self._cursors[key]
        for seg in released:
            seg.close_reader()

    def close(self) -> None:
        self._cursors.clear()
        for seg in self._segments:
            seg.close_reader()

    def _next_segment(self, cursor: _Cursor) -> _Cursor:
        done = cursor.segment
        if all(c.segment is not done for c in self._cursors.values()):
            done.close_reader()  # sequential consumers hold one descriptor at a time
        i = bisect_right(self._segments, cursor.offset, key=lambda s: s.base) - 1
        return _Cursor(self._segments[i], cursor.offset, HEADER_SIZE)

    def _seek(self, start: int) -> _Cursor:
        seg = self._segments[bisect_right(self._segments, start, key=lambda s: s.base) - 1]
        if seg.index is None:
            self._build_index(seg)
        index = seg.index or []
        i = bisect_right(index, start, key=lambda e: e[0]) - 1
        offset, pos = index[i] if i >= 0 else (seg.base, HEADER_SIZE)
        cursor = _Cursor(seg, offset, pos)
        self._read_segment(cursor, start, None)
        return cursor

    @staticmethod
    def _build_index(seg: Segment) -> None:
        scan = scan_segment(seg.path, seg.reader(), seg.base, seg.durable_end)
        if scan.bad is not None:
            raise LogCorruptError(seg.path, scan.end, scan.bad)
        seg.index = scan.index

    @staticmethod
    def _read_segment(cursor: _Cursor, stop: int, out: list[tuple[int, bytes]] | None) -> None:
        """Advance ``cursor`` to ``stop`` (in its segment), collecting records into ``out``."""
        win, seg = cursor.window, cursor.segment
        limit = seg.durable_end
        pos, offset = cursor.pos, cursor.offset
        buf, rel = win.buf, pos - win.start
        while offset < stop:
            if rel < 0 or rel + 8 > len(buf):
                buf, rel = _refill(win, seg, pos, 8, limit), 0
            n, crc = _unpack_header(buf, rel)
            end = rel + 8 + n
            if end > len(buf):
                if n == SEAL_MARK or pos + 8 + n > limit:
                    raise LogCorruptError(seg.path, pos, f"bad record length {n}")
                buf, rel = _refill(win, seg, pos, 8 + n, limit), 0
                end = 8 + n
            if out is not None:
                payload = buf[rel + 8 : end]
                if _crc32(payload, LEN_CRC[n] if n < 4096 else length_crc(n)) != crc:
                    raise LogCorruptError(seg.path, pos, "record CRC mismatch")
                out.append((offset, payload))
            pos += end - rel
            rel = end
            offset += 1
        cursor.pos, cursor.offset = pos, offset


def _refill(win: Window, seg: Segment, pos: int, need: int, limit: int) -> bytes:
    if pos + need > limit:
        raise LogCorruptError(seg.path, pos, "record runs past the durable end of the segment")
    win.load(pos, need, limit)
    return win.buf
