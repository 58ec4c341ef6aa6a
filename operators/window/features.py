"""Window features: what each one means, how it is accumulated and how it is finished.

Every window operator (tumbling, sliding, session) summarises its numeric fields with the
same features, parsed once by :func:`parse_features` into a :class:`FeatureSpec`.

Two kinds of state back them, chosen by what is asked for:

- **streaming**, O(1) per field and window: ``[n, mean, M2, min, max]`` (Welford) gives
  ``mean``, ``std``, ``var``, ``min``, ``max``, ``ptp``, ``peak`` and ``rms``; ``slope``
  adds the running mean of time and two co-moments (Welford again, on times relative to
  the first one, so epoch-sized times lose no precision);
- **buffered**: ``skew``, ``kurtosis``, quantiles, ``zero_crossings`` and ``bands`` need the
  window's values (and their times, to put them in order), kept in ``array('d')`` buffers
  (8 bytes a value) and computed with numpy when the window closes. They are exact.

Accumulators are plain lists indexed by the constants below: a "basic" accumulator holds
the first five slots only (the hot path of ``window.tumbling``), a "full" one all eleven.
Partial accumulators merge exactly (Chan et al.), which is how sliding windows combine
their panes and sessions join when an out-of-order event bridges two of them.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fogrt.errors import ParamError
from fogrt.operator import unknown_name_message
from fogrt.types import Fields, FieldType, Value

# Slots of an accumulator (a list): count, mean, sum of squared deviations, min, max; then,
# in full accumulators only, the first time seen (times are kept relative to it: epoch
# times would lose the precision a slope over milliseconds needs), the mean of times, their
# M2, the time/value co-moment, and the time and value buffers (None when no buffered
# feature is asked for).
N, MEAN, M2, MIN, MAX, T0, MT, M2T, CTV, TS, VS = range(11)

Acc = list[Any]

_INF = math.inf
_EPS = float(np.finfo(float).eps)

WINDOW_LEVEL = ("count", "duration")
"""Features of the window itself, not of a field: emitted once, without a prefix."""
STREAMING = ("mean", "std", "var", "min", "max", "ptp", "peak", "rms")
"""Per-field features computed from ``[n, mean, M2, min, max]``."""
BUFFERED = ("skew", "kurtosis", "zero_crossings", "bands")
"""Per-field features (with the quantiles ``q<p>``) that need the window's values."""
KNOWN = (*WINDOW_LEVEL, *STREAMING, "slope", *BUFFERED)
_QUANTILE = re.compile(r"q(\d{1,3})")
_HINTS = {
    "median": "use q50 for the median",
    "peak_to_peak": "use ptp",
    "variance": "use var",
    "stddev": "use std",
    "fft": "use bands (with the bands parameter)",
    "zcr": "use zero_crossings",
}


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """What a window operator computes, settled once from its parameters."""

    count: bool
    """Emit ``count``: events in the window (``int``)."""
    duration: bool
    """Emit ``duration``: seconds between the first and the last event of the window."""
    per_field: tuple[str, ...]
    """Per-field features in the order given (``bands`` is one entry here)."""
    bands: tuple[tuple[float, float], ...]
    """Frequency bands ``[lo, hi)`` in Hz, for ``bands``."""
    rate: float | None
    """Sample rate in Hz for ``bands``; None: derived from each window's timestamps."""
    slope: bool
    buffer: bool
    basic: bool
    """Every per-field feature comes from ``[n, mean, M2, min, max]`` (the fast path)."""

    def outputs(self, name: str) -> tuple[tuple[str, str], ...]:
        """``(feature, output field)`` pairs of one input field; bands become ``band<i>``."""
        return _outputs(self, name)

    def _outputs(self, name: str) -> tuple[tuple[str, str], ...]:
        out: list[tuple[str, str]] = []
        for feature in self.per_field:
            if feature == "bands":
                out.extend((f"band{i}", f"{name}_band{i}") for i in range(len(self.bands)))
            else:
                out.append((feature, f"{name}_{feature}"))
        return tuple(out)

    def schema(self, names: Iterable[str]) -> dict[str, FieldType]:
        """The output fields for these input fields, in emission order."""
        out: dict[str, FieldType] = {}
        if self.count:
            out["count"] = "int"
        if self.duration:
            out["duration"] = "float"
        for name in names:
            for feature, out_name in self.outputs(name):
                out[out_name] = "int" if feature == "zero_crossings" else "float"
        return out

    def new_acc(self) -> Acc:
        """An empty accumulator for one field of one window (or pane, or session)."""
        if self.basic:
            return [0, 0.0, 0.0, _INF, -_INF]
        if self.buffer:
            return [0, 0.0, 0.0, _INF, -_INF, 0.0, 0.0, 0.0, 0.0, array("d"), array("d")]
        return [0, 0.0, 0.0, _INF, -_INF, 0.0, 0.0, 0.0, 0.0, None, None]


