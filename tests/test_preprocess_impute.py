"""preprocess.impute: every method, the IMPUTED flag, max_gap, linear holding, parameters."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, Event
from fogrt.operator import build
from operators.preprocess import Impute
from operators.preprocess.interpolate import MAX_HELD


def make(**params: Any) -> Impute:
    op = build(Impute, params)
    assert isinstance(op, Impute)
    return op


def ev(t: float, flags: int = 0, **fields: Any) -> Event:
    return Event("d", int(t), t, fields, 0.0, flags)


def run(op: Impute, events: list[Event], finish: bool = True) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        out.extend(result)
    if finish:
        out.extend(op.on_tick(math.inf))
    return out


def series(values: list[Any], name: str = "v") -> list[Event]:
    return [ev(float(i), **{name: v}) for i, v in enumerate(values)]


def values(events: list[Event], name: str = "v") -> list[Any]:
    return [e.fields[name] for e in events]


def flags(events: list[Event]) -> list[int]:
    return [e.flags for e in events]


def test_last() -> None:
    op = make(fields=["v"])
    out = run(op, series([None, 1.0, None, math.nan, 4.0, None]))
    assert values(out) == [None, 1.0, 1.0, 1.0, 4.0, 4.0]
    assert flags(out) == [0, 0, IMPUTED, IMPUTED, 0, IMPUTED]
    assert op.metrics() == {"imputed": 3, "unfilled": 1, "held": 0, "imputed.v": 3}


def test_untouched_events_are_passed_as_they_are() -> None:
    op = make(fields=["v"])
    event = ev(0.0, v=1.0, s="x")
    assert op.process(event)[0] is event
    absent = ev(1.0, s="y")  # a field the event does not carry is not added
    assert op.process(absent)[0] is absent


def test_ewma_and_mean() -> None:
    out = run(make(fields=["v"], method="ewma", alpha=0.5), series([2.0, 4.0, None, 8.0, None]))
    assert values(out) == [2.0, 4.0, 3.0, 8.0, 5.5]
    out = run(make(fields=["v"], method="mean", window=2), series([1.0, 2.0, 6.0, None, None]))
    assert values(out) == [1.0, 2.0, 6.0, 4.0, 4.0]


def test_int_fields_stay_ints() -> None:
    op = make(fields=["n"], method="mean")
    op.bind({"n": "int"})
    out = run(op, series([1, 2, None], "n"))
    assert values(out, "n") == [1, 2, 2]
    assert type(out[2].fields["n"]) is int


def test_max_gap() -> None:
    op = make(fields=["v"], max_gap="2s")
    out = run(op, [ev(0.0, v=1.0), ev(2.0, v=None), ev(2.5, v=None), ev(3.0, v=2.0)])
    assert values(out) == [1.0, 1.0, None, 2.0]
    assert op.metrics()["unfilled"] == 1


def test_flags_are_kept_and_added() -> None:
    out = run(make(fields=["v"]), [ev(0.0, v=1.0), ev(1.0, flags=4, v=None)])
    assert out[1].flags == 4 | IMPUTED


def test_linear_holds_events_until_the_gap_closes() -> None:
    op = make(fields=["v"], method="linear")
    assert values(run(op, [ev(0.0, v=0.0)], finish=False)) == [0.0]
    assert run(op, [ev(1.0, v=None), ev(3.0, v=None)], finish=False) == []
    assert op.metrics()["held"] == 2
    out = run(op, [ev(4.0, v=8.0)], finish=False)
    assert values(out) == [2.0, 6.0, 8.0]  # by event time, not by position
    assert [e.time for e in out] == [1.0, 3.0, 4.0]
    assert flags(out) == [IMPUTED, IMPUTED, 0]
    assert op.metrics() == {"imputed": 2, "unfilled": 0, "held": 0, "imputed.v": 2}


def test_linear_keeps_order_across_fields() -> None:
    op = make(fields=["a", "b"], method="linear")
    events = [
        ev(0.0, a=0.0, b=0.0),
        ev(1.0, a=None, b=10.0),  # waits for a
        ev(2.0, a=2.0, b=None),  # a known again: releases t=1; waits for b
        ev(3.0, a=3.0, b=None),
        ev(4.0, a=4.0, b=40.0),
    ]
    out = run(op, events[:3], finish=False)
    assert [(e.time, e.fields) for e in out] == [
        (0.0, {"a": 0.0, "b": 0.0}),
        (1.0, {"a": 1.0, "b": 10.0}),
    ]
    out = run(op, events[3:], finish=False)
    assert [(e.time, e.fields["b"]) for e in out] == [(2.0, 20.0), (3.0, 30.0), (4.0, 40.0)]


def test_linear_gives_up_at_the_end_of_the_stream() -> None:
    op = make(fields=["v"], method="linear")
    out = run(op, series([1.0, None, None]))
    assert values(out) == [1.0, None, None]
    assert flags(out) == [0, 0, 0]
    assert op.metrics()["unfilled"] == 2


def test_linear_max_gap_releases_by_time() -> None:
    op = make(fields=["v"], method="linear", max_gap=5)
    run(op, [ev(0.0, v=1.0), ev(1.0, v=None)], finish=False)
    assert op.on_tick(4.0) == ()
    (released,) = op.on_tick(6.0)  # 6 - 0 > 5: the gap can no longer be bridged
    assert (released.time, released.fields, released.flags) == (1.0, {"v": None}, 0)
    # A gap that turns out longer than max_gap when it closes is not filled either.
    out = run(op, [ev(7.0, v=1.0), ev(8.0, v=None), ev(20.0, v=3.0)], finish=False)
    assert values(out) == [1.0, None, 3.0]


def test_linear_without_a_value_before_does_not_hold() -> None:
    op = make(fields=["v"], method="linear")
    out = run(op, series([None, 2.0]), finish=False)
    assert values(out) == [None, 2.0]


def test_linear_holds_a_bounded_number_of_events() -> None:
    op = make(fields=["v"], method="linear")
    out = run(op, series([1.0] + [None] * (MAX_HELD + 5)), finish=False)
    assert len(out) == MAX_HELD + 6  # past the bound the gap is given up: all released
    assert set(values(out[1:])) == {None}
    assert op.metrics()["held"] == 0  # and later missing values are not held for it
    assert op.metrics()["unfilled"] == MAX_HELD + 5


def test_model_learns_a_trend() -> None:
    ramp = [0.5 * i for i in range(40)]
    op = make(fields=["v"], method="model", lags=2)
    out = run(op, series([*ramp, None, None]))
    assert out[-2].fields["v"] == pytest.approx(20.0, abs=0.2)
    assert out[-1].fields["v"] == pytest.approx(20.5, abs=0.4)
    assert flags(out[-2:]) == [IMPUTED, IMPUTED]
    last = run(make(fields=["v"], method="last"), series([*ramp, None]))
    assert last[-1].fields["v"] == 19.5  # what the model improves on


def test_model_falls_back_to_last_while_warming_up() -> None:
    out = run(make(fields=["v"], method="model"), series([1.0, 2.0, None]))
    assert values(out) == [1.0, 2.0, 2.0]


def test_model_snapshot_round_trip() -> None:
    op = make(fields=["v"], method="model", lags=2)
    run(op, series([math.sin(i / 3) for i in range(30)]), finish=False)
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [ev(30.0, v=None), ev(31.0, v=0.1), ev(32.0, v=None)]
    assert run(op, rest) == run(twin, rest)


def test_fields_default_to_numeric_input() -> None:
    op = make()
    op.bind({"a": "float", "s": "str", "n": "int"})
    out = run(op, [ev(0.0, a=1.0, s="x", n=2), ev(1.0, a=None, s=None, n=None)])
    assert out[1].fields == {"a": 1.0, "s": None, "n": 2}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"method": "spline"}, ("method",)),
        ({"max_gap": 0}, ("max_gap",)),
        ({"alpha": 0}, ("alpha",)),
        ({"alpha": 1.5}, ("alpha",)),
        ({"window": 0}, ("window",)),
        ({"lags": 0}, ("lags",)),
        ({"fields": []}, ("fields",)),
        ({"fields": ["a", "b", "a"]}, ("fields", 2)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Impute, params)
    assert info.value.path == path


def test_schema() -> None:
    upstream = {"temp": "float", "s": "str"}
    assert make(fields=["temp"]).schema(upstream) == upstream
    with pytest.raises(FieldError) as info:
        make(fields=["tmp"]).schema(upstream)
    assert (info.value.path, "did you mean 'temp'" in info.value.message) == (("fields", 0), True)
    with pytest.raises(FieldError, match="expected a number"):
        make(fields=["s"]).schema(upstream)
    with pytest.raises(FieldError):
        make().schema({"s": "str"})
