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
    learned = 0
    for i, e in enumerate(out):
        score = e.fields["score"]
        # No limit before 1 / (1 - q) = 20 scores: a 0.95-quantile of fewer is their maximum.
        expected = i >= 20 and learned >= 20 and score > quantile.get()
        assert e.fields["is_anomaly"] is expected
        if i >= 250:  # HalfSpaceTrees scores 0 until its first window (250) is full
            quantile.update(score)
            learned += 1
    assert any(e.fields["is_anomaly"] for e in out)


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


def test_output_keeps_the_event_and_its_fields() -> None:
    """Key, seq, times and flags pass through; the input's fields are copied, not changed."""
    op = make(fields=["x"], model="ControlChart", threshold={"fixed": 3.0}, warmup=20)
    for i in range(40):
        op.process(Event("dev", i, float(i), {"x": float(i % 3)}))
    for fields in ({"x": 50.0, "note": "n", "score": "old"}, {"x": None, "note": "n"}):
        event = Event("dev", 77, 123.5, dict(fields), 124.0, 1)
        (out,) = op.process(event)
        assert (out.key, out.seq, out.time, out.arrival, out.flags) == ("dev", 77, 123.5, 124.0, 1)
        assert event.fields == fields
        assert list(out.fields)[:2] == ["x", "note"]
    assert out.fields == {"x": None, "note": "n", "score": None, "is_anomaly": False}
    assert op.metrics()["anomalies"] == 1


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


# -- thresholds that follow drift ------------------------------------------------------------


def _drifting_scores(n: int = 6000) -> list[float]:
    """Scores of a detector on non-stationary data: noise around a level that keeps rising."""
    rng = np.random.default_rng(11)
    return list(0.3 + 0.5 * np.arange(n) / n + rng.normal(0, 0.02, n))


def _alert_rate(spec: dict[str, float], scores: list[float]) -> float:
    from operators.learn import thresholds

    thresholds.check(spec)
    threshold = thresholds.build(spec)
    alerts = 0
    for score in scores:
        limit = threshold.limit()
        alerts += limit is not None and score > limit
        threshold.update(score)
    return alerts / len(scores)


def test_adaptive_thresholds_follow_rising_scores() -> None:
    """At q = 0.98 about 2 % should alert; the quantile of the whole past lags far behind."""
    scores = _drifting_scores()
    whole_past = _alert_rate({"quantile": 0.98}, scores)
    window = _alert_rate({"quantile": 0.98, "window": 200}, scores)
    sigma = _alert_rate({"sigma": 3.0, "halflife": 200}, scores)
    assert whole_past > 0.2
    assert window < 0.06
    assert sigma < 0.01
    stationary = list(np.random.default_rng(5).normal(0.5, 0.02, 6000))
    assert 0.01 < _alert_rate({"quantile": 0.98}, stationary) < 0.03
    assert 0.01 < _alert_rate({"quantile": 0.98, "window": 200}, stationary) < 0.04


def test_thresholds_wait_for_enough_scores() -> None:
    from operators.learn import thresholds

    q = thresholds.build({"quantile": 0.99})
    s = thresholds.build({"sigma": 3.0})
    for i in range(99):
        assert q.limit() is None
        q.update(float(i))
        if i < 29:
            assert s.limit() is None
        s.update(float(i % 7))
    q.update(1.0)
    assert q.limit() is not None and s.limit() is not None


@pytest.mark.parametrize(
    ("threshold", "path", "message"),
    [
        ({"sigma": 0}, ("threshold", "sigma"), "positive"),
        ({"sigma": 3, "window": 10}, ("threshold", "window"), "goes with quantile"),
        ({"quantile": 0.9, "window": 1.5}, ("threshold", "window"), "integer"),
        ({"quantile": 0.9, "halflife": 10}, ("threshold", "halflife"), "goes with sigma"),
        ({"sigma": 3, "halflife": -1}, ("threshold", "halflife"), "positive"),
        ({"window": 10}, ("threshold",), "exactly one"),
    ],
)
def test_bad_adaptive_thresholds(threshold: Any, path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ParamError) as info:
        build(Anomaly, {"threshold": threshold})
    assert info.value.path == path
    assert message in info.value.message