# -- parameters -------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _outputs(spec: FeatureSpec, name: str) -> tuple[tuple[str, str], ...]:
    """``spec.outputs(name)``, once per spec and field (window operators are built once per
    device, with the same parameters)."""
    return spec._outputs(name)


_SPECS: dict[str, FeatureSpec] = {}


def parse_features(
    features: Sequence[str],
    bands: Sequence[tuple[float, float]] | None,
    rate: float | None,
) -> FeatureSpec:
    """Check the ``features``, ``bands`` and ``rate`` parameters; raise ``ParamError``.

    Checked once per distinct parameters (an operator is built once per device)."""
    key = repr((features, bands, rate))
    spec = _SPECS.get(key)
    if spec is None:
        spec = _parse_features(features, bands, rate)
        if len(_SPECS) < 4096:
            _SPECS[key] = spec
    return spec


def _parse_features(
    features: Sequence[str],
    bands: Sequence[tuple[float, float]] | None,
    rate: float | None,
) -> FeatureSpec:
    if isinstance(features, str) or not features:
        raise ParamError("features", "give a list, e.g. [count, mean, std, q95, slope]")
    seen: set[str] = set()
    for i, feature in enumerate(features):
        _check_feature(feature, ("features", i))
        if feature in seen:
            raise ParamError(("features", i), f"{feature!r} is listed twice")
        seen.add(feature)
    band_pairs = _check_bands(bands, "bands" in seen)
    if rate is not None and not (rate > 0 and math.isfinite(rate)):
        raise ParamError("rate", f"must be a positive sample rate in Hz, got {rate!r}")
    per_field = tuple(f for f in features if f not in WINDOW_LEVEL)
    buffer = any(f in BUFFERED or f.startswith("q") for f in per_field)
    return FeatureSpec(
        count="count" in seen,
        duration="duration" in seen,
        per_field=per_field,
        bands=band_pairs,
        rate=None if rate is None else float(rate),
        slope="slope" in seen,
        buffer=buffer,
        basic=all(f in STREAMING for f in per_field),
    )


def _check_feature(feature: object, path: tuple[str, int]) -> None:
    if not isinstance(feature, str):
        raise ParamError(path, f"expected a feature name, got {feature!r}")
    if feature in KNOWN:
        return
    m = _QUANTILE.fullmatch(feature)
    if m:
        p = int(m.group(1))
        if p > 100:
            raise ParamError(path, f"a quantile is q0..q100, got {feature!r}")
        if m.group(1) != str(p):
            raise ParamError(path, f"write {f'q{p}'!r}, not {feature!r}")
        return
    if feature in _HINTS:
        raise ParamError(path, f"unknown feature {feature!r}: {_HINTS[feature]}")
    message = unknown_name_message("feature", feature, [*KNOWN, "q<0..100>"])
    raise ParamError(path, message)


