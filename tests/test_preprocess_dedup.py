"""preprocess.dedup: repeated times, repeated values, tolerance, memory, parameters."""

from __future__ import annotations

from typing import Any

import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.operator import build, validate_params
from operators.preprocess import Dedup


def make(**params: Any) -> Dedup:
    op = build(Dedup, params)
    assert isinstance(op, Dedup)
    return op


def kept(op: Dedup, events: list[Event]) -> list[int]:
    """The seq of every event passed on."""
    out = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        assert all(r is e for r in result)  # passed on as is
        out.extend(r.seq for r in result)
    return out


def ev(seq: int, t: float, key: str = "d", **fields: Any) -> Event:
    return Event(key, seq, t, fields)


def test_same_time_is_dropped() -> None:
    op = make()
    events = [ev(1, 10.0), ev(2, 11.0), ev(3, 10.0), ev(4, 12.0), ev(5, 11.0)]
    assert kept(op, events) == [1, 2, 4]
    assert op.metrics() == {"dropped": 2, "passed": 3}


def test_time_identity_includes_the_key() -> None:
    op = make()  # one instance can see several devices (key: global)
    assert kept(op, [ev(1, 10.0, "a"), ev(2, 10.0, "b"), ev(3, 10.0, "a")]) == [1, 2]


def test_memory_is_bounded() -> None:
    op = make(memory=2)
    assert kept(op, [ev(1, 1.0), ev(2, 2.0), ev(3, 3.0), ev(4, 1.0), ev(5, 3.0)]) == [1, 2, 3, 4]


def test_same_values_are_dropped() -> None:
    op = make(mode="value", fields=["a", "s"])
    events = [
        ev(1, 1.0, a=1.0, s="on", other=1),
        ev(2, 2.0, a=1.0, s="on", other=2),  # other is not compared
        ev(3, 3.0, a=1.0, s="off"),
        ev(4, 4.0, a=None, s="off"),
        ev(5, 5.0, a=None, s="off"),
        ev(6, 6.0, a=1.0, s="off"),
    ]
    assert kept(op, events) == [1, 3, 4, 6]


def test_tolerance_compares_with_the_last_event_passed_on() -> None:
    op = make(mode="value", fields=["temp"], tolerance=0.5)
    values = [20.0, 20.3, 20.6, 20.4, 19.4, 19.0]
    events = [ev(i, float(i), temp=v) for i, v in enumerate(values)]
    # 20.6 passes (0.6 from 20.0) although it is 0.3 from 20.3: a slow drift gets through.
    assert kept(op, events) == [0, 2, 4]


def test_max_interval_lets_a_steady_value_through() -> None:
    op = make(mode="value", fields=["temp"], max_interval="10s")
    events = [ev(i, float(t), temp=1.0) for i, t in enumerate([0, 5, 9, 10, 15, 21])]
    assert kept(op, events) == [0, 3, 5]


def test_value_mode_defaults_to_every_field() -> None:
    op = make(mode="value")
    op.bind({"a": "float", "b": "str"})
    assert kept(op, [ev(1, 1.0, a=1.0, b="x"), ev(2, 2.0, a=1.0, b="y"), ev(3, 3.0, a=1.0, b="y")])
    unbound = make(mode="value")  # compares the event's own fields
    events = [ev(1, 1.0, a=1), ev(2, 2.0, a=1), ev(3, 3.0, a=1, b=2), ev(4, 4.0, a=1, b=2)]
    assert kept(unbound, events) == [1, 3]


def test_bools_and_ints() -> None:
    op = make(mode="value", fields=["on", "n"], tolerance=1)
    events = [ev(1, 1.0, on=True, n=1), ev(2, 2.0, on=True, n=2), ev(3, 3.0, on=False, n=2)]
    assert kept(op, events) == [1, 3]


def test_snapshot() -> None:
    op = make(mode="value", fields=["temp"], tolerance=0.1)
    kept(op, [ev(1, 1.0, temp=1.0)])
    twin = op.clone()
    twin.restore(op.snapshot())
    assert kept(twin, [ev(2, 2.0, temp=1.05), ev(3, 3.0, temp=2.0)]) == [3]
    assert twin.metrics() == {"dropped": 1, "passed": 2}


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"mode": "seq"}, ("mode",)),
        ({"memory": 0}, ("memory",)),
        ({"mode": "value", "fields": []}, ("fields",)),
        ({"mode": "value", "fields": ["a", "a"]}, ("fields", 1)),
        ({"mode": "value", "tolerance": -1}, ("tolerance",)),
        ({"mode": "value", "max_interval": "0s"}, ("max_interval",)),
        ({"fields": ["a"]}, ("fields",)),
        ({"tolerance": 0.5}, ("tolerance",)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Dedup, params)
    assert info.value.path == path


def test_schema() -> None:
    upstream = {"temp": "float", "s": "str"}
    assert make(mode="value", fields=["s"]).schema(upstream) == upstream
    with pytest.raises(FieldError) as info:
        make(mode="value", fields=["tmp"]).schema(upstream)
    assert info.value.path == ("fields", 0)
    assert "did you mean 'temp'" in info.value.message
    with pytest.raises(ParamError, match="did you mean 'tolerance'"):
        validate_params(Dedup, {"tolerence": 1})
