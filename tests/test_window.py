"""window.tumbling: hand-computed windows, lateness, ticks, parameters, and numpy agreement."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, Event
from fogrt.operator import build, validate_params
from operators.window import Tumbling

ALL = ["count", "mean", "std", "min", "max"]


def make(**params: Any) -> Tumbling:
    op = build(Tumbling, params)
    assert isinstance(op, Tumbling)
    return op


def ev(t: float, seq: int = 0, key: str = "dev-1", flags: int = 0, **fields: Any) -> Event:
    return Event(key, seq, t, fields, 0.0, flags)


def feed(op: Tumbling, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        out.extend(result)
    return out


def test_hand_computed_window() -> None:
    op = make(size="10s", fields=["temp", "hum"], features=ALL)
    out = feed(
        op,
        [
            ev(100.0, temp=1.0, hum=None),
            ev(102.5, temp=2.0, hum=10),
            ev(105.0, temp=3.0),
            ev(109.999, temp=4.0, hum=30),
            ev(110.0, temp=100.0, hum=0),  # window [110, 120): closes [100, 110)
        ],
    )
    assert len(out) == 1
    w = out[0]
    assert (w.key, w.seq, w.time, w.flags) == ("dev-1", 10, 110.0, 0)
    assert w.fields == {
        "count": 4,
        "temp_mean": 2.5,
        "temp_std": pytest.approx(math.sqrt(1.25)),  # population std of 1..4
        "temp_min": 1.0,
        "temp_max": 4.0,
        "hum_mean": 20.0,
        "hum_std": 10.0,
        "hum_min": 10.0,
        "hum_max": 30.0,
    }
    assert list(w.fields) == list(op.schema({"temp": "float", "hum": "int"}))
    assert type(w.fields["hum_min"]) is float
    (last,) = op.on_tick(math.inf)
    assert (last.seq, last.time) == (11, 120.0)
    assert last.fields["count"] == 1
    assert last.fields["temp_std"] == 0.0
    assert last.fields["hum_max"] == 0.0


def test_field_without_values_gives_none() -> None:
    op = make(size=10, fields=["a", "b"], features=["count", "mean", "std"])
    feed(op, [ev(1.0, a=1.0, b=None), ev(2.0, a=3.0), ev(3.0, a=math.nan, b=math.nan)])
    (w,) = op.on_tick(math.inf)
    assert w.fields == {
        "count": 3,
        "a_mean": 2.0,
        "a_std": 1.0,
        "b_mean": None,
        "b_std": None,
    }


def test_gap_emits_every_window_in_order() -> None:
    op = make(size=5, fields=["v"], features=["count", "max"])
    out = feed(op, [ev(1.0, v=1), ev(7.0, v=2), ev(13.0, v=3), ev(31.0, v=4)])
    assert [(e.seq, e.time, e.fields) for e in out] == [
        (0, 5.0, {"count": 1, "v_max": 1.0}),
        (1, 10.0, {"count": 1, "v_max": 2.0}),
        (2, 15.0, {"count": 1, "v_max": 3.0}),
    ]
    assert op.metrics()["open_windows"] == 1


def test_out_of_order_within_lateness_is_counted() -> None:
    op = make(size=10, fields=["v"], features=["count", "mean"], lateness="5s")
    assert feed(op, [ev(1.0, v=1.0), ev(12.0, v=10.0)]) == []  # watermark 7: [0, 10) open
    assert feed(op, [ev(8.0, v=3.0)]) == []  # late but within lateness
    out = feed(op, [ev(15.0, v=20.0)])  # watermark 10 closes [0, 10)
    assert [(e.seq, e.fields) for e in out] == [(0, {"count": 2, "v_mean": 2.0})]
    assert feed(op, [ev(9.0, v=99.0)]) == []  # its window is closed: late, dropped
    assert op.metrics()["late"] == 1
    (w,) = op.on_tick(math.inf)
    assert w.fields == {"count": 2, "v_mean": 15.0}


def test_late_event_with_zero_lateness() -> None:
    op = make(size=10, fields=["v"], features=["count"])
    feed(op, [ev(25.0, v=1.0)])  # watermark 25: [0, 10) and [10, 20) are closed unopened
    assert feed(op, [ev(5.0, v=1.0), ev(19.9, v=1.0)]) == []
    assert feed(op, [ev(20.0, v=2.0)]) == []  # same window as 25: on time
    assert op.metrics()["late"] == 2
    (w,) = op.on_tick(math.inf)
    assert (w.seq, w.fields) == (2, {"count": 2})


def test_window_end_is_exclusive() -> None:
    op = make(size=10, fields=["v"], features=["count"])
    out = feed(op, [ev(0.0, v=1), ev(10.0, v=1)])
    assert [(e.seq, e.fields["count"]) for e in out] == [(0, 1)]


def test_on_tick_flushes_due_windows_only() -> None:
    op = make(size=10, fields=["v"], features=["count"], lateness="1m")
    feed(op, [ev(1.0, v=1), ev(11.0, v=1), ev(12.0, v=1), ev(25.0, v=1)])
    assert op.on_tick(9.0) == ()
    assert [e.seq for e in op.on_tick(20.0)] == [0, 1]
    assert op.on_tick(20.0) == ()
    assert feed(op, [ev(15.0, v=1)]) == []  # closed by the tick: late
    assert op.metrics()["late"] == 1
    assert [e.seq for e in op.on_tick(math.inf)] == [2]
    assert op.on_tick(math.inf) == ()
    assert op.metrics()["open_windows"] == 0


def test_imputed_flag_is_carried() -> None:
    op = make(size=10, fields=["v"])
    out = feed(op, [ev(1.0, v=1.0), ev(2.0, v=2.0, flags=IMPUTED), ev(11.0, v=1.0)])
    first, second = out + list(op.on_tick(math.inf))
    assert first.flags == IMPUTED
    assert second.flags == 0


def test_fields_discovered_when_not_given() -> None:
    op = make(size=10, features=["count", "mean"])
    out = feed(
        op,
        [
            ev(1.0, a=1.0, flag=True, name="x", b=None),
            ev(2.0, a=3.0, b=4, flag=False),
            ev(11.0, a=5.0),
        ],
    )
    first, second = out + list(op.on_tick(math.inf))
    assert first.fields == {"count": 2, "a_mean": 2.0, "b_mean": 4.0}
    assert second.fields == {"count": 1, "a_mean": 5.0, "b_mean": None}
    assert op.schema({"a": "float", "flag": "bool", "name": "str", "b": "int"}) == {
        "count": "int",
        "a_mean": "float",
        "b_mean": "float",
    }


def test_default_features_and_key() -> None:
    op = make(size="500ms", fields=["v"])
    assert op.size == 0.5
    assert op.features == ("mean", "std", "min", "max")
    feed(op, [ev(0.1, key="k9", v=2.0), ev(0.2, key="k9", v=4.0)])
    (w,) = op.on_tick(math.inf)
    assert (w.key, w.seq, w.time) == ("k9", 0, 0.5)
    assert w.fields == {"v_mean": 3.0, "v_std": 1.0, "v_min": 2.0, "v_max": 4.0}


def test_schema() -> None:
    op = make(size=10, fields=["x", "y"], features=["max", "count"])
    upstream = {"x": "float", "y": "int", "s": "str"}
    assert op.schema(upstream) == {"count": "int", "x_max": "float", "y_max": "float"}
    with pytest.raises(FieldError) as info:
        make(size=10, fields=["x", "yy"]).schema(upstream)
    assert info.value.path == ("fields", 1)
    assert "did you mean 'y'" in info.value.message
    with pytest.raises(FieldError) as info:
        make(size=10, fields=["s"]).schema(upstream)
    assert info.value.path == ("fields", 0)
    with pytest.raises(FieldError):
        make(size=10).schema({"s": "str"})
    assert make(size=10, features=["count"]).schema({"s": "str"}) == {"count": "int"}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"size": 0}, ("size",)),
        ({"size": "0s"}, ("size",)),
        ({"size": "-1s"}, ("size",)),
        ({"size": "ten seconds"}, ("size",)),
        ({"size": math.inf}, ("size",)),
        ({"size": 10, "lateness": "-2s"}, ("lateness",)),
        ({"size": 10, "features": []}, ("features",)),
        ({"size": 10, "features": ["mean", "median"]}, ("features", 1)),
        ({"size": 10, "features": ["mean", "max", "mean"]}, ("features", 2)),
        ({"size": 10, "features": "mean"}, ("features",)),
        ({"size": 10, "fields": []}, ("fields",)),
        ({"size": 10, "fields": ["a", "b", "a"]}, ("fields", 2)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Tumbling, params)
    assert info.value.path == path


def test_unknown_param_suggestion() -> None:
    with pytest.raises(ParamError, match=r"did you mean 'size'"):
        validate_params(Tumbling, {"sise": 10})


def test_snapshot_mid_window() -> None:
    op = make(size=10, fields=["v"], features=ALL, lateness=3)
    feed(op, [ev(1.0, v=1.0), ev(5.0, v=2.0), ev(11.0, v=7.0)])
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [ev(9.0, v=3.0), ev(14.0, v=1.0), ev(2.0, v=50.0)]
    a = feed(op, rest) + list(op.on_tick(math.inf))
    b = feed(twin, rest) + list(twin.on_tick(math.inf))
    assert a == b
    assert [e.fields["count"] for e in a] == [3, 2]
    assert twin.metrics() == op.metrics() == {"late": 1, "open_windows": 0}


# -- the accumulators against numpy -----------------------------------------------------------

values = st.one_of(
    st.none(),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=-1000, max_value=1000),
)


@settings(max_examples=150, deadline=None)
@given(
    size=st.sampled_from([1.0, 2.5, 10.0, 60.0]),
    rows=st.lists(
        st.tuples(st.floats(min_value=0.0, max_value=300.0), values, values),
        min_size=1,
        max_size=120,
    ),
)
def test_accumulators_match_numpy(size: float, rows: list[tuple[float, Any, Any]]) -> None:
    rows = sorted(rows, key=lambda r: r[0])  # in order: nothing is late
    op = make(size=size, fields=["u", "w"], features=ALL)
    out = feed(op, [ev(1e9 + t, i, u=u, w=w) for i, (t, u, w) in enumerate(rows)])
    out += op.on_tick(math.inf)
    groups: dict[int, list[tuple[Any, Any]]] = defaultdict(list)
    for t, u, w in rows:
        groups[math.floor((1e9 + t) / size)].append((u, w))
    assert [e.seq for e in out] == sorted(groups)
    for e in out:
        group = groups[e.seq]
        assert e.time == (e.seq + 1) * size
        assert e.fields["count"] == len(group)
        for j, name in enumerate(("u", "w")):
            data = np.array([g[j] for g in group if g[j] is not None], dtype=float)
            if data.size == 0:
                for feature in ALL[1:]:
                    assert e.fields[f"{name}_{feature}"] is None
                continue
            assert e.fields[f"{name}_mean"] == pytest.approx(data.mean(), rel=1e-9, abs=1e-6)
            assert e.fields[f"{name}_std"] == pytest.approx(data.std(), rel=1e-7, abs=1e-6)
            assert e.fields[f"{name}_min"] == data.min()
            assert e.fields[f"{name}_max"] == data.max()


@settings(max_examples=100, deadline=None)
@given(
    times=st.lists(st.floats(min_value=0.0, max_value=100.0), min_size=1, max_size=80),
    lateness=st.sampled_from([0.0, 2.0, 7.5]),
)
def test_every_event_is_counted_once_or_late(times: list[float], lateness: float) -> None:
    op = make(size=5, fields=["v"], features=["count"], lateness=lateness)
    out = feed(op, [ev(t, i, v=1.0) for i, t in enumerate(times)])
    out += op.on_tick(math.inf)
    assert sum(e.fields["count"] for e in out) + op.metrics()["late"] == len(times)
    assert [e.seq for e in out] == sorted({e.seq for e in out})  # in order, each once
    # Nothing is late if the disorder never exceeds the lateness.
    newest = -math.inf
    expected_late = 0
    closed = -math.inf
    for t in times:
        if (math.floor(t / 5) + 1) * 5 <= closed:
            expected_late += 1
        newest = max(newest, t)
        closed = max(closed, newest - lateness)
    assert op.metrics()["late"] == expected_late
