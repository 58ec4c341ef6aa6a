"""preprocess.resample: one event per fixed slot of event time, whatever the input rate."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from typing import Any, Literal

from fogrt.errors import ParamError
from fogrt.event import IMPUTED, Event
from fogrt.types import Duration, Fields, FieldType, Key, Schema, Timestamp, Value
from operators.preprocess.fieldwise import FieldwiseOperator, check_positive

Method = Literal["last", "linear", "mean", "none"]
OnGap = Literal["skip", "missing"]

# A pending event: (time, arrival order, known numeric values, flags, key).
_Pending = tuple[Timestamp, int, dict[str, float], int, Key]

_INF = math.inf
MAX_PENDING = 10_000
"""``linear``: most events kept waiting for a value after a slot start."""


class Resample(FieldwiseOperator):
    """Resample numeric fields to a fixed rate on event time: one event per slot.

    Slot ``k`` is ``[k*period, (k+1)*period)`` (aligned on the epoch); its event has
    ``seq`` = ``k``, ``time`` = the slot start, and one value per field:

    ============  ==========================================================================
    ``method``    value of a field in slot ``k``
    ============  ==========================================================================
    ``last``      the last value in the slot; an empty slot repeats the one before
                  (sample and hold)
    ``linear``    the value at the slot start, interpolated between the last known value
                  at or before it and the first one after it
    ``mean``      the mean of the values in the slot; ``None`` if it has none
    ``none``      the last value in the slot; ``None`` if it has none (no interpolation)
    ============  ==========================================================================

    A slot is emitted when the watermark (the newest event time, or ``on_tick(now)``)
    reaches its end; with ``linear``, also not before each field has a known value after
    the slot start, unless it cannot be bridged anyway (no value before, or ``max_gap``
    already exceeded) or 10,000 events are waiting. An event older than a slot already
    emitted is late (dropped and counted). ``on_tick`` also emits the trailing slots of a
    device that went quiet, as far as they can be decided: a slot holding events once its
    end has passed; an empty one once ``max_gap`` tells whether it is inside a gap (or at
    once with no ``max_gap``, for ``last``, ``mean`` and ``none``). At the end of the
    stream (``math.inf``) nothing is emitted after the slot of the last event.

    Gaps: when the events before and after an empty slot are more than ``max_gap`` apart,
    the slot is not filled: ``on_gap: skip`` (default) emits nothing for it, ``missing``
    emits it with every field ``None``. Per field, ``last`` does not carry a value older
    than ``max_gap`` and ``linear`` does not bridge known values more than ``max_gap``
    apart (the value is ``None``).

    An event is flagged ``IMPUTED`` when a field got a value without any reading of it in
    the slot (``last`` carrying a value, ``linear`` across an empty slot), or when an input
    event of the slot was.

    Parameters
    ----------
    period
        The slot length (``10s``, ``1m``...).
    fields
        The numeric fields to resample (the output has only these). Default: every
        numeric field of the input.
    method
        ``last`` (default), ``linear``, ``mean`` or ``none``.
    max_gap
        The longest silence that is filled (default: no limit).
    on_gap
        ``skip`` (default) or ``missing``: what a slot inside a longer silence gives.

    Metrics: ``slots`` (emitted), ``filled`` (emitted empty slots with a value), ``gaps``
    (slots inside a silence longer than ``max_gap``, skipped or missing), ``late``.

    Examples
    --------
    In a topology::

        - id: every-10s
          use: preprocess.resample
          with: {period: 10s, fields: [temp], method: linear, max_gap: 1m}

    >>> from fogrt.event import Event
    >>> op = Resample(period=10, fields=["temp"], method="linear")
    >>> op.process(Event("d", 1, 5.0, {"temp": 10.0}))
    ()
    >>> out = op.process(Event("d", 2, 35.0, {"temp": 40.0}))
    >>> [(e.seq, e.time, e.fields["temp"], e.flag_names()) for e in out]
    [(1, 10.0, 15.0, ['imputed']), (2, 20.0, 25.0, ['imputed'])]
    >>> [(e.time, e.fields["temp"]) for e in op.on_tick(math.inf)]
    [(30.0, 35.0)]
    """

    kind = "preprocess.resample"

    def __init__(
        self,
        period: Duration,
        fields: list[str] | None = None,
        method: Method = "last",
        max_gap: Duration | None = None,
        on_gap: OnGap = "skip",
    ) -> None:
        self.period = period
        self.fields = fields
        self.method = method
        self.max_gap = max_gap
        self.on_gap = on_gap
        self._setup_fields(fields)
        check_positive(period, "period")
        if method not in ("last", "linear", "mean", "none"):
            raise ParamError("method", f"expected last, linear, mean or none, got {method!r}")
        if max_gap is not None:
            check_positive(max_gap, "max_gap")
        if on_gap not in ("skip", "missing"):
            raise ParamError("on_gap", f"expected skip or missing, got {on_gap!r}")
        self._p = float(period)
        self._linear = method == "linear"
        self._gap = _INF if max_gap is None else max_gap
        self._pending: list[_Pending] = []  # events of slots not emitted yet, by time
        self._order = 0
        self._prev: dict[str, tuple[Timestamp, float]] = {}  # last known before the slot
        self._next_k: int | None = None  # the next slot to emit
        self._started = False  # a slot was emitted
        self._last_t = -_INF  # time of the newest event taken into _prev
        self._max_time = -_INF
        self._key: Key = ""
        self._slots = self._filled = self._gaps = self._late = 0

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
        if self._discover:
            self._discover_fields(event.fields)
        t = event.time
        if not self._accept(t):
            self._late += 1
            return ()
        self._key = event.key
        known = {}
        for name in self._names:
            v = event.fields.get(name)
            if v is not None and v == v and (v.__class__ is int or v.__class__ is float):
                known[name] = v
        if self._linear and t < self._grid_start():
            self._remember(t, known)  # before the next grid point: only a "before" value
        else:
            self._order += 1
            bisect.insort(self._pending, (t, self._order, known, event.flags, event.key))
        if t > self._max_time:
            self._max_time = t
            return self._advance(t)
        return ()

    def _accept(self, t: Timestamp) -> bool:
        """Place the grid on the first event; tell whether ``t`` is too late to count."""
        p = self._p
        first = math.ceil(t / p) if self._linear else math.floor(t / p)
        if self._next_k is None:
            self._next_k = first
            return True
        if not self._started:  # nothing emitted: an early event moves the first slot
            if not self._linear:
                self._next_k = min(self._next_k, first)
            return True
        if self._linear:  # the last emitted grid point already used what it had
            return t > (self._next_k - 1) * p
        return t >= self._next_k * p

    def _grid_start(self) -> float:
        return -_INF if self._next_k is None else self._next_k * self._p

    def _remember(self, t: Timestamp, known: dict[str, float]) -> None:
        for name, v in known.items():
            prev = self._prev.get(name)
            if prev is None or t >= prev[0]:
                self._prev[name] = (t, v)
        if t > self._last_t:
            self._last_t = t

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if self._next_k is None or now <= self._max_time:
            return ()
        return self._advance(now)

    # -- slots -------------------------------------------------------------------------------

    def _advance(self, horizon: Timestamp) -> tuple[Event, ...]:
        """Emit every slot that ends at or before ``horizon`` and can be decided."""
        out: list[Event] = []
        p = self._p
        while self._next_k is not None and (self._next_k + 1) * p <= horizon:
            k = self._next_k
            if self._linear and horizon < _INF and self._waiting(k * p, horizon):
                break
            n = bisect.bisect_left(self._pending, ((k + 1) * p,))
            if n:
                out.append(self._slot(k, self._pending[:n]))
                for t, _, known, _, _ in self._pending[:n]:
                    self._remember(t, known)
                del self._pending[:n]
            elif not self._empty_slot(k, horizon, out):
                break
            self._next_k = max(self._next_k, k + 1)
            self._started = True
        return tuple(out)

    def _waiting(self, at: Timestamp, horizon: Timestamp) -> bool:
        """``linear``: some field has a value before ``at`` and may still get one after it."""
        if len(self._pending) >= MAX_PENDING:
            return False
        for name in self._names:
            before = self._prev.get(name)
            after = False
            for t, _, known, _, _ in self._pending:
                if name in known:
                    if t > at:
                        after = True
                        break
                    before = (t, known[name])
            if after or before is None or before[0] == at:  # known, or never bridgeable
                continue
            if horizon - before[0] <= self._gap:
                return True
        return False

    def _empty_slot(self, k: int, horizon: Timestamp, out: list[Event]) -> bool:
        """Emit (or skip) empty slot ``k``; False when it cannot be decided yet."""
        after = self._pending[0][0] if self._pending else None
        if after is None:  # nothing after it yet: how long will the silence be?
            silence = horizon - self._last_t
            if horizon == _INF or (silence <= self._gap and (self._linear or self._gap < _INF)):
                return False
            long_gap = silence > self._gap
        else:
            long_gap = after - self._last_t > self._gap
        if not long_gap:
            out.append(self._slot(k, []))
            return True
        self._gaps += 1
        if self.on_gap == "missing":
            self._slots += 1
            out.append(Event(self._key, k, k * self._p, dict.fromkeys(self._names)))
            return True
        # Skip straight to the slot of the next event (or of the horizon).
        resume = math.floor((horizon if after is None else after) / self._p)
        if resume > k + 1:
            self._gaps += resume - k - 1
            self._next_k = resume
        return True

    def _slot(self, k: int, events: list[_Pending]) -> Event:
        start, end = k * self._p, (k + 1) * self._p
        fields: Fields = {}
        flags = 0
        for _, _, _, f, _ in events:
            flags |= f
        filled = False
        for name in self._names:
            seen = [(t, known[name]) for t, _, known, _, _ in events if name in known]
            v = self._value(name, seen, start, end)
            fields[name] = v
            filled = filled or (v is not None and not seen)
        if filled:
            flags |= IMPUTED
            if not events:
                self._filled += 1
        self._slots += 1
        key = events[-1][4] if events else self._key
        return Event(key, k, start, fields, 0.0, flags)

    def _value(
        self, name: str, seen: list[tuple[Timestamp, float]], start: float, end: float
    ) -> Value:
        method = self.method
        if method == "mean":
            return math.fsum(v for _, v in seen) / len(seen) if seen else None
        if method == "linear":
            return self._interpolate(name, start)
        if seen:
            return seen[-1][1]  # the newest: pending events are kept in time order
        prev = self._prev.get(name)
        if method == "none" or prev is None or start - prev[0] > self._gap:
            return None
        return prev[1]

    def _interpolate(self, name: str, at: Timestamp) -> Value:
        before = self._prev.get(name)
        after = None
        for t, _, known, _, _ in self._pending:
            if name not in known:
                continue
            if t <= at:
                before = (t, known[name])
            else:
                after = (t, known[name])
                break
        if before is not None and before[0] == at:
            return float(before[1])
        if before is None or after is None or after[0] - before[0] > self._gap:
            return None
        (t0, v0), (t1, v1) = before, after
        return v0 + (v1 - v0) * (at - t0) / (t1 - t0)

    # -- contract ----------------------------------------------------------------------------

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        names = self._check_schema(upstream)
        keep = self.method in ("last", "none")
        return {name: upstream[name] if keep else "float" for name in names}

    def metrics(self) -> dict[str, float]:
        return {
            "slots": self._slots,
            "filled": self._filled,
            "gaps": self._gaps,
            "late": self._late,
        }

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"period": "3s"}
        yield {"period": "500ms", "fields": ["x", "y"], "method": "linear", "max_gap": "2s"}
        yield {"period": 2, "fields": ["y", "label"], "method": "mean", "on_gap": "missing"}
