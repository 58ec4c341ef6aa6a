"""Concept drift: ``learn.drift`` alerts on any field; a ``drift:`` option acts on a model.

Operators are independent: one cannot reach into another's model. So there are two ways
to use a drift detector, and they do different things:

- ``learn.drift`` watches one numeric field (a reading, or an upstream model's ``error``)
  and only *alerts*: it adds ``drift: true`` to the event on which the detector fires;
- the ``drift:`` option of ``learn.classify``, ``learn.regress`` and ``learn.forecast``
  watches that operator's own errors and can *act* on its model when they grow (a detection
  while the errors are falling, as a model converges, is ignored): ``alert`` (flag the
  event), ``reset`` (replace the model with a fresh one, which relearns the new concept
  from scratch) or ``raise_lr`` (multiply an SGD model's learning rate by ``factor`` for the
  next ``steps`` learned events, to move to the new concept faster without forgetting).

Written as ``drift: {detector: ADWIN, action: reset}``; the detector is an allowlisted
name or a one-step spec with parameters, ``detector: [{PageHinkley: {threshold: 20}}]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.operator import Operator, unknown_name_message
from fogrt.types import FieldType, Schema
from operators.learn import models
from operators.learn.features import check_field

ACTIONS = ("alert", "reset", "raise_lr")
_INF = math.inf
_SHORT = 1.0 - 0.5 ** (1 / 10)
_LONG = 1.0 - 0.5 ** (1 / 200)
_OPTIONS = ("detector", "action", "factor", "steps")


def build_detector(spec: models.ModelSpec, seed: int, param: str = "detector") -> Any:
    """A River drift detector from an allowlisted spec (a single step)."""
    return models.build_model(spec, seed, ("drift",), param=param, alone=True)


def _learning_rate(model: Any) -> Any:
    """The constant learning-rate schedule of an SGD-trained model, or None."""
    schedule = getattr(getattr(models.final_step(model), "optimizer", None), "lr", None)
    return schedule if hasattr(schedule, "learning_rate") else None


class DriftGuard:
    """The ``drift:`` option: a detector on a model's errors and the action it triggers."""

    def __init__(self, spec: Mapping[str, Any], seed: int, model: Any) -> None:
        for name in spec:
            if name not in _OPTIONS:
                raise ParamError(("drift", name), unknown_name_message("option", name, _OPTIONS))
        self.action = spec.get("action", "alert")
        if self.action not in ACTIONS:
            msg = unknown_name_message("action", str(self.action), ACTIONS)
            raise ParamError(("drift", "action"), msg)
        self.factor = _number(spec, "factor", 10.0, minimum=1.0)
        self.steps = int(_number(spec, "steps", 100, minimum=1, integer=True))
        if self.action == "raise_lr" and _learning_rate(model) is None:
            raise ParamError(
                ("drift", "action"),
                "raise_lr needs a model trained with a constant learning rate "
                "(LinearRegression, LogisticRegression)",
            )
        try:
            self.detector = build_detector(spec.get("detector", "ADWIN"), seed)
        except ParamError as exc:
            raise ParamError(("drift", *exc.path), exc.message) from None
        self.drifts = 0
        self._boosted = 0  # learned events left at the raised learning rate
        self._base_lr: float | None = None
        self._recent: float | None = None  # exponentially weighted means of the errors
        self._usual: float | None = None

    def update(self, error: float) -> bool:
        """Feed one error; True when the detector signals that errors *grew*.

        Detectors are two-sided: a model that converges has falling errors, and acting on
        that (resetting an improving model) would be wrong. A detection counts only when the
        recent errors (half-life 10) are above the usual ones (half-life 200).
        """
        recent = error if self._recent is None else self._recent + _SHORT * (error - self._recent)
        usual = error if self._usual is None else self._usual + _LONG * (error - self._usual)
        self._recent, self._usual = recent, usual
        self.detector.update(error)
        if self.detector.drift_detected and recent > usual:
            self.drifts += 1
            return True
        return False

    def react(self, model: Any) -> Any:
        """The model to keep after a drift: the same, a fresh clone, or the same, boosted."""
        if self.action == "reset":
            return model.clone()
        if self.action == "raise_lr":
            schedule = _learning_rate(model)
            if self._base_lr is None:
                self._base_lr = schedule.learning_rate
            schedule.learning_rate = self._base_lr * self.factor
            self._boosted = self.steps
        return model

    def learned(self, model: Any) -> None:
        """Count a learned event; the raised learning rate ends after ``steps`` of them."""
        if self._boosted:
            self._boosted -= 1
            if not self._boosted:
                _learning_rate(model).learning_rate = self._base_lr
                self._base_lr = None


