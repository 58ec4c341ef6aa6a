"""preprocess.dedup: drop events seen twice (same time) or that repeat the values before them."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.operator import Operator, require_fields
from fogrt.types import Duration, FieldType, Key, Schema, Timestamp, Value
from operators.preprocess.fieldwise import check_field_list

Mode = Literal["time", "value"]


class Dedup(Operator):
    """Drop repeated events: the same event time seen again, or the same values again.

    ``mode: time`` drops an event whose ``(key, time)`` was already seen among the last
    ``memory`` distinct ones: a retransmission or a replayed batch. (The ingest layer
    already drops repeated ``(device, seq)``; this catches what carries a new ``seq``.)

    ``mode: value`` drops an event whose ``fields`` all equal those of the last event
    passed on, numbers within ``tolerance`` (absolute): a sensor that reports an unchanged
    value. Comparing with the last event *passed on*, not the previous one, bounds the
    error: every dropped value is within ``tolerance`` of one that went through, and a
    slow drift still gets through once it adds up. ``None`` only equals ``None``. With
    ``max_interval``, an unchanged event still passes once that long after the last one
    that did, so downstream can tell a steady sensor from a silent one.

    Parameters
    ----------
    mode
        ``time`` (default) or ``value``.
    memory
        ``time``: how many distinct ``(key, time)`` pairs are remembered (the oldest are
        forgotten first).
    fields
        ``value``: the fields compared (default: every field of the input).
    tolerance
        ``value``: numbers closer than or exactly this are equal (default 0: exact).
    max_interval
        ``value``: pass an unchanged event anyway when the last one passed on is at least
        this old in event time (default: never).

    Metrics: ``dropped`` and ``passed`` (events).

    Examples
    --------
    In a topology::

        - id: changes
          use: preprocess.dedup
          with: {mode: value, fields: [temp], tolerance: 0.1, max_interval: 10m}

    >>> from fogrt.event import Event
    >>> op = Dedup(mode="value", fields=["temp"], tolerance=0.1)
    >>> [len(op.process(Event("d", i, float(i), {"temp": v})))
    ...  for i, v in enumerate([20.0, 20.05, 20.08, 20.15, 20.3])]
    [1, 0, 0, 1, 1]
    >>> op.metrics()
    {'dropped': 2, 'passed': 3}
    >>> op = Dedup(memory=100)
    >>> [len(op.process(Event("d", i, t, {}))) for i, t in enumerate([1.0, 2.0, 1.0, 3.0])]
    [1, 1, 0, 1]
    """

    kind = "preprocess.dedup"

    def __init__(
        self,
        mode: Mode = "time",
        memory: int = 1024,
        fields: list[str] | None = None,
        tolerance: float = 0.0,
        max_interval: Duration | None = None,
    ) -> None:
        self.mode = mode
        self.memory = memory
        self.fields = fields
        self.tolerance = tolerance
        self.max_interval = max_interval
        if mode not in ("time", "value"):
            raise ParamError("mode", f"expected time or value, got {mode!r}")
        if memory < 1:
            raise ParamError("memory", f"must be at least 1, got {memory!r}")
        check_field_list(fields)
        if not (tolerance >= 0 and math.isfinite(tolerance)):
            raise ParamError("tolerance", f"must be zero or a positive number, got {tolerance!r}")
        if max_interval is not None and not (max_interval > 0 and math.isfinite(max_interval)):
            raise ParamError("max_interval", f"must be a positive duration, got {max_interval!r}")
        if mode == "time" and (fields is not None or tolerance or max_interval is not None):
            name = "fields" if fields is not None else "tolerance" if tolerance else "max_interval"
            raise ParamError(name, "only used with mode: value")
        self._seen: set[tuple[Key, Timestamp]] = set()
        self._order: deque[tuple[Key, Timestamp]] = deque()
        self._names: list[str] | None = fields
        self._last: dict[str, Value] | None = None
        self._last_time = -math.inf
        self._dropped = 0
        self._passed = 0

    def bind(self, upstream: Schema) -> None:
        """In ``value`` mode without ``fields``: compare every field of the input."""
        if self.mode == "value" and self.fields is None:
            self._names = list(upstream)

    def process(self, event: Event) -> tuple[Event, ...]:
        if self.mode == "time":
            repeated = self._seen_before((event.key, event.time))
        else:
            repeated = self._same_values(event)
        if repeated:
            self._dropped += 1
            return ()
        self._passed += 1
        return (event,)

    def _seen_before(self, ident: tuple[Key, Timestamp]) -> bool:
        if ident in self._seen:
            return True
        self._seen.add(ident)
        self._order.append(ident)
        if len(self._order) > self.memory:
            self._seen.discard(self._order.popleft())
        return False

    def _same_values(self, event: Event) -> bool:
        names = self._names if self._names is not None else list(event.fields)
        values = {name: event.fields.get(name) for name in names}
        last = self._last
        if last is not None and last.keys() == values.keys():
            fresh = self.max_interval is None or event.time - self._last_time < self.max_interval
            if fresh and all(self._equal(last[n], v) for n, v in values.items()):
                return True
        self._last = values
        self._last_time = event.time
        return False

    def _equal(self, a: Value, b: Value) -> bool:
        if a is None or b is None:
            return a is b
        number = (int, float)
        if isinstance(a, number) and isinstance(b, number) and not isinstance(a, bool):
            return abs(a - b) <= self.tolerance or a == b  # a == b: equal infinities
        return a == b

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        if self.fields is not None:
            require_fields(upstream, self.fields, "fields")
        return dict(upstream)

    def metrics(self) -> dict[str, float]:
        return {"dropped": self._dropped, "passed": self._passed}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}
        yield {"mode": "value", "fields": ["label"]}
        yield {"mode": "value", "fields": ["x", "z"], "tolerance": 1.5, "max_interval": "10s"}
