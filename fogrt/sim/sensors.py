"""What the simulated sensors read: a synthetic signal with a known answer, or a dataset.

A :class:`Signal` gives every virtual node its readings: ``values(device, t)`` is what
device ``device`` (0-based) measures at simulated time ``t`` (seconds since the start of
the simulation), one value per field of the topology's source in declared order. The
same function gives the *true* values the fog's reconstruction is scored against, and
``anomalies(device)`` the ground truth for "anomalies caught".

- :class:`SyntheticSignal` (``--dataset synthetic``): per numeric field a smooth daily
  cycle plus Gaussian noise, and injected anomalies (short spikes, longer level steps) at
  seeded random times. Everything is a pure function of ``(seed, device, field, t)``, so
  every policy of a run sees exactly the same data, and a run is reproducible.
- :class:`DatasetSignal` (``--dataset PATH``): a CSV/CSV.gz with a time column and a key
  column (one key per physical sensor, e.g. the Intel Lab file's ``moteid``). Device ``d``
  replays key ``d mod K`` (keys in natural order), so more devices than keys reuse keys
  round-robin. The value at ``t`` is **sample-and-hold**: the key's latest reading at or
  before dataset time ``t0 + t`` (``t0``: the file's earliest time), field by field (a
  missing cell holds the field's previous value). Before a key's first reading its first
  reading is used. Hold, not interpolation, because it is what a sensor sampled at ``t``
  would have reported last, and it never invents values between two real readings. A label
  column (``label``/``anomaly`` by default) gives the anomalies: each run of labelled rows
  of a key is one anomaly.

Fields of type bool or str have no synthetic generator: they are sent as missing, as a
board sends a declared field that has no sensor.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fogrt.errors import InputError
from fogrt.types import NUMERIC, FieldType, Schema, Value

if TYPE_CHECKING:
    from fogrt.replay import BadValues

__all__ = [
    "DAY",
    "Anomaly",
    "DatasetSignal",
    "Signal",
    "SyntheticSignal",
    "numeric_fields",
]

DAY = 86400.0

TIME_COLUMNS = ("timestamp", "time", "datetime", "date_time", "ts")
"""Time columns looked for, in this order, when ``--time-column`` is not given."""
KEY_COLUMNS = ("moteid", "mote_id", "device", "device_id", "sensor", "sensor_id", "key", "id")
"""Key columns looked for, in this order, when ``--key-column`` is not given."""
LABEL_COLUMNS = ("label", "anomaly", "is_anomaly")
"""Label columns looked for, in this order, when ``--label-column`` is not given."""

_TRUE = frozenset({"true", "t", "yes", "y", "anomaly", "attack", "abnormal"})


@dataclass(frozen=True, slots=True)
class Anomaly:
    """One anomaly of one device: ``[start, end)`` in simulated seconds."""

    device: int
    start: float
    end: float
    kind: str
    """``spike`` or ``step`` (synthetic), ``label`` (a dataset's label column)."""
    field: str | None = None
    """The field it affects (None: the whole reading, as a label says)."""
    magnitude: float = 0.0


class Signal(Protocol):
    """The readings of every simulated device, and the answers to score them against."""

    @property
    def name(self) -> str:
        """``synthetic`` or the dataset's file name (tables, plots)."""

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields of ``values``: the topology source's fields, in declared order."""

    @property
    def duration(self) -> float | None:
        """The natural length of the data in seconds (a dataset's span), None: unbounded."""

    def values(self, device: int, t: float) -> list[Value]:
        """What ``device`` reads at simulated time ``t`` (None: the field has no sensor)."""

    def anomalies(self, device: int, until: float) -> list[Anomaly]:
        """The device's anomalies that start before ``until``, by start time."""

    def label(self, device: int) -> str:
        """Where the device's data comes from (``key 7`` of a dataset, ``synthetic``)."""


def numeric_fields(schema: Schema) -> list[str]:
    return [name for name, ftype in schema.items() if ftype in NUMERIC]


# -- synthetic ----------------------------------------------------------------------------


def _mix(x: int) -> int:
    """splitmix64: a fast, well-mixed 64-bit hash (a counter-based random number source)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def _gauss(*key: int) -> float:
    """A standard normal value that depends only on ``key`` (Box-Muller on two hashes).

    Noise must be a function of (device, field, time) rather than of a running generator:
    policies sample at different moments, and each must see the same signal.
    """
    h = 0
    for k in key:
        h = _mix(h ^ (k & 0xFFFFFFFFFFFFFFFF))
    u1 = ((h >> 11) + 1) / 9007199254740994.0  # (0, 1]: log() is defined
    u2 = (_mix(h) >> 11) / 9007199254740992.0
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@dataclass
class SyntheticSignal:
    """Daily cycle + noise + injected anomalies, per device and numeric field.

    Field ``j`` (``j``-th numeric field) of device ``d``::

        level_j + 0.25*d + amplitude_j * sin(2*pi*(t/day + phase_d)) + noise * N(0, 1)
        level_j = 20 + 10*j, amplitude_j = amplitude * (1 + 0.5*j)

    plus every anomaly of the device on that field: a *spike* (3-10 minutes,
    +-(2..4) x amplitude) or a *step* (30-120 minutes, +-(1..2) x amplitude), starting at
    seeded random times (``anomalies_per_day`` on average per device; none in the first
    hour, so that every policy has settled). Int fields are rounded.

    >>> s = SyntheticSignal({"temp": "float", "door": "bool"}, devices=2, duration=86400)
    >>> s.fields, s.values(0, 0.0)[1]
    (('temp', 'door'), None)
    >>> s.values(1, 3600.0) == s.values(1, 3600.0)
    True
    """

    schema: Schema
    devices: int
    duration: float | None = DAY
    seed: int = 1
    amplitude: float = 2.0
    noise: float = 0.05
    anomalies_per_day: float = 2.0
    name: str = "synthetic"
    _numeric: dict[str, int] = field(init=False, repr=False)
    _anomalies: list[list[Anomaly]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = numeric_fields(self.schema)
        if not names:
            raise InputError(
                "synthetic data fills numeric fields, and the source declares none (fields: "
                + ", ".join(f"{k}: {v}" for k, v in self.schema.items())
                + "); declare a float or int field, or use --dataset PATH"
            )
        self._numeric = {n: j for j, n in enumerate(names)}
        horizon = self.duration if self.duration is not None else 30 * DAY
        self._anomalies = [self._plan(d, horizon) for d in range(self.devices)]

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.schema)

    def _plan(self, device: int, horizon: float) -> list[Anomaly]:
        """The device's anomalies: Poisson arrivals, never overlapping."""
        rng = random.Random(self.seed * 1_000_003 + device)
        names = list(self._numeric)
        out: list[Anomaly] = []
        rate = self.anomalies_per_day / DAY
        t = 3600.0
        while rate > 0:
            t += rng.expovariate(rate)
            if t >= horizon:
                break
            name = names[rng.randrange(len(names))]
            amp = self.amplitude * (1 + 0.5 * self._numeric[name])
            sign = rng.choice((-1.0, 1.0))
            if rng.random() < 0.5:
                length, kind, size = rng.uniform(180, 600), "spike", rng.uniform(2, 4)
            else:
                length, kind, size = rng.uniform(1800, 7200), "step", rng.uniform(1, 2)
            out.append(Anomaly(device, t, t + length, kind, name, sign * size * amp))
            t += length
        return out

    def clean(self, device: int, name: str, t: float) -> float:
        """The noiseless daily cycle of one field (plots)."""
        j = self._numeric[name]
        phase = 0.07 * device
        amp = self.amplitude * (1 + 0.5 * j)
        return 20.0 + 10.0 * j + 0.25 * device + amp * math.sin(2 * math.pi * (t / DAY + phase))

    def values(self, device: int, t: float) -> list[Value]:
        out: list[Value] = []
        ms = round(t * 1000)
        active = [a for a in self._anomalies[device] if a.start <= t < a.end]
        for name, ftype in self.schema.items():
            j = self._numeric.get(name)
            if j is None:
                out.append(None)
                continue
            x = self.clean(device, name, t) + self.noise * _gauss(self.seed, device, j, ms)
            for a in active:
                if a.field == name:
                    x += a.magnitude
            out.append(round(x) if ftype == "int" else x)
        return out

    def anomalies(self, device: int, until: float) -> list[Anomaly]:
        return [a for a in self._anomalies[device] if a.start < until]

    def label(self, device: int) -> str:
        return "synthetic"


# -- datasets -----------------------------------------------------------------------------


def _natural(key: str) -> tuple[int, float | str]:
    try:
        return (0, float(key))
    except ValueError:
        return (1, key)


def _is_true(text: str) -> bool:
    text = text.strip()
    try:
        return float(text) != 0.0
    except ValueError:
        return text.lower() in _TRUE


def _pick(header: Sequence[str], given: str | None, candidates: Sequence[str]) -> str | None:
    if given is not None:
        return given
    lowered = {h.strip().lower(): h for h in header}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    return None


@dataclass
class _Series:
    times: list[float]
    rows: list[list[Value]]  # every field held forward (and the first value held back)
    anomalies: list[tuple[float, float]]


@dataclass
class DatasetSignal:
    """A CSV dataset replayed by the devices, sample-and-hold (see the module docstring).

    Build it with :meth:`load`; ``keys`` are in natural order (``2`` before ``10``).
    """

    name: str
    schema: Schema
    keys: list[str]
    t0: float
    span: float
    series: dict[str, _Series]
    time_column: str
    key_column: str | None
    label_column: str | None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.schema)

    @property
    def duration(self) -> float | None:
        return self.span

    @classmethod
    def load(
        cls,
        path: Path,
        schema: Schema,
        *,
        time_column: str | None = None,
        key_column: str | None = None,
        label_column: str | None = None,
        columns: Mapping[str, str] | None = None,
        time_scale: float = 1.0,
        delimiter: str | None = None,
        bad_values: BadValues = "error",
    ) -> DatasetSignal:
        """Read ``path``; raises InputError naming any field without a column, and (with
        ``bad_values="error"``) the first cell that does not parse as its field's type.
        Empty cells and markers such as ``NA`` are missing values, never errors."""
        from fogrt.replay import CsvInput

        if not path.is_file():
            raise InputError(f"--dataset {path}: no such file (or use --dataset synthetic)")
        header = _header(path, delimiter)
        tcol = _pick(header, time_column, TIME_COLUMNS)
        if tcol is None:
            raise InputError(
                f"{path}: no time column found (looked for {', '.join(TIME_COLUMNS)}); "
                f"columns are: {', '.join(header)}; pass --time-column COL"
            )
        kcol = _pick(header, key_column, KEY_COLUMNS)
        lcol = _pick(header, label_column, LABEL_COLUMNS)
        label_field = "__label__"
        read_schema: dict[str, FieldType] = dict(schema)
        mapping = dict(columns or {})
        if lcol is not None:
            if lcol not in header:
                raise InputError(
                    f"{path}: no label column {lcol!r}; columns are: {', '.join(header)}"
                )
            read_schema[label_field] = "str"
            mapping[label_field] = lcol
        reader = CsvInput(
            path,
            read_schema,
            time_column=tcol,
            key_column=kcol,
            columns=mapping,
            delimiter=delimiter,
            time_scale=time_scale,
            bad_values=bad_values,
        )
        raw: dict[str, list[tuple[float, list[Value], bool]]] = {}
        names = list(schema)
        for batch in reader.batches():
            for ev in batch:
                lab = ev.fields.get(label_field)
                labelled = isinstance(lab, str) and _is_true(lab)
                raw.setdefault(ev.key, []).append(
                    (ev.time, [ev.fields[n] for n in names], labelled)
                )
        if not raw:
            raise InputError(f"{path}: no data rows")
        t0 = min(t for rows in raw.values() for t, _, _ in rows)
        end = max(t for rows in raw.values() for t, _, _ in rows)
        series = {key: _series(rows, t0) for key, rows in raw.items()}
        keys = sorted(series, key=_natural)
        return cls(path.name, dict(schema), keys, t0, end - t0, series, tcol, kcol, lcol)

    def key_of(self, device: int) -> str:
        return self.keys[device % len(self.keys)]

    def values(self, device: int, t: float) -> list[Value]:
        s = self.series[self.key_of(device)]
        i = bisect.bisect_right(s.times, t) - 1
        return list(s.rows[max(i, 0)])

    def anomalies(self, device: int, until: float) -> list[Anomaly]:
        s = self.series[self.key_of(device)]
        return [Anomaly(device, a, b, "label") for a, b in s.anomalies if a < until]

    def label(self, device: int) -> str:
        return f"{self.key_column or 'key'} {self.key_of(device)}"


