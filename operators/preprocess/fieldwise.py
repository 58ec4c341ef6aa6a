"""The shared shape of operators that work field by field on numeric fields.

``fields`` left out means every numeric field of the compiled input, settled by ``bind()``;
an instance that is never bound (a unit test, a script) discovers them from the events
instead, in the order they first carry a number.
"""

from __future__ import annotations

import math
from typing import Any

from fogrt.errors import FieldError, ParamError
from fogrt.operator import Operator, numeric_fields, require_fields
from fogrt.types import Fields, FieldType, Schema, Value

_REAL = (int, float)


def missing(v: Value) -> bool:
    """None, NaN, or not a number at all: a value that cannot be used."""
    return v is None or v.__class__ not in (int, float) or v != v


def check_field_list(fields: list[str] | None, param: str = "fields") -> None:
    """``ParamError`` for an empty list or a name listed twice."""
    if fields is None:
        return
    if not fields:
        raise ParamError(param, "empty; leave it out to use every numeric field")
    for i, name in enumerate(fields):
        if name in fields[:i]:
            raise ParamError((param, i), f"{name!r} is listed twice")


def check_positive(value: float, param: str, *, allow_zero: bool = False) -> None:
    """``ParamError`` unless ``value`` is a finite number above (or at) zero."""
    ok = value >= 0 if allow_zero else value > 0
    if not (ok and math.isfinite(value)):
        what = "zero or a positive" if allow_zero else "a positive"
        raise ParamError(param, f"must be {what} number, got {value!r}")


class FieldwiseOperator(Operator):
    """Base: subclasses store ``fields`` and call ``_setup_fields`` in their constructor."""

    fields: list[str] | None

    def _setup_fields(self, fields: list[str] | None) -> None:
        check_field_list(fields)
        self._discover = fields is None
        self._names: list[str] = [] if fields is None else list(fields)
        self._types: dict[str, FieldType] = {}

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, work on every numeric field of the compiled input."""
        if self._discover:
            self._discover = False
            self._names = numeric_fields(upstream)
        self._types = {name: upstream[name] for name in self._names if name in upstream}

    def _discover_fields(self, values: Fields) -> None:
        """Unbound and without ``fields``: pick up numeric fields as they appear."""
        for name, v in values.items():
            if name not in self._names and isinstance(v, _REAL) and v.__class__ is not bool:
                self._names.append(name)

    def _check_schema(self, upstream: Schema) -> list[str]:
        """The fields this operator will work on, checked against ``upstream``."""
        if self.fields is not None:
            require_fields(upstream, self.fields, "fields", numeric=True)
            return list(self.fields)
        names = numeric_fields(upstream)
        if not names:
            raise FieldError("fields", "the input has no numeric fields")
        return names

    def _is_int(self, name: str, example: Any) -> bool:
        """Whether ``name`` holds integers (declared type, else the type of a value seen)."""
        declared = self._types.get(name)
        if declared is not None:
            return declared == "int"
        return example.__class__ is int
