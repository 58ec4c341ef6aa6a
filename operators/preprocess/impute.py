"""preprocess.impute: fill missing values from what the field did before (and after)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal

from fogrt.errors import ParamError
from fogrt.event import IMPUTED, Event
from fogrt.types import Duration, Fields, FieldType, Schema, Timestamp, Value
from operators.preprocess.fieldwise import FieldwiseOperator, check_positive
from operators.preprocess.interpolate import Filled, Gaps

Method = Literal["last", "linear", "ewma", "mean", "model"]

_WARMUP = 10
"""Values a field's model learns from before it is trusted (``last`` fills until then)."""


def _model() -> Any:
    """StandardScaler | LinearRegression (imports River on first use: it takes ~0.7 s).

    The intercept is the field's trend (its mean change per event): a faster intercept
    learning rate than River's default (0.01) follows a ramp within tens of events, for a
    small loss on pure noise.
    """
    from river import linear_model, preprocessing

    return preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)


class Impute(FieldwiseOperator):
    """Fill missing (``None`` or NaN) values of numeric fields; filled events are ``IMPUTED``.

    Only a field the event carries with a missing value is filled; a field the event does
    not carry at all is left out, as it came. An event with at least one value filled gets
    the ``IMPUTED`` flag (windows pass it on). ``int`` fields are filled with ``int``
    values (rounded).

    Methods:

    - ``last``: the last known value of the field;
    - ``ewma``: the exponentially weighted mean of its known values (``alpha``);
    - ``mean``: the mean of its last ``window`` known values;
    - ``model``: an online River model, ``StandardScaler | LinearRegression``, that
      predicts the next change of the field from its last ``lags`` changes (so it starts
      as ``last`` and learns trends and oscillations); it learns from every known value
      that follows ``lags + 1`` known ones and is trusted after 10 of them (``last`` fills
      until then). Successive missing values are predicted one from the other;
    - ``linear``: interpolates between the last known value before the gap and the first
      one after it, by event time. That needs the value after the gap, so events are held
      from the first missing value until the field is known again, then released in their
      original order: **the output lags by the length of the gap**, and only while a gap
      is open. A gap still open at the end of the stream (``on_tick(inf)``), longer than
      ``max_gap``, or holding 10,000 events is given up: its values stay missing.

    Parameters
    ----------
    fields
        The numeric fields to fill. Default: every numeric field of the input.
    method
        ``last`` (default), ``linear``, ``ewma``, ``mean`` or ``model``.
    max_gap
        Fill only when the last known value is at most this old (event time); for
        ``linear``, only gaps between known values at most this far apart. Default: no
        limit (but see ``linear``).
    alpha
        ``ewma``: weight of the newest value, in ``(0, 1]``.
    window
        ``mean``: how many recent known values are averaged.
    lags
        ``model``: how many past changes the model sees.

    Metrics: ``imputed`` (values filled), ``unfilled`` (missing values left missing),
    ``held`` (``linear``: events waiting for the end of a gap), ``imputed.<field>``.

    Examples
    --------
    In a topology::

        - id: filled
          use: preprocess.impute
          with: {fields: [temp, humidity], method: linear, max_gap: 5m}

    >>> from fogrt.event import Event
    >>> op = Impute(fields=["temp"], method="last", max_gap=60)
    >>> [e.fields["temp"] for e in op.process(Event("d", 1, 0.0, {"temp": 20.5}))]
    [20.5]
    >>> out = op.process(Event("d", 2, 30.0, {"temp": None}))
    >>> out[0].fields, out[0].flag_names()
    ({'temp': 20.5}, ['imputed'])
    >>> op.process(Event("d", 3, 90.0, {"temp": None}))[0].fields  # too old to fill
    {'temp': None}
    >>> op = Impute(fields=["temp"], method="linear")
    >>> [op.process(Event("d", i, float(i), {"temp": v})) for i, v in enumerate([1.0, None])]
    [(Event(key='d', seq=0, time=0.0, fields={'temp': 1.0}, arrival=0.0, flags=0),), ()]
    >>> [e.fields["temp"] for e in op.process(Event("d", 2, 4.0, {"temp": 5.0}))]
    [2.0, 5.0]
    """

    kind = "preprocess.impute"

    def __init__(
        self,
        fields: list[str] | None = None,
        method: Method = "last",
        max_gap: Duration | None = None,
        alpha: float = 0.3,
        window: int = 10,
        lags: int = 3,
    ) -> None:
        self.fields = fields
        self.method = method
        self.max_gap = max_gap
        self.alpha = alpha
        self.window = window
        self.lags = lags
        self._setup_fields(fields)
        if method not in ("last", "linear", "ewma", "mean", "model"):
            raise ParamError(
                "method", f"expected last, linear, ewma, mean or model, got {method!r}"
            )
        if max_gap is not None:
            check_positive(max_gap, "max_gap")
        if not 0 < alpha <= 1:
            raise ParamError("alpha", f"must be in (0, 1], got {alpha!r}")
        if window < 1:
            raise ParamError("window", f"must be at least 1, got {window!r}")
        if not 1 <= lags <= 50:
            raise ParamError("lags", f"must be between 1 and 50, got {lags!r}")
        self._gap = math.inf if max_gap is None else max_gap
        self._last: dict[str, tuple[Timestamp, float]] = {}  # time and value, by field
        self._ewma: dict[str, float] = {}
        self._recent: dict[str, deque[float]] = {}
        # model: recent values (real or filled) with a flag "filled", model, values learned
        self._history: dict[str, deque[tuple[float, bool]]] = {}
        self._models: dict[str, Any] = {}
        self._learned: dict[str, int] = {}
        self._gaps = Gaps(self._gap)  # linear
        self._imputed: dict[str, int] = dict.fromkeys(self._names, 0)
        self._unfilled = 0

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
        if self._discover:
            self._discover_fields(event.fields)
        if self.method == "linear":
            return self._process_linear(event)
        values = event.fields
        t = event.time
        out: Fields | None = None
        for name in self._names:
            if name not in values:
                continue
            v = values[name]
            if v is not None and v == v:
                if v.__class__ is int or v.__class__ is float:
                    self._observe(name, v, t)
                continue
            fill = self._estimate(name, t)
            if fill is None:
                self._unfilled += 1
                continue
            if out is None:
                out = dict(values)
            out[name] = self._typed(name, fill)
            self._imputed[name] = self._imputed.get(name, 0) + 1
        if out is None:
            return (event,)
        return (event.replace(fields=out, flags=event.flags | IMPUTED),)

    def _observe(self, name: str, v: float, t: Timestamp) -> None:
        self._last[name] = (t, v)
        method = self.method
        if method == "ewma":
            e = self._ewma.get(name)
            self._ewma[name] = v if e is None else e + self.alpha * (v - e)
        elif method == "mean":
            recent = self._recent.get(name)
            if recent is None:
                recent = self._recent[name] = deque(maxlen=self.window)
            recent.append(v)
        elif method == "model":
            self._learn(name, v)

    def _estimate(self, name: str, t: Timestamp) -> float | None:
        last = self._last.get(name)
        if last is None or t - last[0] > self._gap:
            return None
        method = self.method
        if method == "ewma":
            return self._ewma[name]
        if method == "mean":
            recent = self._recent[name]
            return math.fsum(recent) / len(recent)
        if method == "model":
            return self._predict(name)
        return last[1]

    def _typed(self, name: str, fill: float) -> Value:
        last = self._last.get(name)
        return round(fill) if self._is_int(name, None if last is None else last[1]) else fill

    # -- model -------------------------------------------------------------------------------

    def _features(self, history: deque[tuple[float, bool]]) -> dict[str, float]:
        values = [v for v, _ in history]
        return {f"d{i}": values[-i] - values[-i - 1] for i in range(1, self.lags + 1)}

    def _learn(self, name: str, v: float) -> None:
        history = self._history.get(name)
        if history is None:
            history = self._history[name] = deque(maxlen=self.lags + 1)
        if len(history) == self.lags + 1 and not any(filled for _, filled in history):
            model = self._models.get(name)
            if model is None:
                model = self._models[name] = _model()
            model.learn_one(self._features(history), v - history[-1][0])
            self._learned[name] = self._learned.get(name, 0) + 1
        history.append((v, False))

    def _predict(self, name: str) -> float:
        history = self._history[name]
        last = history[-1][0]
        if self._learned.get(name, 0) < _WARMUP or len(history) <= self.lags:
            fill = last
        else:
            fill = last + float(self._models[name].predict_one(self._features(history)))
        history.append((fill, True))
        return fill

    # -- linear ------------------------------------------------------------------------------

    def _process_linear(self, event: Event) -> tuple[Event, ...]:
        released = self._gaps.add(event, self._names)
        return self._finish(released)

    def _finish(self, released: list[tuple[Event, Filled | None]]) -> tuple[Event, ...]:
        out = []
        for event, filled in released:
            if filled is None:
                out.append(event)
                continue
            fields = dict(event.fields)
            for name, v in filled.items():
                if v is None:
                    self._unfilled += 1
                    continue
                fields[name] = self._typed_linear(name, v)
                self._imputed[name] = self._imputed.get(name, 0) + 1
            imputed = any(v is not None for v in filled.values())
            flags = event.flags | IMPUTED if imputed else event.flags
            out.append(event.replace(fields=fields, flags=flags) if imputed else event)
        return tuple(out)

    def _typed_linear(self, name: str, v: float) -> Value:
        known = self._gaps.known(name)
        return round(v) if self._is_int(name, known) else v

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if self.method != "linear":
            return ()
        return self._finish(self._gaps.tick(now))

    # -- contract ----------------------------------------------------------------------------

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        self._check_schema(upstream)
        return dict(upstream)

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "imputed": sum(self._imputed.values()),
            "unfilled": self._unfilled,
            "held": self._gaps.held(),
        }
        for name in self._names:
            out[f"imputed.{name}"] = self._imputed.get(name, 0)
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"fields": ["y"], "method": "linear", "max_gap": "4s"}
        yield {"method": "ewma", "alpha": 0.5}
        yield {"fields": ["y", "label"], "method": "model", "max_gap": 10, "lags": 2}