def _header(path: Path, delimiter: str | None) -> list[str]:
    import csv
    import gzip

    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as f:
                line = f.readline()
        else:
            with path.open(encoding="utf-8-sig", newline="") as f:
                line = f.readline()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from None
    if not line.strip():
        raise InputError(f"{path}: empty file; expected a header row")
    if delimiter is None:
        counts = {d: line.count(d) for d in ",;\t|"}
        delimiter = max(counts, key=lambda d: counts[d])
    return next(csv.reader([line], delimiter=delimiter))


def _series(rows: list[tuple[float, list[Value], bool]], t0: float) -> _Series:
    """Rows sorted by time, every missing value held from the previous reading."""
    rows = sorted(rows, key=lambda r: r[0])
    width = len(rows[0][1])
    first: list[Value] = [None] * width
    for _, values, _ in rows:  # the first value of each field, held back to the start
        for j, v in enumerate(values):
            if first[j] is None and v is not None:
                first[j] = v
    held = list(first)
    times: list[float] = []
    out: list[list[Value]] = []
    anomalies: list[tuple[float, float]] = []
    start: float | None = None
    for t, values, labelled in rows:
        rel = t - t0
        for j, v in enumerate(values):
            if v is not None:
                held[j] = v
        times.append(rel)
        out.append(list(held))
        if labelled and start is None:
            start = rel
        elif not labelled and start is not None:
            anomalies.append((start, rel))  # held until this row replaced the labelled one
            start = None
    if start is not None:
        anomalies.append((start, times[-1] + 1.0))
    return _Series(times, out, anomalies)
