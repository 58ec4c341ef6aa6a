"""An EWMA control chart as a River anomaly detector (River has no control charts).

Statistical process control's workhorse, per feature: an exponentially weighted moving
average of the readings, ``e = e + alpha * (x - e)``, compared with how that average
behaved on the events the chart learned from (a running mean and standard deviation of
``e``, Welford). The score is the largest ``|e - mean| / std`` over the features: a number
of standard deviations, so a fixed threshold of 4 to 8 means the same thing on any data.
``alpha = 1`` is a Shewhart chart (each reading on its own); a small ``alpha`` averages over
about ``2 / alpha`` readings and finds small sustained shifts that a single reading hides.

Measuring the spread of ``e`` itself, rather than of the readings, makes slowly drifting
channels (temperatures that wander over the training period) count for less on their own:
their average wanders too, so its spread is wide.

The moving average follows every event, the reference statistics only the learned ones, so
``score_one`` advances the average: call it once per event, before ``learn_one``, as
``learn.anomaly`` does. ``learn_one`` on an event that was not scored advances it too.

It imports River (for the estimator base class), so only the model allowlist imports it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

from river.base import AnomalyDetector

_FLOOR = 1e-9


class ControlChart(AnomalyDetector):
    """Per-feature EWMA control chart; the score is the largest deviation in sigmas.

    Parameters
    ----------
    alpha
        Weight of the newest reading in the moving average, ``0 < alpha <= 1``.
    grace_period
        Learned events before the chart scores (it scores 0 until then).

    >>> chart = ControlChart(alpha=0.5, grace_period=2)
    >>> for v in [1.0, 1.2, 0.9, 1.1, 1.0, 0.8]:
    ...     chart.learn_one({"v": v})
    >>> round(chart.score_one({"v": 1.0}), 2)  # one event...
    1.02
    >>> round(chart.score_one({"v": 3.0}), 2)  # ...and the next: 17 sigmas out
    16.9
    """

    # Per learned feature with at least ``grace_period`` events: ``(mean, scale)``, the mean
    # of the average and the denominator of its z-score, kept up to date by ``learn_one`` so
    # that ``score_one`` (every event, while the chart may learn once in many) takes no
    # square root. None: to be rebuilt from ``_stats`` (a chart restored from a snapshot
    # taken before this cache existed has no instance attribute, hence this class default).
    _scales: dict[Hashable, tuple[float, float]] | None = None

    def __init__(self, alpha: float = 0.2, grace_period: int = 10) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha!r}")
        if grace_period < 2:
            raise ValueError(f"grace_period must be at least 2, got {grace_period!r}")
        self.alpha = alpha
        self.grace_period = grace_period
        self._ewma: dict[Hashable, float] = {}
        self._stats: dict[Hashable, list[float]] = {}  # feature -> [n, mean, M2]
        self._advanced = False  # score_one advanced the average for the coming learn_one
        self._scales = {}

    def _advance(self, x: dict[Hashable, Any]) -> None:
        ewma, alpha = self._ewma, self.alpha
        for name, value in x.items():
            e = ewma.get(name)
            ewma[name] = value if e is None else e + alpha * (value - e)

    def _rebuild_scales(self) -> dict[Hashable, tuple[float, float]]:
        scales: dict[Hashable, tuple[float, float]] = {}
        grace = self.grace_period
        for name, (n, mean, m2) in self._stats.items():
            if n >= grace:
                scales[name] = (mean, max(math.sqrt(m2 / n), _FLOOR * (1.0 + abs(mean))))
        self._scales = scales
        return scales

    def score_one(self, x: dict[Hashable, Any]) -> float:
        # The average advanced and the features scored in one pass over ``x``: a feature is
        # scored when it is in ``x`` and has had ``grace_period`` learned events (the largest
        # deviation does not depend on the order the features are visited in).
        scales = self._scales
        if scales is None:
            scales = self._rebuild_scales()
        ewma, alpha = self._ewma, self.alpha
        get, scale_of = ewma.get, scales.get
        worst = 0.0
        for name, value in x.items():
            e = get(name)
            e = value if e is None else e + alpha * (value - e)
            ewma[name] = e
            s = scale_of(name)
            if s is not None:
                mean, scale = s
                z = abs(e - mean) / scale
                if z > worst:
                    worst = z
        self._advanced = True
        return worst

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        if not self._advanced:
            self._advance(x)
        self._advanced = False
        scales = self._scales
        if scales is None:
            scales = self._rebuild_scales()
        stats, ewma, grace, sqrt = self._stats, self._ewma, self.grace_period, math.sqrt
        for name in x:
            e = ewma[name]
            s = stats.get(name)
            if s is None:
                s = stats[name] = [0.0, 0.0, 0.0]
            n = s[0] + 1.0
            d = e - s[1]
            s[0] = n
            mean = s[1] = s[1] + d / n
            m2 = s[2] = s[2] + d * (e - mean)
            if n >= grace:
                # max(sqrt(m2 / n), _FLOOR * (1 + |mean|)) as _rebuild_scales has it, without
                # the calls of max() and abs() (this runs per feature per learned event).
                sd = sqrt(m2 / n)
                floor = _FLOOR * (1.0 + (mean if mean >= 0.0 else -mean))
                scales[name] = (mean, floor if floor > sd else sd)
