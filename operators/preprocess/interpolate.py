"""Holding events until the gaps they sit in can be interpolated (``impute`` with ``linear``).

An event with a missing value waits until the field is known again; every event behind a
waiting one waits too, so events leave in the order they came. A gap is given up (its
values stay missing) when the known values around it are, or would be, more than
``max_gap`` apart, when ``MAX_HELD`` events are waiting, or at the end of the stream.
"""

from __future__ import annotations

import math
from collections import deque

from fogrt.event import Event
from fogrt.types import Timestamp

Filled = dict[str, float | None]
"""The values found for an event's gaps: field -> value, or None when given up."""

MAX_HELD = 10_000
"""Most events held at once; beyond it the oldest gap is given up."""


class Held:
    """One event waiting: the values found for its gaps and the fields still pending."""

    __slots__ = ("event", "filled", "pending")

    def __init__(self, event: Event) -> None:
        self.event = event
        self.filled: Filled = {}  # field -> interpolated value, or None when given up
        self.pending: set[str] = set()


class Gaps:
    """The held events of one operator instance and the open gap of each field."""

    def __init__(self, max_gap: float) -> None:
        self.max_gap = max_gap
        self._held: deque[Held] = deque()
        self._open: dict[str, list[Held]] = {}  # field -> events waiting for its next value
        self._known: dict[str, tuple[Timestamp, float]] = {}  # field -> last known time, value
        self._max_time = -math.inf

    def held(self) -> int:
        return len(self._held)

    def known(self, name: str) -> float | None:
        """The last known value of a field (None before the first)."""
        known = self._known.get(name)
        return None if known is None else known[1]

    def add(self, event: Event, names: list[str]) -> list[tuple[Event, Filled | None]]:
        """Take one event; return the events released, each with its filled values."""
        t = event.time
        values = event.fields
        entry: Held | None = None
        for name in names:
            if name not in values:
                continue
            v = values[name]
            if v is None or v != v:
                entry = entry or Held(event)
                known = self._known.get(name)
                if known is None or t - known[0] > self.max_gap:
                    entry.filled[name] = None  # nothing to interpolate from
                else:
                    entry.pending.add(name)
                    self._open.setdefault(name, []).append(entry)
            elif v.__class__ is int or v.__class__ is float:
                self._close(name, t, v)
        if entry is None and not self._held:
            return [(event, None)]
        self._held.append(entry or Held(event))
        if t > self._max_time:
            self._max_time = t
        self._expire(self._max_time)
        if len(self._held) > MAX_HELD:  # the oldest gap is given up, unfilled
            for name in list(self._held[0].pending):
                self._give_up(name)
                del self._known[name]  # and not bridged later either
        return self._release()

    def tick(self, now: Timestamp) -> list[tuple[Event, Filled | None]]:
        """The watermark moved: give up gaps that became too long (all of them at inf)."""
        if now == math.inf:
            for name in list(self._open):
                self._give_up(name)
        else:
            self._expire(now)
        return self._release()

    def _close(self, name: str, t1: Timestamp, v1: float) -> None:
        """A known value of ``name``: interpolate the events waiting for it."""
        waiting = self._open.pop(name, None)
        if waiting:
            t0, v0 = self._known[name]
            if t1 - t0 > self.max_gap:
                self._open[name] = waiting
                self._give_up(name)
            else:
                m = len(waiting)
                for k, entry in enumerate(waiting, 1):
                    te = entry.event.time
                    # By event time; by position when times are out of order.
                    w = (te - t0) / (t1 - t0) if t0 <= te <= t1 and t1 > t0 else k / (m + 1)
                    entry.filled[name] = v0 + w * (v1 - v0)
                    entry.pending.discard(name)
        self._known[name] = (t1, v1)

    def _expire(self, now: Timestamp) -> None:
        if self.max_gap == math.inf:
            return
        for name in [n for n in self._open if now - self._known[n][0] > self.max_gap]:
            self._give_up(name)

    def _give_up(self, name: str) -> None:
        for entry in self._open.pop(name, ()):
            entry.filled[name] = None
            entry.pending.discard(name)

    def _release(self) -> list[tuple[Event, Filled | None]]:
        """The events at the front that wait for nothing any more, in order."""
        out: list[tuple[Event, Filled | None]] = []
        held = self._held
        while held and not held[0].pending:
            entry = held.popleft()
            out.append((entry.event, entry.filled or None))
        return out
