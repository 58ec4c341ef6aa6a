"""preprocess.range_check: each action on crafted readings, parameters, schema, metrics."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, Event
from fogrt.operator import build, validate_params
from operators.preprocess import RangeCheck

LIMITS = {"temp": [-40, 85], "hum": [0, 100]}


def make(**params: Any) -> RangeCheck:
    op = build(RangeCheck, {"limits": LIMITS, **params})
    assert isinstance(op, RangeCheck)
    return op


def ev(seq: int = 1, **fields: Any) -> Event:
    return Event("dev-1", seq, 1000.0 + seq, fields, 5.0, IMPUTED if seq == 99 else 0)


def only(events: Any) -> Event:
    assert isinstance(events, tuple)
    assert len(events) == 1
    return events[0]  # type: ignore[no-any-return]


def test_yaml_limits_become_float_pairs() -> None:
    op = make()
    assert op.limits == {"temp": (-40.0, 85.0), "hum": (0.0, 100.0)}
    assert op.action == "drop"
    assert op.reason_field == "range_violation"


def test_drop() -> None:
    op = make()
    clean = ev(temp=20.0, hum=50.0)
    assert only(op.process(clean)) is clean  # nothing to change: the event itself
    assert op.process(ev(temp=85.1, hum=50.0)) == ()
    assert op.process(ev(temp=20.0, hum=-0.5)) == ()
    assert op.process(ev(temp=-41, hum=101)) == ()
    assert op.process(ev(temp=math.nan, hum=1.0)) == ()
    assert op.metrics() == {
        "dropped": 4,
        "violations": 5,
        "violations.temp": 3,
        "violations.hum": 2,
    }


def test_bounds_are_inclusive() -> None:
    op = make()
    for temp in (-40, -40.0, 85, 85.0):
        assert op.process(ev(temp=temp, hum=0.0)) != ()
    assert op.metrics()["violations"] == 0


def test_missing_values_are_not_violations() -> None:
    op = make(action="flag")
    assert only(op.process(ev(temp=None))).fields == {"temp": None, "range_violation": None}
    assert only(op.process(ev(other="x"))).fields == {"other": "x", "range_violation": None}
    assert op.metrics()["violations"] == 0


def test_null() -> None:
    op = make(action="null")
    original = {"temp": 99.0, "hum": 50.0, "note": "ok"}
    event = ev(**original)
    out = only(op.process(event))
    assert out.fields == {"temp": None, "hum": 50.0, "note": "ok", "range_violation": "temp>85"}
    assert event.fields == original  # the input is never mutated
    assert (out.key, out.seq, out.time, out.arrival) == (event.key, event.seq, 1001.0, 5.0)
    assert only(op.process(ev(temp=1.0, hum=50.0))).fields["range_violation"] is None


def test_null_checks_every_field_after_the_first_clean_ones() -> None:
    op = build(RangeCheck, {"limits": {"a": [0, 1], "b": [0, 1], "c": [0, 1]}, "action": "null"})
    out = only(op.process(ev(a=0.5, b=2.0, c=math.nan, d=9.0)))
    assert out.fields == {"a": 0.5, "b": None, "c": None, "d": 9.0, "range_violation": "b>1;c=nan"}
    clean = ev(99, a=0.5, b=None, d=9.0)
    out = only(op.process(clean))
    assert out.fields == {"a": 0.5, "b": None, "d": 9.0, "range_violation": None}
    assert (out.key, out.seq, out.time, out.arrival, out.flags) == ("dev-1", 99, 1099.0, 5.0, 1)
    assert clean.fields == {"a": 0.5, "b": None, "d": 9.0}
    assert op.metrics() == {
        "dropped": 0,
        "violations": 2,
        "violations.a": 0,
        "violations.b": 1,
        "violations.c": 1,
    }


def test_clip() -> None:
    op = make(action="clip")
    out = only(op.process(ev(temp=99.5, hum=-3.0)))
    assert out.fields == {"temp": 85.0, "hum": 0.0, "range_violation": "temp>85;hum<0"}
    out = only(op.process(ev(temp=-50, hum=math.nan)))
    assert out.fields == {"temp": -40, "hum": None, "range_violation": "temp<-40;hum=nan"}
    assert type(out.fields["temp"]) is int  # an int field stays an int


def test_clip_int_with_fractional_bounds() -> None:
    op = build(RangeCheck, {"limits": {"n": [0.5, 9.5]}, "action": "clip"})
    assert op.process(ev(n=0))[0].fields["n"] == 1
    assert op.process(ev(n=12))[0].fields["n"] == 9
    assert op.process(ev(n=12.0))[0].fields["n"] == 9.5
    # No integer inside the bounds: the float bound it is.
    op = build(RangeCheck, {"limits": {"n": [0.2, 0.8]}, "action": "clip"})
    assert op.process(ev(n=3))[0].fields["n"] == 0.8


def test_flag_keeps_values() -> None:
    op = make(action="flag", reason_field="why")
    out = only(op.process(ev(temp=1e9, hum=50.0)))
    assert out.fields == {"temp": 1e9, "hum": 50.0, "why": "temp>85"}
    assert op.metrics() == {
        "dropped": 0,
        "violations": 1,
        "violations.temp": 1,
        "violations.hum": 0,
    }


def test_flags_are_kept() -> None:
    out = only(make(action="flag").process(ev(99, temp=100.0)))
    assert out.flags == IMPUTED


def test_one_sided_limits() -> None:
    op = build(RangeCheck, {"limits": {"level": [0, math.inf]}, "action": "clip"})
    assert op.process(ev(level=1e300))[0].fields["range_violation"] is None
    assert op.process(ev(level=-1))[0].fields == {"level": 0, "range_violation": "level<0"}
    op = build(RangeCheck, {"limits": {"level": [-math.inf, 10]}})
    assert op.process(ev(level=-1e300)) != ()


def test_lower_above_upper_is_refused() -> None:
    with pytest.raises(ParamError) as info:
        build(RangeCheck, {"limits": {"temp": [-40, 85], "hum": [100, 0]}})
    assert info.value.path == ("limits", "hum")
    assert "above" in info.value.message
    with pytest.raises(ParamError) as info:
        RangeCheck(limits={"temp": (math.nan, 1.0)})
    assert info.value.path == ("limits", "temp")


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"limits": {"temp": [1]}}, ("limits", "temp")),
        ({"limits": {"temp": "hot"}}, ("limits", "temp")),
        ({"limits": LIMITS, "action": "delete"}, ("action",)),
        ({"limits": {}}, ("limits",)),
        ({"limits": LIMITS, "action": "flag", "reason_field": ""}, ("reason_field",)),
        ({"limits": LIMITS, "action": "flag", "reason_field": "temp"}, ("reason_field",)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(RangeCheck, params)
    assert info.value.path[: len(path)] == path


def test_unknown_param_suggestion() -> None:
    with pytest.raises(ParamError, match=r"did you mean 'limits'"):
        validate_params(RangeCheck, {"limit": LIMITS})


def test_schema() -> None:
    upstream = {"temp": "float", "hum": "int", "status": "str"}
    assert make().schema(upstream) == upstream
    assert make(action="clip").schema(upstream) == {**upstream, "range_violation": "str"}
    with pytest.raises(FieldError) as info:
        make().schema({"tmp": "float", "hum": "float"})
    assert info.value.path == ("limits", "temp")
    assert "did you mean 'tmp'" in info.value.message
    with pytest.raises(FieldError) as info:
        build(RangeCheck, {"limits": {"status": [0, 1]}}).schema(upstream)
    assert info.value.path == ("limits", "status")
    assert "expected a number" in info.value.message
    with pytest.raises(FieldError) as info:
        make(action="flag", reason_field="status").schema(upstream)
    assert info.value.path == ("reason_field",)


def test_snapshot_keeps_counters() -> None:
    op = make(action="flag")
    op.process(ev(temp=100.0))
    twin = op.clone()
    twin.restore(op.snapshot())
    assert twin.metrics() == op.metrics()
    assert twin.metrics()["violations.temp"] == 1
