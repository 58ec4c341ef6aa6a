"""Sinks that write to the process's own output streams."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Literal

from fogrt.event import Event
from fogrt.sinks import Sink, event_record
from fogrt.types import FieldType, Schema


class StdoutSink(Sink):
    """Print each event as one JSON line (``format: json``) or ``key=value`` text.

    YAML::

        sinks:
          - {id: show, use: stdout, from: detect, where: "is_anomaly"}
    """

    kind = "sinks.stdout"

    def __init__(
        self, format: Literal["json", "text"] = "json", fields: list[str] | None = None
    ) -> None:
        self.format = format
        self.fields = fields

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        self.check_fields(upstream, self.fields)
        return dict(upstream)

    async def write(self, events: Sequence[Event]) -> None:
        out = sys.stdout
        if self.format == "json":
            lines = [json.dumps(event_record(e, self.fields), default=str) for e in events]
        else:
            lines = [
                " ".join(f"{k}={v}" for k, v in event_record(e, self.fields).items())
                for e in events
            ]
        out.write("\n".join(lines) + "\n")
        out.flush()
