"""learn.anomaly: score every event with an online anomaly detector, then learn from it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Literal

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.operator import Operator, numeric_fields
from fogrt.types import FieldType, Key, Schema
from operators.learn import models, thresholds
from operators.learn.features import check_features, check_names, numeric_x

LearnMode = Literal["always", "normal", "warmup"]

DEFAULT_MODEL = "MinMaxScaler | HalfSpaceTrees"
DEFAULT_THRESHOLD: Mapping[str, float] = {"quantile": 0.99}

_INF = float("inf")
_NEG_INF = -_INF


class _Track:
    """What one device has of its own: normalisation (when shared), threshold, counter."""

    __slots__ = ("pre", "scored", "threshold")

    def __init__(self, pre: Any, threshold: thresholds.Threshold) -> None:
        self.pre = pre  # the scalers of a shared model (None otherwise)
        self.threshold = threshold
        self.scored = 0


class _OneField:
    """River's univariate detectors (GaussianScorer) take the value as ``y``: adapt them."""

    def __init__(self, detector: Any, field: str) -> None:
        self.detector = detector
        self.field = field

    @property
    def ready(self) -> bool:
        """GaussianScorer scores 0 until ``grace_period`` values: those are not scores."""
        return bool(self.detector.gaussian.n_samples >= self.detector.grace_period)

    def score_one(self, x: dict[str, float]) -> float:
        value = x.get(self.field)
        return 0.0 if value is None else float(self.detector.score_one(None, value))

    def learn_one(self, x: dict[str, float]) -> None:
        value = x.get(self.field)
        if value is not None:
            self.detector.learn_one(None, value)


