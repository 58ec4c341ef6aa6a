"""Replay a CSV file through a topology, as if its rows had arrived from devices.

The reader maps columns to the source's declared fields (by exact name, then by a
normalised name such as ``Volume Flow RateRMS`` -> ``volume_flow_raterms``, then by
``--column field=COLUMN``), parses event time from a column (numbers are seconds since the
epoch times ``time_scale``; text is ISO 8601, naive times are UTC), and keys rows by a
column (default: one device named after the file). Gzip-compressed files are read directly.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Literal

from fogrt.engine.runner import Engine
from fogrt.errors import InputError
from fogrt.event import Event
from fogrt.types import FieldType, Schema, Value

BadValues = Literal["error", "skip", "null"]


def parse_columns(items: list[str]) -> dict[str, str]:
    """``--column FIELD=COLUMN`` options as a mapping; InputError for a malformed one."""
    out = {}
    for item in items:
        name, sep, column = item.partition("=")
        if not sep or not name or not column:
            raise InputError(f"--column {item!r}: expected FIELD=COLUMN")
        out[name] = column
    return out


def normalise(name: str) -> str:
    """Column name -> field-name form: ``Volume Flow RateRMS`` -> ``volume_flow_raterms``."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


_MISSING = frozenset({"NA", "N/A", "NULL", "null", "None", "none", "-"})
"""Cells that mean "no value" in a numeric or boolean column (an empty cell always does)."""

_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false/1/0/yes/no), got {text!r}")


def _parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        as_float = float(text)
        if not as_float.is_integer():
            raise ValueError(f"expected an integer, got {text!r}") from None
        return int(as_float)


_PARSERS: dict[FieldType, Callable[[str], Value]] = {
    "float": float,
    "int": _parse_int,
    "bool": _parse_bool,
    "str": str,
}