def _number(
    spec: Mapping[str, Any], name: str, default: float, *, minimum: float, integer: bool = False
) -> float:
    value = spec.get(name, default)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise ParamError(("drift", name), f"expected {kind} >= {minimum:g}, got {value!r}")
    return float(value)


class Drift(Operator):
    """Concept-drift detection on one numeric field; adds ``drift`` (true when it fires).

    The detector sees the field's value on every event that has one (a missing or
    non-finite value is skipped). It only alerts: to act on a model when its errors drift,
    give that model's operator a ``drift:`` option (see :mod:`operators.learn.drift`).

    Parameters
    ----------
    field
        The numeric field to watch: a reading, or an upstream model's ``error``.
    detector
        ``ADWIN`` (changes in the mean), ``PageHinkley`` (a sustained increase or
        decrease) or ``KSWIN`` (changes in the distribution; Kolmogorov-Smirnov), as a name
        or a one-step spec with parameters: ``[{ADWIN: {delta: 0.001}}]``.
    seed
        Given to a detector that takes one (KSWIN) unless set in the spec.

    Output: the input fields plus ``drift`` (``bool``). Metrics: ``events``, ``drifts``.

    Examples
    --------
    In a topology, on the error of a regression upstream::

        - id: shift
          use: learn.drift
          from: predict
          with: {field: error, detector: [{PageHinkley: {threshold: 20}}]}

    >>> from fogrt.event import Event
    >>> op = Drift(field="temp", detector="ADWIN")
    >>> temps = [20.0 + 0.1 * (i % 5) for i in range(300)] + [30.0] * 100
    >>> out = [op.process(Event("room-1", i, float(i), {"temp": t}))[0]
    ...        for i, t in enumerate(temps)]
    >>> first = next(i for i, e in enumerate(out) if e.fields["drift"])
    >>> 300 <= first < 340, op.metrics()["drifts"] >= 1
    (True, True)
    """

    kind = "learn.drift"

    def __init__(self, field: str, detector: models.ModelSpec = "ADWIN", seed: int = 42) -> None:
        self.field = field
        self.detector = detector
        self.seed = seed
        self._detector = build_detector(detector, seed)
        self._events = 0
        self._drifts = 0

    def process(self, event: Event) -> tuple[Event, ...]:
        # The hot path of a sub-microsecond detector: the output event is built directly
        # (``Event.replace`` costs a call and keyword parsing more) and the fields copied
        # with ``dict.copy``.
        self._events += 1
        values = event.fields
        value = values.get(self.field)
        drift = False
        if value is not None and value.__class__ is not str and -_INF < value < _INF:  # type: ignore[operator]
            detector = self._detector
            detector.update(value)
            if detector.drift_detected:
                drift = True
                self._drifts += 1
        out = values.copy()
        out["drift"] = drift
        return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        check_field(upstream, self.field, "field", numeric=True)
        out = dict(upstream)
        out["drift"] = "bool"
        return out

    def metrics(self) -> dict[str, float]:
        return {"events": self._events, "drifts": self._drifts}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"field": "x"}
        yield {"field": "y", "detector": [{"PageHinkley": {"threshold": 5.0, "min_instances": 10}}]}
        yield {"field": "z", "detector": [{"KSWIN": {"window_size": 50, "stat_size": 20}}]}
