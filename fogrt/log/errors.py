"""Errors of the ingest log (all under :class:`fogrt.errors.FogError`)."""

from __future__ import annotations

from pathlib import Path

from fogrt.errors import FogError, StateError


class LogFullError(FogError):
    """``max_disk_bytes`` would be exceeded: the caller refuses the reading (CoAP 5.03)."""


class LogCorruptError(StateError):
    """A segment holds data that cannot be trusted and is not a torn tail: opening is refused."""

    def __init__(self, path: Path, position: int, reason: str) -> None:
        self.path = path
        self.position = position
        self.reason = reason
        super().__init__(f"{path}: corrupt at byte {position}: {reason}")


class OffsetReleasedError(FogError, LookupError):
    """A read asked for records that ``release()`` has already deleted."""
