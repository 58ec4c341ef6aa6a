"""window.session: gaps, merges, max_length, lateness and late corrections."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.errors import ParamError
from fogrt.event import IMPUTED, LATE, Event
from fogrt.operator import build, validate_params
from operators.window import Session


def make(**params: Any) -> Session:
    op = build(Session, params)
    assert isinstance(op, Session)
    return op


def ev(t: float, v: Any = 1.0, flags: int = 0) -> Event:
    return Event("dev-1", 0, t, {"v": v}, 0.0, flags)


def feed(op: Session, times: list[float], values: list[Any] | None = None) -> list[Event]:
    out: list[Event] = []
    for i, t in enumerate(times):
        result = op.process(ev(t, 1.0 if values is None else values[i]))
        assert isinstance(result, tuple)
        out.extend(result)
    return out


def summary(events: list[Event]) -> list[tuple[Any, ...]]:
    return [(e.seq, e.time, e.fields["count"], e.fields["duration"], e.flags) for e in events]


BASIC = {"fields": ["v"], "features": ["count", "duration", "mean"]}


def test_gap_splits_sessions() -> None:
    op = make(gap=10, **BASIC)
    out = feed(op, [0.0, 4.0, 13.9, 30.0, 39.0], [1.0, 2.0, 3.0, 4.0, 6.0])
    assert summary(out) == [(0, 13.9, 3, 13.9, 0)]  # 30 - 13.9 >= 10
    assert out[0].fields["v_mean"] == 2.0
    (last,) = op.on_tick(math.inf)
    assert summary([last]) == [(1, 39.0, 2, 9.0, 0)]
    assert last.fields["v_mean"] == 5.0


def test_a_gap_of_exactly_gap_seconds_ends_the_session() -> None:
    op = make(gap=10, **BASIC)
    assert summary(feed(op, [0.0, 10.0])) == [(0, 0.0, 1, 0.0, 0)]


def test_session_closes_by_tick() -> None:
    op = make(gap=5, **BASIC)
    feed(op, [0.0, 2.0])
    assert op.on_tick(6.9) == ()
    assert summary(list(op.on_tick(7.0))) == [(0, 2.0, 2, 2.0, 0)]
    assert op.metrics() == {"late": 0, "open_sessions": 0}


def test_out_of_order_event_bridges_two_sessions() -> None:
    op = make(gap=10, lateness=30, **BASIC)
    assert feed(op, [0.0, 15.0, 30.0]) == []  # three sessions, all open (lateness)
    assert op.metrics()["open_sessions"] == 3
    assert feed(op, [7.0, 22.0]) == []  # bridges them all: 0 7 15 22 30
    assert op.metrics()["open_sessions"] == 1
    assert summary(list(op.on_tick(math.inf))) == [(0, 30.0, 5, 30.0, 0)]


def test_max_length_cuts_long_sessions() -> None:
    op = make(gap=5, max_length=10, **BASIC)
    out = feed(op, [float(t) for t in range(25)]) + list(op.on_tick(math.inf))
    assert summary(out) == [(0, 9.0, 10, 9.0, 0), (1, 19.0, 10, 9.0, 0), (2, 24.0, 5, 4.0, 0)]


def test_max_length_closes_by_watermark_even_while_events_keep_coming() -> None:
    op = make(gap=100, max_length=10, **BASIC)
    assert feed(op, [0.0, 5.0, 9.0]) == []
    assert summary(feed(op, [10.0])) == [(0, 9.0, 3, 9.0, 0)]


def test_late_events_dropped_or_corrected() -> None:
    for on_late in ("drop", "emit"):
        op = make(gap=10, on_late=on_late, **BASIC)
        feed(op, [0.0, 5.0])
        (closed,) = feed(op, [20.0])  # watermark 20 >= 5 + 10: session 0 is emitted
        out = feed(op, [8.0, 14.0], [7.0, 1.0])  # 8 belongs to session 0; 14 too (14 < 15)
        assert op.metrics()["late"] == 2
        if on_late == "drop":
            assert out == []
            continue
        assert [(e.seq, e.time, e.flags, e.fields) for e in out] == [
            (0, 5.0, LATE, {"count": 1, "duration": 0.0, "v_mean": 7.0}),
            (0, 5.0, LATE, {"count": 1, "duration": 0.0, "v_mean": 1.0}),
        ]
        assert closed.seq == 0


def test_late_event_of_no_known_session() -> None:
    op = make(gap=3, on_late="emit", **BASIC)
    feed(op, [100.0])
    (late,) = feed(op, [50.0], [2.0])  # 50 + 3 <= 100: a session of its own is already over
    assert (late.seq, late.time, late.flags) == (-1, 50.0, LATE)
    assert op.metrics()["late"] == 1
    (session,) = op.on_tick(math.inf)
    assert session.seq == 0


def test_event_after_the_closed_region_starts_a_session() -> None:
    op = make(gap=10, lateness=2, **BASIC)
    out = feed(op, [0.0, 22.0, 15.0])  # watermark 20 closes [0]; 15 >= 0 + 10: its own session
    assert summary(out) == [(0, 0.0, 1, 0.0, 0)]
    assert op.metrics()["late"] == 0
    assert summary(list(op.on_tick(math.inf))) == [(1, 22.0, 2, 7.0, 0)]


def test_imputed_flag_and_key() -> None:
    op = make(gap=10, **BASIC)
    op.process(Event("pump-3", 1, 0.0, {"v": 1.0}, 0.0, IMPUTED))
    (w,) = op.on_tick(math.inf)
    assert (w.key, w.flags) == ("pump-3", IMPUTED)


def test_snapshot_mid_session() -> None:
    op = make(gap=4, max_length=20, features=["count", "q50", "slope"], lateness=1)
    feed(op, [0.0, 1.0, 3.0, 9.0, 8.5])
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [10.0, 2.0, 30.0, 31.0]
    a = feed(op, rest) + list(op.on_tick(math.inf))
    b = feed(twin, rest) + list(twin.on_tick(math.inf))
    assert a == b
    assert [e.fields["count"] for e in a] == [3, 2]
    assert twin.metrics() == op.metrics() == {"late": 1, "open_sessions": 0}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({}, ("gap",)),
        ({"gap": 0}, ("gap",)),
        ({"gap": "never"}, ("gap",)),
        ({"gap": 5, "max_length": 0}, ("max_length",)),
        ({"gap": 5, "on_late": "later"}, ("on_late",)),
        ({"gap": 5, "features": ["count", "count"]}, ("features", 1)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Session, params)
    assert info.value.path == path


def test_unknown_param_suggestion() -> None:
    with pytest.raises(ParamError, match=r"did you mean 'max_length'"):
        validate_params(Session, {"gap": 5, "max_len": 5})


@settings(max_examples=200, deadline=None)
@given(
    times=st.lists(st.integers(min_value=0, max_value=200).map(float), min_size=1, max_size=60),
    gap=st.sampled_from([1.0, 3.0, 10.0]),
    lateness=st.sampled_from([0.0, 5.0]),
    max_length=st.sampled_from([None, 15.0]),
)
def test_every_event_is_in_one_session_or_late(
    times: list[float], gap: float, lateness: float, max_length: float | None
) -> None:
    op = make(gap=gap, lateness=lateness, max_length=max_length, **BASIC)
    out = feed(op, times) + list(op.on_tick(math.inf))
    assert sum(e.fields["count"] for e in out) + op.metrics()["late"] == len(times)
    assert [e.seq for e in out] == list(range(len(out)))
    for e in out:
        assert e.fields["duration"] < (max_length or math.inf)
    if times == sorted(times):
        assert op.metrics()["late"] == 0
        if max_length is None:  # in order, the sessions are the runs of close events
            runs = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a >= gap)
            assert len(out) == runs