# -- what the model learns from --------------------------------------------------------------


def _shift_stream(n: int = 600, at: int = 300) -> list[Event]:
    """A reading around 10 that moves to 14 at ``at`` and stays there (a lasting fault)."""
    rng = np.random.default_rng(2)
    values = rng.normal(10.0, 1.0, n) + np.where(np.arange(n) >= at, 4.0, 0.0)
    return [Event("pump", i, float(i), {"v": float(v)}) for i, v in enumerate(values)]


@pytest.mark.parametrize(("learn", "flagged_at_end"), [("always", False), ("normal", True)])
def test_learn_normal_does_not_absorb_a_lasting_fault(learn: str, flagged_at_end: bool) -> None:
    op = make(model="ControlChart", threshold={"fixed": 5.0}, learn=learn, warmup=100)
    out = run(op, _shift_stream(2000, at=300))
    assert any(e.fields["is_anomaly"] for e in out[300:400])
    assert all(e.fields["is_anomaly"] for e in out[-100:]) is flagged_at_end


def test_learn_warmup_freezes_the_model() -> None:
    op = make(model="ControlChart", threshold={"quantile": 0.99}, learn="warmup", warmup=200)
    out = run(op, _shift_stream())
    assert op.metrics()["learned"] == 200
    assert not any(e.fields["is_anomaly"] for e in out[:200])
    assert all(e.fields["is_anomaly"] for e in out[320:])
    assert op.metrics()["threshold"] == op._track.threshold.limit()


def test_shared_model_normalises_each_device() -> None:
    """One detector for two pumps of very different scale, each with its own scaler."""
    rng = np.random.default_rng(4)
    events = []
    for i in range(1500):
        for key, scale in (("small", 1.0), ("big", 1000.0)):
            v = rng.normal(5.0, 1.0) * scale
            if i in (1200, 1300):
                v += 8.0 * scale
            events.append(Event(key, i, float(i), {"v": float(v)}))
    model = [{"StandardScaler": {}}, {"ControlChart": {"alpha": 1.0}}]
    op = make(model=model, threshold={"fixed": 5.0}, warmup=50, shared=True)
    out = run(op, events)
    flagged = {(e.key, e.seq) for e in out if e.fields["is_anomaly"]}
    assert {("small", 1200), ("small", 1300), ("big", 1200), ("big", 1300)} <= flagged
    assert len(flagged) <= 8
    assert op.metrics()["devices"] == 2
    assert "threshold" not in op.metrics()
    assert set(op._tracks) == {"small", "big"}
    twin = op.clone()
    twin.restore(op.snapshot())
    more = [Event(k, 2000, 2000.0, {"v": 5.0}) for k in ("small", "big")]
    assert [e.fields for e in run(op, more)] == [e.fields for e in run(twin, more)]


def test_shared_model_without_scalers() -> None:
    op = make(model="HalfSpaceTrees", fields=["x"], shared=True, warmup=0)
    out = run(op, [Event(k, i, float(i), {"x": 0.5}) for i in range(5) for k in "ab"])
    assert len(out) == 10 and op._pre is None


def test_learn_is_validated() -> None:
    with pytest.raises(ParamError) as info:
        validate_params(Anomaly, {"learn": "sometimes"})
    assert info.value.path == ("learn",)


def test_gaussian_scorer_on_one_field() -> None:
    events, spikes = spiky_stream()
    op = make(
        model=[{"GaussianScorer": {"grace_period": 50}}],
        fields=["x"],
        threshold={"fixed": 0.9999},
        warmup=0,
    )
    out = run(op, events)
    flagged = {e.seq for e in out if e.fields["is_anomaly"]}
    assert len(flagged & spikes) >= 8 and len(flagged - spikes) <= 10
    assert all(e.fields["score"] == 0.0 for e in out[:50])  # its grace period
    with pytest.raises(ParamError) as info:
        make(model="GaussianScorer", fields=["x", "y"])
    assert info.value.path == ("fields",)
    with pytest.raises(ParamError) as info:
        make(model="StandardScaler | GaussianScorer", fields=["x"])
    assert info.value.path == ("model", 0)
