"""preprocess.range_check: physically impossible values, dropped, nulled, clipped or flagged."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Literal

from fogrt.errors import FieldError, ParamError
from fogrt.event import Event
from fogrt.operator import Operator, require_fields
from fogrt.types import FieldType, Schema, Value

Action = Literal["drop", "null", "flag", "clip"]


class RangeCheck(Operator):
    """Check numeric fields against physical limits; drop, null, clip or flag violations.

    A value violates its limits when it is outside ``[lo, hi]`` (bounds included) or NaN.
    A missing value (``None`` or an absent field) is not a violation.

    Parameters
    ----------
    limits
        Field name -> ``[lo, hi]``. ``lo`` must not be above ``hi``; ``.inf``/``-.inf`` are
        allowed for a one-sided check.
    action
        What to do with an event that has at least one violation:

        - ``drop`` (default): emit nothing (counted in ``metrics()["dropped"]``);
        - ``null``: set each violating field to ``None``;
        - ``clip``: clamp each violating field to its nearest bound (a NaN becomes ``None``;
          an ``int`` value is clamped to the nearest integer inside the bounds so it stays an
          ``int``);
        - ``flag``: keep the values unchanged.
    reason_field
        For ``null``, ``clip`` and ``flag``: a ``str`` field added to *every* event, so the
        schema is stable. It is ``None`` when the event is clean, otherwise describes each
        violation, ``;``-joined in ``limits`` order: ``temp>85;humidity<0`` (``temp=nan``
        for a NaN). Not added for ``drop``.

    Metrics: ``dropped`` (events), ``violations`` (field violations in total) and
    ``violations.<field>`` for each limited field.

    Examples
    --------
    In a topology::

        - id: sane
          use: preprocess.range_check
          with:
            limits: {temp: [-40, 85], humidity: [0, 100]}
            action: clip

    >>> from fogrt.event import Event
    >>> op = RangeCheck(limits={"temp": (-40.0, 85.0), "humidity": (0.0, 100.0)}, action="clip")
    >>> op.process(Event("pump-1", 1, 0.0, {"temp": 99.5, "humidity": 40.0}))[0].fields
    {'temp': 85.0, 'humidity': 40.0, 'range_violation': 'temp>85'}
    >>> op.process(Event("pump-1", 2, 1.0, {"temp": 20.0, "humidity": None}))[0].fields
    {'temp': 20.0, 'humidity': None, 'range_violation': None}
    >>> RangeCheck(limits={"temp": (-40.0, 85.0)}).process(Event("pump-1", 3, 2.0, {"temp": -41}))
    ()
    >>> op.metrics()
    {'dropped': 0, 'violations': 1, 'violations.temp': 1, 'violations.humidity': 0}
    """

    kind = "preprocess.range_check"

    def __init__(
        self,
        limits: dict[str, tuple[float, float]],
        action: Action = "drop",
        reason_field: str = "range_violation",
    ) -> None:
        self.limits = limits
        self.action = action
        self.reason_field = reason_field
        if not limits:
            raise ParamError("limits", "give at least one field: {name: [lo, hi]}")
        if action not in ("drop", "null", "flag", "clip"):
            raise ParamError("action", f"expected drop, null, flag or clip, got {action!r}")
        if action != "drop":
            if not reason_field:
                raise ParamError("reason_field", "cannot be empty")
            if reason_field in limits:
                raise ParamError("reason_field", f"{reason_field!r} is also a limited field")
        checks: list[tuple[str, float, float, Value, Value, str, str, str]] = []
        for name, (lo, hi) in limits.items():
            if not lo <= hi:  # also refuses NaN bounds
                raise ParamError(("limits", name), f"lower limit {lo} is above upper limit {hi}")
            # Clamping an int field keeps it an int: the nearest integers inside the bounds.
            lo_int = math.ceil(lo) if math.isfinite(lo) else lo
            hi_int = math.floor(hi) if math.isfinite(hi) else hi
            if lo_int > hi_int:  # no integer inside the bounds: clamp to the float bounds
                lo_int, hi_int = lo, hi
            checks.append(
                (name, lo, hi, lo_int, hi_int, f"{name}<{lo:g}", f"{name}>{hi:g}", f"{name}=nan")
            )
        self._checks = tuple(checks)
        self._bounds = tuple((name, lo, hi) for name, lo, hi, *_ in checks)
        self._drop = action == "drop"
        self._null = action == "null"
        self._clip = action == "clip"
        self._dropped = 0
        self._violations = dict.fromkeys(limits, 0)

    def process(self, event: Event) -> tuple[Event, ...]:
        # The hot path: a clean event (the common case) is told by comparisons alone, and its
        # output built directly (``Event.replace`` costs a call and keyword parsing more). The
        # first violation hands over to ``_violated``, which checks every field again: the
        # fields before it were clean, so it counts and reports exactly what one pass would.
        fields = event.fields
        get = fields.get
        for name, lo, hi in self._bounds:
            v = get(name)
            if v is None or lo <= v <= hi:  # type: ignore[operator]
                continue
            return self._violated(event)
        if self._drop:
            return (event,)
        out = fields.copy()
        out[self.reason_field] = None
        return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)

    def _violated(self, event: Event) -> tuple[Event, ...]:
        """An event with at least one violation: count each, then drop, null, clip or flag."""
        fields = event.fields
        bad: list[tuple[str, Value, str]] = []
        for name, lo, hi, lo_int, hi_int, below, above, nan in self._checks:
            v = fields.get(name)
            if v is None or lo <= v <= hi:  # type: ignore[operator]
                continue
            if v < lo:  # type: ignore[operator]
                fix, why = (lo_int if type(v) is int else lo), below
            elif v > hi:  # type: ignore[operator]
                fix, why = (hi_int if type(v) is int else hi), above
            else:
                fix, why = None, nan
            self._violations[name] += 1
            bad.append((name, fix, why))
        if self._drop:
            self._dropped += 1
            return ()
        out = fields.copy()
        if self._null:
            for name, _, _ in bad:
                out[name] = None
        elif self._clip:
            for name, fix, _ in bad:
                out[name] = fix
        out[self.reason_field] = bad[0][2] if len(bad) == 1 else ";".join(b[2] for b in bad)
        return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        require_fields(upstream, self.limits.keys(), "limits", numeric=True)
        out = dict(upstream)
        if not self._drop:
            if self.reason_field in upstream:
                raise FieldError(
                    "reason_field", f"the input already has a field {self.reason_field!r}"
                )
            out[self.reason_field] = "str"
        return out

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {
            "dropped": self._dropped,
            "violations": sum(self._violations.values()),
        }
        for name, n in self._violations.items():
            out[f"violations.{name}"] = n
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"limits": {"x": [-1.5, 1.5], "y": [-2, 12]}}
        yield {"limits": {"x": [-1.0, 1.0], "z": [-2, 2], "label": [0, 0]}, "action": "clip"}
        yield {"limits": {"z": [-1, 1], "y": [0, 8]}, "action": "null", "reason_field": "why"}
