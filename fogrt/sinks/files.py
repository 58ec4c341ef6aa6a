"""File sinks: JSON Lines and CSV, appended in event order.

Writes are buffered by the file object and flushed after every batch, so a reader tailing
the file sees whole lines. Relative paths resolve against :attr:`Sink.base_dir`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.sinks import Sink, event_record
from fogrt.types import FieldType, Schema


def _json_default(value: object) -> Any:
    return str(value)


def _clean(value: Any) -> Any:
    # JSON has no NaN/Infinity; write null so every line stays valid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class _FileSink(Sink):
    suffix = ""

    def __init__(self, path: str, fields: list[str] | None = None, append: bool = False) -> None:
        if not path or path.endswith("/"):
            raise ParamError("path", "expected a file path such as out/anomalies" + self.suffix)
        self.path = path
        self.fields = fields
        self.append = append
        self._fh: IO[str] | None = None

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        self.check_fields(upstream, self.fields)
        return dict(upstream)

    @property
    def resolved(self) -> Path:
        p = Path(self.path)
        return p if p.is_absolute() else self.base_dir / p

    def describe(self) -> str:
        return str(self.resolved)

    async def open(self) -> None:
        target = self.resolved
        target.parent.mkdir(parents=True, exist_ok=True)
        keep = self.append or self.resume
        self._fh = target.open("a" if keep else "w", encoding="utf-8", newline="")

    async def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _handle(self) -> IO[str]:
        if self._fh is None:
            raise RuntimeError(f"{self.kind} sink written before open()")
        return self._fh


class JsonlSink(_FileSink):
    """One JSON object per event and line: device, seq, time, flags, then the fields.

    YAML::

        sinks:
          - {id: alerts, use: jsonl, from: detect, where: "is_anomaly",
             with: {path: out/anomalies.jsonl}}
    """

    kind = "sinks.jsonl"
    suffix = ".jsonl"

    async def write(self, events: Sequence[Event]) -> None:
        fh = self._handle()
        dumps = json.dumps
        fields = self.fields
        for e in events:
            rec = {k: _clean(v) for k, v in event_record(e, fields).items()}
            fh.write(dumps(rec, default=_json_default, allow_nan=False))
            fh.write("\n")
        fh.flush()


class CsvSink(_FileSink):
    """CSV with a header: device, seq, time, then ``fields`` (default: all fields reaching it).

    YAML::

        sinks:
          - {id: features, use: csv, from: feats, with: {path: out/features.csv}}
    """

    kind = "sinks.csv"
    suffix = ".csv"

    def __init__(self, path: str, fields: list[str] | None = None, append: bool = False) -> None:
        super().__init__(path, fields, append)
        self._columns: list[str] | None = None
        self._writer: Any = None

    async def write(self, events: Sequence[Event]) -> None:
        fh = self._handle()
        if self._writer is None:
            self._writer = csv.writer(fh)
            # Without `fields`, the columns are every field that can reach this sink, as
            # compiled: a stable header that is known before the first event.
            self._columns = list(self.fields or self.input_schema)
            if not ((self.append or self.resume) and fh.tell() > 0):
                self._writer.writerow(["device", "seq", "time", *self._columns])
        names = self._columns or []
        rows = []
        for e in events:
            f = e.fields
            rows.append(
                [e.key, e.seq, e.time, *("" if f.get(n) is None else f.get(n) for n in names)]
            )
        self._writer.writerows(rows)
        fh.flush()
