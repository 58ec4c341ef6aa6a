"""Group commit: appends fill an in-memory batch; one flusher writes and fsyncs it.

``append`` (event-loop thread only) frames the record into the current batch and returns its
offset. The flusher task waits until ``fsync_interval`` has passed since the batch's first
append, or ``fsync_records`` are pending, then hands the whole batch to a single worker
thread (write + fsync, so the event loop never blocks on the disk) and resolves the batch's
one shared future. At most one write+fsync is in flight; appends made meanwhile form the next
batch, so under load batches grow to whatever accumulates during one fsync.

``wait_durable`` hands out that shared :class:`BatchFuture` (no Task or future per append).
It refuses ``cancel()``: a cancelled waiter must not cancel the future its batch-mates await.
A task cancelled while awaiting it gets ``CancelledError`` when the batch completes. To bound
the wait (a stuck disk), use ``asyncio.wait({fut}, timeout=...)``, which does not cancel.
"""

from __future__ import annotations

import asyncio
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from fogrt.errors import StateError
from fogrt.log.errors import LogFullError
from fogrt.log.format import (
    HEADER_SIZE,
    INDEX_MASK,
    LEN_CRC,
    MAX_PAYLOAD,
    REC_HEADER,
    SEAL_SIZE,
    length_crc,
    segment_name,
)
from fogrt.log.segments import Chunk, Segment, SegmentWriter

log = structlog.get_logger("fogrt.log")

_pack_header = REC_HEADER.pack
_crc32 = zlib.crc32
_NO_LIMIT = 1 << 62


class BatchFuture(asyncio.Future[None]):
    """The future shared by every appender of one group commit; ``cancel()`` is refused."""

    def cancel(self, msg: Any | None = None) -> bool:
        return False


