"""preprocess.align: grouping, tolerance, missing and late partners, partner kinds, parameters."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, LATE, Event
from fogrt.operator import build, validate_params
from operators.preprocess import Align


def make(**params: Any) -> Align:
    base = {"partners": ["m1", "m2", "m3"], "fields": ["v"], "tolerance": 1, "timeout": 5}
    op = build(Align, {**base, **params})
    assert isinstance(op, Align)
    return op


def ev(key: str, t: float, v: Any = None, flags: int = 0, **fields: Any) -> Event:
    return Event(key, 0, t, {"v": t if v is None else v, **fields}, 0.0, flags)


def feed(op: Align, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple)
        out.extend(result)
    return out


def rows(events: list[Event]) -> list[tuple[Any, ...]]:
    return [(e.seq, e.time, tuple(e.fields.values()), e.flags) for e in events]


def test_complete_groups_are_emitted_at_once() -> None:
    op = make()
    assert feed(op, [ev("m2", 10.3), ev("m1", 10.0)]) == []
    (e,) = feed(op, [ev("m3", 10.9)])
    assert (e.key, e.seq, e.time, e.fields) == (
        "m1+m2+m3",
        0,
        10.0,
        {"m1_v": 10.0, "m2_v": 10.3, "m3_v": 10.9},
    )
    assert op.metrics()["fused"] == 1


def test_members_are_all_within_tolerance_of_each_other() -> None:
    op = make()
    out = feed(op, [ev("m1", 0.0), ev("m2", 0.8), ev("m3", 1.6), ev("m1", 20.0)])
    # m3 at 1.6 is 1.6 from m1: the first group lacks m3, which starts the next one.
    assert rows(out) == [
        (0, 0.0, (0.0, 0.8, None), 0),
        (1, 1.6, (None, None, 1.6), 0),
    ]
    assert op.metrics()["partial"] == 2


def test_missing_partner_waits_for_the_timeout() -> None:
    op = make()
    feed(op, [ev("m1", 0.0), ev("m2", 0.5)])
    assert feed(op, [ev("m1", 4.9)]) == []  # watermark 4.9 < 0 + 5
    assert rows(feed(op, [ev("m2", 5.0)])) == [(0, 0.0, (0.0, 0.5, None), 0)]
    assert rows(list(op.on_tick(math.inf))) == [(1, 4.9, (4.9, 5.0, None), 0)]


def test_drop_missing() -> None:
    op = make(on_missing="drop")
    out = feed(op, [ev("m1", 0.0), ev("m2", 0.5), ev("m1", 2.0), ev("m2", 2.1), ev("m3", 2.2)])
    assert rows(out) == [(1, 2.0, (2.0, 2.1, 2.2), 0)]
    assert op.on_tick(math.inf) == ()
    assert op.metrics()["dropped"] == 1


def test_late_partner_within_lateness_completes_the_group() -> None:
    op = make(lateness=10)
    feed(op, [ev("m1", 0.0), ev("m2", 0.5)])
    (partial,) = feed(op, [ev("m1", 6.0)])
    assert rows([partial]) == [(0, 0.0, (0.0, 0.5, None), 0)]
    (fixed,) = feed(op, [ev("m3", 0.9, flags=IMPUTED)])
    assert rows([fixed]) == [(0, 0.0, (0.0, 0.5, 0.9), LATE | IMPUTED)]
    assert op.metrics()["corrections"] == 1
    assert op.metrics()["late"] == 0


def test_late_partner_beyond_lateness_is_counted() -> None:
    op = make(lateness=3)
    feed(op, [ev("m1", 0.0), ev("m2", 0.5), ev("m1", 6.0)])
    feed(op, [ev("m2", 8.5)])  # watermark 8.5 >= 0 + 5 + 3: the group is forgotten
    assert feed(op, [ev("m3", 0.9)]) == []
    assert op.metrics()["late"] == 1


def test_late_partner_with_drop_is_emitted_once_complete() -> None:
    op = make(lateness=10, on_missing="drop")
    feed(op, [ev("m1", 0.0), ev("m1", 6.0)])  # group 0 (m1 alone) dropped
    assert feed(op, [ev("m2", 0.4)]) == []  # still lacks m3
    assert rows(feed(op, [ev("m3", 0.2)])) == [(0, 0.0, (0.0, 0.4, 0.2), LATE)]


def test_out_of_order_partner_within_timeout_is_on_time() -> None:
    op = make()
    feed(op, [ev("m1", 0.0), ev("m2", 0.2), ev("m1", 3.0), ev("m2", 3.1)])
    out = feed(op, [ev("m3", 0.1), ev("m3", 3.2)])
    assert rows(out) == [(0, 0.0, (0.0, 0.2, 0.1), 0), (1, 3.0, (3.0, 3.1, 3.2), 0)]


def test_unknown_partners_are_ignored() -> None:
    op = make()
    assert feed(op, [ev("m9", 0.0)]) == []
    assert op.metrics()["ignored"] == 1


def test_by_field_with_prefix_mapping() -> None:
    op = build(
        Align,
        {"partners": {"0": "left", "1": "right"}, "by": "side", "fields": ["p"], "tolerance": 0.5},
    )
    out = feed(
        op,
        [
            Event("dev", 0, 1.0, {"side": 0, "p": 10.0}),
            Event("dev", 1, 1.2, {"side": 1, "p": 12.0}),
            Event("dev", 2, 2.0, {"side": 7, "p": 0.0}),
        ],
    )
    assert [(e.key, e.fields) for e in out] == [("dev", {"left_p": 10.0, "right_p": 12.0})]
    assert op.metrics()["ignored"] == 1


def test_by_fields_present() -> None:
    op = build(
        Align,
        {"partners": {"imu": ["ax", "ay"], "env": ["temp"]}, "by": "fields", "tolerance": 0.5},
    )
    out = feed(
        op,
        [
            Event("n1", 0, 0.0, {"ax": 1.0, "ay": 2.0}),
            Event("n1", 1, 0.3, {"temp": 20.0}),
            Event("n1", 2, 1.0, {"ax": 3.0, "ay": 4.0, "temp": 21.0}),  # feeds both partners
            Event("n1", 3, 1.1, {"other": 1}),
        ],
    )
    assert [(e.time, e.fields) for e in out] == [
        (0.0, {"imu_ax": 1.0, "imu_ay": 2.0, "env_temp": 20.0}),
        (1.0, {"imu_ax": 3.0, "imu_ay": 4.0, "env_temp": 21.0}),
    ]
    assert op.metrics()["ignored"] == 1


def test_fields_default_to_every_input_field_but_by() -> None:
    op = build(Align, {"partners": ["a", "b"], "by": "who"})
    op.bind({"who": "str", "x": "float", "n": "int"})
    out = feed(op, [Event("k", 0, 0.0, {"who": "a", "x": 1.0, "n": 1})])
    out += op.on_tick(math.inf)
    assert out[0].fields == {"a_x": 1.0, "a_n": 1, "b_x": None, "b_n": None}
    assert op.schema({"who": "str", "x": "float", "n": "int"}) == {
        "a_x": "float",
        "a_n": "int",
        "b_x": "float",
        "b_n": "int",
    }


def test_output_key() -> None:
    op = make(output_key="room-1")
    feed(op, [ev("m1", 0.0), ev("m2", 0.0)])
    (e,) = feed(op, [ev("m3", 0.0)])
    assert e.key == "room-1"


def test_snapshot() -> None:
    op = make(lateness=10)
    feed(op, [ev("m1", 0.0), ev("m2", 0.5), ev("m1", 6.0), ev("m2", 6.2)])
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [ev("m3", 0.4), ev("m3", 6.1), ev("m1", 20.0)]
    a = feed(op, rest) + list(op.on_tick(math.inf))
    b = feed(twin, rest) + list(twin.on_tick(math.inf))
    assert a == b
    assert op.metrics() == twin.metrics()
    assert [e.flags for e in a] == [LATE, 0, 0]


@pytest.mark.parametrize(
    ("params", "path", "message"),
    [
        ({"partners": ["m1"]}, ("partners",), "at least two"),
        ({"partners": ["m1", "mote-2"]}, ("partners", 1), "{mote-2: p1}"),
        ({"partners": ["m1", "m1"]}, ("partners", 1), "twice"),
        ({"partners": {"a": "p", "b": "p"}}, ("partners", "b"), "used twice"),
        ({"partners": {"a": "p", "b": "q-1"}}, ("partners", "b"), "cannot prefix"),
        ({"partners": ["a", "b"], "by": "fields", "fields": None}, ("partners",), "map each"),
        (
            {"partners": {"a": ["x"], "b": "y"}, "by": "fields", "fields": None},
            ("partners", "b"),
            "",
        ),
        ({"fields": ["v"], "by": "fields", "partners": {"a": ["x"], "b": ["y"]}}, ("fields",), ""),
        ({"fields": ["v", "who"], "by": "who"}, ("fields", 1), "by field"),
        ({"tolerance": 5, "timeout": 2}, ("timeout",), "at least the tolerance"),
        ({"lateness": -1}, ("lateness",), ""),
        ({"on_missing": "wait"}, ("on_missing",), ""),
        ({"output_key": ""}, ("output_key",), ""),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ParamError) as info:
        make(**params)
    assert info.value.path == path
    assert message in info.value.message


def test_schema() -> None:
    upstream = {"v": "float", "who": "str", "t": "float"}
    assert make().schema(upstream) == {"m1_v": "float", "m2_v": "float", "m3_v": "float"}
    with pytest.raises(FieldError) as info:
        make(by="whoo").schema(upstream)
    assert (info.value.path, "did you mean 'who'" in info.value.message) == (("by",), True)
    with pytest.raises(FieldError) as info:
        make(by="t").schema(upstream)
    assert info.value.path == ("by",)
    with pytest.raises(FieldError) as info:
        make(fields=["w"]).schema(upstream)
    assert info.value.path == ("fields", 0)
    partners = {"imu": ["ax"], "env": ["tmp"]}
    with pytest.raises(FieldError) as info:
        build(Align, {"partners": partners, "by": "fields"}).schema(
            {"ax": "float", "temp": "float"}
        )
    assert info.value.path == ("partners", "env", 0)
    with pytest.raises(ParamError, match="did you mean 'tolerance'"):
        validate_params(Align, {"partners": ["a", "b"], "tolerence": 1})


@settings(max_examples=200, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 300).map(lambda x: x / 10)),
        min_size=1,
        max_size=60,
    ),
    tolerance=st.sampled_from([0.0, 0.5, 2.0]),
)
def test_every_event_is_in_one_group_or_late(
    arrivals: list[tuple[str, float]], tolerance: float
) -> None:
    op = make(tolerance=tolerance, timeout=max(tolerance, 3.0))
    out = feed(op, [ev(key, t) for key, t in arrivals]) + list(op.on_tick(math.inf))
    members = sum(1 for e in out for v in e.fields.values() if v is not None)
    assert members + op.metrics()["late"] == len(arrivals)
    assert op.metrics()["buffered"] == 0
    for e in out:
        times = [v for v in e.fields.values() if v is not None]
        assert max(times) - min(times) <= tolerance + 1e-9
        assert e.time == min(times)
    assert [e.time for e in out] == sorted(e.time for e in out)
    assert [e.seq for e in out] == list(range(len(out)))
