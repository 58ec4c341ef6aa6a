"""Transform operators: derive new fields from the fields an event already carries."""

from __future__ import annotations

import keyword
from collections.abc import Iterator
from typing import Any

from fogrt.errors import ExpressionError, FieldError, ParamError, StateError
from fogrt.event import Event
from fogrt.expr import Expr, compile_expr
from fogrt.operator import Operator, unknown_name_message
from fogrt.types import FieldType, Schema


class Compute(Operator):
    """Add fields computed by expressions (see ``fogrt.expr`` for the language).

    Parameters
    ----------
    fields
        New field name -> expression. Expressions are evaluated in the order given, so a
        later one may use a field computed by an earlier one. A name that the input already
        carries is replaced. Names must be identifiers (letters, digits, ``_``) that are not
        Python keywords, so that later expressions can refer to them.
    keep
        ``True`` (default): emit the input fields plus the computed ones. ``False``: emit the
        computed fields only.

    An expression never fails at run time: a missing operand, a division by zero or an
    overflow gives ``None`` (see ``fogrt.expr``). The declared type of a computed field is
    inferred from the expression and the input types (``float`` when it cannot be told).

    Examples
    --------
    In a topology::

        - id: power
          use: transform.compute
          with:
            fields:
              power: "current * voltage"
              overload: "power > 1000"

    >>> from fogrt.event import Event
    >>> op = Compute({"power": "current * voltage", "overload": "power > 1000"})
    >>> op.process(Event("pump-1", 1, 0.0, {"current": 5.0, "voltage": 230.0}))[0].fields
    {'current': 5.0, 'voltage': 230.0, 'power': 1150.0, 'overload': True}
    >>> op.process(Event("pump-1", 2, 1.0, {"current": None, "voltage": 230.0}))[0].fields
    {'current': None, 'voltage': 230.0, 'power': None, 'overload': False}
    >>> op.schema({"current": "float", "voltage": "float"})
    {'current': 'float', 'voltage': 'float', 'power': 'float', 'overload': 'bool'}
    >>> Compute({"power": "current * voltage"}, keep=False).process(
    ...     Event("pump-1", 3, 2.0, {"current": 2.0, "voltage": 230.0}))[0].fields
    {'power': 460.0}
    """

    kind = "transform.compute"

    def __init__(self, fields: dict[str, str], keep: bool = True) -> None:
        self.fields = fields
        self.keep = keep
        if not fields:
            raise ParamError("fields", "give at least one field: {name: expression}")
        compiled: list[tuple[str, Expr]] = []
        for name, source in fields.items():
            path = ("fields", name)
            if not isinstance(name, str) or not name.isidentifier():
                raise ParamError(
                    path,
                    f"field name {name!r} is not an identifier "
                    "(letters, digits and _, not starting with a digit)",
                )
            if keyword.iskeyword(name):
                raise ParamError(path, f"field name {name!r} is a reserved word")
            if not isinstance(source, str):
                raise ParamError(
                    path, f"expected an expression string, got {type(source).__name__}"
                )
            try:
                compiled.append((name, compile_expr(source)))
            except ExpressionError as exc:
                raise ParamError(path, f"invalid expression: {exc}") from None
        self._compiled: tuple[tuple[str, Expr], ...] = tuple(compiled)

    def process(self, event: Event) -> tuple[Event]:
        scope = dict(event.fields)
        for name, expr in self._compiled:
            scope[name] = expr.fn(scope)
        if self.keep:
            return (event.replace(fields=scope),)
        return (event.replace(fields={name: scope[name] for name, _ in self._compiled}),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        known: dict[str, FieldType] = dict(upstream)
        out: dict[str, FieldType] = dict(upstream) if self.keep else {}
        for name, expr in self._compiled:
            for ref in expr.ordered_names:
                if ref not in known:
                    raise FieldError(
                        ("fields", name), unknown_name_message("field", ref, list(known))
                    )
            ftype = expr.result_type(known) or "float"
            known[name] = ftype
            out[name] = ftype
        return out

    # No learned state: the compiled expressions follow from the parameters.

    def snapshot(self) -> bytes:
        return b""

    def restore(self, blob: bytes) -> None:
        if blob:
            raise StateError("transform.compute has no state; expected an empty snapshot")

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"fields": {"s": "x + y", "big": "x > 0.5"}}
        yield {
            "fields": {
                "r": "round(x * 10) / 10 if y == None else max(y, z)",
                "odd": "label in (1, 3)",
                "ratio": "sqrt(abs(x)) / (r - z)",
            },
            "keep": False,
        }
