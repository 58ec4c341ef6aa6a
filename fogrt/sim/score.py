"""Scoring a simulation run: what reached the fog, energy, reconstruction error, anomalies.

For each device of a run (:func:`evaluate`):

- **sent**: readings that reached the fog (in the node's ingest log, or acknowledged by a
  remote node), against the samples the device took;
- **energy**: the device's :class:`~fogrt.sim.energy.EnergyMeter` over the simulated time:
  mAh per day, and the battery life it projects (``Board.capacity_mah``, self-discharge);
- **reconstruction error**: at every sample time, the fog's value against the sample the
  device took (the dataset's or the generator's true value). The fog's value is what the
  transmit protocol lets it assume: the reading when it arrived; otherwise, under
  ``predict``, the forecast of the predictor both sides run (over the values the fog knows),
  and under ``delta`` (or a lost reading) the last value received. This mirrors the agent's
  ``Predictor`` with the control the device applied at that sample, with one idealisation:
  the fog is given the exact sample times, where a real one infers them from the gaps.
  By construction the error of a suppressed sample is at most the control's epsilon (plus
  float32 rounding: readings travel as float32); samples before the fog heard anything
  are counted as unknown, not as errors;
- **anomalies**: the ground truth of the signal (injected, or a dataset's label column).
  *Caught*: a reading taken during the anomaly reached the fog (the transmit policy did not
  hide it from the fog's detectors); *missed*: every other one — those the device sampled
  but did not send, and those no sample fell into (``unsampled``: a sample period longer
  than the anomaly).

:mod:`fogrt.sim.report` shows the results (table, summary JSON, plots).
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fogrt.ingest.wire import Control
from fogrt.sim.energy import Board, battery_life_days
from fogrt.sim.policies import PolicySpec
from fogrt.sim.sensors import Signal, numeric_fields
from fogrt.types import FieldType, Value

__all__ = [
    "GRID_S",
    "Anomalies",
    "DeviceResult",
    "FieldError",
    "PolicyResult",
    "Series",
    "evaluate",
    "grid_error",
    "reconstruct",
]

NAIVE = (0.0, 1.0)
GRID_S = 60.0
"""Step of the common time grid the reconstruction is also scored on (``rmse_grid``)."""


@dataclass
class FieldError:
    """Squared-error sums of one field's reconstruction."""

    sq: float = 0.0
    n: int = 0
    max_abs: float = 0.0
    unknown: int = 0

    def add(self, other: FieldError) -> None:
        self.sq += other.sq
        self.n += other.n
        self.max_abs = max(self.max_abs, other.max_abs)
        self.unknown += other.unknown

    @property
    def rmse(self) -> float | None:
        return math.sqrt(self.sq / self.n) if self.n else None


@dataclass
class Anomalies:
    total: int = 0
    caught: int = 0
    unsampled: int = 0

    @property
    def missed(self) -> int:
        return self.total - self.caught

    def add(self, other: Anomalies) -> None:
        self.total += other.total
        self.caught += other.caught
        self.unsampled += other.unsampled


@dataclass
class Series:
    """One device's watched field over time, and its charge (plots)."""

    times: list[float]
    truth: list[float]
    fog: list[float]
    battery_times: list[float]
    battery_mah: list[float]
    anomalies: list[tuple[float, float]]


@dataclass
class DeviceResult:
    id: str
    data: str
    samples: int
    sent: int
    uplinks: int
    datagrams: int
    unacked: int
    """Readings in uplinks still unacknowledged when the run ended (waiting on the device)."""
    missing: int
    """Readings of acknowledged uplinks that the fog does not have (must be 0)."""
    refused: list[str]
    """Why uplinks the agent sent do not decode (must be empty: agent and topology agree)."""
    charge_mah: float
    mah_per_day: float
    battery_days: float
    errors: dict[str, FieldError]
    grid_errors: dict[str, FieldError]
    anomalies: Anomalies
    series: Series | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "device": self.id,
            "data": self.data,
            "samples": self.samples,
            "sent": self.sent,
            "uplinks": self.uplinks,
            "datagrams": self.datagrams,
            "unacked": self.unacked,
            "missing": self.missing,
            "refused": self.refused[:10],
            "charge_mah": _r(self.charge_mah),
            "mah_per_day": _r(self.mah_per_day),
            "battery_days": _r(self.battery_days),
            "rmse": {k: _r(e.rmse) for k, e in self.errors.items()},
            "max_error": {k: _r(e.max_abs) for k, e in self.errors.items()},
            "rmse_grid": {k: _r(e.rmse) for k, e in self.grid_errors.items()},
            "anomalies": _anomalies_json(self.anomalies),
        }


