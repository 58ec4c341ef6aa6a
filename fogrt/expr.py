"""Safe expressions for ``where:`` filters and computed fields.

Topologies use a tiny expression language wherever a value is computed from an event's
fields::

    where: "is_anomaly and score > 0.9"
    with:
      fields:
        power: "current * voltage"
        hot: "max(t1, t2) - 273.15 > 40"

The text is parsed with Python's own parser, checked against an allow-list and compiled into
a tree of small closures. It is never handed to ``eval``/``exec``/``compile``: there is no way
to reach attributes, builtins, imports or anything else outside the event's fields.

>>> expr = compile_expr("max(t1, t2) - 273.15 > 40")
>>> sorted(expr.names), expr({"t1": 320.0, "t2": 300.0}), expr({"t1": 300.0, "t2": None})
(['t1', 't2'], True, False)

Grammar
-------
An expression is one of (loosest binding first, as in Python):

- ``a if cond else b`` -- conditional;
- ``a or b``, ``a and b``, ``not a`` -- boolean logic;
- comparisons ``==  !=  <  <=  >  >=``, chains such as ``0 < x < 10``, and membership
  ``x in (1, 2, 3)`` / ``x not in ["a", "b"]``, whose right side must be a literal tuple or
  list of constants (numbers, strings, booleans; ``-1`` counts as a constant);
- arithmetic ``+  -  *  /  //  %`` and ``**``, unary ``-`` and ``+``;
- calls of the functions below, by bare name, with positional arguments only;
- field names (Python identifiers; ``true``/``false`` are field names too). A name only
  ever reads the event: ``print`` or ``__import__`` written alone is just a field, most
  likely missing;
- constants: integers, floats, strings, ``True``, ``False``, ``None``; parentheses.

Everything else is rejected with an ``ExpressionError`` that says what and where: attribute
access, subscripts, lambdas, comprehensions, f-strings, ``:=``, ``is``, keyword or star
arguments, bitwise operators, dict/set literals, bytes and complex literals, unknown
functions.

Functions
---------
``abs(x)``; ``min(a, b, ...)`` and ``max(a, b, ...)`` (two or more arguments; a bool
argument that wins comes out as the int 0 or 1); ``round(x)`` (to an int, halves to even)
and ``round(x, ndigits)``; ``floor(x)`` and ``ceil(x)`` (ints);
``sqrt(x)``, ``exp(x)``, ``log(x)`` (natural) and ``log(x, base)``; ``isnan(x)`` (a bool).
They take numbers only: a missing or string argument, or one outside the function's domain
(``sqrt(-1)``, ``log(0)``), gives ``None``.

Values and missing values
-------------------------
Field values are ``float``, ``int``, ``bool``, ``str`` or ``None``. A field that is ``None``
or absent from the event is *missing*, and evaluation never raises:

- Arithmetic works on numbers only; ``bool`` counts as the number 0 or 1 (as in Python).
  If an operand is missing or a string, the result is ``None``. Strings can be compared and
  tested with ``in``, never computed with: ``"a" * 10`` is rejected when compiling and
  ``s * 10`` for a string field ``s`` gives ``None``.
- Division or modulo by zero, overflow, and any arithmetic result or function value that is
  not finite (``inf``, ``nan``) give ``None``. Integers are limited to the range of a float
  (less than ``2**1024`` in absolute value); larger results give ``None``. An exponent must
  be at most 1000 in absolute value (a larger constant exponent is a compile error, a larger
  field value gives ``None``). ``round(x, n)`` needs ``abs(n) <= 1000``.
- A comparison with a missing operand is ``False``, whatever the operator: with ``x``
  missing, ``x > 3``, ``x == 3``, ``x != 3`` and ``x in (1, 2)`` are all ``False``, so a
  ``where:`` filter drops the event. Comparing numbers with strings (``x < "a"``) is
  ``False`` too; ``==`` between them is ``False`` and ``!=`` is ``True``. Otherwise
  comparisons are Python's: ``1 == 1.0``, ``True == 1``, strings compare by code point.
- The one way to test for a missing value is to compare with the literal ``None``:
  ``x == None`` is ``True`` exactly when ``x`` is missing, ``x != None`` when it is present.
  ``None`` cannot be ordered (``x < None`` is a compile error) nor be an ``in`` element.
- ``and``, ``or`` and ``not`` always give a bool. Missing counts as false, like ``False``,
  ``0``, ``0.0`` and ``""``; everything else is true (two-valued logic, not SQL's three).
  So ``not x`` is ``True`` when ``x`` is missing. ``a if c else b`` picks ``b`` when ``c`` is
  false or missing, and gives the picked value unchanged (any type).

>>> e = compile_expr("current * voltage")
>>> e({"current": 2.0, "voltage": 230.0}), e({"current": None, "voltage": 230.0})
(460.0, None)
>>> [compile_expr(s)({"x": None}) for s in ("x > 1", "x != 1", "x == None", "not x")]
[False, False, True, True]
>>> compile_expr("x / y")({"x": 1.0, "y": 0.0}) is None
True

Limits
------
At most 1000 characters of source, 200 nodes (names, constants and operations) and 100
levels of nesting (each operation nests its operands one level deeper: a chain
``a + b + ... + z`` of n terms is n levels deep). Parts made of constants only
(``2 ** 10``, ``-1``) are computed once, when compiling.

Static types
------------
``Expr.result_type(schema)`` gives a best-effort type for a compiled expression, given the
types of the fields it reads: ``"bool"`` for comparisons, boolean operators and
``isnan``; ``"int"``/``"float"`` for arithmetic (``/``, ``sqrt``, ``exp`` and ``log`` are
floats; ``round(x)``, ``floor`` and ``ceil`` are ints); ``None`` when it cannot tell.
"""

