"""``transform.compute``: fields computed by expressions."""

from __future__ import annotations

import copy
import pickle

import pytest

from fogrt.errors import FieldError, ParamError, StateError
from fogrt.event import Event
from fogrt.operator import build, validate_params
from fogrt.registry import operator_class
from operators.transform import Compute

UPSTREAM = {"current": "float", "voltage": "float", "count": "int", "on": "bool", "mode": "str"}


def event(**fields: object) -> Event:
    return Event("pump-1", 7, 1_700_000_000.0, dict(fields), arrival=1_700_000_001.0, flags=2)


def test_registered_under_its_kind() -> None:
    assert operator_class("transform.compute") is Compute
    assert Compute.kind == "transform.compute"


def test_adds_computed_fields_after_the_input_ones() -> None:
    op = Compute({"power": "current * voltage", "high": "power > 1000"})
    (out,) = op.process(event(current=5.0, voltage=230.0))
    assert out.fields == {"current": 5.0, "voltage": 230.0, "power": 1150.0, "high": True}
    assert list(out.fields) == ["current", "voltage", "power", "high"]
    assert (out.key, out.seq, out.time, out.arrival, out.flags) == (
        "pump-1",
        7,
        1_700_000_000.0,
        1_700_000_001.0,
        2,
    )


def test_keep_false_emits_only_computed_fields() -> None:
    op = Compute({"power": "current * voltage", "high": "power > 1000"}, keep=False)
    (out,) = op.process(event(current=1.0, voltage=230.0))
    assert out.fields == {"power": 230.0, "high": False}


def test_later_expressions_see_earlier_results() -> None:
    op = Compute({"a": "x + 1", "b": "a * 2", "c": "b - a"}, keep=False)
    assert op.process(event(x=1))[0].fields == {"a": 2, "b": 4, "c": 2}


def test_a_computed_field_replaces_an_input_field_in_place() -> None:
    op = Compute({"x": "x * 10", "y": "x + 1"})
    (out,) = op.process(event(x=2, z=0))
    assert list(out.fields.items()) == [("x", 20), ("z", 0), ("y", 21)]


def test_missing_values_and_errors_give_none_not_exceptions() -> None:
    op = Compute({"ratio": "a / b", "ok": "ratio > 1", "missing": "ratio == None"})
    assert op.process(event(a=1.0, b=0.0))[0].fields == {
        "a": 1.0,
        "b": 0.0,
        "ratio": None,
        "ok": False,
        "missing": True,
    }
    assert op.process(event())[0].fields == {"ratio": None, "ok": False, "missing": True}


def test_input_event_is_not_mutated() -> None:
    op = Compute({"x": "x + 1", "y": "x"})
    source = event(x=1.0)
    before = copy.deepcopy(source)
    op.process(source)
    assert source == before


def test_schema_types() -> None:
    op = Compute(
        {
            "power": "current * voltage",
            "twice": "count * 2",
            "high": "power > 1000 and on",
            "label": "'auto' if mode == 'a' else 'manual'",
            "unknown": "None",
            "rounded": "round(power)",
        }
    )
    assert op.schema(UPSTREAM) == {
        **UPSTREAM,
        "power": "float",
        "twice": "int",
        "high": "bool",
        "label": "str",
        "unknown": "float",
        "rounded": "int",
    }
    keep_false = Compute({"twice": "count * 2", "half": "twice / 2"}, keep=False)
    assert keep_false.schema(UPSTREAM) == {"twice": "int", "half": "float"}


def test_schema_of_a_replaced_field_uses_the_new_type() -> None:
    assert Compute({"count": "count > 0"}).schema(UPSTREAM)["count"] == "bool"


def test_schema_rejects_an_unknown_field_with_its_path() -> None:
    op = Compute({"power": "current * voltge"})
    with pytest.raises(FieldError) as info:
        op.schema(UPSTREAM)
    assert info.value.path == ("fields", "power")
    assert info.value.message == "unknown field 'voltge' (did you mean 'voltage'?)"


def test_schema_reports_the_first_unknown_field_in_source_order() -> None:
    op = Compute({"s": "zz_a + zz_b"})
    with pytest.raises(FieldError) as info:
        op.schema({"x": "float"})
    assert info.value.message == "unknown field 'zz_a'; expected one of: x"


