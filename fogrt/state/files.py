"""The embedded default backend: checkpoint files in the state directory.

Each checkpoint is written to a temporary file, fsynced, renamed into place
(``checkpoints/<offset>.ckpt``) and the directory fsynced, so a crash at any moment leaves
either the previous set of checkpoints or the new one, never a half-written file under a
final name. The ``keep`` newest are kept.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fogrt.state import StateBackend, StoredCheckpoint


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileBackend(StateBackend):
    def __init__(self, directory: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.directory = directory / "checkpoints"
        self.keep = keep
        self.url = f"file:{directory}"

    async def write(self, offset: int, blob: bytes) -> None:
        await asyncio.to_thread(self._write, offset, blob)

    def _write(self, offset: int, blob: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{offset:020d}.ckpt"
        tmp = final.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.directory)
        stored = sorted(self.directory.glob("*.ckpt"), reverse=True)
        for old in stored[self.keep :]:
            old.unlink()
        for stray in self.directory.glob("*.tmp"):
            stray.unlink()
        if len(stored) > self.keep:
            _fsync_dir(self.directory)

    async def checkpoints(self) -> list[StoredCheckpoint]:
        return await asyncio.to_thread(self._read)

    def _read(self) -> list[StoredCheckpoint]:
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("*.ckpt"), reverse=True):
            try:
                offset = int(path.stem)
            except ValueError:
                continue
            out.append(StoredCheckpoint(offset, path.read_bytes()))
        return out