from __future__ import annotations

import ast
import functools
import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from fogrt.errors import ExpressionError
from fogrt.types import FieldType, Schema, Value

__all__ = [
    "FUNCTIONS",
    "MAX_DEPTH",
    "MAX_EXPONENT",
    "MAX_LENGTH",
    "MAX_NODES",
    "Expr",
    "compile_expr",
]

MAX_LENGTH = 1000
"""Longest accepted source, in characters."""
MAX_NODES = 200
"""Most expression nodes (names, constants, operations, calls) in one expression."""
MAX_DEPTH = 100
"""Deepest accepted nesting of expression nodes."""
MAX_EXPONENT = 1000
"""Largest absolute value of an exponent (and of ``round``'s ``ndigits``)."""

_INT_LIMIT = 1 << 1024  # ints must be strictly inside (-_INT_LIMIT, _INT_LIMIT)
_INT_BITS = 1024
_NUMBER = (int, float)  # bool is an int
_FAST = frozenset({float, int, bool})
_EMPTY: Mapping[str, Value] = {}

Fn = Callable[[Mapping[str, Value]], Value]
"""A compiled evaluator: field mapping in, value out."""
_Test = Callable[[Value, Value], bool]


# -- runtime helpers (the hot path) ----------------------------------------------------------


def _num(r: object) -> Value:
    """``r`` if it is a finite float or an int in range, else None (covers complex results)."""
    if isinstance(r, float):
        return r if r - r == 0.0 else None  # inf - inf and nan - nan are nan
    if isinstance(r, int):
        return r if -_INT_LIMIT < r < _INT_LIMIT else None
    return None


def _pow(a: Value, b: Value) -> Value:
    if not (isinstance(a, _NUMBER) and isinstance(b, _NUMBER)):
        return None
    if not -MAX_EXPONENT <= b <= MAX_EXPONENT:  # also false for nan
        return None
    if (
        isinstance(a, int)
        and isinstance(b, int)
        and b > 0
        and (a.bit_length() - 1) * b >= _INT_BITS
    ):
        return None  # |a ** b| >= 2 ** ((bits - 1) * b): out of range, do not compute it
    try:
        return _num(a**b)
    except (ArithmeticError, ValueError):
        return None


def _abs(x: Value) -> Value:
    return _num(abs(x)) if isinstance(x, _NUMBER) else None


def _math1(fn: Callable[[float], float]) -> Callable[[Value], Value]:
    def call(x: Value) -> Value:
        if not isinstance(x, _NUMBER):
            return None
        try:
            return _num(fn(x))
        except (ArithmeticError, ValueError):
            return None

    return call


def _log2(x: Value, base: Value) -> Value:
    if not (isinstance(x, _NUMBER) and isinstance(base, _NUMBER)):
        return None
    try:
        return _num(math.log(x, base))
    except (ArithmeticError, ValueError):
        return None


def _round1(x: Value) -> Value:
    if not isinstance(x, _NUMBER):
        return None
    try:
        return _num(round(x))
    except (ArithmeticError, ValueError):
        return None


def _round2(x: Value, n: Value) -> Value:
    if not isinstance(x, _NUMBER) or not isinstance(n, int):
        return None
    if not -MAX_EXPONENT <= n <= MAX_EXPONENT:
        return None
    try:
        return _num(round(x, n))
    except (ArithmeticError, ValueError):
        return None


def _isnan(x: Value) -> Value:
    if isinstance(x, float):
        return math.isnan(x)
    return False if isinstance(x, int) else None


def _extreme(pick: Callable[..., Any]) -> Callable[..., Value]:
    def call(*xs: Value) -> Value:
        for x in xs:
            if not isinstance(x, _NUMBER):
                return None
        r = pick(xs)
        return int(r) if r.__class__ is bool else _num(r)

    return call


def _max2(a: Value, b: Value) -> Value:
    if isinstance(a, _NUMBER) and isinstance(b, _NUMBER):
        r = b if b > a else a  # exactly max(a, b), nan included
        return int(r) if r.__class__ is bool else _num(r)
    return None


