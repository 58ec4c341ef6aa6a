"""Model specs: the allowlist of estimators a topology may name, and the pipeline builder.

A topology names a model as a River pipeline, ``[{StandardScaler: {}}, {LogisticRegression:
{l2: 0.01}}]`` or ``"StandardScaler | LogisticRegression"``. Every name is a key into
:data:`ESTIMATORS`, whose values are fixed ``module:attribute`` strings written here: nothing
is ever imported by a name taken from a topology file. Parameters are checked against the
constructor's signature before anything is built, and every problem is a ``ParamError`` whose
path points at the step and parameter (``model.1.HalfSpaceTrees.n_trees``).

Two entries are fogrt's own, written to River's estimator API: ``HalfSpaceTrees`` is River's
algorithm with its trees packed into arrays (the same trees, the same scores, a fraction of
the memory: :mod:`operators.learn.hst`), and ``ControlChart`` is an EWMA control chart
(:mod:`operators.learn.chart`), which River does not have.

River is imported on first use, never when ``operators.learn`` is imported.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from fogrt.errors import ParamError
from fogrt.operator import unknown_name_message

Role = Literal[
    "transformer", "detector", "classifier", "regressor", "clusterer", "forecaster", "drift"
]

ModelSpec = str | Sequence[str | Mapping[str, Mapping[str, Any] | None]]
"""A pipeline: ``"A | B"``, or a list of steps, each ``Name`` or ``{Name: {param: value}}``."""

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Entry:
    """Where an allowlisted estimator lives and what it does in a pipeline."""

    target: str
    role: Role


def _river(module: str, role: Role) -> Entry:
    return Entry(f"river.{module}", role)


ESTIMATORS: dict[str, Entry] = {
    # scalers: any number of them, before the last step
    "MaxAbsScaler": _river("preprocessing:MaxAbsScaler", "transformer"),
    "MinMaxScaler": _river("preprocessing:MinMaxScaler", "transformer"),
    "StandardScaler": _river("preprocessing:StandardScaler", "transformer"),
    "AdaptiveStandardScaler": _river("preprocessing:AdaptiveStandardScaler", "transformer"),
    "RobustScaler": _river("preprocessing:RobustScaler", "transformer"),
    # anomaly detectors
    "HalfSpaceTrees": Entry("operators.learn.hst:HalfSpaceTrees", "detector"),
    "ControlChart": Entry("operators.learn.chart:ControlChart", "detector"),
    "GaussianScorer": _river("anomaly:GaussianScorer", "detector"),  # one field, no scaler
    "LODA": _river("anomaly:LODA", "detector"),
    "LocalOutlierFactor": _river("anomaly:LocalOutlierFactor", "detector"),
    "OneClassSVM": _river("anomaly:OneClassSVM", "detector"),
    # classifiers
    "HoeffdingTreeClassifier": _river("tree:HoeffdingTreeClassifier", "classifier"),
    "HoeffdingAdaptiveTreeClassifier": _river("tree:HoeffdingAdaptiveTreeClassifier", "classifier"),
    "ARFClassifier": _river("forest:ARFClassifier", "classifier"),
    "LogisticRegression": _river("linear_model:LogisticRegression", "classifier"),
    "GaussianNB": _river("naive_bayes:GaussianNB", "classifier"),
    # regressors
    "LinearRegression": _river("linear_model:LinearRegression", "regressor"),
    "HoeffdingTreeRegressor": _river("tree:HoeffdingTreeRegressor", "regressor"),
    "HoeffdingAdaptiveTreeRegressor": _river("tree:HoeffdingAdaptiveTreeRegressor", "regressor"),
    "ARFRegressor": _river("forest:ARFRegressor", "regressor"),
    # forecasters (univariate time series)
    "HoltWinters": _river("time_series:HoltWinters", "forecaster"),
    "SNARIMAX": _river("time_series:SNARIMAX", "forecaster"),
    # clusterers
    "KMeans": _river("cluster:KMeans", "clusterer"),
    "DBSTREAM": _river("cluster:DBSTREAM", "clusterer"),
    # drift detectors
    "ADWIN": _river("drift:ADWIN", "drift"),
    "PageHinkley": _river("drift:PageHinkley", "drift"),
    "KSWIN": _river("drift:KSWIN", "drift"),
}
"""Name -> ``module:attribute`` and role. The only estimators a topology can name."""

_ROLE_NAMES: dict[Role, str] = {
    "transformer": "a scaler",
    "detector": "an anomaly detector",
    "classifier": "a classifier",
    "regressor": "a regressor",
    "clusterer": "a clusterer",
    "forecaster": "a forecaster",
    "drift": "a drift detector",
}

# Parameters River accepts but that break score-then-learn: refused with the reason.
_UNSUPPORTED = {
    ("MinMaxScaler", "window_size"): (
        "not supported: River's windowed MinMaxScaler fails on a feature it has not learned "
        "yet; use StandardScaler with window_size, or MinMaxScaler without it"
    ),
}

# String parameters with a fixed set of values. River falls back to its default (and prints
# a line) on an unknown one; a topology gets an error instead.
_CHOICES: dict[tuple[str, Role], tuple[str, ...]] = {
    ("split_criterion", "classifier"): ("gini", "info_gain", "hellinger"),
    ("leaf_prediction", "classifier"): ("mc", "nb", "nba"),
    ("leaf_prediction", "regressor"): ("mean", "model", "adaptive"),
    ("aggregation_method", "regressor"): ("mean", "median"),
    ("max_features", "classifier"): ("sqrt", "log2"),
    ("max_features", "regressor"): ("sqrt", "log2"),
    ("mode", "drift"): ("up", "down", "both"),
}

# Parameters that take an estimator (by their annotation) accept a nested spec of that role:
# ``SNARIMAX: {p: 2, d: 1, q: 1, regressor: [StandardScaler, LinearRegression]}``,
# ``HoeffdingAdaptiveTreeClassifier: {drift_detector: [{ADWIN: {delta: 0.01}}]}``.
_NESTED: dict[str, Role] = {"base.Regressor": "regressor", "base.DriftDetector": "drift"}


def names(role: Role) -> list[str]:
    """The allowlisted estimator names of one role, in table order."""
    return [name for name, entry in ESTIMATORS.items() if entry.role == role]


@cache
def estimator_class(name: str) -> type[Any]:
    """The class of an allowlisted name (imports its module, e.g. River, on first use)."""
    module_name, _, attr = ESTIMATORS[name].target.partition(":")
    cls: type[Any] = getattr(importlib.import_module(module_name), attr)
    return cls


# -- parsing the spec ------------------------------------------------------------------------


def parse_steps(
    spec: ModelSpec, param: str | Path = "model"
) -> list[tuple[Path, str, dict[str, Any]]]:
    """``(path of the step, estimator name, its parameters)`` for each step of a spec.

    ``param`` is where the spec sits in the operator's parameters (a name, or a path for a
    spec nested in another estimator's parameters).
    """
    prefix: Path = (param,) if isinstance(param, str) else tuple(param)
    if isinstance(spec, str):
        return [(prefix, part.strip(), {}) for part in spec.split("|")]
    if isinstance(spec, Mapping):
        raise ParamError(prefix, "a pipeline is a list of steps: [{Estimator: {param: value}}]")
    if not spec:
        raise ParamError(prefix, "the pipeline is empty; give at least one estimator")
    out: list[tuple[Path, str, dict[str, Any]]] = []
    for i, step in enumerate(spec):
        path: Path = (*prefix, i)
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


def check_roles(
    steps: list[tuple[Path, str, dict[str, Any]]], final: Sequence[Role], *, alone: bool = False
) -> None:
    """Names are allowlisted, scalers come first and the last step has one of ``final`` roles.

    ``alone``: the pipeline must be the final estimator only (no scalers: forecasters and
    drift detectors see one number at a time).
    """
    allowed = [n for n in ESTIMATORS if ESTIMATORS[n].role in (*final, "transformer")]
    if alone:
        allowed = [n for n in allowed if ESTIMATORS[n].role != "transformer"]
    finals = [n for n in allowed if ESTIMATORS[n].role in final]
    what = " or ".join(_ROLE_NAMES[r] for r in final)
    for j, (path, name, _) in enumerate(steps):
        if name not in allowed:
            raise ParamError(path, unknown_name_message("estimator", name, allowed))
        last = j == len(steps) - 1
        if last and name not in finals:
            raise ParamError(path, f"the last step must be {what} ({', '.join(finals)})")
        if not last and name in finals:
            raise ParamError(path, f"{name} is {what}: it must be the last step")


# -- checking parameters against the constructor -----------------------------------------------

_KIND_WORDS = {
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "dict": "a mapping",
    "list": "a list",
}


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "dict"
    if isinstance(value, list | tuple):
        return "list"
    return "object"


def _annotation_kinds(annotation: str) -> set[str]:
    """Top-level members of a string annotation: ``'dict[a, b] | None'`` -> {dict, None}."""
    kinds: set[str] = set()
    depth, start, parts = 0, 0, []
    for i, ch in enumerate(annotation):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append(annotation[start:i])
            start = i + 1
    parts.append(annotation[start:])
    for part in parts:
        head = part.strip().split("[", 1)[0]
        if head in ("bool", "int", "float", "str", "dict", "list", "tuple", "None"):
            kinds.add("list" if head == "tuple" else head)
        elif head:
            kinds.add("object")
    return kinds


def _accepted(param: inspect.Parameter) -> set[str] | None:
    """The kinds of YAML value a constructor parameter takes; None when it is untyped."""
    annotation = param.annotation if isinstance(param.annotation, str) else ""
    kinds = _annotation_kinds(annotation) if annotation else set()
    default = param.default
    if default is not inspect.Parameter.empty:
        kinds.add("None" if default is None else _kind(default))
    if not annotation and default in (None, inspect.Parameter.empty):
        return None
    return kinds


def check_value(param: inspect.Parameter, value: Any) -> str | None:
    """Why ``value`` does not fit a constructor parameter, or None if it may."""
    kinds = _accepted(param)
    if kinds is None:
        return None
    given = "None" if value is None else _kind(value)
    if given in kinds or (given == "int" and "float" in kinds):
        return None
    plain = sorted(k for k in kinds if k in _KIND_WORDS)
    if not plain:
        annotation = param.annotation if isinstance(param.annotation, str) else "an object"
        # Parameters that take River objects (optimizers, engines, statistics) cannot be
        # written in YAML; only numbers, strings, lists and mappings can.
        return f"takes a River object ({annotation}) and cannot be set in a topology"
    expected = " or ".join(_KIND_WORDS[k] for k in plain)
    return f"expected {expected}, got {value!r}"


def _nested_role(param: inspect.Parameter) -> Role | None:
    """The role of an estimator a parameter takes (SNARIMAX's regressor...), if any."""
    annotation = param.annotation if isinstance(param.annotation, str) else ""
    for word, role in _NESTED.items():
        if word in annotation:
            return role
    return None


_SIGNATURES: dict[type[Any], inspect.Signature] = {}


def _signature(cls: type[Any]) -> inspect.Signature:
    """``inspect.signature`` of an estimator class, once per class (a model spec is checked
    each time an operator instance is built: once per device)."""
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(cls)
    return sig


def _check_params(
    path: Path, name: str, cls: type[Any], kwargs: dict[str, Any], seed: int
) -> dict[str, tuple[ModelSpec, Role, Path]]:
    """Check every parameter; returns the estimators given as nested specs (parameter ->
    spec, role, where), checked by building them once, to be built with each instance."""
    signature = _signature(cls)
    nested: dict[str, tuple[ModelSpec, Role, Path]] = {}
    for pname, value in kwargs.items():
        param = signature.parameters.get(pname)
        if param is None:
            msg = unknown_name_message("parameter", pname, list(signature.parameters))
            raise ParamError((*path, name, pname), msg)
        role = _nested_role(param)
        if role is not None and isinstance(value, str | list | tuple):
            where = (*path, name, pname)
            build_model(value, seed, (role,), param=where, alone=role == "drift")
            nested[pname] = (value, role, where)
            continue
        problem = _UNSUPPORTED.get((name, pname)) or check_value(param, value)
        choices = _CHOICES.get((pname, ESTIMATORS[name].role))
        if problem is None and choices and isinstance(value, str) and value not in choices:
            problem = unknown_name_message("value", value, choices)
        if problem is None and isinstance(value, float) and not math.isfinite(value):
            problem = f"must be a finite number, got {value!r}"
        if problem is not None:
            raise ParamError((*path, name, pname), problem)
    return nested


# -- building ----------------------------------------------------------------------------------


_Recipe = list[tuple[Path, str, type[Any], dict[str, Any], dict[str, tuple[ModelSpec, Role, Path]]]]
_RECIPES: dict[tuple[Any, ...], _Recipe] = {}
"""Checked specs, by ``repr`` of the spec and the build arguments: a spec is checked once,
then every operator instance (one per device) only constructs its estimators."""


def build_steps(
    spec: ModelSpec,
    seed: int,
    final: Sequence[Role],
    *,
    param: str | Path = "model",
    alone: bool = False,
) -> list[Any]:
    """Check a spec and build its estimators, in order (not yet composed).

    ``seed`` goes to every estimator that takes one and was not given one, so that two runs
    on the same stream give the same results. ``alone``: no scalers allowed.
    """
    key = (repr(spec), seed, tuple(final), repr(param), alone)
    recipe = _RECIPES.get(key)
    if recipe is None:
        recipe = _recipe(spec, seed, final, param, alone)
        if len(_RECIPES) < 4096:
            _RECIPES[key] = recipe
    built = []
    for path, name, cls, kwargs, nested in recipe:
        given = dict(kwargs)
        for pname, (inner, role, where) in nested.items():
            given[pname] = build_model(inner, seed, (role,), param=where, alone=role == "drift")
        try:
            built.append(cls(**given))
        except (TypeError, ValueError) as exc:
            raise ParamError((*path, name), f"cannot build {name}: {exc}") from None
    return built


def _recipe(
    spec: ModelSpec, seed: int, final: Sequence[Role], param: str | Path, alone: bool
) -> _Recipe:
    """Check a spec: for each step, what to construct with which parameters."""
    steps = parse_steps(spec, param)
    check_roles(steps, final, alone=alone)
    recipe: _Recipe = []
    for path, name, kwargs in steps:
        cls = estimator_class(name)
        nested = _check_params(path, name, cls, kwargs, seed)
        if "seed" in _signature(cls).parameters and "seed" not in kwargs:
            kwargs["seed"] = seed
        recipe.append((path, name, cls, kwargs, nested))
    return recipe


def compose(estimators: Sequence[Any]) -> Any:
    """One estimator as itself, several as a River pipeline."""
    if len(estimators) == 1:
        return estimators[0]
    from river import compose as river_compose

    return river_compose.Pipeline(*estimators)


def build_model(
    spec: ModelSpec,
    seed: int,
    final: Sequence[Role],
    *,
    param: str | Path = "model",
    alone: bool = False,
) -> Any:
    """Check a spec and build the River estimator or pipeline it describes."""
    return compose(build_steps(spec, seed, final, param=param, alone=alone))


def step_name(spec: ModelSpec, index: int = -1) -> str:
    """The estimator name of one step of an already validated spec."""
    return parse_steps(spec)[index][1]


def final_step(model: Any) -> Any:
    """The last estimator of a pipeline (the estimator itself when it is not one)."""
    steps = getattr(model, "steps", None)
    return list(steps.values())[-1] if isinstance(steps, Mapping) else model
