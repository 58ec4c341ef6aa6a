"""Durable state: signed checkpoints of everything a fog node has learned.

A checkpoint is a consistent cut taken between two micro-batches: every operator
instance's snapshot, the deduplication marks, the device registry, the control records,
and the ingest-log offset up to which all of that reflects the log. On start the node
restores the newest valid checkpoint and replays the log from its offset, so every
acknowledged reading changes the state exactly once.

Backends (:mod:`fogrt.state.files` is the embedded default, :mod:`fogrt.state.redis` the
shared one) store opaque signed blobs (:mod:`fogrt.state.sealed`); the contents are
described by :mod:`fogrt.state.checkpoint`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """One stored checkpoint as a backend knows it: its log offset and its sealed bytes."""

    offset: int
    blob: bytes


class StateBackend(abc.ABC):
    """Where checkpoints live. Writes are atomic: a reader sees the old or the new one."""

    url: str = ""

    @abc.abstractmethod
    async def write(self, offset: int, blob: bytes) -> None:
        """Store a checkpoint taken at ``offset`` and keep the ``keep`` newest."""

    @abc.abstractmethod
    async def checkpoints(self) -> list[StoredCheckpoint]:
        """The stored checkpoints, newest first."""

    async def close(self) -> None:
        """Release connections."""
