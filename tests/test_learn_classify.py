"""learn.classify: progressive accuracy on River's bundled datasets, delayed labels, drift."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.operator import build
from operators.learn import Classify


def make(**params: Any) -> Classify:
    op = build(Classify, params)
    assert isinstance(op, Classify)
    return op


def run(op: Classify, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple) and len(result) == 1
        out.extend(result)
    return out


def river_events(name: str, n: int | None = None, label: str = "label") -> list[Event]:
    """One of River's bundled (offline) datasets as events of one device, one a second."""
    from river import datasets

    dataset = getattr(datasets, name)()
    rows = itertools.islice(dataset, n)
    return [
        Event("dev", i, float(i), {**{k.replace("-", "_"): v for k, v in x.items()}, label: y})
        for i, (x, y) in enumerate(rows)
    ]


@pytest.mark.parametrize(
    ("model", "least"),
    [
        ("StandardScaler | LogisticRegression", 0.88),
        ("HoeffdingAdaptiveTreeClassifier", 0.8),
        ([{"ARFClassifier": {"n_models": 3}}], 0.85),
        ("GaussianNB", 0.8),
    ],
)
def test_phishing_progressive_accuracy(model: Any, least: float) -> None:
    events = river_events("Phishing")
    op = make(model=model)
    op.bind({name: "float" for name in events[0].fields if name != "label"} | {"label": "bool"})
    out = run(op, events)
    metrics = op.metrics()
    assert metrics["accuracy"] >= least, metrics
    assert {"f1", "roc_auc", "macro_f1"} <= set(metrics)  # bool labels: binary metrics too
    assert metrics["learned"] == len(events)
    assert all(type(e.fields["prediction"]) is bool for e in out[1:])
    assert all(0.0 <= e.fields["proba"] <= 1.0 for e in out[1:])


def test_multiclass_has_no_binary_metrics() -> None:
    events = river_events("ImageSegments", 600)
    names = [n for n in events[0].fields if n != "label"]
    op = make(model="GaussianNB", fields=names)
    out = run(op, events)
    assert op.metrics()["accuracy"] > 0.6
    assert "f1" not in op.metrics() and "roc_auc" not in op.metrics()
    assert {e.fields["prediction"] for e in out[100:]} <= {e.fields["label"] for e in events}


def test_predict_then_learn() -> None:
    op = make(model="GaussianNB", fields=["x"])
    (first,) = op.process(Event("d", 0, 0.0, {"x": 1.0, "label": "a"}))
    assert first.fields["prediction"] is None and first.fields["proba"] is None
    (second,) = op.process(Event("d", 1, 1.0, {"x": 1.0, "label": "b"}))
    assert second.fields["prediction"] == "a"  # learned "a" only after predicting event 0
    assert op.metrics()["accuracy"] == 0.0  # event 0 was not scored: nothing to predict with


def _labelled(n: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=n)
    return [Event("d", i, float(i), {"x": float(x), "label": int(x > 0)}) for i, x in enumerate(xs)]


def test_label_delay_learns_only_once_time_has_passed() -> None:
    op = make(model="GaussianNB", fields=["x"], label_delay="10s")
    out = run(op, _labelled(10))
    assert all(e.fields["prediction"] is None for e in out)  # nothing learned yet
    assert op.metrics()["learned"] == 0 and op.metrics()["pending"] == 10
    run(op, [Event("d", 10, 10.0, {"x": 0.5, "label": 1})])
    assert op.metrics()["learned"] == 1  # the event at t=0 is now 10 s old
    assert op.on_tick(15.0) == ()
    assert op.metrics()["learned"] == 6 and op.metrics()["pending"] == 5


def test_label_delay_buffer_is_bounded() -> None:
    op = make(model="GaussianNB", fields=["x"], label_delay="1h", max_pending=3)
    run(op, _labelled(10))
    assert op.metrics()["pending"] == 3 and op.metrics()["labels_expired"] == 7


def test_join_on_id() -> None:
    """Readings are predicted as they come; each one's label arrives two readings later."""
    op = make(model="GaussianNB", fields=["x"], join_on="rid", max_pending=4)
    xs = np.random.default_rng(1).normal(size=300)
    out = []
    for i, x in enumerate(xs):
        out += run(op, [Event("d", 2 * i, float(i), {"x": float(x), "rid": i, "label": None})])
        if i >= 2:
            label = "hi" if xs[i - 2] > 0 else "lo"
            out += run(op, [Event("d", 2 * i + 1, float(i), {"rid": i - 2, "label": label})])
    assert op.metrics()["learned"] == 298
    assert op.metrics()["accuracy"] > 0.9
    assert op.metrics()["pending"] == 2
    run(op, [Event("d", 999, 999.0, {"x": None, "rid": 12345, "label": "hi"})])
    assert op.metrics()["labels_unmatched"] == 1
    assert all(e.fields["prediction"] is None for e in out if "x" not in e.fields)