def _min2(a: Value, b: Value) -> Value:
    if isinstance(a, _NUMBER) and isinstance(b, _NUMBER):
        r = b if b < a else a  # exactly min(a, b), nan included
        return int(r) if r.__class__ is bool else _num(r)
    return None


def _order(op: Callable[[Any, Any], bool]) -> _Test:
    def test(a: Value, b: Value) -> bool:
        if a is None or b is None:
            return False
        try:
            return op(a, b)
        except TypeError:  # str vs number
            return False

    return test


def _eq(a: Value, b: Value) -> bool:
    return a is not None and b is not None and a == b


def _ne(a: Value, b: Value) -> bool:
    return a is not None and b is not None and a != b


def _left_missing(a: Value, b: Value) -> bool:
    return a is None


def _left_present(a: Value, b: Value) -> bool:
    return a is not None


def _right_missing(a: Value, b: Value) -> bool:
    return b is None


def _right_present(a: Value, b: Value) -> bool:
    return b is not None


# -- tables ----------------------------------------------------------------------------------

_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_REJECTED_OPS: dict[type[ast.AST], str] = {
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.MatMult: "@",
}
_ORDER_OPS: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_ORDER: dict[type[ast.cmpop], _Test] = {kind: _order(op) for kind, op in _ORDER_OPS.items()}

# name -> (min args, max args or None for any, implementation by arity)
_FUNCS: dict[str, tuple[int, int | None, dict[int, Callable[..., Value]]]] = {
    "abs": (1, 1, {1: _abs}),
    "ceil": (1, 1, {1: _math1(math.ceil)}),
    "exp": (1, 1, {1: _math1(math.exp)}),
    "floor": (1, 1, {1: _math1(math.floor)}),
    "isnan": (1, 1, {1: _isnan}),
    "log": (1, 2, {1: _math1(math.log), 2: _log2}),
    "max": (2, None, {2: _max2}),
    "min": (2, None, {2: _min2}),
    "round": (1, 2, {1: _round1, 2: _round2}),
    "sqrt": (1, 1, {1: _math1(math.sqrt)}),
}
_VARIADIC: dict[str, Callable[..., Value]] = {"max": _extreme(max), "min": _extreme(min)}

FUNCTIONS: frozenset[str] = frozenset(_FUNCS)
"""The functions an expression may call."""

_DISALLOWED: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts (indexing and slicing) are not allowed",
    ast.Slice: "subscripts (indexing and slicing) are not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.NamedExpr: "assignment expressions (:=) are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed",
    ast.Starred: "star arguments (*args) are not allowed",
    ast.Await: "await is not allowed",
    ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Set: "set literals are not allowed; use a tuple: x in (1, 2)",
    ast.List: "a list or tuple is only allowed on the right of 'in' or 'not in'",
    ast.Tuple: "a list or tuple is only allowed on the right of 'in' or 'not in'",
}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# -- the compiled expression -----------------------------------------------------------------


class Expr:
    """A compiled expression: call it with a field mapping to get its value.

    >>> e = compile_expr("a if ok else -a")
    >>> e({"a": 2, "ok": False}), e.names == {"a", "ok"}, e.result_type({"a": "int"})
    (-2, True, 'int')
    """

    __slots__ = ("_tree", "fn", "names", "ordered_names", "source")

    source: str
    """The expression text as given."""
    names: frozenset[str]
    """The field names the expression reads."""
    ordered_names: tuple[str, ...]
    """The same names, in order of first appearance in the source."""
    fn: Fn
    """The evaluator itself: ``expr.fn(fields)`` is ``expr(fields)`` minus one call."""

    def __init__(
        self, source: str, tree: ast.Expression, fn: Fn, ordered_names: tuple[str, ...]
    ) -> None:
        self.source = source
        self._tree = tree
        self.fn = fn
        self.ordered_names = ordered_names
        self.names = frozenset(ordered_names)

    def __call__(self, fields: Mapping[str, Value]) -> Value:
        """Evaluate against ``fields``; never raises, never modifies ``fields``."""
        return self.fn(fields)

    def result_type(self, schema: Schema) -> FieldType | None:
        """Best-effort static type of the value, given the field types; None if unknown."""
        return _static_type(self._tree.body, schema)

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and other.source == self.source

    def __hash__(self) -> int:
        return hash((Expr, self.source))

    def __reduce__(self) -> tuple[Callable[[str], Expr], tuple[str]]:
        return (compile_expr, (self.source,))


@functools.lru_cache(maxsize=1024)
def compile_expr(source: str) -> Expr:
    """Parse, check and compile ``source``; raises ``ExpressionError`` if it is not allowed.

    >>> compile_expr("os.system('x')")
    Traceback (most recent call last):
    ...
    fogrt.errors.ExpressionError: attribute access is not allowed (at character 3)
    """
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be a string, got {type(source).__name__}")
    return _Compiler(source).run()


