"""learn.classify: predict every event's class now, learn when its label is known."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.operator import Operator
from fogrt.types import Duration, FieldType, Schema, Timestamp, Value
from operators.learn import models
from operators.learn.drift import DriftGuard
from operators.learn.features import (
    check_features,
    check_field,
    check_names,
    mixed_x,
    numeric_x,
)
from operators.learn.labels import DelayQueue, Held, JoinBuffer
from operators.learn.metrics import Classification

DEFAULT_MODEL = "HoeffdingAdaptiveTreeClassifier"


class Classify(Operator):
    """Online classification: predict each event, learn from it once its label is known.

    Every event with features is predicted at once, by the model as it is *before* it
    learns that event (predict-then-learn), and the prediction is scored against the label
    when the label is known: progressive validation. Labels may come with the features, be
    held back by ``label_delay``, or arrive in a later event (``join_on``).

    Parameters
    ----------
    model
        A River pipeline: optional scalers, then one classifier:
        HoeffdingAdaptiveTreeClassifier (default; adapts to drift), HoeffdingTreeClassifier,
        ARFClassifier (adaptive random forest: the most accurate, ~10x the cost of a tree),
        GaussianNB, LogisticRegression (binary labels only: 0/1 or true/false; put a
        StandardScaler in front).
    label
        The field that carries the class (int, str or bool); ``None`` on events without one.
    fields
        The feature fields. Numbers are used as they are, booleans as 0/1, strings one-hot
        (``door=open: 1``, ``door=closed: 0``; up to 64 values a field). Default: every
        numeric field except ``label`` and ``join_on``.
    join_on
        Labels arrive in later events: an event without a label is predicted and held by
        the value of this field (a reading id, or its timestamp as a field); an event with a
        label and the same value (and no features needed) teaches the model the held
        features.
    label_delay
        A label that comes with its features is used only once event time has moved this
        far past the event (``30s``, ``1h``): the replay of a labelled file then learns no
        sooner than the label would have been known in the field. Default 0: at once.
    max_pending
        At most this many predictions wait for a label (per device); the oldest are dropped
        and counted as ``labels_expired``.
    seed
        Given to every estimator that takes a ``seed`` (ARF, HAT) unless set in the spec.
    drift
        Watch the model's errors (0 right, 1 wrong) with a drift detector and act:
        ``{detector: ADWIN, action: alert | reset | raise_lr}`` (see ``learn.drift``).
        Adds a ``drift`` field (true on the event on which a drift was found).

    Output: the input fields plus ``prediction`` (the label's type; None while the model
    knows no class, or without features) and ``proba`` (the model's probability of the
    predicted class), plus ``drift`` with the ``drift`` option.

    Metrics: ``events``, ``learned``, ``pending``, ``labels_expired``,
    ``labels_unmatched`` and the progressive ``accuracy`` and ``macro_f1``; with 0/1 (or
    bool) labels also ``f1`` and ``roc_auc`` of class 1.

    Examples
    --------
    In a topology::

        - id: activity
          use: learn.classify
          from: windows
          with:
            label: activity
            model: [{StandardScaler: {}}, {ARFClassifier: {n_models: 10}}]
            label_delay: 10s

    >>> from fogrt.event import Event
    >>> op = Classify(label="hot", fields=["temp"], model="GaussianNB")
    >>> temps = [18.0, 30.0, 19.0, 31.0, 18.5, 29.5] * 20
    >>> out = [op.process(Event("room-1", i, float(i), {"temp": t, "hot": t > 25}))[0]
    ...        for i, t in enumerate(temps)]
    >>> out[-1].fields["prediction"], round(out[-1].fields["proba"], 2)
    (True, 1.0)
    >>> op.metrics()["accuracy"] > 0.95
    True
    """

    kind = "learn.classify"

    def __init__(
        self,
        model: models.ModelSpec = DEFAULT_MODEL,
        label: str = "label",
        fields: list[str] | None = None,
        join_on: str | None = None,
        label_delay: Duration = 0.0,
        max_pending: int = 10_000,
        seed: int = 42,
        drift: Mapping[str, Any] | None = None,
    ) -> None:
        self.model = model
        self.label = label
        self.fields = fields
        self.join_on = join_on
        self.label_delay = label_delay
        self.max_pending = max_pending
        self.seed = seed
        self.drift = drift
        check_names(fields)
        if fields is not None and label in fields:
            raise ParamError(("fields", fields.index(label)), f"{label!r} is the label")
        if join_on is not None and join_on == label:
            raise ParamError("join_on", "cannot be the label field")
        if not (label_delay >= 0 and math.isfinite(label_delay)):
            raise ParamError("label_delay", f"must be zero or a duration, got {label_delay!r}")
        if max_pending < 1:
            raise ParamError("max_pending", f"must be at least 1, got {max_pending!r}")
        self._model: Any = models.build_model(model, seed, ("classifier",))
        self._binary_only = models.step_name(model) == "LogisticRegression"
        self._guard = None if drift is None else DriftGuard(drift, seed, self._model)
        self._fields: tuple[str, ...] | None = None if fields is None else tuple(fields)
        self._delayed = DelayQueue(label_delay, max_pending)
        self._joins = JoinBuffer(max_pending)
        self._scores = Classification()
        self._categories: dict[str, list[str]] = {}  # string feature -> values seen
        self._int_labels = False
        self._events = 0
        self._learned = 0

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, use every numeric field but the label and the join field."""
        self._int_labels = upstream.get(self.label) == "int"
        if self.fields is None and self._events == 0:
            exclude = (self.label, self.join_on or self.label)
            self._fields = tuple(check_features(upstream, None, exclude, numeric=True))

    def process(self, event: Event) -> tuple[Event, ...]:
        self._events += 1
        values = event.fields
        names: Iterable[str] | None = self._fields
        if names is None:  # not bound to a schema: the numbers of this event
            names = [n for n in numeric_x(values, None) if n not in (self.label, self.join_on)]
        x = mixed_x(values, names, self._categories)
        y = values.get(self.label)
        out = dict(values)
        drift = False
        if x:
            prediction, proba, p_one = self._predict(x)
            held = Held(event.time, x, prediction, p_one, y)
            if y is not None:
                if self.label_delay:
                    self._delayed.add(held)
                else:
                    drift |= self._learn(held)
            elif self.join_on is not None and values.get(self.join_on) is not None:
                self._joins.add(values[self.join_on], held)
        else:
            prediction, proba = None, None
            if y is not None and self.join_on is not None:
                join = values.get(self.join_on)
                waiting = None if join is None else self._joins.take(join)
                if waiting is not None:
                    waiting.label = y
                    drift |= self._learn(waiting)
        if self.label_delay:
            drift |= self._release(event.time)
        out["prediction"] = prediction
        out["proba"] = proba
        if self._guard is not None:
            out["drift"] = drift
        return (event.replace(fields=out),)

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if self.label_delay:
            self._release(now)
        return ()

    def _predict(self, x: dict[str, float]) -> tuple[Value, float | None, float | None]:
        """The predicted class, its probability and the probability of class 1."""
        probas: dict[Value, float] = self._model.predict_proba_one(x)
        if not probas:
            return None, None, None
        best = max(probas, key=probas.__getitem__)
        p_one = probas.get(1, 0.0)  # True == 1: the same key for bool labels
        prediction = best
        if self._int_labels and isinstance(best, bool):
            prediction = int(best)  # LogisticRegression answers True/False for 1/0
        return prediction, float(probas[best]), float(p_one)

    def _learn(self, held: Held) -> bool:
        """Score the held prediction, learn the label; True when the guard saw a drift."""
        y = held.label
        if self._binary_only and y not in (0, 1):
            raise ValueError(f"LogisticRegression is a binary classifier; got label {y!r}")
        if isinstance(y, int) and not isinstance(y, bool):
            self._int_labels = True
        self._scores.update(y, held.prediction, held.confidence)
        self._model.learn_one(held.x, y)
        self._learned += 1
        guard = self._guard
        if guard is None:
            return False
        guard.learned(self._model)
        if held.prediction is not None and guard.update(float(held.prediction != y)):
            self._model = guard.react(self._model)
            return True
        return False

    def _release(self, now: Timestamp) -> bool:
        drift = False
        for held in self._delayed.due(now):
            drift |= self._learn(held)
        return drift

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        check_field(upstream, self.label, "label")
        if upstream[self.label] == "float":
            raise FieldError("label", f"field {self.label!r} is float; a class is int, str or bool")
        if self.join_on is not None:
            check_field(upstream, self.join_on, "join_on")
        check_features(upstream, self.fields, (self.label, self.join_on or ""), numeric=False)
        out = dict(upstream)
        out["prediction"] = upstream[self.label]
        out["proba"] = "float"
        if self.drift is not None:
            out["drift"] = "bool"
        return out

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "events": self._events,
            "learned": self._learned,
            "pending": len(self._delayed) + len(self._joins),
            "labels_expired": self._delayed.expired + self._joins.expired,
            "labels_unmatched": self._joins.unmatched,
        }
        if self._guard is not None:
            out["drifts"] = self._guard.drifts
        out.update(self._scores.values())
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"fields": ["x", "y", "z"]}
        yield {
            "model": "StandardScaler | LogisticRegression",
            "label_delay": "5s",
            "drift": {"detector": "ADWIN", "action": "reset"},
        }
        yield {
            "model": [{"ARFClassifier": {"n_models": 3, "grace_period": 20}}],
            "fields": ["x", "z"],
            "label_delay": 3,
            "max_pending": 2,
        }