class Anomaly(Operator):
    """Online anomaly detection with a River pipeline: score, then learn, every event.

    Each event is scored by the model *before* the model learns from it (progressive
    validation), so a score never reflects the event itself.

    Parameters
    ----------
    model
        A River pipeline, written as a list of steps: scalers first, one anomaly detector
        last. A step is ``{Estimator: {param: value}}`` or just the estimator's name. A string
        names the estimators with their default parameters: ``"HalfSpaceTrees"`` (the
        detector alone, no scaler) or ``"StandardScaler | OneClassSVM"``. Default:
        ``MinMaxScaler | HalfSpaceTrees`` (HalfSpaceTrees expects features in ``[0, 1]``).
        Scalers: MaxAbsScaler, MinMaxScaler, StandardScaler, AdaptiveStandardScaler,
        RobustScaler. Detectors: HalfSpaceTrees (River's, with packed trees: same scores,
        ~20x less memory), ControlChart (EWMA control chart; score in standard deviations),
        LODA, LocalOutlierFactor (keeps every event: short streams only), OneClassSVM,
        GaussianScorer (one field, no scaler: ``2 |CDF - 0.5|`` of a running Gaussian, so
        0.997 is about 3 sigma).
        Parameters are checked against the constructor; those that take River objects
        cannot be set.
    fields
        The numeric fields the model sees. Default: every numeric field of the input
        (including labels and counters: list the fields when the input has any).
    threshold
        ``{fixed: x}``, ``{quantile: q}`` (running quantile of all learned scores),
        ``{quantile: q, window: n}`` (of the last ``n``: follows drifting scores) or
        ``{sigma: k, halflife: n}`` (exponentially weighted mean + k std of the scores,
        ``halflife`` 500 by default: follows drift in O(1) memory). An event is an anomaly
        when its score is above the limit known *before* it. Learned thresholds learn from
        the scores of the events the model learns from, once the detector gives real scores
        (HalfSpaceTrees scores 0 until its first window is full).
    warmup
        During the first ``warmup`` scored events (of each device, with ``shared``),
        ``is_anomaly`` is always false.
    seed
        Given to every estimator that takes a ``seed`` and was not given one, so that two
        runs on the same stream give the same scores.
    learn
        Which events the model (and a learned threshold) learns from: ``always``; ``normal``
        (events not flagged: an anomaly that lasts does not become the new normal, as
        River's ``protect_anomaly_detector``); ``warmup`` (the first ``warmup`` events only,
        then the model is frozen: train-then-test, as benchmarks do).
    shared
        One detector for every device this instance sees, with per-device scalers and
        thresholds: devices that differ in scale share what is learned about shape, at a
        fraction of the memory (a model per device costs ~60 KiB with the default
        HalfSpaceTrees; a device of a shared one costs ~4 KiB). Use it with ``key: global``
        on the node; under the default per-device keying each instance sees one device.

    Output: the input fields plus ``score`` (``float``; higher is more anomalous) and
    ``is_anomaly`` (``bool``), overwriting input fields of these names. An event with no
    usable (present, finite) feature is passed on with ``score`` None and ``is_anomaly``
    false, and the model does not learn from it.

    Metrics: ``events``, ``learned``, ``anomalies`` and, once known and not shared,
    ``threshold``.

    Examples
    --------
    In a topology::

        - id: detect
          use: learn.anomaly
          with:
            fields: [temp, vibration]
            model:
              - StandardScaler: {}
              - HalfSpaceTrees: {n_trees: 10, height: 6, window_size: 100}
            threshold: {sigma: 4, halflife: 1000}
            learn: normal
            warmup: 200

    >>> from fogrt.event import Event
    >>> op = Anomaly(fields=["temp"], model="ControlChart", threshold={"fixed": 4.0}, warmup=20)
    >>> temps = [20.0 + (i % 3) / 10 for i in range(100)] + [25.0]
    >>> out = [op.process(Event("pump-1", i, float(i), {"temp": t}))[0]
    ...        for i, t in enumerate(temps)]
    >>> sorted(out[-1].fields), out[-1].fields["is_anomaly"], out[50].fields["is_anomaly"]
    (['is_anomaly', 'score', 'temp'], True, False)
    >>> op.metrics()["events"], op.metrics()["anomalies"]
    (101, 1)
    """

    kind = "learn.anomaly"

    def __init__(
        self,
        model: models.ModelSpec = DEFAULT_MODEL,
        fields: list[str] | None = None,
        threshold: Mapping[str, float] = DEFAULT_THRESHOLD,
        warmup: int = 50,
        seed: int = 42,
        learn: LearnMode = "always",
        shared: bool = False,
    ) -> None:
        self.model = model
        self.fields = fields
        self.threshold = threshold
        self.warmup = warmup
        self.seed = seed
        self.learn = learn
        self.shared = shared
        check_names(fields)
        thresholds.check(threshold)
        if warmup < 0:
            raise ParamError("warmup", f"cannot be negative, got {warmup!r}")
        if learn not in ("always", "normal", "warmup"):
            raise ParamError("learn", f"expected always, normal or warmup, got {learn!r}")
        steps = models.build_steps(model, seed, ("detector",))
        if models.step_name(model) == "GaussianScorer":
            steps = self._one_field(steps, fields)
        self._fields: tuple[str, ...] | None = None if fields is None else tuple(fields)
        if shared:
            self._model: Any = steps[-1]
            self._pre = models.compose(steps[:-1]) if len(steps) > 1 else None
        else:
            self._model = models.compose(steps)
            self._pre = None
        self._detector = steps[-1]
        # Only some detectors say when their scores are real (HalfSpaceTrees, GaussianScorer);
        # for the others, looking ``ready`` up on every event costs a failed attribute lookup.
        detector_type = type(self._detector)
        self._has_ready = hasattr(detector_type, "ready") or hasattr(self._detector, "ready")
        self._track = _Track(None, thresholds.build(threshold))
        self._tracks: dict[Key, _Track] = {}
        self._events = 0
        self._learned = 0
        self._anomalies = 0

    @staticmethod
    def _one_field(steps: list[Any], fields: list[str] | None) -> list[Any]:
        if len(steps) > 1:
            raise ParamError(("model", 0), "GaussianScorer scores one raw value: no scalers")
        if fields is None or len(fields) != 1:
            raise ParamError("fields", "GaussianScorer scores one field: give fields: [name]")
        return [_OneField(steps[0], fields[0])]

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, learn from every numeric field of the compiled input."""
        if self.fields is None and self._events == 0:
            self._fields = tuple(numeric_fields(upstream))

    def _track_of(self, key: Key) -> _Track:
        track = self._tracks.get(key)
        if track is None:
            pre = None if self._pre is None else self._pre.clone()
            track = self._tracks[key] = _Track(pre, thresholds.build(self.threshold))
        return track

    def process(self, event: Event) -> tuple[Event, ...]:
        # The hot path: the features gathered inline (``numeric_x`` for known fields), the
        # output event built directly (``Event.replace`` costs a call and keyword parsing
        # more), the fields copied with ``dict.copy``, the limit asked for only when it can
        # flag, and no attribute lookup on the detector for a ``ready`` it does not have.
        self._events += 1
        values = event.fields
        names = self._fields
        if names is None:
            x = numeric_x(values, None)
        else:
            x = {}
            get = values.get
            lo, hi = _NEG_INF, _INF
            for name in names:
                v = get(name)
                if v is not None and lo < v < hi:  # type: ignore[operator]
                    x[name] = v  # type: ignore[assignment]
        out = values.copy()
        if not x:
            out["score"] = None
            out["is_anomaly"] = False
            return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)
        track = self._track_of(event.key) if self.shared else self._track
        pre = track.pre
        model = self._model
        ready = self._detector.ready if self._has_ready else True
        score = float(model.score_one(x if pre is None else pre.transform_one(x)))
        scored = track.scored = track.scored + 1
        if scored <= self.warmup:
            warm = True
            flag = False
        else:
            warm = False
            limit = track.threshold.limit()
            flag = limit is not None and score > limit
        learn = self.learn
        if learn == "warmup":
            learning = warm or not ready
        elif learn == "always":
            learning = True
        else:
            learning = not flag or not ready
        if learning:
            self._learned += 1
            if pre is None:
                model.learn_one(x)
            else:
                pre.learn_one(x)
                model.learn_one(pre.transform_one(x))
            if ready:
                track.threshold.update(score)
        if flag:
            self._anomalies += 1
        out["score"] = score
        out["is_anomaly"] = flag
        return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        check_features(upstream, self.fields, (), numeric=True)
        out = dict(upstream)
        out["score"] = "float"
        out["is_anomaly"] = "bool"
        return out

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "events": self._events,
            "learned": self._learned,
            "anomalies": self._anomalies,
        }
        if not self.shared and (limit := self._track.threshold.limit()) is not None:
            out["threshold"] = limit
        elif self.shared:
            out["devices"] = len(self._tracks)
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"fields": ["x", "y", "z"], "warmup": 10}
        yield {
            "model": [{"MinMaxScaler": {}}, {"HalfSpaceTrees": {"n_trees": 5, "window_size": 20}}],
            "threshold": {"quantile": 0.9, "window": 40},
            "warmup": 5,
            "seed": 7,
            "learn": "normal",
        }
        yield {
            "model": [{"StandardScaler": {}}, {"ControlChart": {"alpha": 0.3}}],
            "fields": ["x", "z"],
            "threshold": {"sigma": 3.0, "halflife": 30},
            "learn": "warmup",
            "warmup": 40,
            "shared": True,
        }
