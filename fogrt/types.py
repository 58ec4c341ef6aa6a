"""The small vocabulary every layer of fogrt shares.

Keep this module free of imports from the rest of fogrt: everything else may import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal, TypeAlias

from pydantic import BeforeValidator

Key: TypeAlias = str
"""The partition key of a stream: normally the device id that produced the reading."""

Timestamp: TypeAlias = float
"""Event or arrival time in seconds since the Unix epoch (UTC)."""

Value: TypeAlias = float | int | bool | str | None
"""One field's value. ``None`` means missing (not sent, out of range and nulled, ...)."""

Fields: TypeAlias = dict[str, Value]
"""The flat mapping of field name to value that an event carries."""

FieldType: TypeAlias = Literal["float", "int", "bool", "str"]
"""The declared type of a field in a topology."""

Schema: TypeAlias = Mapping[str, FieldType]
"""Field name -> declared type: what a stream is known to carry at some point in a graph."""

NUMERIC: frozenset[str] = frozenset({"float", "int"})
"""Field types that numeric operators (windows, models) accept."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``10s``, ``250ms``, ``5m``, ``1.5h``, ``2d`` or a bare number of seconds.

    >>> parse_duration("10s"), parse_duration("250ms"), parse_duration(3), parse_duration("2m")
    (10.0, 0.25, 3.0, 120.0)
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 500ms, 5m or 1h, got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 10s, 500ms, 5m or 1h, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A parameter type: seconds, written in YAML as ``10s``, ``500ms``, ``5m``, ``1h`` or a number."""