class GroupCommit:
    """The write side of the ingest log: batching, the flusher task and the worker thread."""

    def __init__(
        self,
        directory: Path,
        segments: list[Segment],
        writer: SegmentWriter,
        next_offset: int,
        *,
        segment_bytes: int,
        fsync_interval: float,
        fsync_records: int,
        max_disk_bytes: int | None,
    ) -> None:
        self._directory = directory
        self._segments = segments  # shared with the read side; the last one is active
        self._active = segments[-1]
        self._writer = writer
        self._seg_limit = segment_bytes - SEAL_SIZE  # records end here: the seal still fits
        self._interval = fsync_interval
        self._fsync_records = fsync_records
        self._max_disk = _NO_LIMIT if max_disk_bytes is None else max_disk_bytes
        self._next = self._durable = self._pending_start = next_offset
        self._pos = self._active.size
        self._disk = sum(s.size for s in segments)
        self._chunks = [Chunk(self._active, new=False)]
        self._buf = self._chunks[0].data
        self._count = 0  # records in the pending batch
        self._first_at = 0.0
        self._pending_fut: BatchFuture | None = None
        self._inflight_fut: BatchFuture | None = None
        self._done_fut: asyncio.Future[None] | None = None
        self._tail: list[asyncio.Future[None]] = []
        self._running = False  # the flusher is up and accepting appends
        self._closing = False
        self._error: StateError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None

    # -- appending (hot path) ----------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Frame ``payload`` into the pending batch and return its offset (not durable yet)."""
        if not self._running:
            self._start()
        n = len(payload)
        size = n + 8
        pos = self._pos
        if pos + size > self._seg_limit or self._disk + size > self._max_disk:
            pos = self._make_room(n)
        offset = self._next
        self._next = offset + 1
        buf = self._buf
        buf += _pack_header(n, _crc32(payload, LEN_CRC[n] if n < 4096 else length_crc(n)))
        buf += payload
        self._pos = pos + size
        self._disk += size
        if not offset & INDEX_MASK:
            self._active.index.append((offset, pos))  # type: ignore[union-attr]
        count = self._count + 1
        self._count = count
        if count == 1 or count == self._fsync_records:
            self._batch_edge(count)
        return offset

    def wait_durable(self, offset: int) -> asyncio.Future[None]:
        """A future resolved once every record up to ``offset`` is written and fsynced."""
        if offset >= self._pending_start:
            if offset >= self._next:
                raise ValueError(f"offset {offset} has not been appended (end is {self._next})")
            fut = self._pending_fut
            if fut is None:
                fut = self._pending_fut = self._new_future()
            return fut
        if offset >= self._durable:
            fut = self._inflight_fut
            if fut is None:
                fut = self._inflight_fut = self._new_future()
            return fut
        return self._done_future()

    def _make_room(self, n: int) -> int:
        """Roll the segment and/or enforce the disk limit; returns the record's position."""
        if n > MAX_PAYLOAD:
            raise ValueError(f"record of {n} bytes exceeds the limit of {MAX_PAYLOAD}")
        size = n + 8
        roll = self._pos + size > self._seg_limit and self._pos > HEADER_SIZE
        need = size + (SEAL_SIZE + HEADER_SIZE if roll else 0)
        if self._disk + need > self._max_disk:
            raise LogFullError(
                f"ingest log is full: {self._disk} of {self._max_disk} bytes used, "
                f"{need} more needed; release() segments after a checkpoint"
            )
        if roll:
            self._roll()
        return self._pos

    def _roll(self) -> None:
        old = self._active
        self._chunks[-1].end = self._pos
        old.size = self._pos + SEAL_SIZE
        old.next_base = self._next
        new = Segment(self._next, self._directory / segment_name(self._next), HEADER_SIZE, 0, [])
        self._segments.append(new)
        self._active = new
        chunk = Chunk(new, new=True)
        self._chunks.append(chunk)
        self._buf = chunk.data
        self._pos = HEADER_SIZE
        self._disk += SEAL_SIZE + HEADER_SIZE

    def _batch_edge(self, count: int) -> None:
        if count == 1:
            self._first_at = self._loop.time()  # type: ignore[union-attr]
        self._kick()

    def _new_future(self) -> BatchFuture:
        fut = BatchFuture(loop=self._loop or asyncio.get_running_loop())
        if self._error is not None:
            fut.set_exception(self._error)
        return fut

    def _done_future(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut = self._done_fut
        if fut is None or fut.get_loop() is not loop:
            fut = self._done_fut = loop.create_future()
            fut.set_result(None)
        return fut

    # -- the flusher ---------------------------------------------------------------------------

    def _unusable(self) -> StateError:
        """A fresh error to raise (re-raising one instance would grow its traceback)."""
        if self._error is None:
            return StateError("the ingest log is closed")
        err = StateError(str(self._error))
        err.__cause__ = self._error.__cause__
        return err

    def _start(self) -> None:
        if self._error is not None or self._closing:
            raise self._unusable()
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fogrt-log")
        self._task = self._loop.create_task(self._run(), name="fogrt-log-flusher")
        self._running = True

    def _kick(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _sleep(self, delay: float | None) -> None:
        """Until ``_kick`` (an append, close) or ``delay`` seconds, whichever comes first."""
        loop = self._loop
        assert loop is not None
        wakeup = self._wakeup = loop.create_future()
        timer = None if delay is None else loop.call_later(delay, self._kick)
        try:
            await wakeup
        finally:
            self._wakeup = None
            if timer is not None:
                timer.cancel()

    async def _run(self) -> None:
        try:
            while True:
                if not self._count:
                    if self._closing:
                        return
                    await self._sleep(None)
                    continue
                if not self._closing and self._count < self._fsync_records:
                    delay = self._first_at + self._interval - self._loop.time()  # type: ignore[union-attr]
                    if delay > 0:
                        await self._sleep(delay)
                        continue
                await self._flush()
        except asyncio.CancelledError as exc:
            self._fail(exc)
            raise
        except Exception as exc:
            self._fail(exc)

    async def _flush(self) -> None:
        chunks = self._chunks
        chunks[-1].end = self._pos
        fresh = Chunk(self._active, new=False)
        self._chunks, self._buf, self._count = [fresh], fresh.data, 0
        end = self._next
        self._inflight_fut, self._pending_fut = self._pending_fut, None
        self._pending_start = end
        loop = self._loop
        assert loop is not None
        await loop.run_in_executor(self._executor, self._writer.write_batch, chunks)
        self._commit(chunks, end)

    def _commit(self, chunks: list[Chunk], end: int) -> None:
        for chunk in chunks:
            chunk.segment.durable_end = chunk.end
            if chunk.new:
                log.info("segment_rolled", segment=chunk.segment.path.name, base=chunk.segment.base)
        self._durable = end
        fut, self._inflight_fut = self._inflight_fut, None
        if fut is not None:
            fut.set_result(None)
        if self._tail:
            tail, self._tail = self._tail, []
            for waiter in tail:
                if not waiter.done():
                    waiter.set_result(None)

    def _fail(self, exc: BaseException) -> None:
        if self._error is None:
            what = "was cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            self._error = StateError(f"ingest log writer {what}: {exc!r}; records not durable")
            self._error.__cause__ = exc
            log.error("log_failed", error=repr(exc), durable_offset=self._durable)
        self._running = False
        for fut in (self._inflight_fut, self._pending_fut):
            if fut is not None and not fut.done():
                fut.set_exception(self._error)
        self._inflight_fut = self._pending_fut = None
        self._wake_tail(self._error)

    def _wake_tail(self, error: BaseException) -> None:
        tail, self._tail = self._tail, []
        for waiter in tail:
            if not waiter.done():
                waiter.set_exception(error)

    def _progress(self) -> asyncio.Future[None]:
        """A future resolved at the next group commit (one per waiter: cancel-safe)."""
        if self._error is not None or self._closing:
            raise self._unusable()
        fut = asyncio.get_running_loop().create_future()
        self._tail.append(fut)
        return fut

    async def _stop(self) -> None:
        """Flush everything pending, stop the flusher and the worker thread."""
        self._closing = True
        self._running = False
        task = self._task
        try:
            if task is not None and not task.done():
                self._kick()
                await asyncio.wait([task])
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
            self._writer.close()
            self._wake_tail(self._error or StateError("the ingest log is closed"))
        if self._error is not None:
            raise self._unusable()
