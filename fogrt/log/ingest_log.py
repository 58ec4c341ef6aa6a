"""The durable ingest log: the fog node acknowledges a reading only once its record is here.

Usage on the ingest path (event-loop thread)::

    log = IngestLog.open(Path("/var/lib/fogrt/log"))
    offset = log.append(payload)          # buffered, not durable yet
    await log.wait_durable(offset)        # shared by the whole group commit
    ...                                   # now answer 2.04

and on the consumer side::

    await log.wait_for(next_offset)       # until the record is durable
    for offset, payload in log.read(next_offset, max_records=512): ...
    log.release(checkpointed_offset)      # retention once a checkpoint covers them

``fsync=False`` still writes every batch but never calls fsync: records survive a crash of
the process, not of the machine. Use it for tests and benchmarks only.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import structlog

from fogrt.errors import StateError
from fogrt.log.errors import OffsetReleasedError
from fogrt.log.format import HEADER_SIZE, MAX_PAYLOAD, RECORD_OVERHEAD, SEAL_SIZE
from fogrt.log.group_commit import GroupCommit
from fogrt.log.reader import LogReader
from fogrt.log.segments import (
    Recovered,
    Segment,
    SegmentWriter,
    fsync_dir,
    lock_directory,
    recover,
)

log = structlog.get_logger("fogrt.log")


class IngestLog(GroupCommit):
    """An append-only, segmented, crash-safe log of opaque records with group commit."""

    @classmethod
    def open(
        cls,
        directory: Path | str,
        *,
        segment_bytes: int = 64 << 20,
        fsync_interval: float = 0.002,
        fsync_records: int = 4096,
        max_disk_bytes: int | None = None,
        fsync: bool = True,
        verify: bool = True,
    ) -> IngestLog:
        """Open (creating if needed) and recover the log in ``directory``.

        ``verify=False`` skips the whole-file CRC of sealed segments at open (their header,
        seal and record count are still checked; reads still check every record's CRC).
        """
        _check_settings(segment_bytes, fsync_interval, fsync_records, max_disk_bytes)
        path = Path(directory)
        lock = lock_directory(path)
        try:
            rec = recover(path, verify=verify, fsync=fsync)
            self = cls(
                path,
                rec,
                lock,
                segment_bytes=segment_bytes,
                fsync_interval=fsync_interval,
                fsync_records=fsync_records,
                max_disk_bytes=max_disk_bytes,
                fsync=fsync,
            )
        except BaseException:
            os.close(lock)
            raise
        log.info(
            "log_opened",
            directory=str(path),
            start_offset=self.start_offset,
            end_offset=self.end_offset,
            segments=len(rec.segments),
            disk_bytes=self.disk_usage,
            bytes_truncated=rec.truncated,
            fsync=fsync,
        )
        return self

    def __init__(
        self,
        directory: Path,
        recovered: Recovered,
        lock_fd: int,
        *,
        segment_bytes: int,
        fsync_interval: float,
        fsync_records: int,
        max_disk_bytes: int | None,
        fsync: bool,
    ) -> None:
        """Use :meth:`open`; this takes over the already-recovered segments."""
        segments = recovered.segments
        super().__init__(
            directory,
            segments,
            SegmentWriter(directory, segments[-1], recovered.active_crc, fsync),
            recovered.next_offset,
            segment_bytes=segment_bytes,
            fsync_interval=fsync_interval,
            fsync_records=fsync_records,
            max_disk_bytes=max_disk_bytes,
        )
        self._fsync = fsync
        self._reader = LogReader(segments)
        self._lock_fd = lock_fd
        self._closed = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def durable_offset(self) -> int:
        """The offset of the first record that is not durable yet (= count of durable records)."""
        return self._durable

    @property
    def end_offset(self) -> int:
        """The offset the next ``append`` will return."""
        return self._next

    @property
    def start_offset(self) -> int:
        """The first retained offset (everything below it was released)."""
        return self._segments[0].base

    @property
    def disk_usage(self) -> int:
        """Bytes of all segment files, counting appended records that are still buffered."""
        return self._disk

    @property
    def fsync_count(self) -> int:
        """fsync calls on segment files so far (one per group commit, plus one per roll)."""
        return self._writer.fsync_count

    @property
    def batch_count(self) -> int:
        """Group commits (write batches) so far."""
        return self._writer.batch_count

    # -- writing -------------------------------------------------------------------------------

    async def append_durable(self, payload: bytes) -> int:
        """Append ``payload`` and return its offset once it is durable."""
        offset = self.append(payload)
        await self.wait_durable(offset)
        return offset

    # -- reading -------------------------------------------------------------------------------

    def read(
        self, start: int, end: int | None = None, max_records: int | None = None
    ) -> list[tuple[int, bytes]]:
        """Durable records with ``start <= offset < end`` (at most ``max_records``), in order.

        Reading on from where the previous read stopped costs no seek. Records that are not
        durable yet are not returned (the list may be short or empty: see ``wait_for``).
        """
        if self._closed:
            raise StateError("the ingest log is closed")
        if start < 0:
            raise ValueError(f"offsets are >= 0, got {start}")
        if start < self.start_offset:
            raise OffsetReleasedError(
                f"offset {start} was released: the log starts at offset {self.start_offset}"
            )
        stop = self._durable
        if end is not None:
            stop = min(stop, end)
        if max_records is not None:
            stop = min(stop, start + max_records)
        if start >= stop:
            return []
        return self._reader.read(start, stop)

    async def wait_for(self, offset: int) -> None:
        """Wait until the record at ``offset`` is durable (``durable_offset > offset``)."""
        while self._durable <= offset:
            await self._progress()

    # -- retention -----------------------------------------------------------------------------

    def release(self, before: int) -> int:
        """Delete whole segments whose records all lie below ``before``; returns bytes freed.

        The active segment and any segment with records not yet durable are kept.
        """
        segs = self._segments
        count = 0
        while (
            count + 1 < len(segs)
            and segs[count + 1].base <= before
            and segs[count + 1].base < self._durable
        ):
            count += 1
        if not count:
            return 0
        gone = segs[:count]
        self._reader.forget(gone)
        freed = 0
        try:
            for seg in gone:  # oldest first: what remains is always a contiguous suffix
                os.unlink(seg.path)
                freed += seg.size
                del segs[0]
            if self._fsync:
                fsync_dir(self._directory)
        finally:
            self._disk -= freed
        log.info(
            "segments_released",
            segments=count,
            bytes_freed=freed,
            start_offset=self.start_offset,
            before=before,
        )
        return freed

    # -- lifecycle -----------------------------------------------------------------------------

    async def close(self) -> None:
        """Write and fsync everything appended, then stop the flusher and its thread."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._stop()
        finally:
            self._reader.close()
            os.close(self._lock_fd)
        log.info("log_closed", end_offset=self._next, durable_offset=self._durable)

    async def __aenter__(self) -> IngestLog:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def segments(self) -> list[Segment]:
        """The retained segments, oldest first (the last one is active)."""
        return list(self._segments)


def _check_settings(
    segment_bytes: int, fsync_interval: float, fsync_records: int, max_disk_bytes: int | None
) -> None:
    smallest = HEADER_SIZE + RECORD_OVERHEAD + SEAL_SIZE
    if not smallest <= segment_bytes <= MAX_PAYLOAD:
        raise ValueError(f"segment_bytes must be in [{smallest}, {MAX_PAYLOAD}]")
    if fsync_interval < 0 or fsync_records < 1:
        raise ValueError("fsync_interval must be >= 0 and fsync_records >= 1")
    if max_disk_bytes is not None and max_disk_bytes < 2 * segment_bytes:
        # The active segment is never released: with less room the log could fill for good.
        raise ValueError("max_disk_bytes must be at least 2 * segment_bytes")


__all__ = ["IngestLog"]
