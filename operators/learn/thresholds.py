"""Anomaly thresholds: when is a score high enough to raise an alert?

Written in a topology as one mapping, one of:

- ``{fixed: x}``: above ``x``;
- ``{quantile: q}``: above the running q-quantile of every score learned so far (P², O(1)
  memory). Right for a stationary stream; when the scores drift upward (non-stationary data,
  a model whose scale changes as it learns), the quantile of the whole past lags behind and
  a growing share of events alerts;
- ``{quantile: q, window: n}``: above the q-quantile of the last ``n`` learned scores. It
  follows drifting scores, at ``n`` floats of memory per instance; scores that sit on a
  few discrete levels (Half-Space Trees on slowly varying data) still alert more than
  ``1 - q`` of the time, each time the level steps up;
- ``{sigma: k}`` (optionally ``halflife: n``, default 500): above ``mean + k * std`` of the
  learned scores, both exponentially weighted with a half-life of ``n`` scores. It follows
  drift at O(1) memory, and its spread absorbs level steps. An outlier widens the limit for
  about ``halflife`` scores after it.

A quantile gives no limit before ``1 / (1 - q)`` scores (a 0.99-quantile of fewer than 100
scores is their maximum), a sigma threshold none before 30. A threshold learns from the
scores the caller gives to ``update`` (``learn.anomaly`` gives it the scores of the events
its model learns from, once the detector gives real scores) and answers ``limit()`` before.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fogrt.errors import ParamError
from fogrt.operator import unknown_name_message

KINDS = ("quantile", "fixed", "sigma")
OPTIONS = {"window": "quantile", "halflife": "sigma"}
DEFAULT_HALFLIFE = 500.0
SIGMA_MIN_SCORES = 30
"""Scores a ``sigma`` threshold learns before it has a limit."""


class Threshold:
    """The limit a score must exceed; ``None`` while it is not known yet."""

    def limit(self) -> float | None:
        raise NotImplementedError

    def update(self, score: float) -> None:
        """Learn from one more score (of an event the model learned from)."""


class Fixed(Threshold):
    def __init__(self, value: float) -> None:
        self.value = value

    def limit(self) -> float | None:
        return self.value


class Quantile(Threshold):
    """Running quantile (River's P² estimator) of every score, or of the last ``window``."""

    def __init__(self, q: float, window: int | None = None) -> None:
        from river import stats

        self._stat: Any = stats.Quantile(q) if window is None else stats.RollingQuantile(q, window)
        # A q-quantile of fewer than 1/(1-q) scores is their maximum: no limit until then.
        self._needed = math.ceil(1.0 / (1.0 - q) - 1e-9)
        if window is not None:
            self._needed = min(self._needed, window)
        self._n = 0

    def limit(self) -> float | None:
        if self._n < self._needed:
            return None
        return float(self._stat.get())

    def update(self, score: float) -> None:
        self._n += 1
        self._stat.update(score)


class Sigma(Threshold):
    """``mean + k * std`` of the scores, exponentially weighted (West's EW variance)."""

    def __init__(self, k: float, halflife: float) -> None:
        self.k = k
        self._alpha = 1.0 - 0.5 ** (1.0 / halflife)
        self._mean: float | None = None
        self._var = 0.0
        self._n = 0

    def limit(self) -> float | None:
        if self._mean is None or self._n < SIGMA_MIN_SCORES:
            return None
        return self._mean + self.k * math.sqrt(self._var)

    def update(self, score: float) -> None:
        self._n += 1
        if self._mean is None:
            self._mean = score
            return
        a = self._alpha
        d = score - self._mean
        self._mean += a * d
        self._var = (1.0 - a) * (self._var + a * d * d)


def check(spec: Mapping[str, float], param: str = "threshold") -> None:
    """Raise ``ParamError`` at ``threshold...`` when the spec is not one of the forms."""
    for name in spec:
        if name not in KINDS and name not in OPTIONS:
            known = [*KINDS, *OPTIONS]
            raise ParamError((param, name), unknown_name_message("threshold", name, known))
    kinds = [name for name in spec if name in KINDS]
    if len(kinds) != 1:
        raise ParamError(param, "give exactly one of {quantile: q}, {fixed: x} or {sigma: k}")
    (how,) = kinds
    for name in spec:
        if name in OPTIONS and OPTIONS[name] != how:
            raise ParamError((param, name), f"goes with {OPTIONS[name]}, not with {how}")
    for name, value in spec.items():
        if not math.isfinite(value):
            raise ParamError((param, name), f"must be a finite number, got {value!r}")
    value = spec[how]
    if how == "quantile" and not 0.0 < value < 1.0:
        raise ParamError((param, how), f"must be between 0 and 1, got {value!r}")
    if how == "sigma" and value <= 0:
        raise ParamError((param, how), f"must be positive, got {value!r}")
    window = spec.get("window")
    if window is not None and (window != int(window) or window < 2):
        raise ParamError((param, "window"), f"must be an integer of at least 2, got {window!r}")
    halflife = spec.get("halflife")
    if halflife is not None and halflife <= 0:
        raise ParamError((param, "halflife"), f"must be positive, got {halflife!r}")


def build(spec: Mapping[str, float]) -> Threshold:
    """A fresh threshold for a spec that passed :func:`check`."""
    if "fixed" in spec:
        return Fixed(float(spec["fixed"]))
    if "quantile" in spec:
        window = spec.get("window")
        return Quantile(spec["quantile"], None if window is None else int(window))
    return Sigma(spec["sigma"], spec.get("halflife", DEFAULT_HALFLIFE))
