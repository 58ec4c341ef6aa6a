"""Sinks: the only nodes of a topology that do I/O. Async and batched.

A sink receives the events that reach it in order, a micro-batch at a time, through
``write``; ``open`` is awaited before the first batch and ``close`` after the last. The
built-in sinks are registered in :data:`fogrt.registry.SINKS`; third-party packages add
more through the ``fogrt.sinks`` entry-point group.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from fogrt.event import Event
from fogrt.operator import unknown_name_message
from fogrt.types import FieldType, Schema


class Sink(abc.ABC):
    """Base class of sinks. Constructor arguments are validated like operator parameters."""

    kind: ClassVar[str] = ""
    base_dir: Path = Path(".")
    """Where relative output paths resolve (``fogrt replay --output DIR`` sets it)."""
    resume: bool = False
    """Set by a live node: keep what earlier runs wrote (after a restart only the records
    since the last checkpoint are replayed, so truncating would lose output)."""
    input_schema: Schema = {}
    """The fields that can reach this sink, as compiled (set by the engine before ``open``)."""

    async def open(self) -> None:
        """Acquire resources (files, connections). Called once before the first write."""

    @abc.abstractmethod
    async def write(self, events: Sequence[Event]) -> None:
        """Deliver a batch, in order. Raise to signal failure; the engine reports it."""

    async def close(self) -> None:
        """Flush and release resources."""

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        return dict(upstream)

    def describe(self) -> str:
        """One line for banners and summaries (e.g. the output file)."""
        return self.kind

    @staticmethod
    def check_fields(upstream: Schema, fields: list[str] | None) -> None:
        from fogrt.errors import FieldError

        for i, name in enumerate(fields or ()):
            if name not in upstream:
                raise FieldError(("fields", i), unknown_name_message("field", name, list(upstream)))


def event_record(event: Event, fields: list[str] | None) -> dict[str, Any]:
    """The flat record sinks write: device, seq, time, flags, then the fields."""
    rec: dict[str, Any] = {"device": event.key, "seq": event.seq, "time": event.time}
    if fields is None:
        rec.update(event.fields)
    else:
        f = event.fields
        for name in fields:
            rec[name] = f.get(name)
    if event.flags:
        rec["flags"] = event.flag_names()
    return rec