def _check_bands(
    bands: Sequence[tuple[float, float]] | None, wanted: bool
) -> tuple[tuple[float, float], ...]:
    if bands is None:
        if wanted:
            raise ParamError("bands", "the bands feature needs bands in Hz: [[0, 5], [5, 20]]")
        return ()
    if not wanted:
        raise ParamError("bands", "given, but 'bands' is not in features")
    if not bands:
        raise ParamError("bands", "give at least one band [lo, hi] in Hz")
    out = []
    for i, (lo, hi) in enumerate(bands):
        if not (0 <= lo < hi) or math.isinf(lo):
            raise ParamError(("bands", i), f"expected 0 <= lo < hi (Hz), got [{lo}, {hi}]")
        out.append((float(lo), float(hi)))
    return tuple(out)


# -- accumulation -----------------------------------------------------------------------------


def add_values(accs: Sequence[Acc], names: Sequence[str], values: Fields, t: float) -> None:
    """Add one event's values to the accumulators aligned with ``names`` (basic or full).

    Missing (None) and NaN values are skipped. This is :func:`add_value` with its common
    part inlined: it runs for every field of every event.
    """
    get = values.get
    for name, a in zip(names, accs, strict=True):
        v = get(name)
        if v is None or v != v:
            continue
        n = a[0] + 1
        a[0] = n
        mean = a[1]
        d = v - mean
        mean += d / n
        a[1] = mean
        a[2] += d * (v - mean)
        if v < a[3]:
            a[3] = v
        if v > a[4]:
            a[4] = v
        if len(a) > MT:
            _add_time(a, v, t, n, mean)  # type: ignore[arg-type]  # schema(): numeric fields


def add_value(a: Acc, v: float, t: float) -> None:
    """Add one value observed at time ``t`` to an accumulator (basic or full)."""
    n = a[0] + 1
    a[0] = n
    mean = a[1]
    d = v - mean
    mean += d / n
    a[1] = mean
    a[2] += d * (v - mean)
    if v < a[3]:
        a[3] = v
    if v > a[4]:
        a[4] = v
    if len(a) > MT:
        _add_time(a, v, t, n, mean)


def _add_time(a: Acc, v: float, t: float, n: int, mean: float) -> None:
    """The full part: time moments for ``slope`` and the buffers (``mean`` is the new one)."""
    if n == 1:
        a[T0] = t
    tau = t - a[T0]
    dt = tau - a[MT]
    a[MT] += dt / n
    a[M2T] += dt * (tau - a[MT])
    a[CTV] += dt * (v - mean)
    ts = a[TS]
    if ts is not None:
        ts.append(t)
        a[VS].append(v)


def merge(a: Acc, b: Acc) -> Acc:
    """A new accumulator of the union of ``a`` and ``b`` (which are left unchanged)."""
    na, nb = a[0], b[0]
    if nb == 0:
        return _copy(a)
    if na == 0:
        return _copy(b)
    n = na + nb
    d = b[1] - a[1]
    w = na * nb / n
    out = [n, a[1] + d * nb / n, a[2] + b[2] + d * d * w, min(a[3], b[3]), max(a[4], b[4])]
    if len(a) > MT:
        dt = (b[MT] + (b[T0] - a[T0])) - a[MT]  # b's mean time, relative to a's first time
        out += [
            a[T0],
            a[MT] + dt * nb / n,
            a[M2T] + b[M2T] + dt * dt * w,
            a[CTV] + b[CTV] + dt * d * w,
            None if a[TS] is None else a[TS] + b[TS],
            None if a[VS] is None else a[VS] + b[VS],
        ]
    return out


def _copy(a: Acc) -> Acc:
    out = list(a)
    if len(a) > MT and a[TS] is not None:
        out[TS] = array("d", a[TS])
        out[VS] = array("d", a[VS])
    return out


# -- finishing --------------------------------------------------------------------------------


