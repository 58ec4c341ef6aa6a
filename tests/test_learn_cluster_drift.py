"""learn.cluster (KMeans, DBSTREAM) and learn.drift (ADWIN, PageHinkley, KSWIN)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import LATE, Event
from fogrt.operator import Operator, build
from operators.learn import Cluster, Drift


def run(op: Operator, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple) and len(result) == 1
        out.extend(result)
    return out


def blobs(n: int = 1500, seed: int = 0) -> tuple[list[Event], list[int]]:
    """Three well separated operating regimes of a pump (load, vibration)."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 1.0], [5.0, 8.0]])
    which = rng.integers(0, 3, n)
    points = centres[which] + rng.normal(0, 0.5, (n, 2))
    events = [
        Event("p", i, float(i), {"load": float(a), "vib": float(b), "name": "p"})
        for i, (a, b) in enumerate(points)
    ]
    return events, [int(w) for w in which]


def purity(out: list[Event], truth: list[int]) -> float:
    pairs = Counter((e.fields["cluster"], t) for e, t in zip(out, truth, strict=True))
    best: dict[Any, int] = {}
    for (cluster, _), count in pairs.items():
        best[cluster] = max(best.get(cluster, 0), count)
    return sum(best.values()) / len(out)


@pytest.mark.parametrize(
    "model",
    [
        [{"StandardScaler": {}}, {"KMeans": {"n_clusters": 3, "halflife": 0.1}}],
        [{"StandardScaler": {}}, {"DBSTREAM": {"clustering_threshold": 0.5}}],
    ],
)
def test_finds_the_regimes(model: Any) -> None:
    events, truth = blobs()
    op = build(Cluster, {"model": model, "fields": ["load", "vib"]})
    out = run(op, events)
    assert purity(out[500:], truth[500:]) > 0.9
    assert all(type(e.fields["cluster"]) is int for e in out)
    if "DBSTREAM" in model[-1]:
        assert op.metrics()["clusters"] >= 3


def test_cluster_defaults_and_missing_features() -> None:
    op = build(Cluster, {})
    op.bind({"load": "float", "vib": "float", "name": "str"})
    (out,) = op.process(Event("p", 0, 0.0, {"load": None, "vib": None, "name": "p"}))
    assert out.fields["cluster"] is None and op.metrics()["learned"] == 0
    (out,) = op.process(Event("p", 1, 1.0, {"load": 1.0, "vib": 2.0, "name": "p"}))
    assert isinstance(out.fields["cluster"], int)
    assert op.schema({"load": "float", "name": "str"})["cluster"] == "int"
    with pytest.raises(FieldError):
        build(Cluster, {"fields": ["name"]}).schema({"load": "float", "name": "str"})
    with pytest.raises(ParamError) as info:
        build(Cluster, {"model": "GaussianNB"})
    assert info.value.path == ("model",)


def _shift(n: int = 1000, at: int = 500, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, n) + np.where(np.arange(n) >= at, 3.0, 0.0)
    return [Event("s", i, float(i), {"v": float(v)}) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    "detector",
    [
        "ADWIN",
        [{"PageHinkley": {"threshold": 50.0, "mode": "up"}}],
        [{"KSWIN": {"alpha": 0.0001, "window_size": 100, "stat_size": 30}}],
    ],
)
def test_drift_on_a_mean_shift(detector: Any) -> None:
    op = build(Drift, {"field": "v", "detector": detector})
    out = run(op, _shift())
    first = next(i for i, e in enumerate(out) if e.fields["drift"])
    assert 500 <= first < 600
    assert op.metrics()["drifts"] >= 1 and op.metrics()["events"] == 1000


def test_drift_skips_missing_values_and_is_seeded() -> None:
    events = [e.replace(fields={"v": None}) if i % 7 == 0 else e for i, e in enumerate(_shift())]
    kswin = [{"KSWIN": {"window_size": 60, "stat_size": 20}}]
    a = [e.fields["drift"] for e in run(build(Drift, {"field": "v", "detector": kswin}), events)]
    b = [e.fields["drift"] for e in run(build(Drift, {"field": "v", "detector": kswin}), events)]
    assert a == b and any(a)
    assert not any(d for d, e in zip(a, events, strict=True) if e.fields["v"] is None)


def test_drift_keeps_the_envelope_and_reads_only_finite_numbers() -> None:
    op = build(Drift, {"field": "v", "detector": [{"PageHinkley": {"min_instances": 5}}]})
    values: list[Any] = [1.0, 2, None, math.nan, -math.inf, "x", True] + [1.0] * 30 + [50.0] * 5
    seen = 0
    for i, v in enumerate(values):
        fields = {"v": v, "drift": "upstream"}
        e = Event("k", i, float(i), fields, arrival=9.0, flags=LATE)
        (o,) = op.process(e)
        assert (o.key, o.seq, o.time, o.arrival, o.flags) == ("k", i, float(i), 9.0, LATE)
        assert fields == {"v": v, "drift": "upstream"}  # the input is untouched
        assert list(o.fields) == ["v", "drift"] and type(o.fields["drift"]) is bool
        seen += o.fields["drift"]
    assert seen >= 1 and op.metrics() == {"events": len(values), "drifts": seen}


def test_drift_params_and_schema() -> None:
    with pytest.raises(ParamError) as info:
        build(Drift, {"field": "v", "detector": "HalfSpaceTrees"})
    assert info.value.path == ("detector",)
    with pytest.raises(ParamError) as info:
        build(Drift, {"field": "v", "detector": [{"PageHinkley": {"mode": "upward"}}]})
    assert info.value.path == ("detector", 0, "PageHinkley", "mode")
    assert build(Drift, {"field": "v"}).schema({"v": "int"}) == {"v": "int", "drift": "bool"}
    with pytest.raises(FieldError) as info:
        build(Drift, {"field": "s"}).schema({"s": "str"})
    assert info.value.path == ("field",)
