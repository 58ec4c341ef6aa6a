"""Online learning operators: River models that score and learn one event at a time."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.operator import Operator, numeric_fields, require_fields, unknown_name_message
from fogrt.types import FieldType, Schema

_INF = math.inf
_REAL = (int, float)

# The only estimators a topology can name. Nothing is ever imported by a name taken from a
# topology file: a name is a key into this table.
TRANSFORMERS = ("MaxAbsScaler", "MinMaxScaler", "StandardScaler")
DETECTORS = ("HalfSpaceTrees", "LODA", "LocalOutlierFactor", "OneClassSVM")
ESTIMATORS = TRANSFORMERS + DETECTORS

# Parameters River accepts but that break score-then-learn: refused with the reason.
_UNSUPPORTED = {
    ("MinMaxScaler", "window_size"): (
        "not supported: River's windowed MinMaxScaler fails on a feature it has not learned "
        "yet; use StandardScaler with window_size, or MinMaxScaler without it"
    ),
}

DEFAULT_MODEL = "MinMaxScaler | HalfSpaceTrees"
DEFAULT_THRESHOLD: Mapping[str, float] = {"quantile": 0.99}

ModelSpec = str | list[str | dict[str, dict[str, Any] | None]]


@cache
def _river_class(name: str) -> type[Any]:
    """The River class for an allowlisted name (imports River on first use)."""
    from river import anomaly, preprocessing

    table: dict[str, type[Any]] = {
        "MaxAbsScaler": preprocessing.MaxAbsScaler,
        "MinMaxScaler": preprocessing.MinMaxScaler,
        "StandardScaler": preprocessing.StandardScaler,
        "HalfSpaceTrees": anomaly.HalfSpaceTrees,
        "LODA": anomaly.LODA,
        "LocalOutlierFactor": anomaly.LocalOutlierFactor,
        "OneClassSVM": anomaly.OneClassSVM,
    }
    return table[name]


def _steps(model: ModelSpec) -> list[tuple[tuple[str | int, ...], str, dict[str, Any]]]:
    """``(path of the step, estimator name, its parameters)`` for each step of the spec."""
    if isinstance(model, str):
        names = [part.strip() for part in model.split("|")]
        return [(("model",), name, {}) for name in names]
    if not model:
        raise ParamError("model", "the pipeline is empty; give at least an anomaly detector")
    out: list[tuple[tuple[str | int, ...], str, dict[str, Any]]] = []
    for i, step in enumerate(model):
        path: tuple[str | int, ...] = ("model", i)
        if isinstance(step, str):
            out.append((path, step, {}))
        elif isinstance(step, Mapping) and len(step) == 1:
            ((name, kwargs),) = step.items()
            if kwargs is not None and not isinstance(kwargs, Mapping):
                raise ParamError((*path, name), "expected a mapping of parameter: value")
            out.append((path, name, dict(kwargs or {})))
        else:
            raise ParamError(path, "a step is an estimator name or {Estimator: {param: value}}")
    return out


def _check_value(param: inspect.Parameter, value: Any) -> str | None:
    """Why ``value`` does not fit a River constructor parameter, or None if it may."""
    default = param.default
    annotation = param.annotation if isinstance(param.annotation, str) else ""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"expected true or false, got {value!r}"
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"expected an integer, got {value!r}"
    if isinstance(default, float):
        ok = isinstance(value, _REAL) and not isinstance(value, bool)
        return None if ok else f"expected a number, got {value!r}"
    if value is None:
        return None if default is None else f"expected a value, got {value!r}"
    if default is None and annotation:
        # Parameters that take River objects (optimizers, engines, statistics) cannot be
        # written in YAML; only ints, floats and mappings can.
        if "dict" in annotation:
            return None if isinstance(value, Mapping) else f"expected a mapping, got {value!r}"
        if "float" in annotation:
            ok = isinstance(value, _REAL) and not isinstance(value, bool)
            return None if ok else f"expected a number, got {value!r}"
        if "int" in annotation:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"expected an integer, got {value!r}"
        return f"takes a River object ({annotation}) and cannot be set in a topology"
    return None


def build_model(model: ModelSpec, seed: int) -> Any:
    """Check a model spec and build the River estimator or pipeline it describes.

    Raises ``ParamError`` at ``("model", i)`` for an unknown or misplaced estimator and at
    ``("model", i, Estimator, param)`` for a parameter that does not fit (``("model",)`` for
    the string form). ``seed`` goes to every estimator that takes one and was not given one.
    """
    steps = _steps(model)
    for j, (path, name, _) in enumerate(steps):
        if name not in ESTIMATORS:
            raise ParamError(path, unknown_name_message("estimator", name, list(ESTIMATORS)))
        last = j == len(steps) - 1
        if last and name not in DETECTORS:
            raise ParamError(
                path, f"the last step must be an anomaly detector ({', '.join(DETECTORS)})"
            )
        if not last and name in DETECTORS:
            raise ParamError(path, f"{name} is an anomaly detector: it must be the last step")
    estimators = []
    for path, name, kwargs in steps:
        cls = _river_class(name)
        signature = inspect.signature(cls)
        for pname, value in kwargs.items():
            param = signature.parameters.get(pname)
            if param is None:
                known = list(signature.parameters)
                msg = unknown_name_message("parameter", pname, known)
                raise ParamError((*path, name, pname), msg)
            problem = _UNSUPPORTED.get((name, pname)) or _check_value(param, value)
            if problem is not None:
                raise ParamError((*path, name, pname), problem)
        if "seed" in signature.parameters and "seed" not in kwargs:
            kwargs["seed"] = seed
        try:
            estimators.append(cls(**kwargs))
        except (TypeError, ValueError) as exc:
            raise ParamError((*path, name), f"cannot build {name}: {exc}") from None
    if len(estimators) == 1:
        return estimators[0]
    from river import compose

    return compose.Pipeline(*estimators)


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
        Allowed scalers: MaxAbsScaler, MinMaxScaler, StandardScaler; detectors:
        HalfSpaceTrees, LODA, LocalOutlierFactor, OneClassSVM. Parameters are checked against
        the River constructor; those that take River objects cannot be set.
    fields
        The numeric fields the model sees. Default: every numeric field of each event
        (including labels and counters: list the fields when the input has any).
    threshold
        Exactly one of ``{quantile: q}`` (``0 < q < 1``; an event is an anomaly when its
        score is above the running q-quantile of the scores before it) or ``{fixed: x}``
        (when its score is above ``x``).
    warmup
        During the first ``warmup`` scored events of each key the model learns and the
        score is emitted, but ``is_anomaly`` is always false.
    seed
        Given to every estimator that takes a ``seed`` and was not given one, so that two
        runs on the same stream give the same scores.

    Output: the input fields plus ``score`` (``float``; higher is more anomalous) and
    ``is_anomaly`` (``bool``), overwriting input fields of these names. An event with no
    usable (present, finite) feature is passed on with ``score`` None and ``is_anomaly``
    false, and the model does not learn from it.

    Metrics: ``events``, ``anomalies`` and, once known, ``threshold``.

    Examples
    --------
    In a topology::

        - id: detect
          use: learn.anomaly
          with:
            fields: [temp, vibration]
            model:
              - StandardScaler: {}
              - OneClassSVM: {nu: 0.05}
            threshold: {quantile: 0.995}
            warmup: 200

    >>> from fogrt.event import Event
    >>> op = Anomaly(fields=["temp"], threshold={"fixed": 0.8}, warmup=2)
    >>> out = [op.process(Event("pump-1", i, float(i), {"temp": 20.0 + i % 3}))[0]
    ...        for i in range(300)]
    >>> sorted(out[-1].fields), type(out[-1].fields["score"]).__name__
    (['is_anomaly', 'score', 'temp'], 'float')
    >>> op.metrics()["events"]
    300
    """

    kind = "learn.anomaly"

    def __init__(
        self,
        model: ModelSpec = DEFAULT_MODEL,
        fields: list[str] | None = None,
        threshold: Mapping[str, float] = DEFAULT_THRESHOLD,
        warmup: int = 50,
        seed: int = 42,
    ) -> None:
        self.model = model
        self.fields = fields
        self.threshold = threshold
        self.warmup = warmup
        self.seed = seed
        if fields is not None:
            if not fields:
                raise ParamError("fields", "empty; leave it out to use every numeric field")
            for i, name in enumerate(fields):
                if name in fields[:i]:
                    raise ParamError(("fields", i), f"{name!r} is listed twice")
        if len(threshold) != 1:
            raise ParamError("threshold", "give exactly one of {quantile: q} or {fixed: x}")
        ((how, value),) = threshold.items()
        if how not in ("quantile", "fixed"):
            msg = unknown_name_message("threshold", how, ["quantile", "fixed"])
            raise ParamError(("threshold", how), msg)
        if how == "quantile" and not 0.0 < value < 1.0:
            raise ParamError(("threshold", how), f"must be between 0 and 1, got {value!r}")
        if not math.isfinite(value):
            raise ParamError(("threshold", how), f"must be a finite number, got {value!r}")
        if warmup < 0:
            raise ParamError("warmup", f"cannot be negative, got {warmup!r}")
        self._model = build_model(model, seed)
        self._fields: tuple[str, ...] | None = None if fields is None else tuple(fields)
        self._fixed: float | None = float(value) if how == "fixed" else None
        self._quantile: Any = None
        if how == "quantile":
            from river import stats

            self._quantile = stats.Quantile(value)
        self._learned = 0
        self._events = 0
        self._anomalies = 0

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, learn from every numeric field of the compiled input."""
        if self.fields is None and self._events == 0:
            self._fields = tuple(numeric_fields(upstream))

    def process(self, event: Event) -> tuple[Event, ...]:
        values = event.fields
        self._events += 1
        x: dict[str, float] = {}
        if self._fields is None:
            for name, v in values.items():
                if isinstance(v, _REAL) and v.__class__ is not bool and -_INF < v < _INF:
                    x[name] = v
        else:
            for name in self._fields:
                v = values.get(name)
                if v is not None and -_INF < v < _INF:  # type: ignore[operator]
                    x[name] = v  # type: ignore[assignment]
        out = dict(values)
        if not x:
            out["score"] = None
            out["is_anomaly"] = False
            return (event.replace(fields=out),)
        model = self._model
        score = float(model.score_one(x))
        model.learn_one(x)
        self._learned += 1
        quantile = self._quantile
        if self._learned <= self.warmup:
            flag = False
        elif quantile is None:
            flag = score > self._fixed  # type: ignore[operator]
        else:
            limit = quantile.get()
            flag = limit is not None and score > limit
        if quantile is not None:
            quantile.update(score)
        if flag:
            self._anomalies += 1
        out["score"] = score
        out["is_anomaly"] = flag
        return (event.replace(fields=out),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        if self.fields is not None:
            require_fields(upstream, self.fields, "fields", numeric=True)
        elif not numeric_fields(upstream):
            raise FieldError("fields", "the input has no numeric fields to learn from")
        out = dict(upstream)
        out["score"] = "float"
        out["is_anomaly"] = "bool"
        return out

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"events": self._events, "anomalies": self._anomalies}
        if self._fixed is not None:
            out["threshold"] = self._fixed
        elif (limit := self._quantile.get()) is not None:
            out["threshold"] = limit
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"fields": ["x", "y", "z"], "warmup": 10}
        yield {
            "model": [{"MinMaxScaler": {}}, {"HalfSpaceTrees": {"n_trees": 5, "window_size": 20}}],
            "threshold": {"quantile": 0.9},
            "warmup": 5,
            "seed": 7,
        }
        yield {
            "model": "StandardScaler | OneClassSVM",
            "fields": ["x", "z"],
            "threshold": {"fixed": 0.02},
        }
