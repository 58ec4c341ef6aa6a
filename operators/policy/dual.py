"""Dual prediction with adaptive sampling: ``policy.dual_prediction``.

The fog fits a predictor per device and pushes its coefficients in the control; the device
runs the same predictor on the values the fog knows and sends a reading only when it is
more than ``epsilon`` off the forecast; the fog imputes every unsent sample with that same
forecast (:mod:`operators.policy.protocol`), so its reconstruction is within ``epsilon`` of
every sample the device took.

**Predictor** (all within the wire's ``c0 + c1*x[t-1] + ... + c15*x[t-15]``): a damped
trend. The forecast is the last known value plus a weighted sum of the last ``lags``
differences of the known series::

    x^[t] = x[t-1] + sum_j a_j * (x[t-j] - x[t-j-1]),   j = 1..lags (<= 14)
    => c0 = 0, c1 = 1 + a_1, c_j = a_j - a_(j-1) (2 <= j <= lags), c_(lags+1) = -a_lags

The weights start as Holt's damped trend with level smoothing 1 (the last known value),
trend smoothing ``trend`` and damping ``damping`` (:func:`holt`). With ``fit`` (default) a
recursive-least-squares fit with forgetting refines them online on the series the fog knows
(received and imputed values), starting from that prior with a small covariance, and new
coefficients are pushed when one moves by more than ``push_tolerance``. The coefficients
always sum to 1, so a constant signal is predicted exactly (to float rounding) and a level
shift never makes the forecast drift; the fitted weights are scaled so that
``sum |a_j| <= 0.95``, which keeps the recursion stable while the device predicts on its
own forecasts.

**Adaptive sampling** (when ``max_sample_period`` > ``sample_period``): the sample period
stretches, up to ``max_sample_period``, once ``stretch_after`` samples in a row were
predicted within ``epsilon`` (or the device only sent a heartbeat): by 2, or by the largest
power of two that still leaves ``stretch_after`` samples in a run that long (after an hour
of silence, most of the way at once); it halves, down to
``sample_period``, when a reading missed its forecast by ``shrink_overshoot * epsilon`` or
more: the signal then moved far between two samples, which is when interpolating between
samples stops being accurate. Forced readings (heartbeats, bursts: residual within
``epsilon``) count as predicted.

**Reconstruction** between samples (what a benchmark compares with the true signal): the
fog knows a value at every sample time (received, or imputed within ``epsilon``); in between
it interpolates linearly.

.. code-block:: yaml

    control:
      policy:
        use: policy.dual_prediction
        with: {epsilon: 0.1, sample_period: 30s, max_sample_period: 5m, interval: 1h}

>>> p = DualPrediction(epsilon=0.5, sample_period=10.0, predictor="linear", fit=False)
>>> c = p.initial(); c.tx, c.coeffs
('predict', (0.0, 1.97, -0.97))
>>> for t in (0.0, 10.0):
...     d = p.observe(Reading(t, 20.0, c))
>>> p.observe(Reading(60.0, 20.0, c)).imputed    # a flat signal: four samples imputed
((20.0, 20.0), (30.0, 20.0), (40.0, 20.0), (50.0, 20.0))
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

from fogrt.errors import ParamError
from fogrt.ingest.wire import MAX_COEFFS, Control
from fogrt.types import Duration
from operators.policy.base import Decision, Mirror, Policy, Reading
from operators.policy.simple import check_period, interval_seconds

__all__ = ["MAX_LAGS", "DualPrediction", "RecursiveLeastSquares", "coeffs_from_trend", "holt"]

MAX_LAGS = MAX_COEFFS - 2
"""Most differences a trend can weigh: 14 differences need 16 coefficients."""

Predictor = Literal["holt", "linear", "naive"]


def holt(lags: int, trend: float, damping: float) -> list[float]:
    """Trend weights ``a_1..a_lags`` of Holt's damped-trend forecast with level smoothing 1.

    With the level at the last known value, Holt's trend ``b = trend * d[t] + (1 - trend) *
    damping * b[t-1]`` over the differences ``d`` and the forecast ``x[t] + damping * b``
    give ``a_j = damping * trend * ((1 - trend) * damping) ** (j - 1)``; fed its own
    forecasts back (the unsent samples), the recursion reproduces Holt's h-step forecasts,
    the trend decaying by ``damping`` a step. Truncated at ``lags`` (the wire's limit).

    >>> [round(a, 4) for a in holt(3, 0.5, 0.8)]
    [0.4, 0.16, 0.064]
    """
    decay = (1.0 - trend) * damping
    return [damping * trend * decay**j for j in range(lags)]


def coeffs_from_trend(weights: Sequence[float]) -> tuple[float, ...]:
    """Wire coefficients of ``x[t-1] + sum_j a_j (x[t-j] - x[t-j-1])``.

    >>> coeffs_from_trend([1.0]), coeffs_from_trend([])
    ((0.0, 2.0, -1.0), (0.0, 1.0))
    """
    c = [0.0, 1.0] + [0.0] * len(weights)
    for j, a in enumerate(weights, start=1):
        c[j] += a
        c[j + 1] -= a
    return tuple(c)


class RecursiveLeastSquares:
    """RLS with exponential forgetting for ``y = w . x``, started at a prior ``w0`` with
    covariance ``delta * I`` (a small ``delta`` trusts the prior)."""

    def __init__(self, prior: Sequence[float], forgetting: float, delta: float) -> None:
        self.forgetting = forgetting
        self.prior = np.asarray(prior, dtype=float)
        self.delta = delta
        self.w = self.prior.copy()
        self.p = np.eye(len(self.w)) * delta

    def update(self, x: np.ndarray, y: float) -> None:
        px = self.p @ x
        gain = px / (self.forgetting + float(x @ px))
        self.w = self.w + gain * (y - float(self.w @ x))
        self.p = (self.p - np.outer(gain, px)) / self.forgetting
        if not (np.all(np.isfinite(self.w)) and np.all(np.isfinite(self.p))):
            self.w = self.prior.copy()  # numerical trouble: start again from the prior
            self.p = np.eye(len(self.w)) * self.delta

    def weights(self, bound: float = 0.95) -> list[float]:
        """The weights, each within [-1, 1] and scaled so that sum |w| <= ``bound``."""
        w = np.clip(self.w, -1.0, 1.0)
        total = float(np.abs(w).sum())
        if total > bound:
            w = w * (bound / total)
        return [float(v) for v in w]


class DualPrediction(Policy):
    """Dual prediction (``tx: predict``) with an online-fitted damped-trend predictor and,
    with ``max_sample_period``, adaptive sampling. See the module docstring."""

    kind = "policy.dual_prediction"

    def __init__(
        self,
        epsilon: float,
        sample_period: Duration = 60.0,
        max_sample_period: Duration | None = None,
        interval: Duration = 3600.0,
        predictor: Predictor = "holt",
        lags: int = MAX_LAGS,
        trend: float = 0.12,
        damping: float = 0.97,
        fit: bool = True,
        forgetting: float = 0.999,
        push_tolerance: float = 0.02,
        stretch_after: int = 4,
        shrink_overshoot: float = 4.0,
        field: str | None = None,
    ) -> None:
        self.epsilon = epsilon
        self.sample_period = sample_period
        self.max_sample_period = max_sample_period
        self.interval = interval
        self.predictor = predictor
        self.lags = lags
        self.trend = trend
        self.damping = damping
        self.fit = fit
        self.forgetting = forgetting
        self.push_tolerance = push_tolerance
        self.stretch_after = stretch_after
        self.shrink_overshoot = shrink_overshoot
        self.field = field
        if not 0.0 < epsilon < math.inf:
            raise ParamError("epsilon", f"expected a finite threshold > 0, got {epsilon!r}")
        self._base = check_period("sample_period", sample_period)
        self._max = self._base
        if max_sample_period is not None:
            self._max = check_period("max_sample_period", max_sample_period)
            if self._max < self._base:
                raise ParamError("max_sample_period", "must be at least sample_period")
        self._interval = interval_seconds("interval", interval)
        if predictor not in ("holt", "linear", "naive"):
            raise ParamError("predictor", "expected one of holt, linear, naive")
        if not 1 <= lags <= MAX_LAGS:
            raise ParamError("lags", f"expected 1..{MAX_LAGS}, got {lags!r}")
        if not 0.0 < trend <= 1.0:
            raise ParamError("trend", f"expected a smoothing factor in (0, 1], got {trend!r}")
        if not 0.0 <= damping <= 1.0:
            raise ParamError("damping", f"expected a factor in [0, 1], got {damping!r}")
        if not 0.0 < forgetting <= 1.0:
            raise ParamError("forgetting", f"expected a factor in (0, 1], got {forgetting!r}")
        if stretch_after < 1:
            raise ParamError("stretch_after", f"expected a count >= 1, got {stretch_after!r}")
        if not shrink_overshoot >= 0.0:
            raise ParamError("shrink_overshoot", "expected a factor >= 0 (0: never shrink)")
        prior = self._prior()
        self._rls = RecursiveLeastSquares(prior, forgetting, delta=1e-3) if fit and prior else None
        self._coeffs = coeffs_from_trend(prior)
        self._known: list[float] = []  # values the fog knows, newest first (the fit's input)
        self._mirror = Mirror()
        self._sp = self._base
        self._batch = 1
        self._power_mode = "none"

    def _prior(self) -> list[float]:
        if self.predictor == "naive":
            return []
        if self.predictor == "linear":
            return [self.damping]
        return holt(self.lags, self.trend, self.damping)

    def _control(self) -> Control:
        return Control(
            interval=self._interval,
            sample_period=self._sp,
            tx="predict",
            epsilon=float(self.epsilon),
            coeffs=self._coeffs,
            batch=self._batch,
            power_mode=self._power_mode,
        )

    def initial(self) -> Control:
        return self._control()

    def observe(self, reading: Reading) -> Decision:
        imputed, residual = self._ingest(reading)
        self._adapt(reading, len(imputed), residual)
        return Decision(self._control(), tuple(imputed))

    # -- the steps, overridable ----------------------------------------------------------

    def _ingest(self, reading: Reading) -> tuple[list[tuple[float, float]], float | None]:
        """Impute the gap, learn from the known series, push new coefficients if they moved.

        Returns the imputed samples and the reading's residual against the device's forecast
        (``None`` when the device had no forecast for it).
        """
        imputed, reference = self._mirror.receive(reading)
        for _, value in imputed:
            self._learn(value)
        if reading.value is not None:
            self._learn(reading.value)
        if self._rls is not None:
            fitted = coeffs_from_trend(self._rls.weights())
            if (
                len(fitted) != len(self._coeffs)
                or max(abs(a - b) for a, b in zip(fitted, self._coeffs, strict=True))
                > self.push_tolerance
            ):
                self._coeffs = fitted
        if reading.value is None or reference is None or reading.applied.tx != "predict":
            return imputed, None
        return imputed, reading.value - reference

    def _learn(self, value: float) -> None:
        known = self._known
        known.insert(0, value)
        rls = self._rls
        if rls is None:
            del known[1:]
            return
        lags = len(rls.w)
        del known[lags + 2 :]
        if len(known) == lags + 2:
            diffs = np.subtract(known[:-1], known[1:])
            rls.update(diffs[1:], float(diffs[0]))

    def _adapt(self, reading: Reading, suppressed: int, residual: float | None) -> None:
        """The sampling controller: stretch after a predictable run, shrink on an overshoot."""
        if self._max <= self._base or residual is None:
            return
        eps = reading.applied.epsilon or self.epsilon
        missed = abs(residual) > eps
        run = suppressed + 1  # samples since the previous reading, this one included
        if missed and self.shrink_overshoot and abs(residual) >= self.shrink_overshoot * eps:
            self._sp = max(self._base, self._sp / 2.0)
        elif not missed or run >= self.stretch_after:
            # predictable for `run` samples at this period: stretch by the largest power of
            # two that still leaves `stretch_after` samples in such a run (at least 2)
            factor = 2.0 ** max(1, math.floor(math.log2(max(run / self.stretch_after, 1.0))))
            self._sp = min(self._max, self._sp * factor)

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"epsilon": 0.5, "sample_period": 10.0}
        yield {"epsilon": 0.2, "sample_period": 10.0, "max_sample_period": 80.0, "fit": False}
