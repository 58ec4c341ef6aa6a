"""window.sliding: panes, hand-computed windows, lateness, and agreement with brute force."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.errors import ParamError
from fogrt.event import IMPUTED, LATE, Event
from fogrt.operator import build, validate_params
from operators.window import Sliding
from operators.window.sliding import panes


def make(**params: Any) -> Sliding:
    op = build(Sliding, params)
    assert isinstance(op, Sliding)
    return op


def ev(t: float, seq: int = 0, flags: int = 0, **fields: Any) -> Event:
    return Event("dev-1", seq, t, fields, 0.0, flags)


def feed(op: Sliding, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        out.extend(result)
    return out


def test_panes() -> None:
    assert panes(10.0, 5.0) == (5.0, 2, 1)
    assert panes(10.0, 4.0) == (2.0, 5, 2)
    assert panes(0.3, 0.1) == (0.1, 3, 1)
    assert panes(60.0, 60.0) == (60.0, 1, 1)


def test_hand_computed_windows() -> None:
    op = make(size=10, slide=5, fields=["v"], features=["count", "mean", "max"])
    out = feed(op, [ev(1.0, v=1.0), ev(6.0, v=3.0), ev(7.0, v=5.0), ev(12.0, v=8.0)])
    out += op.on_tick(math.inf)
    assert [(e.seq, e.time, e.fields) for e in out] == [
        (-1, 5.0, {"count": 1, "v_mean": 1.0, "v_max": 1.0}),  # [-5, 5)
        (0, 10.0, {"count": 3, "v_mean": 3.0, "v_max": 5.0}),  # [0, 10)
        (1, 15.0, {"count": 3, "v_mean": 16 / 3, "v_max": 8.0}),  # [5, 15)
        (2, 20.0, {"count": 1, "v_mean": 8.0, "v_max": 8.0}),  # [10, 20)
    ]
    assert op.metrics() == {"late": 0, "open_panes": 0}


def test_slide_that_does_not_divide_the_size() -> None:
    op = make(size=10, slide=4, fields=["v"], features=["count"])
    out = feed(op, [ev(float(t), v=1.0) for t in range(20)]) + list(op.on_tick(math.inf))
    # Window j is [4j, 4j + 10): j = -2 .. 4 hold events in [0, 20).
    expected = {j: sum(1 for t in range(20) if 4 * j <= t < 4 * j + 10) for j in range(-2, 5)}
    assert [(e.seq, e.time, e.fields["count"]) for e in out] == [
        (j, 4.0 * j + 10, n) for j, n in expected.items()
    ]


def test_empty_windows_are_not_emitted() -> None:
    op = make(size=4, slide=2, fields=["v"], features=["count"])
    out = feed(op, [ev(1.0, v=1.0), ev(101.0, v=2.0)]) + list(op.on_tick(math.inf))
    assert [(e.seq, e.fields["count"]) for e in out] == [(-1, 1), (0, 1), (49, 1), (50, 1)]


def test_late_for_some_windows_still_counts_in_the_open_ones() -> None:
    op = make(size=10, slide=5, fields=["v"], features=["count", "mean"], on_late="emit")
    feed(op, [ev(1.0, v=1.0), ev(11.0, v=3.0)])  # closes windows ending at 5 and 10
    out = feed(op, [ev(6.0, v=10.0, flags=IMPUTED)])  # in [0, 10) (closed) and [5, 15) (open)
    assert [(e.seq, e.time, e.flags, e.fields) for e in out] == [
        (0, 10.0, LATE | IMPUTED, {"count": 1, "v_mean": 10.0})
    ]
    assert op.metrics()["late"] == 1
    (w,) = feed(op, [ev(16.0, v=0.0)])  # closes [5, 15)
    assert (w.seq, w.fields, w.flags) == (1, {"count": 2, "v_mean": 6.5}, IMPUTED)


def test_fully_late_event_is_dropped_or_emitted_per_window() -> None:
    events = [ev(1.0, v=1.0), ev(30.0, v=1.0), ev(7.0, v=4.0)]
    op = make(size=10, slide=5, fields=["v"], features=["count"])
    assert len(feed(op, events)) == 2  # the windows of t=1, ending at 5 and 10
    assert op.metrics()["late"] == 1
    op = make(size=10, slide=5, fields=["v"], features=["count"], on_late="emit")
    late = feed(op, events)[2:]
    assert [(e.seq, e.time, e.flags) for e in late] == [(0, 10.0, LATE), (1, 15.0, LATE)]


def test_lateness_keeps_windows_open() -> None:
    op = make(size=10, slide=5, fields=["v"], features=["count"], lateness="5s")
    assert feed(op, [ev(1.0, v=1.0), ev(12.0, v=1.0)]) == [
        Event("dev-1", -1, 5.0, {"count": 1}, 0.0, 0)
    ]  # watermark 7: [0, 10) is still open
    assert feed(op, [ev(9.0, v=1.0)]) == []
    assert op.metrics()["late"] == 0
    assert [(e.seq, e.fields["count"]) for e in op.on_tick(10.0)] == [(0, 2)]


def test_on_tick_and_snapshot() -> None:
    op = make(size=6, slide=2, fields=["v"], features=["count", "q50", "slope"])
    feed(op, [ev(float(t), v=float(t % 3)) for t in range(9)])
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [ev(9.5, v=1.0), ev(4.0, v=9.0), ev(14.0, v=2.0)]
    a = feed(op, rest) + list(op.on_tick(12.0)) + list(op.on_tick(math.inf))
    b = feed(twin, rest) + list(twin.on_tick(12.0)) + list(twin.on_tick(math.inf))
    assert a == b
    assert op.metrics() == twin.metrics() == {"late": 1, "open_panes": 0}
    assert op.on_tick(math.inf) == ()


def test_schema_and_bind() -> None:
    op = make(size=10, slide=5, features=["count", "zero_crossings"])
    upstream = {"a": "float", "s": "str", "n": "int"}
    assert op.schema(upstream) == {
        "count": "int",
        "a_zero_crossings": "int",
        "n_zero_crossings": "int",
    }
    op.bind(upstream)
    (w,) = feed(op, [ev(1.0, a=1.0, n=2, s="x"), ev(2.0, a=-1.0), ev(20.0)])[:1]
    assert w.fields == {"count": 2, "a_zero_crossings": 1, "n_zero_crossings": 0}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"size": 10}, ("slide",)),
        ({"size": 10, "slide": 0}, ("slide",)),
        ({"size": 10, "slide": 11}, ("slide",)),
        ({"size": 10, "slide": 0.0101}, ("slide",)),
        ({"size": 0, "slide": 1}, ("size",)),
        ({"size": 10, "slide": 5, "lateness": -1}, ("lateness",)),
        ({"size": 10, "slide": 5, "fields": ["a", "a"]}, ("fields", 1)),
        ({"size": 10, "slide": 5, "features": ["mean", "nope"]}, ("features", 1)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Sliding, params)
    assert info.value.path == path


def test_unknown_param_suggestion() -> None:
    with pytest.raises(ParamError, match=r"did you mean 'slide'"):
        validate_params(Sliding, {"size": 10, "slid": 5})


# -- against brute force -----------------------------------------------------------------------

SIZES = st.sampled_from([(10.0, 5.0), (10.0, 4.0), (6.0, 6.0), (9.0, 3.0), (2.5, 0.5)])


@settings(max_examples=150, deadline=None)
@given(
    shape=SIZES,
    rows=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=40_000).map(lambda x: x / 1000),
            st.one_of(st.none(), st.floats(min_value=-1e3, max_value=1e3)),
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_in_order_windows_match_brute_force(
    shape: tuple[float, float], rows: list[tuple[float, Any]]
) -> None:
    size, slide = shape
    rows = sorted(rows, key=lambda r: r[0])
    op = make(size=size, slide=slide, fields=["v"], features=["count", "mean", "max", "q50"])
    out = feed(op, [ev(t, i, v=v) for i, (t, v) in enumerate(rows)]) + list(op.on_tick(math.inf))
    expected = []
    j = math.floor((rows[0][0] - size) / slide)
    while j * slide <= rows[-1][0]:
        inside = [v for t, v in rows if j * slide <= t < j * slide + size]
        if inside:
            expected.append((j, j * slide + size, inside))
        j += 1
    assert [(e.seq, e.time) for e in out] == [(j, end) for j, end, _ in expected]
    for e, (_, _, inside) in zip(out, expected, strict=True):
        values = np.array([v for v in inside if v is not None])
        assert e.fields["count"] == len(inside)
        if values.size == 0:
            assert e.fields["v_mean"] is None
            continue
        assert e.fields["v_mean"] == pytest.approx(values.mean(), rel=1e-9, abs=1e-9)
        assert e.fields["v_max"] == values.max()
        assert e.fields["v_q50"] == pytest.approx(np.median(values), rel=1e-9, abs=1e-9)
    assert op.metrics() == {"late": 0, "open_panes": 0}


@settings(max_examples=150, deadline=None)
@given(
    shape=SIZES,
    times=st.lists(st.integers(min_value=0, max_value=60).map(float), min_size=1, max_size=60),
    lateness=st.sampled_from([0.0, 2.0, 7.0]),
)
def test_every_contribution_is_emitted_once(
    shape: tuple[float, float], times: list[float], lateness: float
) -> None:
    """Out of order: a window's count plus its LATE corrections is its number of events."""
    size, slide = shape
    op = make(size=size, slide=slide, fields=["v"], features=["count"], lateness=lateness)
    op_emit = make(
        size=size, slide=slide, fields=["v"], features=["count"], lateness=lateness, on_late="emit"
    )
    events = [ev(t, i, v=1.0) for i, t in enumerate(times)]
    out = feed(op_emit, events) + list(op_emit.on_tick(math.inf))
    on_time = [e for e in out if not e.flags & LATE]
    assert [e.seq for e in on_time] == sorted({e.seq for e in on_time})  # in order, once each
    got: Counter[int] = Counter()
    for e in out:
        got[e.seq] += e.fields["count"]
    expected: Counter[int] = Counter()
    for t in times:
        for j in range(math.floor((t - size) / slide), math.floor(t / slide) + 1):
            if j * slide <= t < j * slide + size:
                expected[j] += 1
    assert got == expected
    dropped = feed(op, events) + list(op.on_tick(math.inf))
    assert [e for e in out if not e.flags & LATE] == dropped
    assert op.metrics()["late"] == op_emit.metrics()["late"]
    if times == sorted(times):
        assert op.metrics()["late"] == 0
