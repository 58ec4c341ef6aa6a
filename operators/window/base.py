"""What every window operator shares: parameters, field discovery, windows, emission.

A window's state is a list ``[key, events, flags, accumulators, first time, last time]``;
``accumulators`` is a list aligned with the operator's field names when they are known,
or a dict name -> accumulator while they are discovered from the events (no ``fields``
and no ``bind()``). The subclasses decide which windows an event belongs to and when a
window closes; this class turns windows into events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, LATE, Event
from fogrt.operator import Operator, numeric_fields, require_fields
from fogrt.types import Fields, FieldType, Key, Schema, Timestamp
from operators.window.features import (
    Acc,
    FeatureSpec,
    add_value,
    add_values,
    finish,
    merge,
    parse_features,
)

OnLate = Literal["drop", "emit"]

_INF = math.inf
_REAL = (int, float)

# Slots of a window (or pane, or session) state.
KEY, EVENTS, FLAGS, ACCS, FIRST, LAST = range(6)
Window = list[Any]


class WindowOperator(Operator):
    """Base of ``window.*``: the subclass stores its own parameters, then calls ``_setup``."""

    def _setup(
        self,
        fields: list[str] | None,
        features: Sequence[str],
        bands: Sequence[tuple[float, float]] | None,
        rate: float | None,
        lateness: float,
        on_late: str,
    ) -> None:
        if not (lateness >= 0 and math.isfinite(lateness)):
            raise ParamError("lateness", f"must be zero or a positive duration, got {lateness!r}")
        if on_late not in ("drop", "emit"):
            raise ParamError("on_late", f"expected drop or emit, got {on_late!r}")
        self._spec: FeatureSpec = parse_features(features, bands, rate)
        if fields is not None:
            if not fields:
                raise ParamError("fields", "empty; leave it out to use every numeric field")
            for i, name in enumerate(fields):
                if name in fields[:i]:
                    raise ParamError(("fields", i), f"{name!r} is listed twice")
        self._emit_late = on_late == "emit"
        self._discover = fields is None  # until bind() says which fields come in
        self._names: list[str] = [] if fields is None else list(fields)
        self._out_names = [self._spec.outputs(name) for name in self._names]
        self._late = 0
        # Whether windows track their first and last event time (sessions always do).
        self._times = self._spec.duration

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, summarise every numeric field of the compiled input."""
        if self._discover and not self._names and not self._has_state():
            self._discover = False
            self._names = numeric_fields(upstream)
            self._out_names = [self._spec.outputs(name) for name in self._names]

    def _has_state(self) -> bool:
        """True once a window is open (fields can then no longer be settled by bind)."""
        raise NotImplementedError

    # -- windows ---------------------------------------------------------------------------

    def _new_window(self, key: Key) -> Window:
        new = self._spec.new_acc
        accs: Any = {} if self._discover else [new() for _ in self._names]
        return [key, 0, 0, accs, _INF, -_INF]

    def _add(self, w: Window, event: Event) -> None:
        """Add an event to a window: the general (not the fastest) path."""
        w[EVENTS] += 1
        if event.flags & IMPUTED:
            w[FLAGS] |= IMPUTED
        t = event.time
        if self._times:
            if t < w[FIRST]:
                w[FIRST] = t
            if t > w[LAST]:
                w[LAST] = t
        if self._discover:
            self._add_discovered(w[ACCS], event.fields, t)
        else:
            add_values(w[ACCS], self._names, event.fields, t)

    def _add_discovered(self, accs: dict[str, Acc], values: Fields, t: float) -> None:
        basic = self._spec.basic
        for name, v in values.items():
            if not isinstance(v, _REAL) or v.__class__ is bool or v != v:
                continue
            a = accs.get(name)
            if a is None:
                if name not in self._names:  # first value of this field ever
                    self._names.append(name)
                    self._out_names.append(self._spec.outputs(name))
                a = accs[name] = self._spec.new_acc()
            if not basic:
                add_value(a, v, t)
                continue
            n = a[0] + 1  # add_value, inlined: this is the path of every field
            a[0] = n
            mean = a[1]
            d = v - mean
            mean += d / n
            a[1] = mean
            a[2] += d * (v - mean)
            if v < a[3]:
                a[3] = v
            if v > a[4]:
                a[4] = v

    def _merge(self, windows: Sequence[Window]) -> Window:
        """One window holding the events of all of ``windows`` (none of them changed)."""
        first = windows[0]
        out: Window = [first[KEY], 0, 0, None, _INF, -_INF]
        accs: Any = {} if self._discover else [self._spec.new_acc() for _ in self._names]
        for w in windows:
            out[EVENTS] += w[EVENTS]
            out[FLAGS] |= w[FLAGS]
            out[FIRST] = min(out[FIRST], w[FIRST])
            out[LAST] = max(out[LAST], w[LAST])
            if self._discover:
                for name, a in w[ACCS].items():
                    prev = accs.get(name)
                    accs[name] = merge(self._spec.new_acc() if prev is None else prev, a)
            else:
                accs = [merge(x, y) for x, y in zip(accs, w[ACCS], strict=True)]
        out[ACCS] = accs
        return out

    # -- emission --------------------------------------------------------------------------

    def _emit(self, w: Window, seq: int, time: Timestamp, flags: int = 0) -> Event:
        spec = self._spec
        fields: Fields = {}
        if spec.count:
            fields["count"] = w[EVENTS]
        if spec.duration:
            fields["duration"] = float(w[LAST] - w[FIRST]) if w[EVENTS] else 0.0
        accs = w[ACCS]
        discovered = self._discover
        for i, outs in enumerate(self._out_names):
            a = accs.get(self._names[i]) if discovered else accs[i]
            finish(spec, outs, a, fields)
        return Event(w[KEY], seq, time, fields, 0.0, w[FLAGS] | flags)

    def _late_event(self, event: Event, seq: int, time: Timestamp) -> Event:
        """``on_late: emit``: the late event's own contribution to a closed window."""
        w = self._new_window(event.key)
        self._add(w, event)
        return self._emit(w, seq, time, LATE)

    # -- contract --------------------------------------------------------------------------

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        fields: list[str] | None = getattr(self, "fields", None)
        if fields is not None:
            require_fields(upstream, fields, "fields", numeric=True)
            names = fields
        else:
            names = numeric_fields(upstream)
            if not names and self._spec.per_field:
                raise FieldError("fields", "the input has no numeric fields to summarise")
        return self._spec.schema(names)