@dataclass
class PolicyResult:
    """One policy's run of the whole fleet."""

    spec: PolicySpec
    description: str
    devices: list[DeviceResult]
    duration_s: float
    wall_s: float
    board: Board
    fields: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def samples(self) -> int:
        return sum(d.samples for d in self.devices)

    @property
    def sent(self) -> int:
        return sum(d.sent for d in self.devices)

    @property
    def sent_pct(self) -> float | None:
        return 100.0 * self.sent / self.samples if self.samples else None

    @property
    def mah_per_day(self) -> float:
        """Mean load of a device, mAh/day."""
        return sum(d.mah_per_day for d in self.devices) / max(1, len(self.devices))

    @property
    def battery_days(self) -> float:
        """Projected battery life at the mean load."""
        return battery_life_days(self.mah_per_day, self.board)

    def errors(self, grid: bool = False) -> dict[str, FieldError]:
        """Per field, pooled over the devices: at the sample times, or on the grid."""
        out = {f: FieldError() for f in self.fields}
        for d in self.devices:
            for f, e in (d.grid_errors if grid else d.errors).items():
                out[f].add(e)
        return out

    def anomalies(self) -> Anomalies:
        total = Anomalies()
        for d in self.devices:
            total.add(d.anomalies)
        return total

    def as_json(self, baseline: PolicyResult | None = None) -> dict[str, Any]:
        errors = self.errors()
        out: dict[str, Any] = {
            "policy": self.spec.name,
            "spec": self.label,
            "params": dict(self.spec.params),
            "control": self.description,
            "devices": len(self.devices),
            "duration_s": _r(self.duration_s),
            "wall_s": _r(self.wall_s),
            "samples": self.samples,
            "sent": self.sent,
            "sent_pct": _r(self.sent_pct),
            "uplinks": sum(d.uplinks for d in self.devices),
            "datagrams": sum(d.datagrams for d in self.devices),
            "unacked": sum(d.unacked for d in self.devices),
            "missing": sum(d.missing for d in self.devices),
            "refused": sum(len(d.refused) for d in self.devices),
            "mah_per_day": _r(self.mah_per_day),
            "battery_days": _r(self.battery_days),
            "energy_vs_baseline_pct": None,
            "rmse": {k: _r(e.rmse) for k, e in errors.items()},
            "max_error": {k: _r(e.max_abs) for k, e in errors.items()},
            "rmse_grid": {k: _r(e.rmse) for k, e in self.errors(grid=True).items()},
            "grid_s": GRID_S,
            "unknown_samples": {k: e.unknown for k, e in errors.items()},
            "anomalies": _anomalies_json(self.anomalies()),
            "per_device": [d.as_json() for d in self.devices],
        }
        if baseline is not None and baseline.mah_per_day > 0:
            out["energy_vs_baseline_pct"] = _r(
                100.0 * (self.mah_per_day / baseline.mah_per_day - 1.0)
            )
        return out


def _r(x: float | None, digits: int = 6) -> float | None:
    """Rounded for JSON; None for unknown and non-finite values (JSON has no inf)."""
    if x is None or not math.isfinite(x):
        return None
    return round(x, digits)


def _anomalies_json(a: Anomalies) -> dict[str, int]:
    return {"total": a.total, "caught": a.caught, "missed": a.missed, "unsampled": a.unsampled}


# -- scoring ------------------------------------------------------------------------------


def _forecast(c: Sequence[float], hist: list[float]) -> float | None:
    """The agent's forecast, summed in its order: c0, + c1*h[0], + c2*h[1], ..."""
    k = len(c) - 1
    if len(hist) < k:
        return None
    p = c[0]
    for i in range(k):
        p += c[i + 1] * hist[i]
    return p


def _num(v: Value) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def reconstruct(
    trace: Any, view: Mapping[int, list[Value]], columns: list[int]
) -> tuple[list[FieldError], list[array[float]]]:
    """The fog's reconstruction error per column (see the module docstring), and the fog's
    value of each column at every sample time (NaN where it knows none)."""
    errors = [FieldError() for _ in columns]
    estimates = [array("d") for _ in columns]
    hist: list[list[float]] = [[] for _ in columns]
    last: list[float | None] = [None] * len(columns)
    controls: list[Control] = trace.controls
    for k, t in enumerate(trace.sample_ms):
        ctl = controls[trace.sample_control[k]]
        got = view.get(t)
        predict = ctl.tx == "predict"
        coeffs = ctl.coeffs or NAIVE
        depth = max(len(coeffs) - 1, 1) if predict else 0
        for n, j in enumerate(columns):
            raw = trace.values[j][k]
            x = None if math.isnan(raw) else raw
            h = hist[n]
            if got is not None:
                est = _num(got[j])
                v = est
                if est is not None:
                    last[n] = est
            elif predict:
                est = v = _forecast(coeffs, h) if x is not None else None
            else:  # delta: within epsilon of the last value sent; always: a lost reading
                est, v = last[n], None
            err = errors[n]
            if x is None:
                pass
            elif est is None:
                err.unknown += 1
            else:
                d = est - x
                err.sq += d * d
                err.n += 1
                err.max_abs = max(err.max_abs, abs(d))
            if not depth:
                h.clear()
            elif v is not None:
                h.insert(0, v)
                del h[depth:]
            estimates[n].append(math.nan if est is None else est)
    return errors, estimates


