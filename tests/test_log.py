"""The durable ingest log (fogrt.log): framing, group commit, recovery, retention."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from fogrt.errors import FogError, StateError
from fogrt.log import IngestLog, LogCorruptError, LogFullError, OffsetReleasedError

HEADER = 16  # segment header
REC = struct.Struct("<II")  # record header: length, crc


def payload(i: int) -> bytes:
    return f"reading-{i}:".encode() + bytes([i % 251]) * (i % 37)


async def fill(log: IngestLog, count: int, first: int = 0) -> list[int]:
    offsets = [log.append(payload(i)) for i in range(first, first + count)]
    await log.wait_durable(offsets[-1])
    return offsets


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def record_positions(path: Path) -> list[tuple[int, int]]:
    """(byte position, payload length) of every record of a segment file (stops at a seal)."""
    data = path.read_bytes()
    out, pos = [], HEADER
    while pos + REC.size <= len(data):
        n, _ = REC.unpack_from(data, pos)
        if n == 0xFFFFFFFF or pos + REC.size + n > len(data):
            break
        out.append((pos, n))
        pos += REC.size + n
    return out


def flip_byte(path: Path, position: int) -> None:
    with path.open("r+b") as f:
        f.seek(position)
        byte = f.read(1)
        f.seek(position)
        f.write(bytes([byte[0] ^ 0x55]))


# -- round trip ------------------------------------------------------------------------------


async def test_round_trip_across_segments(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, segment_bytes=512)
    offsets = await fill(log, 300)
    assert offsets == list(range(300))
    assert log.durable_offset == log.end_offset == 300
    assert len(segment_files(tmp_path)) > 5
    assert log.read(0) == [(i, payload(i)) for i in range(300)]
    assert log.read(137, max_records=5) == [(i, payload(i)) for i in range(137, 142)]
    assert log.read(290, end=293) == [(i, payload(i)) for i in range(290, 293)]
    assert log.read(300) == []
    assert all(f.stat().st_size <= 512 for f in segment_files(tmp_path))
    # Sequential consumption in small steps sees every record once, in order.
    seen, nxt = [], 0
    while batch := log.read(nxt, max_records=7):
        seen += batch
        nxt = batch[-1][0] + 1
    assert seen == [(i, payload(i)) for i in range(300)]
    await log.close()

    log = IngestLog.open(tmp_path, segment_bytes=512)
    assert (log.start_offset, log.durable_offset, log.end_offset) == (0, 300, 300)
    assert log.read(211, max_records=3) == [(i, payload(i)) for i in range(211, 214)]
    assert await fill(log, 10, first=300) == list(range(300, 310))
    assert log.read(295) == [(i, payload(i)) for i in range(295, 310)]
    await log.close()


async def test_one_process_at_a_time(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path)
    with pytest.raises(StateError, match="open in another process"):
        IngestLog.open(tmp_path)
    await log.close()
    await IngestLog.open(tmp_path).close()  # the lock is free again


async def test_empty_and_large_records(tmp_path: Path) -> None:
    big = os.urandom(5000)  # larger than a segment: it gets a segment of its own
    async with IngestLog.open(tmp_path, segment_bytes=1024) as log:
        assert await log.append_durable(b"") == 0
        assert await log.append_durable(big) == 1
        assert await log.append_durable(b"after") == 2
    async with IngestLog.open(tmp_path, segment_bytes=1024) as log:
        assert log.read(0) == [(0, b""), (1, big), (2, b"after")]


async def test_read_returns_only_durable_records(tmp_path: Path) -> None:
    async with IngestLog.open(tmp_path, fsync_interval=60.0, fsync_records=10**6) as log:
        log.append(b"pending")
        assert log.read(0) == []
        assert (log.durable_offset, log.end_offset) == (0, 1)
    async with IngestLog.open(tmp_path) as log:
        assert log.read(0) == [(0, b"pending")]


# -- group commit ----------------------------------------------------------------------------


async def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    async with IngestLog.open(tmp_path) as log:
        offsets = await asyncio.gather(*(log.append_durable(payload(i)) for i in range(10_000)))
        assert sorted(offsets) == list(range(10_000))
        assert log.durable_offset == 10_000
        assert 1 <= log.fsync_count < 500
        assert log.batch_count <= log.fsync_count


async def test_waiters_of_one_batch_share_one_future(tmp_path: Path) -> None:
    async with IngestLog.open(tmp_path, fsync_interval=60.0) as log:
        futures = {id(log.wait_durable(log.append(payload(i)))) for i in range(100)}
        assert len(futures) == 1
        await log.close()  # flushes the batch
        assert log.durable_offset == 100


async def test_future_waits_for_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = IngestLog.open(tmp_path, fsync_interval=0.0)
    release, entered = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def blocking_fsync(fd: int) -> None:
        entered.set()
        release.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", blocking_fsync)
    try:
        fut = log.wait_durable(log.append(b"important"))
        while not entered.is_set():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)
        assert not fut.done()
        assert log.durable_offset == 0
        assert log.read(0) == []
    finally:
        release.set()
    await fut
    assert log.durable_offset == 1
    assert log.read(0) == [(0, b"important")]
    await log.close()


async def test_cancelled_waiter_does_not_cancel_its_batch(tmp_path: Path) -> None:
    async with IngestLog.open(tmp_path, fsync_interval=0.05) as log:
        first = asyncio.create_task(log.append_durable(b"a"))
        second = asyncio.create_task(log.append_durable(b"b"))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == 1
        with pytest.raises(asyncio.CancelledError):
            await first
        assert log.read(0) == [(0, b"a"), (1, b"b")]  # cancelling the wait does not unappend


async def test_wait_for_follows_the_tail(tmp_path: Path) -> None:
    async with IngestLog.open(tmp_path, segment_bytes=256) as log:

        async def consume() -> list[tuple[int, bytes]]:
            got: list[tuple[int, bytes]] = []
            while len(got) < 200:
                await log.wait_for(len(got))
                got += log.read(len(got), max_records=3)
            return got

        consumer = asyncio.create_task(consume())
        for i in range(200):
            if i % 10 == 0:
                await log.append_durable(payload(i))
            else:
                log.append(payload(i))
        assert await consumer == [(i, payload(i)) for i in range(200)]
        assert len(log.segments()) > 10


async def test_close_flushes_pending_records(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, fsync_interval=60.0, fsync_records=10**6)
    futures = [log.wait_durable(log.append(payload(i))) for i in range(1000)]
    assert not futures[-1].done()
    await log.close()
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(StateError):
        log.append(b"too late")
    with pytest.raises(StateError):
        await log.wait_for(5000)
    async with IngestLog.open(tmp_path) as log:
        assert log.read(0) == [(i, payload(i)) for i in range(1000)]


async def test_write_failure_fails_waiters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = IngestLog.open(tmp_path)

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    fut = log.wait_durable(log.append(b"x"))
    with pytest.raises(StateError, match="Input/output error"):
        await fut
    assert log.durable_offset == 0
    with pytest.raises(StateError):
        log.append(b"y")
    with pytest.raises(StateError):
        await log.close()


# -- recovery --------------------------------------------------------------------------------


async def write_and_close(directory: Path, count: int, segment_bytes: int = 64 << 20) -> None:
    async with IngestLog.open(directory, segment_bytes=segment_bytes) as log:
        await fill(log, count)


async def reopen_after_damage(directory: Path, expected_count: int, cut: int) -> None:
    with capture_logs() as logs:
        log = IngestLog.open(directory)
    recovered = [e for e in logs if e["event"] == "log_recovered"]
    assert [e["bytes_truncated"] for e in recovered] == [cut]
    assert log.end_offset == log.durable_offset == expected_count
    assert log.read(0) == [(i, payload(i)) for i in range(expected_count)]
    assert await log.append_durable(b"next") == expected_count
    await log.close()
    async with IngestLog.open(directory) as log:
        assert log.read(expected_count) == [(expected_count, b"next")]


async def test_recovery_cuts_a_truncated_record(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 20)
    path = segment_files(tmp_path)[-1]
    size = path.stat().st_size
    os.truncate(path, size - 3)
    await reopen_after_damage(tmp_path, 19, REC.size + len(payload(19)) - 3)


async def test_recovery_cuts_a_torn_header(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 20)
    path = segment_files(tmp_path)[-1]
    last_pos, _ = record_positions(path)[-1]
    os.truncate(path, last_pos + 5)
    await reopen_after_damage(tmp_path, 19, 5)


async def test_recovery_cuts_garbage_after_the_last_record(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 20)
    with segment_files(tmp_path)[-1].open("ab") as f:
        f.write(b"\x07garbage!!!" + bytes(4096))  # junk, then a zero-filled tail
    await reopen_after_damage(tmp_path, 20, 11 + 4096)


async def test_recovery_cuts_a_corrupt_last_record(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 20)
    path = segment_files(tmp_path)[-1]
    last_pos, length = record_positions(path)[-1]
    flip_byte(path, last_pos + REC.size + length // 2)
    await reopen_after_damage(tmp_path, 19, REC.size + length)


async def test_recovery_of_an_interrupted_roll(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 100, segment_bytes=512)
    files = segment_files(tmp_path)
    files[-1].unlink()  # crashed after sealing the previous segment, before its successor
    base = int(files[-2].stem)
    sealed_count = int(files[-1].stem) - base
    async with IngestLog.open(tmp_path, segment_bytes=512) as log:
        assert log.end_offset == base + sealed_count
        assert await log.append_durable(b"x") == base + sealed_count
    files = segment_files(tmp_path)
    os.truncate(files[-1], 7)  # crashed while writing a new segment's header
    async with IngestLog.open(tmp_path, segment_bytes=512) as log:
        assert log.end_offset == int(files[-1].stem)
        assert log.read(0) == [(i, payload(i)) for i in range(base + sealed_count)]


async def test_open_refuses_corruption_in_an_older_segment(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 100, segment_bytes=512)
    oldest = segment_files(tmp_path)[0]
    position, length = record_positions(oldest)[3]
    flip_byte(oldest, position + REC.size + length - 1)
    with pytest.raises(LogCorruptError) as err:
        IngestLog.open(tmp_path, segment_bytes=512)
    assert err.value.path == oldest
    assert err.value.position == position
    assert oldest.name in str(err.value)
    assert f"byte {position}" in str(err.value)
    assert "not a torn tail" in str(err.value)


async def test_open_refuses_a_missing_segment(tmp_path: Path) -> None:
    await write_and_close(tmp_path, 100, segment_bytes=512)
    segment_files(tmp_path)[1].unlink()
    with pytest.raises(LogCorruptError, match="a segment file is missing"):
        IngestLog.open(tmp_path, segment_bytes=512)


def test_crash_loses_no_acknowledged_record(tmp_path: Path) -> None:
    rng = random.Random()
    for run in range(3):
        directory = tmp_path / f"run{run}"
        acknowledged = run_and_kill(directory, wanted_lines=rng.randint(1, 4000), rng=rng)
        assert acknowledged, "the child acknowledged nothing before it was killed"
        log = IngestLog.open(directory, segment_bytes=32 << 10)
        try:
            stored = dict(log.read(0))
            for offset, text in acknowledged.items():
                assert stored.get(offset) == text.encode(), f"offset {offset} lost or changed"
            assert log.end_offset >= max(acknowledged) + 1
        finally:
            asyncio.run(log.close())


def run_and_kill(directory: Path, wanted_lines: int, rng: random.Random) -> dict[int, str]:
    child = Path(__file__).with_name("log_child.py")
    proc = subprocess.Popen(
        [sys.executable, str(child), str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while len(lines) < wanted_lines and (line := proc.stdout.readline()):
            lines.append(line)
        threading.Event().wait(rng.uniform(0, 0.05))
    finally:
        proc.send_signal(signal.SIGKILL)
        lines += proc.stdout.readlines()  # what the child printed before it died
        proc.stdout.close()
        proc.wait()
    acknowledged = {}
    for line in lines:
        if line.endswith("\n"):  # the last line may be cut by the kill
            offset, text = line.rstrip("\n").split(" ", 1)
            acknowledged[int(offset)] = text
    return acknowledged


# -- retention and disk bound ----------------------------------------------------------------


async def test_release_deletes_old_segments(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, segment_bytes=512)
    await fill(log, 300)
    files, usage = segment_files(tmp_path), log.disk_usage
    assert usage == sum(f.stat().st_size for f in files)
    with capture_logs() as logs:
        freed = log.release(150)
    assert freed > 0 and [e["event"] for e in logs] == ["segments_released"]
    assert log.disk_usage == usage - freed == sum(f.stat().st_size for f in segment_files(tmp_path))
    start = log.start_offset
    assert 0 < start <= 150
    assert int(segment_files(tmp_path)[0].stem) == start
    with pytest.raises(OffsetReleasedError, match=f"starts at offset {start}"):
        log.read(start - 1)
    assert log.read(start, max_records=2) == [
        (start, payload(start)),
        (start + 1, payload(start + 1)),
    ]
    assert log.release(start) == 0  # nothing more below
    assert log.release(10**9) > 0  # everything but the active segment
    assert len(segment_files(tmp_path)) == 1
    active = log.start_offset
    await log.close()
    async with IngestLog.open(tmp_path, segment_bytes=512) as log:
        assert (log.start_offset, log.end_offset) == (active, 300)
        assert log.read(active) == [(i, payload(i)) for i in range(active, 300)]


async def test_disk_limit_refuses_then_recovers_after_release(tmp_path: Path) -> None:
    log = IngestLog.open(tmp_path, segment_bytes=1024, max_disk_bytes=4096)
    count = 0
    with pytest.raises(LogFullError) as err:
        while True:
            log.append(payload(count))
            count += 1
    assert isinstance(err.value, FogError)
    assert count > 50 and log.end_offset == count
    assert log.disk_usage <= 4096
    await log.wait_durable(count - 1)
    assert log.release(count) > 0
    assert await log.append_durable(b"fits again") == count
    assert log.read(count) == [(count, b"fits again")]
    await log.close()
