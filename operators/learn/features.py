"""From an event's fields to the feature dict a River model learns from.

Numbers go in as they are when they are finite (``None``, NaN and infinities are left
out: River models handle a missing feature, not a NaN one). Strings, when a model is
given string fields, are one-hot encoded: ``field=value`` is 1.0 for the value the event
carries and 0.0 for every other value seen so far (at most :data:`MAX_CATEGORIES` per
field; later ones are all zeros), so that linear models, naive Bayes and trees all see
the same dense indicators. Booleans are 0/1.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from fogrt.errors import FieldError, ParamError
from fogrt.operator import numeric_fields, require_fields, unknown_name_message
from fogrt.types import NUMERIC, Fields, Schema

MAX_CATEGORIES = 64
"""Distinct string values one-hot encoded per field; beyond that a value encodes as zeros."""

_INF = float("inf")
_REAL = (int, float)


def check_names(fields: Sequence[str] | None, param: str = "fields") -> None:
    """``fields`` is left out, or a non-empty list without repeats."""
    if fields is None:
        return
    if isinstance(fields, str) or not fields:
        raise ParamError(param, "give a list of field names; leave it out to use every number")
    for i, name in enumerate(fields):
        if name in fields[:i]:
            raise ParamError((param, i), f"{name!r} is listed twice")


def numeric_x(values: Fields, names: Iterable[str] | None) -> dict[str, float]:
    """The finite numbers among ``names`` (every numeric non-bool field when None)."""
    x: dict[str, float] = {}
    if names is None:
        for name, v in values.items():
            if isinstance(v, _REAL) and v.__class__ is not bool and -_INF < v < _INF:
                x[name] = v
        return x
    for name in names:
        v = values.get(name)
        if v is not None and -_INF < v < _INF:  # type: ignore[operator]
            x[name] = v  # type: ignore[assignment]
    return x


def mixed_x(
    values: Fields, names: Iterable[str], categories: dict[str, list[str]]
) -> dict[str, float]:
    """Numbers as they are, booleans as 0/1, strings one-hot over ``categories``.

    ``categories`` (field -> values seen, in order) is the caller's state; it grows here.
    """
    x: dict[str, float] = {}
    for name in names:
        v = values.get(name)
        if v is None:
            continue
        if isinstance(v, str):
            seen = categories.setdefault(name, [])
            if v not in seen and len(seen) < MAX_CATEGORIES:
                seen.append(v)
            for c in seen:
                x[f"{name}={c}"] = 1.0 if c == v else 0.0
        elif isinstance(v, bool):
            x[name] = 1.0 if v else 0.0
        elif -_INF < v < _INF:
            x[name] = v
    return x


def default_features(upstream: Schema, exclude: Iterable[str]) -> list[str]:
    """Every numeric field of the input except ``exclude`` (labels, ids, targets)."""
    skip = set(exclude)
    return [name for name in numeric_fields(upstream) if name not in skip]


def check_field(upstream: Schema, name: str, param: str, *, numeric: bool = False) -> None:
    """Raise ``FieldError`` at ``param`` when ``name`` is not an upstream field."""
    if name not in upstream:
        raise FieldError(param, unknown_name_message("field", name, list(upstream)))
    if numeric and upstream[name] not in NUMERIC:
        raise FieldError(param, f"field {name!r} is {upstream[name]}, expected a number")


def check_features(
    upstream: Schema, fields: Sequence[str] | None, exclude: Iterable[str], *, numeric: bool
) -> list[str]:
    """The feature names given ``fields`` (checked) or by default; at least one."""
    if fields is not None:
        require_fields(upstream, fields, "fields", numeric=numeric)
        return list(fields)
    names = default_features(upstream, exclude)
    if not names:
        raise FieldError("fields", "the input has no numeric fields to learn from")
    return names