def grid_error(
    signal: Signal,
    device: int,
    column: int,
    sample_ms: Sequence[int],
    estimate: Sequence[float],
    step: float = GRID_S,
) -> FieldError:
    """The fog's reconstruction against the true signal every ``step`` seconds between the
    first and the last sample: linear between the fog's values at the two samples around
    each point (what operators/policy's dual prediction reconstructs). Unlike the error at
    the sample times it charges a policy for sampling less often."""
    err = FieldError()
    known = [(t / 1000, v) for t, v in zip(sample_ms, estimate, strict=True) if not math.isnan(v)]
    if len(known) < 2:
        return err
    times = [t for t, _ in known]
    t = math.ceil(times[0] / step) * step
    while t <= times[-1]:
        i = bisect.bisect_right(times, t) - 1
        (t0, v0), (t1, v1) = known[i], known[min(i + 1, len(known) - 1)]
        fog = v0 if t1 <= t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        x = _num(signal.values(device, t)[column])
        if x is not None:
            d = fog - x
            err.sq += d * d
            err.n += 1
            err.max_abs = max(err.max_abs, abs(d))
        t += step
    return err


def evaluate(
    spec: PolicySpec,
    description: str,
    devices: Sequence[Any],
    view: Mapping[str, Mapping[int, list[Value]]],
    signal: Signal,
    schema: Mapping[str, FieldType],
    board: Board,
    duration: float,
    wall: float,
    series_devices: int = 1,
) -> PolicyResult:
    """Score every device of a run (``devices``: :class:`~fogrt.sim.device.VirtualDevice`)."""
    names = list(schema)
    numeric = numeric_fields(schema)
    columns = [names.index(f) for f in numeric]
    results = []
    for d in devices:
        tr = d.trace
        fog = view.get(d.id, {})
        errors, estimates = reconstruct(tr, fog, columns)
        grid = [
            grid_error(signal, d.index, j, tr.sample_ms, est)
            for j, est in zip(columns, estimates, strict=True)
        ]
        sent_times = {t for key in tr.acked for t in tr.taken.get(key, ())}
        unacked = sum(len(v) for key, v in tr.taken.items() if key not in tr.acked)
        anomalies = _score_anomalies(signal.anomalies(d.index, duration), tr.sample_ms, fog)
        series = None
        if d.index < series_devices and columns:
            series = Series(
                [t / 1000 for t in tr.sample_ms],
                list(tr.values[columns[0]]),
                list(estimates[0]),
                [t / 1000 for t in tr.battery_ms],
                list(tr.battery_mah),
                [  # those visible in the plotted field (a label marks the whole reading)
                    (a.start, a.end)
                    for a in signal.anomalies(d.index, duration)
                    if a.field in (None, numeric[0])
                ],
            )
        meter = d.meter
        results.append(
            DeviceResult(
                id=d.id,
                data=signal.label(d.index),
                samples=len(tr.sample_ms),
                sent=len(fog),
                uplinks=len(tr.acked),
                datagrams=tr.datagrams,
                unacked=unacked,
                missing=len(sent_times - fog.keys()),
                refused=list(tr.refused),
                charge_mah=meter.charge_mah,
                mah_per_day=meter.mah_per_day(),
                battery_days=meter.battery_life_days(),
                errors=dict(zip(numeric, errors, strict=True)),
                grid_errors=dict(zip(numeric, grid, strict=True)),
                anomalies=anomalies,
                series=series,
            )
        )
    return PolicyResult(spec, description, results, duration, wall, board, numeric)


def _score_anomalies(
    anomalies: Sequence[Any], sample_ms: Sequence[int], fog: Mapping[int, Any]
) -> Anomalies:
    out = Anomalies()
    for a in anomalies:
        lo = bisect.bisect_left(sample_ms, round(a.start * 1000))
        hi = bisect.bisect_left(sample_ms, round(a.end * 1000))
        out.total += 1
        if lo >= hi:
            out.unsampled += 1  # missed: no sample fell into it (sampling too sparse)
            continue
        if any(sample_ms[k] in fog for k in range(lo, hi)):
            out.caught += 1
    return out
