"""preprocess.resample: slots per method, gaps, trailing slots on tick, lateness, parameters."""

from __future__ import annotations

import math
from typing import Any

import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, Event
from fogrt.operator import build
from operators.preprocess import Resample


def make(**params: Any) -> Resample:
    op = build(Resample, {"period": 5, "fields": ["v"], **params})
    assert isinstance(op, Resample)
    return op


def ev(t: float, v: Any = None, flags: int = 0, **fields: Any) -> Event:
    return Event("d", int(t), t, {"v": v, **fields}, 0.0, flags)


def feed(op: Resample, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        out.extend(result)
    return out


def slots(events: list[Event], name: str = "v") -> list[tuple[Any, ...]]:
    return [(e.seq, e.time, e.fields[name], e.flags) for e in events]


EVENTS = [ev(0.0, 1.0), ev(2.0, 2.0), ev(13.0, 5.0), ev(14.0, 7.0)]


def test_last_holds_the_value_through_empty_slots() -> None:
    op = make()
    assert slots(feed(op, EVENTS)) == [(0, 0.0, 2.0, 0), (1, 5.0, 2.0, IMPUTED)]
    assert slots(list(op.on_tick(math.inf))) == [(2, 10.0, 7.0, 0)]
    assert op.metrics() == {"slots": 3, "filled": 1, "gaps": 0, "late": 0}


def test_mean_and_none() -> None:
    op = make(method="mean")
    out = feed(op, EVENTS) + list(op.on_tick(math.inf))
    assert slots(out) == [(0, 0.0, 1.5, 0), (1, 5.0, None, 0), (2, 10.0, 6.0, 0)]
    op = make(method="none")
    out = feed(op, EVENTS) + list(op.on_tick(math.inf))
    assert slots(out) == [(0, 0.0, 2.0, 0), (1, 5.0, None, 0), (2, 10.0, 7.0, 0)]


def test_linear_samples_the_slot_starts() -> None:
    op = make(method="linear")
    out = feed(op, [ev(1.0, 0.0), ev(5.0, 4.0), ev(12.0, 11.0)]) + list(op.on_tick(math.inf))
    # The grid starts at the first slot start after the first event: 5, 10.
    assert slots(out) == [(1, 5.0, 4.0, 0), (2, 10.0, 9.0, 0)]


def test_linear_waits_for_the_value_after() -> None:
    op = make(method="linear")
    assert slots(feed(op, [ev(0.0, 0.0), ev(4.0, 4.0), ev(5.0, None)])) == [(0, 0.0, 0.0, 0)]
    assert feed(op, [ev(10.0, None)]) == []  # v at 5 needs a value of v after 5
    assert slots(feed(op, [ev(21.0, 21.0)])) == [
        (1, 5.0, 5.0, IMPUTED),  # no reading of v in [5, 10): interpolated from 4 and 21
        (2, 10.0, 10.0, IMPUTED),
        (3, 15.0, 15.0, IMPUTED),
    ]


def test_linear_does_not_wait_beyond_max_gap() -> None:
    op = make(method="linear", max_gap=8)
    assert slots(feed(op, [ev(0.0, 0.0), ev(4.0, 4.0), ev(5.0, None)])) == [(0, 0.0, 0.0, 0)]
    assert feed(op, [ev(10.0, None)]) == []  # v at 5 may still get a value after it
    assert slots(feed(op, [ev(13.0, None)])) == [(1, 5.0, None, 0)]  # 9 s since v: never


def test_gaps_longer_than_max_gap_are_skipped_or_missing() -> None:
    events = [ev(0.0, 1.0), ev(3.0, 1.0), ev(31.0, 2.0)]
    op = make(max_gap="20s")
    out = feed(op, events) + list(op.on_tick(math.inf))
    assert slots(out) == [(0, 0.0, 1.0, 0), (6, 30.0, 2.0, 0)]
    assert op.metrics()["gaps"] == 5
    op = make(max_gap="20s", on_gap="missing")
    out = feed(op, events) + list(op.on_tick(math.inf))
    assert [(e.seq, e.fields["v"]) for e in out] == [
        (0, 1.0),
        *[(k, None) for k in range(1, 6)],
        (6, 2.0),
    ]
    assert op.metrics()["gaps"] == 5
    short = make(max_gap="30s")  # the same gap, within max_gap: filled
    out = feed(short, events)
    assert [e.fields["v"] for e in out] == [1.0] * 6


def test_last_does_not_carry_a_value_beyond_max_gap() -> None:
    op = make(max_gap=6, fields=["v", "w"])
    events = [ev(0.0, 1.0, w=1.0)] + [ev(float(t), w=2.0) for t in range(1, 20)]
    out = feed(op, events)
    assert [e.fields["v"] for e in out] == [1.0, 1.0, None]  # slot 2 starts 10 s after it
    assert [e.fields["w"] for e in out] == [2.0, 2.0, 2.0]


def test_trailing_slots_on_tick() -> None:
    op = make()  # no max_gap: a quiet device's value is held up to the watermark
    feed(op, [ev(3.0, 1.0)])
    assert slots(list(op.on_tick(17.0))) == [
        (0, 0.0, 1.0, 0),
        (1, 5.0, 1.0, IMPUTED),
        (2, 10.0, 1.0, IMPUTED),
    ]
    assert op.on_tick(math.inf) == ()  # nothing after the last event at the end
    op = make(max_gap=15)
    feed(op, [ev(3.0, 1.0)])
    assert slots(list(op.on_tick(17.0))) == [(0, 0.0, 1.0, 0)]  # 14 s quiet: undecided
    assert op.on_tick(19.0) == ()  # 16 s quiet: a long gap, its slots are skipped
    assert slots(feed(op, [ev(31.0, 2.0)])) == []
    assert slots(list(op.on_tick(math.inf))) == [(6, 30.0, 2.0, 0)]
    assert op.metrics()["gaps"] == 5


def test_late_events_are_dropped() -> None:
    op = make(method="mean")
    feed(op, [ev(1.0, 1.0), ev(6.0, 2.0)])  # slot 0 emitted
    assert feed(op, [ev(4.0, 100.0), ev(5.5, 4.0)]) == []  # 4 is late, 5.5 is in the open slot
    assert op.metrics()["late"] == 1
    assert slots(list(op.on_tick(math.inf))) == [(1, 5.0, 3.0, 0)]


def test_out_of_order_in_an_open_slot_uses_the_newest_time() -> None:
    op = make()
    feed(op, [ev(3.0, 3.0), ev(1.0, 1.0)])
    (slot,) = op.on_tick(math.inf)
    assert slot.fields["v"] == 3.0


def test_an_early_event_before_anything_is_emitted_moves_the_grid() -> None:
    op = make()
    feed(op, [ev(7.0, 7.0), ev(2.0, 2.0)])
    assert [e.seq for e in op.on_tick(math.inf)] == [0, 1]


def test_types_flags_and_key() -> None:
    op = make(fields=["n", "x"])
    op.bind({"n": "int", "x": "float", "s": "str"})
    out = feed(op, [Event("k7", 0, 0.0, {"n": 3, "x": 1.5, "s": "a"}, 0.0, IMPUTED)])
    out += op.on_tick(math.inf)
    assert [(e.key, e.fields, e.flags) for e in out] == [("k7", {"n": 3, "x": 1.5}, IMPUTED)]
    upstream = {"n": "int", "x": "float", "s": "str"}
    assert make(fields=["n", "x"]).schema(upstream) == {"n": "int", "x": "float"}
    assert make(method="mean").schema({"v": "int"}) == {"v": "float"}
    assert make(fields=None).schema(upstream) == {"n": "int", "x": "float"}


def test_snapshot() -> None:
    op = make(method="linear", max_gap=20)
    feed(op, [ev(1.0, 1.0), ev(6.0, 2.0)])
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [ev(8.0, None), ev(12.0, 4.0), ev(40.0, 1.0)]
    assert feed(op, rest) + list(op.on_tick(math.inf)) == feed(twin, rest) + list(
        twin.on_tick(math.inf)
    )


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"period": 0}, ("period",)),
        ({"period": "soon"}, ("period",)),
        ({"method": "cubic"}, ("method",)),
        ({"max_gap": 0}, ("max_gap",)),
        ({"on_gap": "fill"}, ("on_gap",)),
        ({"fields": []}, ("fields",)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Resample, {"period": 5, **params})
    assert info.value.path == path


def test_schema_errors() -> None:
    with pytest.raises(FieldError) as info:
        make(fields=["temp"]).schema({"tmp": "float"})
    assert info.value.path == ("fields", 0)
    assert "did you mean 'tmp'" in info.value.message