def parse_time(text: str, scale: float = 1.0) -> float:
    """Seconds since the epoch from a number (times ``scale``) or an ISO 8601 date-time."""
    try:
        return float(text) * scale
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a number or an ISO 8601 time, got {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@dataclass
class CsvInput:
    """Rows of a CSV file as events of one source, in batches."""

    path: Path
    schema: Schema
    time_column: str | None = None
    key_column: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    delimiter: str | None = None
    time_scale: float = 1.0
    bad_values: BadValues = "error"
    batch_size: int = 512
    rows_read: int = 0
    rows_skipped: int = 0
    values_nulled: int = 0
    _raw: IO[bytes] | None = None

    def open_text(self) -> IO[str]:
        try:
            raw: IO[bytes] = self.path.open("rb")
        except OSError as exc:
            raise InputError(f"{self.path}: cannot open: {exc.strerror}") from None
        self._raw = raw
        stream: IO[bytes] = raw
        if self.path.suffix == ".gz":
            stream = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        return io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")

    def _raw_handle(self) -> IO[bytes]:
        # GzipFile does not close the file object it was given: close it ourselves.
        assert self._raw is not None
        return self._raw

    @property
    def size(self) -> int:
        """Bytes on disk (compressed size for .gz), for progress."""
        return self.path.stat().st_size

    @property
    def position(self) -> int:
        """Bytes of the file consumed so far (compressed bytes for .gz)."""
        return self._raw.tell() if self._raw is not None and not self._raw.closed else 0

    def batches(self) -> Iterator[list[Event]]:
        """Events in file order, ``batch_size`` at a time."""
        with self.open_text() as text, self._raw_handle():
            header_line = text.readline()
            if not header_line:
                raise InputError(f"{self.path}: empty file; expected a header row")
            delimiter = self.delimiter or _sniff(header_line)
            header = next(csv.reader([header_line], delimiter=delimiter))
            plan = self._plan(header)
            reader = csv.reader(text, delimiter=delimiter)
            yield from self._rows(reader, header, plan)

    def _plan(self, header: list[str]) -> _Plan:
        index = {name: i for i, name in enumerate(header)}
        by_norm = {normalise(name): i for i, name in enumerate(header)}

        def find(name: str, what: str) -> int:
            if name in index:
                return index[name]
            if normalise(name) in by_norm:
                return by_norm[normalise(name)]
            raise InputError(
                f"{self.path}: no column {name!r} for {what}; columns are: {', '.join(header)}"
            )

        for fname in self.columns:
            if fname not in self.schema:
                raise InputError(
                    f"--column {fname}=...: {fname!r} is not a field of the "
                    f"source; fields are: {', '.join(self.schema)}"
                )
        fields = []
        for fname, ftype in self.schema.items():
            col = self.columns.get(fname, fname)
            if fname not in self.columns and col not in index and normalise(col) not in by_norm:
                raise InputError(
                    f"{self.path}: no column for field {fname!r}; columns are: "
                    f"{', '.join(header)} (map one with --column {fname}=COLUMN)"
                )
            fields.append((fname, find(col, f"field {fname!r}"), _PARSERS[ftype], ftype))
        t = find(self.time_column, "--time-column") if self.time_column else None
        k = find(self.key_column, "--key-column") if self.key_column else None
        return _Plan(fields, t, k)

    def _rows(
        self, reader: Iterator[list[str]], header: list[str], plan: _Plan
    ) -> Iterator[list[Event]]:
        default_key = self.path.name.split(".")[0]
        seqs: dict[str, int] = {}
        batch: list[Event] = []
        width = len(header)
        t_col, k_col, scale = plan.time, plan.key, self.time_scale
        # The fast path parses every cell of a row at once; any ValueError (an empty cell, a
        # missing-value marker, a bad value) sends that row through the careful path.
        fast = [(name, col, _FAST[ftype]) for name, col, _, ftype in plan.fields]
        parse_t = _TimeParser(scale)
        line = 1
        for row in reader:
            line += 1
            if len(row) != width:
                if not row:
                    continue
                if self._bad(line, f"expected {width} columns, got {len(row)}"):
                    continue
                row = (row + [""] * width)[:width]
            key = row[k_col] if k_col is not None else default_key
            if t_col is not None:
                try:
                    ts = parse_t(row[t_col])
                except ValueError as exc:
                    self._bad(line, f"column {header[t_col]!r}: {exc}", nullable=False)
                    continue
            try:
                values: dict[str, Value] = {name: parse(row[col]) for name, col, parse in fast}
            except ValueError:
                parsed = self._careful(row, header, plan, line)
                if parsed is None:
                    continue
                values = parsed
            seq = seqs.get(key, 0)
            seqs[key] = seq + 1
            if t_col is None:
                ts = float(seq)
            self.rows_read += 1
            batch.append(Event(key, seq, ts, values))
            if len(batch) >= self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch

    def _careful(
        self, row: list[str], header: list[str], plan: _Plan, line: int
    ) -> dict[str, Value] | None:
        """Parse a row cell by cell (missing markers, bad cells); None means skip it."""
        values: dict[str, Value] = {}
        for name, col, parse, ftype in plan.fields:
            cell = row[col]
            if cell == "" or (cell in _MISSING and ftype != "str"):
                values[name] = None
                continue
            try:
                values[name] = parse(cell)
            except ValueError:
                if self._bad(line, f"column {header[col]!r}: expected {ftype}, got {cell!r}"):
                    return None
                values[name] = None
                self.values_nulled += 1
        return values

    def _bad(self, line: int, message: str, *, nullable: bool = True) -> bool:
        """Handle a bad row per policy; True means skip the row.

        Under ``null`` a bad cell becomes missing (and a short row is padded), but a row
        whose time cannot be read is skipped: it has no place in event time.
        """
        if self.bad_values == "error":
            raise InputError(
                f"{self.path}:{line}: {message} (use --bad-values skip|null to carry on)"
            )
        if self.bad_values == "skip" or not nullable:
            self.rows_skipped += 1
            return True
        return False


def _str_or_none(text: str) -> str | None:
    return text if text else None


_FAST: dict[FieldType, Callable[[str], Value]] = {
    "float": float,  # float("") raises: empty cells take the careful path
    "int": _parse_int,
    "bool": _parse_bool,
    "str": _str_or_none,
}


class _TimeParser:
    """Parses a time column, settling on numbers or ISO 8601 after the first cell."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.numeric: bool | None = None

    def __call__(self, text: str) -> float:
        if self.numeric:
            try:
                return float(text) * self.scale
            except ValueError:
                return parse_time(text, self.scale)
        if self.numeric is False:
            try:
                dt = datetime.fromisoformat(text)
            except ValueError:
                return parse_time(text, self.scale)
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        value = parse_time(text, self.scale)
        try:
            float(text)
            self.numeric = True
        except ValueError:
            self.numeric = False
        return value


@dataclass
class _Plan:
    fields: list[tuple[str, int, Callable[[str], Value], FieldType]]
    time: int | None
    key: int | None


def _sniff(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


async def replay(
    engine: Engine, source_id: str, source: CsvInput, progress: Callable[[int], None] | None = None
) -> None:
    """Feed every row of ``source`` to a started engine, then stop it (flushing windows)."""
    try:
        for batch in source.batches():
            await engine.submit(source_id, batch)
            if progress is not None:
                progress(source.position)
    except BaseException:
        await engine.stop(flush=False)
        raise
    await engine.stop()