# -- compiler --------------------------------------------------------------------------------


class _Code:
    """A compiled node: its evaluator, and its value when it is a constant."""

    __slots__ = ("const", "fn", "name", "value")

    def __init__(
        self, fn: Fn, *, const: bool = False, value: Value = None, name: str | None = None
    ) -> None:
        self.fn = fn
        self.const = const
        self.value = value
        self.name = name


def _constant(value: Value) -> _Code:
    def const(f: Mapping[str, Value]) -> Value:
        return value

    return _Code(const, const=True, value=value)


def _fold(fn: Fn, *parts: _Code) -> _Code:
    """Evaluate ``fn`` once if every part is a constant (evaluation never raises)."""
    if all(p.const for p in parts):
        return _constant(fn(_EMPTY))
    return _Code(fn)


class _Compiler:
    def __init__(self, source: str) -> None:
        self.source = source
        self.text = source.lstrip(" \t\f\r\n")
        self.shift = len(source) - len(self.text)
        self.line_starts = [0] + [m.end() for m in _LINE_BREAK.finditer(self.text)]
        self.names: dict[str, None] = {}

    # -- positions

    def _char(self, lineno: int, col: int) -> int:
        """Character offset in ``source`` of (1-based line, 0-based UTF-8 byte column)."""
        start = self.line_starts[min(max(lineno, 1), len(self.line_starts)) - 1]
        line = self.text[start:]
        prefix = line.encode("utf-8", "surrogatepass")[:col].decode("utf-8", "ignore")
        return self.shift + start + len(prefix)

    def _at(self, node: ast.AST) -> int:
        return self._char(getattr(node, "lineno", 1), getattr(node, "col_offset", 0))

    def _end(self, node: ast.AST) -> int:
        lineno = getattr(node, "end_lineno", None)
        col = getattr(node, "end_col_offset", None)
        if lineno is None or col is None:
            return self._at(node)
        return self._char(lineno, col)

    def _between(self, before: ast.AST, after: ast.AST, symbol: str) -> int:
        """Where ``symbol`` (an operator) is written between two nodes."""
        lo, hi = self._end(before), self._at(after)
        found = self.source.find(symbol, lo, hi)
        return found if found >= 0 else lo

    def _error(self, message: str, offset: int | None) -> ExpressionError:
        return ExpressionError(message, offset=offset)

    # -- entry

    def run(self) -> Expr:
        if len(self.source) > MAX_LENGTH:
            raise self._error(
                f"expression is too long ({len(self.source)} characters; at most {MAX_LENGTH})",
                MAX_LENGTH,
            )
        if not self.text.strip():
            raise self._error("empty expression", 0)
        if "\x00" in self.source:
            raise self._error("null characters are not allowed", self.source.index("\x00"))
        tree = self._parse()
        count = sum(1 for n in ast.walk(tree) if isinstance(n, ast.expr | ast.keyword))
        if count > MAX_NODES:
            raise self._error(f"expression is too large ({count} nodes; at most {MAX_NODES})", None)
        code = self._compile(tree.body, 1)
        return Expr(self.source, tree, code.fn, tuple(self.names))

    def _parse(self) -> ast.Expression:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. invalid escape sequences
                return ast.parse(self.text, mode="eval")
        except SyntaxError as exc:
            raise self._error(f"syntax error: {exc.msg}", self._syntax_offset(exc)) from None
        except UnicodeError:
            raise self._error("expression is not valid text (lone surrogate)", None) from None
        except (RecursionError, MemoryError):
            raise self._error(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", None
            ) from None
        except ValueError as exc:  # null bytes, on some Python versions
            raise self._error(f"syntax error: {exc}", None) from None

    def _syntax_offset(self, exc: SyntaxError) -> int | None:
        if not exc.lineno:
            return None
        if not exc.offset or exc.offset < 1:  # reported at the end of input
            return self.shift + len(self.text.rstrip())
        index = min(exc.lineno, len(self.line_starts)) - 1
        offset = self.shift + self.line_starts[index] + exc.offset - 1
        return min(offset, len(self.source))

    # -- nodes

    def _compile(self, node: ast.expr, depth: int) -> _Code:
        if depth > MAX_DEPTH:
            raise self._error(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)", self._at(node)
            )
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.BoolOp):
            return self._boolop(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self._unaryop(node, depth)
        if isinstance(node, ast.BinOp):
            return self._binop(node, depth)
        if isinstance(node, ast.Compare):
            return self._compare(node, depth)
        if isinstance(node, ast.IfExp):
            return self._ifexp(node, depth)
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise self._disallowed(node)

    def _disallowed(self, node: ast.AST) -> ExpressionError:
        message = _DISALLOWED.get(type(node), f"{type(node).__name__} is not allowed")
        if isinstance(node, ast.Attribute | ast.Subscript):
            return self._error(message, self._end(node.value))  # the '.' or the '['
        return self._error(message, self._at(node))

    def _constant(self, node: ast.Constant) -> _Code:
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return _constant(value)
        if isinstance(value, int):
            if not -_INT_LIMIT < value < _INT_LIMIT:
                raise self._error("integer literal is too large", self._at(node))
            return _constant(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise self._error("number literal is out of range", self._at(node))
            return _constant(value)
        if isinstance(value, bytes):
            raise self._error("bytes literals are not allowed", self._at(node))
        if isinstance(value, complex):
            raise self._error("complex numbers are not allowed", self._at(node))
        if value is Ellipsis:
            raise self._error("'...' is not allowed", self._at(node))
        raise self._error(f"the constant {value!r} is not allowed", self._at(node))

    def _name(self, node: ast.Name) -> _Code:
        if not isinstance(node.ctx, ast.Load):  # pragma: no cover - only via :=, rejected first
            raise self._error("assignment is not allowed", self._at(node))
        name = node.id
        self.names.setdefault(name, None)

        def load(f: Mapping[str, Value]) -> Value:
            return f.get(name)

        return _Code(load, name=name)

    def _boolop(self, node: ast.BoolOp, depth: int) -> _Code:
        parts = [self._compile(v, depth + 1) for v in node.values]
        fn = parts[-1].fn
        for part in reversed(parts[:-1]):
            fn = _and(part.fn, fn) if isinstance(node.op, ast.And) else _or(part.fn, fn)
        return _fold(fn, *parts)

    def _unaryop(self, node: ast.UnaryOp, depth: int) -> _Code:
        if isinstance(node.op, ast.Invert):
            raise self._error("operator '~' is not allowed", self._at(node))
        if isinstance(node.op, ast.Not):
            part = self._compile(node.operand, depth + 1)
            inner = part.fn

            def not_(f: Mapping[str, Value]) -> Value:
                return not inner(f)

            return _fold(not_, part)
        self._no_string(node.operand)
        part = self._compile(node.operand, depth + 1)
        inner = part.fn
        if isinstance(node.op, ast.USub):

            def neg(f: Mapping[str, Value]) -> Value:
                a = inner(f)
                if a.__class__ is float:
                    r = -a
                    return r if r - r == 0.0 else None
                return _num(-a) if isinstance(a, _NUMBER) else None

            return _fold(neg, part)

        def pos(f: Mapping[str, Value]) -> Value:
            a = inner(f)
            return _num(+a) if isinstance(a, _NUMBER) else None

        return _fold(pos, part)

    def _no_string(self, node: ast.expr) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            raise self._error("arithmetic on strings is not allowed", self._at(node))

    def _binop(self, node: ast.BinOp, depth: int) -> _Code:
        kind = type(node.op)
        if kind in _REJECTED_OPS:
            symbol = _REJECTED_OPS[kind]
            raise self._error(
                f"operator '{symbol}' is not allowed", self._between(node.left, node.right, symbol)
            )
        self._no_string(node.left)
        self._no_string(node.right)
        left = self._compile(node.left, depth + 1)
        right = self._compile(node.right, depth + 1)
        if (
            kind is ast.Pow
            and isinstance(right.value, _NUMBER)
            and not -MAX_EXPONENT <= right.value <= MAX_EXPONENT
        ):  # a constant exponent (only constants carry a value)
            raise self._error(
                f"exponent {right.value!r} is too large (at most {MAX_EXPONENT} in absolute value)",
                self._at(node.right),
            )
        if kind is ast.Pow:
            return _fold(_apply2(_pow, left, right), left, right)
        return _fold(_arith(_ARITH[kind], left, right), left, right)

    def _compare(self, node: ast.Compare, depth: int) -> _Code:
        operands: list[ast.expr] = [node.left, *node.comparators]
        first = self._compile(node.left, depth + 1)
        parts = [first]
        tests: list[_Test] = []
        members: frozenset[Value] | None = None
        for i, (cmp, right_node) in enumerate(zip(node.ops, node.comparators, strict=True)):
            left_node = operands[i]
            if isinstance(cmp, ast.Is | ast.IsNot):
                word = "is not" if isinstance(cmp, ast.IsNot) else "is"
                raise self._error(
                    f"'{word}' is not allowed; use == None or != None to test for a missing value",
                    self._between(left_node, right_node, "is"),
                )
            if isinstance(cmp, ast.In | ast.NotIn):
                members = self._members(right_node, last=i == len(node.ops) - 1)
                tests.append(_member_test(members, negate=isinstance(cmp, ast.NotIn)))
                parts.append(_constant(None))
                continue
            left_none = _is_none(left_node)
            right_none = _is_none(right_node)
            if (left_none or right_none) and not isinstance(cmp, ast.Eq | ast.NotEq):
                where = right_node if right_none else left_node
                raise self._error("None can only be compared with == or !=", self._at(where))
            parts.append(self._compile(right_node, depth + 1))
            tests.append(_pair_test(cmp, left_none, right_none))
        fast: Fn | None = None
        if len(tests) == 1:
            fast = _single_fast(node.ops[0], parts[0], parts[1], members, _is_none(operands[1]))
        elif len(tests) == 2:
            fast = _range_fast(node.ops, parts)
        return _fold(fast or _comparison(parts, tests), *parts)

    def _members(self, node: ast.expr, *, last: bool) -> frozenset[Value]:
        if not isinstance(node, ast.Tuple | ast.List):
            raise self._error(
                "the right side of 'in' must be a literal tuple or list of constants, "
                "e.g. x in (1, 2, 3)",
                self._at(node),
            )
        if not last:
            raise self._error(
                "a list or tuple can only be the last operand of a comparison", self._at(node)
            )
        values: list[Value] = []
        for elt in node.elts:
            item = elt
            sign = 1
            if isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub | ast.UAdd):
                sign = -1 if isinstance(item.op, ast.USub) else 1
                item = item.operand
                if not (
                    isinstance(item, ast.Constant)
                    and isinstance(item.value, _NUMBER)
                    and not isinstance(item.value, bool)
                ):
                    raise self._error(
                        "only constants are allowed in the list of 'in'", self._at(elt)
                    )
            if not isinstance(item, ast.Constant):
                raise self._error("only constants are allowed in the list of 'in'", self._at(elt))
            if item.value is None:
                raise self._error(
                    "None never matches in a list; use x == None to test for a missing value",
                    self._at(elt),
                )
            value = self._constant(item).value
            if sign < 0 and isinstance(value, _NUMBER):
                value = -value
            values.append(value)
        return frozenset(values)

    def _ifexp(self, node: ast.IfExp, depth: int) -> _Code:
        test = self._compile(node.test, depth + 1)
        body = self._compile(node.body, depth + 1)
        orelse = self._compile(node.orelse, depth + 1)
        if test.const:
            return body if test.value else orelse
        t, b, e = test.fn, body.fn, orelse.fn

        def choose(f: Mapping[str, Value]) -> Value:
            return b(f) if t(f) else e(f)

        return _Code(choose)

    def _call(self, node: ast.Call, depth: int) -> _Code:
        func = node.func
        if not isinstance(func, ast.Name):
            if isinstance(func, ast.Attribute):
                raise self._disallowed(func)
            raise self._error("only functions named directly can be called", self._at(func))
        name = func.id
        if name not in _FUNCS:
            raise self._error(
                f"unknown function {name!r}; allowed: {', '.join(sorted(_FUNCS))}",
                self._at(func),
            )
        for kw in node.keywords:
            message = (
                "'**' arguments are not allowed"
                if kw.arg is None
                else f"keyword arguments are not allowed ({kw.arg}=...)"
            )
            raise self._error(message, self._at(kw))
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                raise self._error(f"{name}() takes numbers, not strings", self._at(arg))
        args = [self._compile(arg, depth + 1) for arg in node.args]
        low, high, impls = _FUNCS[name]
        n = len(node.args)
        if n < low or (high is not None and n > high):
            if high is None:
                expected = f"at least {low} arguments"
            elif low == high:
                expected = f"exactly {low} argument{'s' if low > 1 else ''}"
            else:
                expected = f"{low} or {high} arguments"
            raise self._error(f"{name}() takes {expected}, got {n}", self._at(func))
        if n == 1:
            fn = _apply1(impls[1], args[0])
        elif n == 2:
            fn = _apply2(impls[2], args[0], args[1])
        else:
            fn = _applyn(_VARIADIC[name], args)
        return _fold(fn, *args)


# -- closure builders ------------------------------------------------------------------------
#
# Each builder returns one closure per node. Operands that are field names or constants are
# read inline (``f.get(name)``, a captured value) rather than through another closure call:
# that covers most real expressions (``score > 0.9``, ``current * voltage``).


def _and(a: Fn, b: Fn) -> Fn:
    def and_(f: Mapping[str, Value]) -> Value:
        return True if a(f) and b(f) else False  # noqa: SIM210 - faster than bool()

    return and_


def _or(a: Fn, b: Fn) -> Fn:
    def or_(f: Mapping[str, Value]) -> Value:
        return True if a(f) or b(f) else False  # noqa: SIM210 - faster than bool()

    return or_


def _arith(op: Callable[[Any, Any], Any], left: _Code, right: _Code) -> Fn:
    """Arithmetic on numbers: ``None`` for anything else, for errors and non-finite results."""
    if (left.const and not isinstance(left.value, _NUMBER)) or (
        right.const and not isinstance(right.value, _NUMBER)
    ):
        return _constant(None).fn
    lf, rf = left.fn, right.fn
    fast = _FAST  # exact types: one set lookup instead of isinstance() on the common path
    if left.name is not None and right.const:
        name, c = left.name, right.value

        def name_const(f: Mapping[str, Value]) -> Value:
            a = f.get(name)
            if a.__class__ in fast or isinstance(a, _NUMBER):
                try:
                    r = op(a, c)
                except ArithmeticError:
                    return None
                if r.__class__ is float:
                    return r if r - r == 0.0 else None
                return _num(r)
            return None

        return name_const
    if left.name is not None and right.name is not None:
        name_a, name_b = left.name, right.name

        def name_name(f: Mapping[str, Value]) -> Value:
            a = f.get(name_a)
            b = f.get(name_b)
            if (a.__class__ in fast and b.__class__ in fast) or (
                isinstance(a, _NUMBER) and isinstance(b, _NUMBER)
            ):
                try:
                    r = op(a, b)
                except ArithmeticError:
                    return None
                if r.__class__ is float:
                    return r if r - r == 0.0 else None
                return _num(r)
            return None

        return name_name
    if right.const:
        c = right.value

        def any_const(f: Mapping[str, Value]) -> Value:
            a = lf(f)
            if a.__class__ in fast or isinstance(a, _NUMBER):
                try:
                    r = op(a, c)
                except ArithmeticError:
                    return None
                if r.__class__ is float:
                    return r if r - r == 0.0 else None
                return _num(r)
            return None

        return any_const
    if left.const:
        c = left.value

        def const_any(f: Mapping[str, Value]) -> Value:
            b = rf(f)
            if b.__class__ in fast or isinstance(b, _NUMBER):
                try:
                    r = op(c, b)
                except ArithmeticError:
                    return None
                if r.__class__ is float:
                    return r if r - r == 0.0 else None
                return _num(r)
            return None

        return const_any

    def any_any(f: Mapping[str, Value]) -> Value:
        a = lf(f)
        b = rf(f)
        if (a.__class__ in fast and b.__class__ in fast) or (
            isinstance(a, _NUMBER) and isinstance(b, _NUMBER)
        ):
            try:
                r = op(a, b)
            except ArithmeticError:
                return None
            if r.__class__ is float:
                return r if r - r == 0.0 else None
            return _num(r)
        return None

    return any_any


def _apply1(impl: Callable[[Value], Value], arg: _Code) -> Fn:
    if arg.name is not None:
        name = arg.name

        def call_name(f: Mapping[str, Value]) -> Value:
            return impl(f.get(name))

        return call_name
    a = arg.fn

    def call1(f: Mapping[str, Value]) -> Value:
        return impl(a(f))

    return call1


def _apply2(impl: Callable[[Value, Value], Value], left: _Code, right: _Code) -> Fn:
    if left.name is not None and right.name is not None:
        name_a, name_b = left.name, right.name

        def call_names(f: Mapping[str, Value]) -> Value:
            return impl(f.get(name_a), f.get(name_b))

        return call_names
    a, b = left.fn, right.fn
    if right.const:
        c = right.value
        if left.name is not None:
            name = left.name

            def call_name_const(f: Mapping[str, Value]) -> Value:
                return impl(f.get(name), c)

            return call_name_const

        def call_const(f: Mapping[str, Value]) -> Value:
            return impl(a(f), c)

        return call_const

    def call2(f: Mapping[str, Value]) -> Value:
        return impl(a(f), b(f))

    return call2


def _applyn(impl: Callable[..., Value], args: list[_Code]) -> Fn:
    fns = tuple(arg.fn for arg in args)

    def calln(f: Mapping[str, Value]) -> Value:
        return impl(*[g(f) for g in fns])

    return calln


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _pair_test(cmp: ast.cmpop, left_none: bool, right_none: bool) -> _Test:
    if isinstance(cmp, ast.Eq):
        if right_none:
            return _left_missing
        return _right_missing if left_none else _eq
    if isinstance(cmp, ast.NotEq):
        if right_none:
            return _left_present
        return _right_present if left_none else _ne
    return _ORDER[type(cmp)]


def _member_test(members: frozenset[Value], *, negate: bool) -> _Test:
    if negate:

        def not_in(a: Value, b: Value) -> bool:
            return a is not None and a not in members

        return not_in

    def in_(a: Value, b: Value) -> bool:
        return a in members  # never holds None

    return in_


def _single_fast(
    cmp: ast.cmpop, left: _Code, right: _Code, members: frozenset[Value] | None, right_none: bool
) -> Fn | None:
    """Specialised closures for ``name <op> constant`` and ``name in (...)``, else None."""
    name = left.name
    if name is None:
        return None
    if right_none:  # the literal None: a test for a missing value
        if isinstance(cmp, ast.Eq):

            def name_missing(f: Mapping[str, Value]) -> Value:
                return f.get(name) is None

            return name_missing

        def name_present(f: Mapping[str, Value]) -> Value:
            return f.get(name) is not None

        return name_present
    if members is not None:
        if isinstance(cmp, ast.In):

            def name_in(f: Mapping[str, Value]) -> Value:
                return f.get(name) in members  # None is never a member

            return name_in

        def name_not_in(f: Mapping[str, Value]) -> Value:
            a = f.get(name)
            return a is not None and a not in members

        return name_not_in
    if not right.const or right.value is None:
        return None
    c = right.value
    if isinstance(cmp, ast.Eq):

        def name_eq(f: Mapping[str, Value]) -> Value:
            return f.get(name) == c  # None == c is False: c is not None

        return name_eq
    if isinstance(cmp, ast.NotEq):

        def name_ne(f: Mapping[str, Value]) -> Value:
            a = f.get(name)
            return a is not None and a != c

        return name_ne
    op = _ORDER_OPS[type(cmp)]

    def name_order(f: Mapping[str, Value]) -> Value:
        a = f.get(name)
        if a is None:
            return False
        try:
            return op(a, c)
        except TypeError:  # str vs number
            return False

    return name_order


def _range_fast(ops: list[ast.cmpop], parts: list[_Code]) -> Fn | None:
    """A specialised closure for ``low < name < high`` (any two orderings), else None."""
    low, middle, high = parts
    name = middle.name
    kinds = [type(op) for op in ops]
    if (
        name is None
        or not (low.const and high.const)
        or low.value is None
        or high.value is None
        or not all(kind in _ORDER_OPS for kind in kinds)
    ):
        return None
    lo, hi = low.value, high.value
    op_lo, op_hi = _ORDER_OPS[kinds[0]], _ORDER_OPS[kinds[1]]

    def name_range(f: Mapping[str, Value]) -> Value:
        a = f.get(name)
        if a is None:
            return False
        try:
            return op_lo(lo, a) and op_hi(a, hi)
        except TypeError:  # str vs number
            return False

    return name_range


def _comparison(parts: list[_Code], tests: list[_Test]) -> Fn:
    if len(tests) == 1:
        test = tests[0]
        left, right = parts
        lf, rf = left.fn, right.fn
        if right.const:
            c = right.value

            def any_const(f: Mapping[str, Value]) -> Value:
                return test(lf(f), c)

            return any_const

        def pair(f: Mapping[str, Value]) -> Value:
            return test(lf(f), rf(f))

        return pair
    first = parts[0].fn
    rest = tuple(zip(tests, (p.fn for p in parts[1:]), strict=True))

    def chain(f: Mapping[str, Value]) -> Value:
        a = first(f)
        for test, get in rest:
            b = get(f)
            if not test(a, b):
                return False
            a = b
        return True

    return chain


# -- static types ----------------------------------------------------------------------------


def _numeric(t: FieldType | None) -> FieldType | None:
    """The arithmetic type of an operand: bools compute as ints."""
    if t == "bool":
        return "int"
    return t if t in ("int", "float") else None


def _join(types: list[FieldType | None]) -> FieldType | None:
    nums = [_numeric(t) for t in types]
    if any(t is None for t in nums):
        return None
    return "float" if "float" in nums else "int"


def _static_type(node: ast.expr, schema: Schema) -> FieldType | None:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            return "int"
        if isinstance(value, float):
            return "float"
        return "str" if isinstance(value, str) else None
    if isinstance(node, ast.Name):
        return schema.get(node.id)
    if isinstance(node, ast.BoolOp | ast.Compare):
        return "bool"
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.Not):
            return "bool"
        return _numeric(_static_type(node.operand, schema))
    if isinstance(node, ast.BinOp):
        left = _static_type(node.left, schema)
        right = _static_type(node.right, schema)
        joined = _join([left, right])
        if joined is None:
            return None
        if isinstance(node.op, ast.Div):
            return "float"
        if isinstance(node.op, ast.Pow) and joined == "int":
            exponent = node.right
            if isinstance(exponent, ast.Constant) and isinstance(exponent.value, int):
                return "int" if exponent.value >= 0 else "float"
            return "float"  # an int field as exponent may be negative
        return joined
    if isinstance(node, ast.IfExp):
        body = _static_type(node.body, schema)
        orelse = _static_type(node.orelse, schema)
        if body == orelse:
            return body
        if body in ("int", "float") and orelse in ("int", "float"):
            return "float"
        return None  # e.g. a bool or an int: no one declared type fits both
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        args = [_static_type(a, schema) for a in node.args]
        name = node.func.id
        if name == "isnan":
            return "bool"
        if name in ("floor", "ceil") or (name == "round" and len(args) == 1):
            return "int"
        if name in ("sqrt", "exp", "log"):
            return "float"
        if name == "round":
            return _numeric(args[0])  # round(x, n) keeps the type of x
        return _join(args)  # abs, min, max: the type of the numbers
    return None
