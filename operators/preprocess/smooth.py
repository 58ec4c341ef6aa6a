"""preprocess.smooth: causal noise and spike filters, one state per field."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.types import FieldType, Schema, Timestamp
from operators.preprocess.fieldwise import FieldwiseOperator, check_positive

Method = Literal["ewma", "median", "hampel", "kalman"]

MAD_SCALE = 1.4826
"""MAD to standard deviation for normally distributed data (1 / Phi^-1(3/4))."""


class Smooth(FieldwiseOperator):
    """Smooth numeric fields: EWMA, rolling median, Hampel filter or a 1-D Kalman filter.

    Every filter is causal (it only looks at the past), so nothing is delayed: each event
    comes out at once, smoothed. A missing (``None`` or NaN) value stays missing and does
    not touch the filter's state. Smoothed values are ``float``.

    Methods:

    - ``ewma``: ``s = s + alpha * (v - s)``, starting at the first value;
    - ``median``: the median of the last ``window`` values, this one included (removes
      spikes shorter than half the window; lags a step by about ``window / 2`` events);
    - ``hampel``: a value further than ``n_sigmas`` robust standard deviations
      (``1.4826 * MAD``) from the median of the ``window`` values before it is an outlier
      and replaced by that median; other values pass unchanged, as do the first
      ``window`` values. A window in which most values are equal has a MAD of 0, and then
      any change counts as an outlier: for a quantized sensor (a thermometer reporting
      0.01 steps) set ``min_spread`` to its resolution or a little above;
    - ``kalman``: a random walk observed with noise. ``process_noise`` is the variance the
      true value gains per second of event time (irregular sampling is handled),
      ``measurement_noise`` the variance of a reading; their ratio sets how fast the
      estimate follows the readings.

    Parameters
    ----------
    fields
        Numeric fields to smooth. Default: every numeric field of the input.
    method
        ``ewma`` (default), ``median``, ``hampel`` or ``kalman``.
    alpha
        ``ewma``: weight of the newest value, in ``(0, 1]``.
    window
        ``median``, ``hampel``: number of values (at least 3 for ``hampel``).
    n_sigmas
        ``hampel``: how many robust standard deviations make an outlier.
    min_spread
        ``hampel``: the smallest robust standard deviation used (default 0: the classic
        filter).
    process_noise, measurement_noise
        ``kalman``: the two variances, both positive.
    in_place
        ``True`` (default): replace the value. ``False``: keep it and add
        ``<field>_smooth``.

    Metrics: ``smoothed`` (values), ``outliers`` (``hampel``: values replaced).

    Examples
    --------
    In a topology::

        - id: despiked
          use: preprocess.smooth
          with: {fields: [pressure], method: hampel, window: 7, n_sigmas: 3}

    >>> from fogrt.event import Event
    >>> op = Smooth(fields=["p"], method="hampel", window=4)
    >>> [op.process(Event("d", i, float(i), {"p": v}))[0].fields["p"]
    ...  for i, v in enumerate([1.0, 1.2, 0.9, 1.1, 9.0, 1.0])]
    [1.0, 1.2, 0.9, 1.1, 1.05, 1.0]
    >>> op.metrics()
    {'smoothed': 6, 'outliers': 1}
    >>> op = Smooth(fields=["p"], method="ewma", alpha=0.5, in_place=False)
    >>> [op.process(Event("d", i, float(i), {"p": v}))[0].fields for i, v in enumerate([2.0, 4.0])]
    [{'p': 2.0, 'p_smooth': 2.0}, {'p': 4.0, 'p_smooth': 3.0}]
    """

    kind = "preprocess.smooth"

    def __init__(
        self,
        fields: list[str] | None = None,
        method: Method = "ewma",
        alpha: float = 0.3,
        window: int = 5,
        n_sigmas: float = 3.0,
        min_spread: float = 0.0,
        process_noise: float = 0.01,
        measurement_noise: float = 1.0,
        in_place: bool = True,
    ) -> None:
        self.fields = fields
        self.method = method
        self.alpha = alpha
        self.window = window
        self.n_sigmas = n_sigmas
        self.min_spread = min_spread
        self.process_noise = process_noise
        self.measurement_noise = measurement_noise
        self.in_place = in_place
        self._setup_fields(fields)
        if method not in ("ewma", "median", "hampel", "kalman"):
            raise ParamError("method", f"expected ewma, median, hampel or kalman, got {method!r}")
        if not 0 < alpha <= 1:
            raise ParamError("alpha", f"must be in (0, 1], got {alpha!r}")
        if window < (3 if method == "hampel" else 1):
            least = 3 if method == "hampel" else 1
            raise ParamError("window", f"must be at least {least} for {method}, got {window!r}")
        check_positive(n_sigmas, "n_sigmas")
        check_positive(min_spread, "min_spread", allow_zero=True)
        check_positive(process_noise, "process_noise")
        check_positive(measurement_noise, "measurement_noise")
        self._state: dict[str, Any] = {}  # per field: a float, a deque or [x, P, t]
        self._smoothed = 0
        self._outliers = 0

    def process(self, event: Event) -> tuple[Event, ...]:
        if self._discover:
            self._discover_fields(event.fields)
        values = event.fields
        out = dict(values)
        t = event.time
        for name in self._names:
            if name not in values:
                continue
            v = values[name]
            target = name if self.in_place else f"{name}_smooth"
            if v is None or v != v or not (v.__class__ is int or v.__class__ is float):
                if not self.in_place:  # nothing to smooth: the smoothed value is missing
                    out[target] = None
                continue
            out[target] = self._step(name, float(v), t)
            self._smoothed += 1
        return (event.replace(fields=out),)

    def _step(self, name: str, v: float, t: Timestamp) -> float:
        method = self.method
        if method == "ewma":
            s = self._state.get(name)
            s = v if s is None else s + self.alpha * (v - s)
            self._state[name] = s
            return s
        if method == "kalman":
            return self._kalman(name, v, t)
        recent = self._state.get(name)
        if recent is None:
            recent = self._state[name] = deque(maxlen=self.window)
        if method == "median":
            recent.append(v)
            return float(statistics.median(recent))
        return self._hampel(recent, v)

    def _hampel(self, recent: deque[float], v: float) -> float:
        out = v
        if len(recent) == self.window:
            med = statistics.median(recent)
            mad = statistics.median([abs(x - med) for x in recent])
            if abs(v - med) > self.n_sigmas * max(MAD_SCALE * mad, self.min_spread):
                self._outliers += 1
                out = float(med)
        recent.append(v)
        return out

    def _kalman(self, name: str, z: float, t: Timestamp) -> float:
        state = self._state.get(name)
        if state is None:
            self._state[name] = [z, self.measurement_noise, t]
            return z
        x, p, last = state
        p += self.process_noise * max(t - last, 0.0)  # predict: the walk spreads
        gain = p / (p + self.measurement_noise)
        x += gain * (z - x)
        state[0], state[1], state[2] = x, (1.0 - gain) * p, max(t, last)
        return float(x)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        names = self._check_schema(upstream)
        out = dict(upstream)
        for name in names:
            target = name if self.in_place else f"{name}_smooth"
            if not self.in_place and target in upstream:
                raise FieldError("in_place", f"the input already has a field {target!r}")
            out[target] = "float"
        return out

    def metrics(self) -> dict[str, float]:
        return {"smoothed": self._smoothed, "outliers": self._outliers}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"fields": ["x", "y"], "method": "hampel", "window": 7, "in_place": False}
        yield {"fields": ["x", "label"], "method": "kalman", "process_noise": 0.1}
