"""Every operator in the registry, built-in or third-party, against the operator contract.

Cases are generated from ``fogrt.registry.OPERATORS`` and each operator's
``_unit_test_params()``; an operator that cannot even be imported shows up as a failing case
rather than breaking collection of the whole suite.
"""

from __future__ import annotations

import ast
import copy
import inspect
import math
import sys
from collections.abc import Mapping
from typing import Any

import pytest

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.operator import Operator, build, validate_params
from fogrt.registry import OPERATORS, operator_class
from tests.streams import SCHEMA, Driver, as_tuple, conformance_stream

BUILTINS = {"preprocess.range_check", "transform.compute", "window.tumbling", "learn.anomaly"}
BANNED_IMPORTS = {
    "asyncio",
    "socket",
    "redis",
    "aiocoap",
    "logging",
    "structlog",
    "subprocess",
    "requests",
    "http",
    "urllib",
}
SPLIT = 150  # events fed before the snapshot


def _cases() -> list[Any]:
    cases = []
    for name in OPERATORS.names():
        try:
            cls = operator_class(name)
            param_sets = list(cls._unit_test_params())
        except Exception as exc:  # reported by the case, not at collection
            cases.append(pytest.param(name, None, exc, id=f"{name}-unloadable"))
            continue
        for i, params in enumerate(param_sets):
            cases.append(pytest.param(name, params, None, id=f"{name}-{i}"))
    return cases


CASES = _cases()


def _class(name: str, error: BaseException | None) -> type[Operator]:
    if error is not None:
        pytest.fail(f"operator {name!r} cannot be loaded: {type(error).__name__}: {error}")
    return operator_class(name)


def _outputs(proto: Operator, events: list[Event]) -> list[tuple[Any, ...]]:
    driver = Driver(proto)
    driver.feed(events)
    driver.finish()
    return [as_tuple(e) for e in driver.out]


def test_registry_has_the_builtins() -> None:
    assert set(OPERATORS.names()) >= BUILTINS


@pytest.mark.parametrize("name", OPERATORS.names())
def test_unit_test_params(name: str) -> None:
    param_sets = list(operator_class(name)._unit_test_params())
    assert 1 <= len(param_sets) <= 3, f"{name} yields {len(param_sets)} parameter sets"
    assert all(isinstance(params, dict) for params in param_sets)


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_construction(name: str, params: dict[str, Any], error: BaseException | None) -> None:
    cls = _class(name, error)
    assert cls.kind == name, "kind must be the registered name"
    validated = validate_params(cls, params)
    op = build(cls, params)
    assert isinstance(op, cls)
    signature = inspect.signature(cls.__init__)
    expected = {}
    for pname in cls.param_names():
        assert hasattr(op, pname), f"constructor argument {pname!r} is not stored"
        if pname in validated:
            expected[pname] = validated[pname]
        else:
            expected[pname] = signature.parameters[pname].default
    assert op.params() == expected
    twin = op.clone()
    assert type(twin) is cls
    assert twin is not op
    assert twin.params() == op.params()
    assert repr(op).startswith(f"{cls.__name__}(")


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_snapshot_restore(name: str, params: dict[str, Any], error: BaseException | None) -> None:
    proto = build(_class(name, error), params)
    events = conformance_stream()
    first, rest = events[:SPLIT], events[SPLIT:]
    a = Driver(proto)
    a.feed(first)
    blobs = a.snapshot()
    assert set(blobs) == {"a", "b"}
    assert all(isinstance(blob, bytes) for blob in blobs.values())
    b = Driver.restored(proto, blobs)
    assert {k: op.metrics() for k, op in b.ops.items()} == {
        k: op.metrics() for k, op in a.ops.items()
    }
    out_a = a.feed(rest) + a.finish()
    out_b = b.feed(rest) + b.finish()
    assert [as_tuple(e) for e in out_b] == [as_tuple(e) for e in out_a]
    assert {k: op.metrics() for k, op in b.ops.items()} == {
        k: op.metrics() for k, op in a.ops.items()
    }
    # The snapshot is a copy: feeding A did not change what was snapshotted.
    c = Driver.restored(proto, blobs)
    assert [as_tuple(e) for e in c.feed(rest) + c.finish()] == [as_tuple(e) for e in out_a]


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_determinism(name: str, params: dict[str, Any], error: BaseException | None) -> None:
    cls = _class(name, error)
    events = conformance_stream()
    first = _outputs(build(cls, params), events)
    second = _outputs(build(cls, params), events)
    assert first == second
    assert first, "the conformance stream produced no output at all"


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_clone_has_no_learned_state(
    name: str, params: dict[str, Any], error: BaseException | None
) -> None:
    cls = _class(name, error)
    events = conformance_stream()
    used = build(cls, params)
    for event in events[:SPLIT]:
        if event.key == "a":
            used.process(event)
    assert _outputs(used.clone(), events) == _outputs(build(cls, params), events)


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_input_events_are_not_mutated(
    name: str, params: dict[str, Any], error: BaseException | None
) -> None:
    events = conformance_stream()
    before = copy.deepcopy(events)
    Driver(build(_class(name, error), params)).feed(events)
    assert events == before


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_unknown_param_is_rejected(
    name: str, params: dict[str, Any], error: BaseException | None
) -> None:
    cls = _class(name, error)
    with pytest.raises(ParamError) as info:
        validate_params(cls, {**params, "zzqqxx_not_a_param": 1})
    assert info.value.path == ("zzqqxx_not_a_param",)
    assert "unknown parameter" in info.value.message
    for real in cls.param_names():
        typo = real + "s" if len(real) > 2 else real + "_x"
        if typo in cls.param_names():
            continue
        with pytest.raises(ParamError) as info:
            validate_params(cls, {**params, typo: 1})
        assert info.value.path == (typo,)
        assert "did you mean" in info.value.message
        assert repr(real) in info.value.message


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_module_is_pure(name: str, params: dict[str, Any], error: BaseException | None) -> None:
    cls = _class(name, error)
    source = inspect.getsource(sys.modules[cls.__module__])
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            pytest.fail(f"{cls.__module__} uses __import__")
    assert not imported & BANNED_IMPORTS, f"{cls.__module__} imports {imported & BANNED_IMPORTS}"


def _fits(value: Any, ftype: str) -> bool:
    if value is None:
        return True
    if ftype == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if ftype == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ftype == "bool":
        return isinstance(value, bool)
    return isinstance(value, str)


@pytest.mark.parametrize(("name", "params", "error"), CASES)
def test_schema_covers_outputs(
    name: str, params: dict[str, Any], error: BaseException | None
) -> None:
    proto = build(_class(name, error), params)
    schema = proto.schema(dict(SCHEMA))
    assert isinstance(schema, dict)
    driver = Driver(proto)
    driver.feed(conformance_stream())
    driver.finish()
    for event in driver.out:
        assert isinstance(event, Event)
        for field, value in event.fields.items():
            assert field in schema, f"output field {field!r} is not in the schema {schema}"
            assert _fits(value, schema[field]), f"{field}={value!r} is not {schema[field]}"
    for op in driver.ops.values():
        metrics = op.metrics()
        assert isinstance(metrics, Mapping)
        for key, value in metrics.items():
            assert isinstance(key, str)
            assert isinstance(value, int | float) and not math.isnan(value)
