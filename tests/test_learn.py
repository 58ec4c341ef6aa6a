"""learn.anomaly: detection on injected spikes, thresholds, warmup, model specs, errors."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.operator import build, validate_params
from operators.learn import Anomaly

N = 2000
SPIKES = 10


def make(**params: Any) -> Anomaly:
    op = build(Anomaly, params)
    assert isinstance(op, Anomaly)
    return op


def spiky_stream(seed: int = 3) -> tuple[list[Event], set[int]]:
    """2000 readings N(0, 1) on x, y, z; 10 of them (after the first 300) +8 sigma on all."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(N, 3))
    spikes = {int(i) for i in rng.choice(np.arange(300, N), SPIKES, replace=False)}
    for i in spikes:
        data[i] += 8.0
    events = [
        Event("dev", i, 1e9 + i, {"x": row[0], "y": row[1], "z": row[2], "status": "ok"})
        for i, row in enumerate(data.tolist())
    ]
    return events, spikes


def run(op: Anomaly, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        assert len(result) == 1
        out.extend(result)
    return out


def test_default_model_finds_the_spikes() -> None:
    events, spikes = spiky_stream()
    op = make(fields=["x", "y", "z"])
    out = run(op, events)
    flagged = {e.seq for e in out if e.fields["is_anomaly"]}
    recall = len(flagged & spikes) / len(spikes)
    false_positives = len(flagged - spikes)
    assert recall >= 0.8, (recall, false_positives)
    assert false_positives <= 0.02 * N, (recall, false_positives)
    metrics = op.metrics()
    assert metrics["events"] == N
    assert metrics["anomalies"] == len(flagged)
    assert 0.0 < metrics["threshold"] <= 1.0
    assert all(type(e.fields["score"]) is float for e in out)
    assert all(e.fields["status"] == "ok" for e in out)


def test_quantile_is_taken_before_the_update() -> None:
    from river import stats

    events, _ = spiky_stream(seed=5)
    out = run(make(fields=["x", "y", "z"], threshold={"quantile": 0.95}, warmup=20), events)
    quantile = stats.Quantile(0.95)
    for i, e in enumerate(out):
        score = e.fields["score"]
        limit = quantile.get()
        expected = i >= 20 and limit is not None and score > limit
        assert e.fields["is_anomaly"] is expected
        quantile.update(score)


def test_fixed_threshold() -> None:
    events, spikes = spiky_stream()
    op = make(fields=["x", "y", "z"], threshold={"fixed": 0.95}, warmup=0)
    out = run(op, events)
    assert all(e.fields["is_anomaly"] is (e.fields["score"] > 0.95) for e in out)
    assert {e.seq for e in out if e.fields["is_anomaly"]} & spikes
    assert op.metrics()["threshold"] == 0.95


def test_warmup_suppresses_alarms() -> None:
    events, _ = spiky_stream()
    out = run(make(fields=["x", "y", "z"], threshold={"fixed": -1.0}, warmup=100), events)
    assert not any(e.fields["is_anomaly"] for e in out[:100])
    assert all(e.fields["is_anomaly"] for e in out[100:])  # every score > -1
    out = run(make(fields=["x", "y", "z"], warmup=N), events)
    assert not any(e.fields["is_anomaly"] for e in out)
    assert all(e.fields["score"] is not None for e in out)


def test_event_without_features_passes_through() -> None:
    op = make(fields=["x", "y"], threshold={"fixed": -1.0}, warmup=0)
    for fields in ({"x": None, "y": None}, {"x": math.nan, "z": 1.0}, {"y": math.inf}):
        (out,) = op.process(Event("dev", 1, 1.0, dict(fields)))
        assert out.fields == {**fields, "score": None, "is_anomaly": False}
    assert op._learned == 0
    (out,) = op.process(Event("dev", 2, 2.0, {"x": 1.0, "y": None}))
    assert out.fields["score"] == 0.0 and out.fields["is_anomaly"] is True
    assert op.metrics()["events"] == 4


def test_all_numeric_fields_by_default() -> None:
    op = make(threshold={"fixed": 0.5})
    (out,) = op.process(Event("dev", 1, 1.0, {"a": 1.0, "b": 2, "flag": True, "s": "x"}))
    assert out.fields["score"] == 0.0
    steps = list(op._model.steps.values())
    assert set(steps[0].min) == {"a", "b"}  # the scaler saw the numbers only


def test_determinism_and_seed() -> None:
    events, _ = spiky_stream()
    events = events[:600]
    a = [e.fields["score"] for e in run(make(fields=["x", "y", "z"]), events)]
    b = [e.fields["score"] for e in run(make(fields=["x", "y", "z"]), events)]
    c = [e.fields["score"] for e in run(make(fields=["x", "y", "z"], seed=43), events)]
    assert a == b
    assert a != c
    explicit = {"HalfSpaceTrees": {"seed": 42}}
    d = run(make(fields=["x", "y", "z"], model=["MinMaxScaler", explicit], seed=1), events)
    assert [e.fields["score"] for e in d] == a  # a given seed is not overridden


def test_snapshot_restore_default_model() -> None:
    events, _ = spiky_stream()
    op = make(fields=["x", "y", "z"], warmup=10)
    run(op, events[:400])
    twin = op.clone()
    twin.restore(op.snapshot())
    a = run(op, events[400:800])
    b = run(twin, events[400:800])
    assert [e.fields for e in a] == [e.fields for e in b]
    assert op.metrics() == twin.metrics()


@pytest.mark.parametrize(
    "model",
    [
        "HalfSpaceTrees",
        "StandardScaler | OneClassSVM",
        [{"MaxAbsScaler": {}}, {"LODA": {"n_bins": 5}}],
        [{"StandardScaler": None}, {"LocalOutlierFactor": {"n_neighbors": 5}}],
        [{"StandardScaler": {"window_size": 100}}, {"HalfSpaceTrees": {"limits": None}}],
    ],
)
def test_model_specs(model: Any) -> None:
    events, _ = spiky_stream()
    given = copy.deepcopy(model)
    op = Anomaly(model=model, fields=["x", "y", "z"], warmup=5)
    out = run(op, events[:120])
    assert all(isinstance(e.fields["score"], float) for e in out)
    assert op.model is model
    assert model == given  # stored unchanged: no seed injected into the spec


def test_default_model_is_minmax_then_hst() -> None:
    op = Anomaly()
    assert op.model == "MinMaxScaler | HalfSpaceTrees"
    assert op.threshold == {"quantile": 0.99}
    names = [type(step).__name__ for step in op._model.steps.values()]
    assert names == ["MinMaxScaler", "HalfSpaceTrees"]
    assert list(op._model.steps.values())[1].seed == 42


@pytest.mark.parametrize(
    ("model", "path", "message"),
    [
        (
            [{"MinMaxScaler": {}}, {"HalfSpaceTree": {}}],
            ("model", 1),
            "unknown estimator 'HalfSpaceTree' (did you mean 'HalfSpaceTrees'?)",
        ),
        ("StandardScalar | HalfSpaceTrees", ("model",), "did you mean 'StandardScaler'"),
        (["os.system"], ("model", 0), "unknown estimator 'os.system'; expected one of"),
        (
            [{"HalfSpaceTrees": {"n_tree": 5}}],
            ("model", 0, "HalfSpaceTrees", "n_tree"),
            "unknown parameter 'n_tree' (did you mean 'n_trees'?)",
        ),
        (
            [{"HalfSpaceTrees": {"n_trees": "many"}}],
            ("model", 0, "HalfSpaceTrees", "n_trees"),
            "expected an integer",
        ),
        (
            [{"HalfSpaceTrees": {"seed": 1.5}}],
            ("model", 0, "HalfSpaceTrees", "seed"),
            "expected an integer",
        ),
        (
            [{"OneClassSVM": {"optimizer": "sgd"}}],
            ("model", 0, "OneClassSVM", "optimizer"),
            "cannot be set",
        ),
        (
            [{"OneClassSVM": {"nu": [1]}}],
            ("model", 0, "OneClassSVM", "nu"),
            "expected a number",
        ),
        (
            [{"StandardScaler": {"with_std": 1}}, "HalfSpaceTrees"],
            ("model", 0, "StandardScaler", "with_std"),
            "expected true or false",
        ),
        (
            [{"MinMaxScaler": {"window_size": 10}}, "HalfSpaceTrees"],
            ("model", 0, "MinMaxScaler", "window_size"),
            "not supported",
        ),
        (["HalfSpaceTrees", "MinMaxScaler"], ("model", 0), "must be the last step"),
        (["MinMaxScaler"], ("model", 0), "the last step must be an anomaly detector"),
        ([], ("model",), "empty"),
        ([{"MinMaxScaler": {}, "HalfSpaceTrees": {}}], ("model", 0), "single"),
    ],
)
def test_bad_model(model: Any, path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ParamError) as info:
        build(Anomaly, {"model": model})
    assert info.value.path == path
    assert message.replace("single", "{Estimator") in info.value.message


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"threshold": {}}, ("threshold",)),
        ({"threshold": {"quantile": 0.9, "fixed": 1.0}}, ("threshold",)),
        ({"threshold": {"quantile": 1.0}}, ("threshold", "quantile")),
        ({"threshold": {"quantile": 0}}, ("threshold", "quantile")),
        ({"threshold": {"fixed": math.nan}}, ("threshold", "fixed")),
        ({"threshold": {"quantiel": 0.9}}, ("threshold", "quantiel")),
        ({"warmup": -1}, ("warmup",)),
        ({"fields": []}, ("fields",)),
        ({"fields": ["x", "x"]}, ("fields", 1)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Anomaly, params)
    assert info.value.path == path


def test_threshold_suggestion() -> None:
    with pytest.raises(ParamError, match=r"did you mean 'quantile'"):
        build(Anomaly, {"threshold": {"quantiel": 0.9}})
    with pytest.raises(ParamError, match=r"did you mean 'threshold'"):
        validate_params(Anomaly, {"treshold": {"fixed": 1.0}})


def test_schema() -> None:
    upstream = {"x": "float", "n": "int", "s": "str"}
    assert make(fields=["x", "n"]).schema(upstream) == {
        **upstream,
        "score": "float",
        "is_anomaly": "bool",
    }
    with pytest.raises(FieldError) as info:
        make(fields=["x", "nn"]).schema(upstream)
    assert info.value.path == ("fields", 1)
    assert "did you mean 'n'" in info.value.message
    with pytest.raises(FieldError) as info:
        make(fields=["s"]).schema(upstream)
    assert info.value.path == ("fields", 0)
    with pytest.raises(FieldError):
        make().schema({"s": "str"})


def test_importing_the_module_does_not_import_river() -> None:
    code = "import sys, operators.learn; print('river' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