def test_join_buffer_drops_the_oldest() -> None:
    op = make(model="GaussianNB", fields=["x"], join_on="rid", max_pending=2)
    run(op, [Event("d", i, float(i), {"x": 1.0, "rid": i, "label": None}) for i in range(5)])
    assert op.metrics()["pending"] == 2 and op.metrics()["labels_expired"] == 3
    run(op, [Event("d", 9, 9.0, {"x": None, "rid": 0, "label": "a"})])
    assert op.metrics()["labels_unmatched"] == 1


def test_strings_are_one_hot() -> None:
    op = make(model="HoeffdingTreeClassifier", fields=["door", "t"], label="alarm")
    events = [
        Event("d", i, float(i), {"door": door, "t": 20.0, "alarm": door == "forced"})
        for i, door in enumerate(["open", "closed", "forced"] * 200)
    ]
    out = run(op, events)
    assert [e.fields["prediction"] for e in out[-3:]] == [False, False, True]
    assert op._categories == {"door": ["open", "closed", "forced"]}


def test_logistic_regression_refuses_a_third_class() -> None:
    op = make(model="LogisticRegression", fields=["x"])
    run(op, [Event("d", 0, 0.0, {"x": 1.0, "label": 1})])
    with pytest.raises(ValueError, match="binary"):
        op.process(Event("d", 1, 1.0, {"x": 1.0, "label": 2}))


def test_int_labels_come_out_as_ints_from_logistic_regression() -> None:
    op = make(model="StandardScaler | LogisticRegression", fields=["x"])
    op.bind({"x": "float", "label": "int"})  # before any label, the schema says int
    out = run(op, _labelled(50))
    assert all(type(e.fields["prediction"]) is int for e in out)


def _concept_flip(n: int = 2000) -> list[Event]:
    events = _labelled(n, seed=3)
    return [
        e.replace(fields={**e.fields, "label": 1 - e.fields["label"]}) if i >= n // 2 else e
        for i, e in enumerate(events)
    ]


def test_drift_reset_recovers_from_a_concept_flip() -> None:
    events = _concept_flip()
    plain = make(model="GaussianNB", fields=["x"])
    guarded = make(model="GaussianNB", fields=["x"], drift={"detector": "ADWIN", "action": "reset"})
    tail = slice(1300, None)
    plain_out, guarded_out = run(plain, events)[tail], run(guarded, events)[tail]

    def accuracy(out: list[Event]) -> float:
        return float(np.mean([e.fields["prediction"] == e.fields["label"] for e in out]))

    assert accuracy(guarded_out) > accuracy(plain_out) + 0.2
    assert guarded.metrics()["drifts"] >= 1
    flags = [
        e
        for e in run(make(model="GaussianNB", fields=["x"], drift={}), events)
        if e.fields["drift"]
    ]
    assert flags and all(e.seq >= 1000 for e in flags)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"label": "label", "fields": ["x", "label"]}, ("fields", 1)),
        ({"join_on": "label"}, ("join_on",)),
        ({"label_delay": -1}, ("label_delay",)),
        ({"max_pending": 0}, ("max_pending",)),
        ({"model": "HalfSpaceTrees"}, ("model",)),
        ({"drift": {"action": "restart"}}, ("drift", "action")),
        ({"drift": {"detector": "KMeans"}}, ("drift", "detector")),
        (
            {"drift": {"detector": [{"ADWIN": {"delta": "x"}}]}},
            ("drift", "detector", 0, "ADWIN", "delta"),
        ),
        ({"drift": {"actions": "reset"}}, ("drift", "actions")),
        ({"drift": {"action": "raise_lr"}}, ("drift", "action")),
        (
            {"drift": {"action": "raise_lr", "factor": 0.5}, "model": "LogisticRegression"},
            ("drift", "factor"),
        ),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Classify, params)
    assert info.value.path == path


def test_schema() -> None:
    upstream = {"x": "float", "door": "str", "label": "int", "rid": "int"}
    schema = make(fields=["x", "door"], join_on="rid").schema(upstream)
    assert schema["prediction"] == "int" and schema["proba"] == "float"
    assert "drift" not in schema
    assert make(drift={}).schema(upstream)["drift"] == "bool"
    with pytest.raises(FieldError) as info:
        make(label="y").schema({"x": "float", "y": "float"})
    assert info.value.path == ("label",)
    with pytest.raises(FieldError) as info:
        make(label="lbl").schema(upstream)
    assert "did you mean 'label'" in info.value.message
    with pytest.raises(FieldError) as info:
        make(join_on="ri").schema(upstream)
    assert info.value.path == ("join_on",)