def finish(spec: FeatureSpec, outs: Sequence[tuple[str, str]], a: Acc | None, out: Fields) -> None:
    """Write the features of one field (``outs`` from ``spec.outputs``) into ``out``."""
    n = 0 if a is None else a[0]
    if n == 0 or a is None:
        for _, out_name in outs:
            out[out_name] = None
        return
    mean = a[1]
    var = a[2] / n
    buffered: dict[str, Value] | None = None
    for feature, out_name in outs:
        if feature == "mean":
            out[out_name] = mean
        elif feature == "std":
            out[out_name] = math.sqrt(var) if n > 1 else 0.0
        elif feature == "var":
            out[out_name] = var
        elif feature == "min":
            out[out_name] = float(a[3])
        elif feature == "max":
            out[out_name] = float(a[4])
        elif feature == "ptp":
            out[out_name] = float(a[4] - a[3])
        elif feature == "peak":
            out[out_name] = float(max(-a[3], a[4]))
        elif feature == "rms":
            out[out_name] = math.sqrt(mean * mean + var)
        elif feature == "slope":
            out[out_name] = a[CTV] / a[M2T] if a[M2T] > 0.0 else None
        else:
            if buffered is None:
                buffered = _buffered(spec, a)
            out[out_name] = buffered[feature]


def _buffered(spec: FeatureSpec, a: Acc) -> dict[str, Value]:
    """Every buffered feature of one field, computed with numpy from the window's values."""
    ts = np.array(a[TS], dtype=float)
    vs = np.array(a[VS], dtype=float)
    if ts.size > 1 and np.any(ts[1:] < ts[:-1]):  # out-of-order events: sort by time
        order = np.argsort(ts, kind="stable")
        ts, vs = ts[order], vs[order]
    out: dict[str, Value] = {}
    quantiles = [f for f in spec.per_field if f.startswith("q")]
    if quantiles:
        qs = np.quantile(vs, [int(f[1:]) / 100 for f in quantiles])
        out.update(zip(quantiles, map(float, qs), strict=True))
    mean = float(vs.mean())
    d = vs - mean
    m2 = float(np.mean(d * d))
    if "skew" in spec.per_field or "kurtosis" in spec.per_field:
        out.update(_shape(d, m2, mean))
    if "zero_crossings" in spec.per_field:
        signs = np.sign(d)
        signs = signs[signs != 0]
        out["zero_crossings"] = int(np.count_nonzero(signs[1:] != signs[:-1]))
    if spec.bands:
        out.update(_band_energies(spec, ts, d))
    return out


def _shape(d: np.ndarray, m2: float, mean: float) -> dict[str, Value]:
    """Population skewness and excess kurtosis of the deviations ``d`` (scipy's defaults)."""
    if m2 <= (_EPS * mean) ** 2:  # as scipy.stats: all equal (to rounding), so undefined
        return {"skew": None, "kurtosis": None}
    z = d / np.abs(d).max()  # scale-free moments: tiny deviations must not underflow
    z2 = float(np.mean(z * z))
    skew = float(np.mean(z**3)) / z2**1.5
    kurtosis = float(np.mean(z**4)) / (z2 * z2) - 3.0
    return {"skew": skew, "kurtosis": kurtosis}


def _band_energies(spec: FeatureSpec, ts: np.ndarray, d: np.ndarray) -> dict[str, Value]:
    """Mean power per band of the de-meaned values: the bands covering [0, rate/2] add up
    to the window's variance (Parseval, one-sided spectrum)."""
    n = d.size
    rate = spec.rate
    if rate is None and n > 1 and ts[-1] > ts[0]:
        rate = (n - 1) / float(ts[-1] - ts[0])
    if rate is None:
        return {f"band{i}": None for i in range(len(spec.bands))}
    power = np.abs(np.fft.rfft(d)) ** 2
    power[1 : (n + 1) // 2] *= 2.0  # every bin but DC (and Nyquist for even n) is doubled
    power /= n * n
    freqs = np.fft.rfftfreq(n, d=1.0 / rate)
    return {
        f"band{i}": float(power[(freqs >= lo) & (freqs < hi)].sum())
        for i, (lo, hi) in enumerate(spec.bands)
    }