def test_schema_rejects_use_of_a_field_computed_later() -> None:
    op = Compute({"a": "b + 1", "b": "current * 2"})
    with pytest.raises(FieldError) as info:
        op.schema(UPSTREAM)
    assert info.value.path == ("fields", "a")
    assert "'b'" in info.value.message


def test_schema_accepts_fields_computed_earlier_even_without_keep() -> None:
    op = Compute({"a": "current * 2", "b": "a + voltage"}, keep=False)
    assert op.schema(UPSTREAM) == {"a": "float", "b": "float"}


@pytest.mark.parametrize(
    ("fields", "path", "message"),
    [
        ({}, ("fields",), "give at least one field: {name: expression}"),
        (
            {"p": "x.real"},
            ("fields", "p"),
            "invalid expression: attribute access is not allowed (at character 2)",
        ),
        ({"p": "x +"}, ("fields", "p"), "invalid expression: syntax error: invalid syntax"),
        (
            {"ok": "x", "p": "open('f')"},
            ("fields", "p"),
            "invalid expression: unknown function 'open'",
        ),
        ({"a-b": "x"}, ("fields", "a-b"), "field name 'a-b' is not an identifier"),
        ({"1st": "x"}, ("fields", "1st"), "field name '1st' is not an identifier"),
        ({"": "x"}, ("fields", ""), "field name '' is not an identifier"),
        ({"if": "x"}, ("fields", "if"), "field name 'if' is a reserved word"),
        ({"None": "x"}, ("fields", "None"), "field name 'None' is a reserved word"),
        ({"p": 3}, ("fields", "p"), "expected an expression string, got int"),
    ],
)
def test_bad_parameters_raise_param_error(
    fields: dict[str, str], path: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ParamError) as info:
        Compute(fields)
    assert info.value.path == path
    assert info.value.message.startswith(message)


def test_validation_through_build() -> None:
    op = build(Compute, {"fields": {"power": "current * voltage"}, "keep": False})
    assert isinstance(op, Compute)
    assert op.params() == {"fields": {"power": "current * voltage"}, "keep": False}
    with pytest.raises(ParamError) as info:
        validate_params(Compute, {"fields": {"p": 1}})
    assert info.value.path == ("fields", "p")
    with pytest.raises(ParamError) as info:
        build(Compute, {"fields": {"p": "x[0]"}})
    assert info.value.path == ("fields", "p")
    assert "subscripts" in info.value.message


def test_parameters_are_stored_unchanged_and_clone_repr_work() -> None:
    fields = {"s": "x + y"}
    op = Compute(fields, keep=False)
    assert op.fields is fields
    assert op.keep is False
    assert repr(op) == "Compute(fields={'s': 'x + y'}, keep=False)"
    twin = op.clone()
    assert twin.params() == op.params()
    assert twin.process(event(x=1, y=2)) == op.process(event(x=1, y=2))


def test_no_learned_state() -> None:
    op = Compute({"s": "x + y"})
    op.process(event(x=1, y=2))
    blob = op.snapshot()
    assert blob == b""
    fresh = op.clone()
    fresh.restore(blob)
    assert fresh.process(event(x=3, y=4)) == op.process(event(x=3, y=4))
    with pytest.raises(StateError):
        fresh.restore(pickle.dumps({"_compiled": ()}))


def test_operator_pickles() -> None:
    op = Compute({"s": "x + y", "big": "s > 1"})
    copy_ = pickle.loads(pickle.dumps(op))
    assert copy_.process(event(x=1, y=2)) == op.process(event(x=1, y=2))


def test_unit_test_params_build_and_fit_the_conformance_schema() -> None:
    schema = {"x": "float", "y": "float", "z": "float", "label": "int"}
    for params in Compute._unit_test_params():
        op = build(Compute, params)
        out = op.schema(schema)
        assert set(params["fields"]) <= set(out)
        (result,) = op.process(Event("a", 0, 0.0, {"x": 0.7, "y": None, "z": 1.0, "label": 1}))
        assert set(result.fields) == set(out)
