"""learn.regress and learn.forecast: predict a numeric field, then learn its true value."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.operator import Operator, require_fields
from fogrt.types import FieldType, Schema
from operators.learn import models
from operators.learn.drift import DriftGuard
from operators.learn.features import check_field, check_names, numeric_x
from operators.learn.metrics import Regression

_INF = math.inf
# River's intercept learning rate (0.01) takes thousands of events to reach a sensor's level
# (a temperature of 20 C): 0.1 gets there in hundreds and stays stable on scaled features.
DEFAULT_REGRESSOR: models.ModelSpec = (
    {"StandardScaler": {}},
    {"LinearRegression": {"intercept_lr": 0.1}},
)
DEFAULT_FORECASTER: models.ModelSpec = ({"HoltWinters": {"alpha": 0.5, "beta": 0.1}},)


def _finite(value: Any) -> float | None:
    if value.__class__ is float:  # the common case first
        return value if -_INF < value < _INF else None
    if value is None or isinstance(value, str | bool) or not math.isfinite(value):
        return None
    return float(value)


class _Errors:
    """The ``drift:`` option and the progressive metrics, shared by both operators."""

    def __init__(self, drift: Mapping[str, Any] | None, seed: int, model: Any) -> None:
        self.guard = None if drift is None else DriftGuard(drift, seed, model)
        self.scores = Regression()

    def observe(self, y: float, prediction: float, model: Any) -> tuple[bool, Any]:
        """Score one prediction; returns (drift found, the model to keep)."""
        self.scores.update(y, prediction)
        guard = self.guard
        if guard is not None and guard.update(abs(y - prediction)):
            return True, guard.react(model)
        return False, model

    def learned(self, model: Any) -> None:
        if self.guard is not None:
            self.guard.learned(model)

    def metrics(self) -> dict[str, float]:
        out = self.scores.values()
        if self.guard is not None:
            out["drifts"] = self.guard.drifts
        return out


class Regress(Operator):
    """Online regression of a target field on its own recent values and other fields.

    The features of an event are the last ``lags`` values of ``target`` seen on this
    device (``target_lag1`` is the previous one) and the current values of ``fields``. The
    model predicts the target *before* learning the event's true value, so ``error`` is an
    honest out-of-sample error (progressive validation).

    Parameters
    ----------
    target
        The numeric field to predict.
    model
        A River pipeline: optional scalers, then LinearRegression (default: behind a
        StandardScaler, with ``intercept_lr: 0.1`` so that the intercept reaches a sensor's
        level quickly), HoeffdingTreeRegressor, HoeffdingAdaptiveTreeRegressor or
        ARFRegressor.
    lags
        How many previous values of the target are features (0: none). No prediction is
        made until that many have been seen.
    fields
        Other numeric fields used as features, at their current value.
    seed
        Given to every estimator that takes a ``seed`` unless set in the spec.
    drift
        Watch the absolute errors with a drift detector and act on the model:
        ``{detector: ADWIN, action: alert | reset | raise_lr}`` (see ``learn.drift``). Adds
        a ``drift`` field.

    Output: the input fields plus ``prediction`` (``float``, None until it can predict)
    and ``error`` (target minus prediction; None without both), plus ``drift`` with the
    ``drift`` option. An event without a target value is predicted but not learned.

    Metrics: ``events``, ``learned`` and the progressive ``mae`` and ``rmse``.

    Examples
    --------
    In a topology::

        - id: predict-temp
          use: learn.regress
          from: clean
          with: {target: temperature, lags: 3, fields: [humidity],
                 drift: {detector: ADWIN, action: reset}}

    >>> import math
    >>> from fogrt.event import Event
    >>> op = Regress(target="temp", lags=2)
    >>> out = [op.process(Event("room-1", i, float(i), {"temp": 20 + 2 * math.sin(i / 5)}))[0]
    ...        for i in range(500)]
    >>> out[0].fields["prediction"] is None, abs(out[-1].fields["error"]) < 0.5
    (True, True)
    >>> sorted(op.metrics())
    ['events', 'learned', 'mae', 'rmse']
    """

    kind = "learn.regress"

    def __init__(
        self,
        target: str,
        model: models.ModelSpec = DEFAULT_REGRESSOR,
        lags: int = 3,
        fields: list[str] | None = None,
        seed: int = 42,
        drift: Mapping[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.model = model
        self.lags = lags
        self.fields = fields
        self.seed = seed
        self.drift = drift
        check_names(fields)
        if lags < 0:
            raise ParamError("lags", f"cannot be negative, got {lags!r}")
        if lags == 0 and not fields:
            raise ParamError("lags", "with no lags, give the feature fields")
        if fields is not None and target in fields:
            raise ParamError(("fields", fields.index(target)), f"{target!r} is the target")
        self._model: Any = models.build_model(model, seed, ("regressor",))
        self._errors = _Errors(drift, seed, self._model)
        self._names = tuple(f"{target}_lag{i}" for i in range(1, lags + 1))
        self._fields = () if fields is None else tuple(fields)
        self._history: deque[float] = deque(maxlen=lags)  # newest first
        self._events = 0
        self._learned = 0

    def _features(self, values: Mapping[str, Any]) -> dict[str, float] | None:
        if len(self._history) < self.lags:
            return None
        x = numeric_x(values, self._fields)  # type: ignore[arg-type]
        x.update(zip(self._names, self._history, strict=True))
        return x or None

    def process(self, event: Event) -> tuple[Event, ...]:
        self._events += 1
        values = event.fields
        y = _finite(values.get(self.target))
        x = self._features(values)
        prediction = None if x is None else float(self._model.predict_one(x))
        error = None if y is None or prediction is None else y - prediction
        drift = False
        if y is not None:
            if x is not None:
                if prediction is not None:
                    drift, self._model = self._errors.observe(y, prediction, self._model)
                self._model.learn_one(x, y)
                self._learned += 1
                self._errors.learned(self._model)
            if self.lags:
                self._history.appendleft(y)
        out = dict(values)
        out["prediction"] = prediction
        out["error"] = error
        if self.drift is not None:
            out["drift"] = drift
        return (event.replace(fields=out),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        check_field(upstream, self.target, "target", numeric=True)
        if self.fields is not None:
            require_fields(upstream, self.fields, "fields", numeric=True)
        return _outputs(upstream, self.drift is not None, "prediction")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"events": self._events, "learned": self._learned}
        out.update(self._errors.metrics())
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"target": "x"}
        yield {"target": "z", "lags": 2, "fields": ["y"], "drift": {"action": "raise_lr"}}
        yield {
            "target": "y",
            "model": [{"HoeffdingTreeRegressor": {"grace_period": 20}}],
            "lags": 0,
            "fields": ["x", "z"],
            "drift": {"detector": "PageHinkley", "action": "reset"},
        }


def _outputs(upstream: Schema, drift: bool, name: str) -> dict[str, FieldType]:
    out = dict(upstream)
    out[name] = "float"
    out["error"] = "float"
    if drift:
        out["drift"] = "bool"
    return out


class Forecast(Operator):
    """Online univariate forecasting: the value of a field ``horizon`` steps ahead.

    A step is an event of this device that carries the target (put ``window.tumbling``
    upstream for a regular grid). On each such event the model learns the value, then
    forecasts ``horizon`` steps ahead; the event also carries the error of the forecast
    made ``horizon`` steps earlier for it, an honest out-of-sample error.

    Parameters
    ----------
    target
        The numeric field to forecast.
    model
        One forecaster: ``HoltWinters`` (exponential smoothing with trend and optional
        seasonality; default ``{alpha: 0.5, beta: 0.1}``) or ``SNARIMAX`` (seasonal ARIMA,
        e.g. ``{p: 3, d: 1, q: 0}``; ``m`` and ``sp``/``sd``/``sq`` for seasonality; its
        ``regressor`` is a nested spec such as ``[{LinearRegression: {}}]``; moving-average
        terms, ``q > 0``, can diverge on unscaled data). Their required parameters have no
        default: give them.
    horizon
        Steps ahead, at least 1.
    seed
        Given to an estimator that takes one unless set in the spec.
    drift
        Watch the absolute forecast errors and act on the model (``alert`` or ``reset``;
        see ``learn.drift``). Adds a ``drift`` field.

    Output: the input fields plus ``forecast`` (``float``: the value expected ``horizon``
    steps after this one; None until the model can forecast) and ``error`` (this event's
    value minus the forecast made for it ``horizon`` steps ago), plus ``drift``.

    Metrics: ``events``, ``learned`` and the progressive ``mae`` and ``rmse`` of the
    ``horizon``-step forecasts.

    Examples
    --------
    In a topology::

        - id: forecast
          use: learn.forecast
          from: per-minute
          with: {target: temperature_mean, horizon: 15,
                 model: [{SNARIMAX: {p: 3, d: 1, q: 0}}]}

    >>> from fogrt.event import Event
    >>> op = Forecast(target="level", horizon=2)
    >>> out = [op.process(Event("tank-1", i, float(i), {"level": 2.0 * i}))[0]
    ...        for i in range(50)]
    >>> round(out[-1].fields["forecast"], 1), abs(out[-1].fields["error"]) < 0.01
    (102.0, True)
    """

    kind = "learn.forecast"

    def __init__(
        self,
        target: str,
        model: models.ModelSpec = DEFAULT_FORECASTER,
        horizon: int = 1,
        seed: int = 42,
        drift: Mapping[str, Any] | None = None,
    ) -> None:
        self.target = target
        self.model = model
        self.horizon = horizon
        self.seed = seed
        self.drift = drift
        if horizon < 1:
            raise ParamError("horizon", f"must be at least 1, got {horizon!r}")
        self._model: Any = models.build_model(model, seed, ("forecaster",), alone=True)
        self._errors = _Errors(drift, seed, self._model)
        if self._errors.guard is not None and self._errors.guard.action == "raise_lr":
            raise ParamError(("drift", "action"), "raise_lr needs an SGD model; use reset")
        self._made: deque[float | None] = deque(maxlen=horizon)  # oldest first
        self._events = 0
        self._learned = 0
        # HoltWinters cannot forecast before it has seen 2+ values; other models always can.
        self._gated = hasattr(self._model, "_initialized")

    def process(self, event: Event) -> tuple[Event, ...]:
        # The hot path of a model that costs a few microseconds: no helper calls for the
        # common float target, the output event built directly (not ``Event.replace``).
        self._events += 1
        values = event.fields
        y = values.get(self.target)
        if y.__class__ is float:
            if not -_INF < y < _INF:
                y = None
        else:
            y = _finite(y)
        forecast = error = None
        drift = False
        if y is not None:
            made, errors = self._made, self._errors
            guard = errors.guard
            due = made[0] if len(made) == self.horizon else None
            if due is not None:
                error = y - due
                if guard is None:  # the common case: Regression.update, inlined
                    scores = errors.scores
                    scores.scored += 1
                    scores.mae.update(y, due)
                    scores.rmse.update(y, due)
                else:
                    drift, self._model = errors.observe(y, due, self._model)
            model = self._model
            model.learn_one(y)
            self._learned += 1
            if guard is not None:
                errors.learned(model)
            if not self._gated or model._initialized:
                forecast = model.forecast(self.horizon)[-1]
                if forecast.__class__ is not float:
                    forecast = float(forecast)
            made.append(forecast)
        out = values.copy()
        out["forecast"] = forecast
        out["error"] = error
        if self.drift is not None:
            out["drift"] = drift
        return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        check_field(upstream, self.target, "target", numeric=True)
        return _outputs(upstream, self.drift is not None, "forecast")

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"events": self._events, "learned": self._learned}
        out.update(self._errors.metrics())
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"target": "x"}
        yield {"target": "y", "model": [{"SNARIMAX": {"p": 2, "d": 0, "q": 1}}], "horizon": 3}
        yield {
            "target": "z",
            "model": [{"HoltWinters": {"alpha": 0.3, "beta": 0.1, "gamma": 0.2, "seasonality": 4}}],
            "horizon": 2,
            "drift": {"detector": [{"ADWIN": {"delta": 0.01}}], "action": "reset"},
        }
