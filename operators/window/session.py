"""window.session: bursts of activity per key, separated by a gap of silence."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.types import Duration, Timestamp
from operators.window.base import FIRST, LAST, OnLate, Window, WindowOperator

_INF = math.inf
_RECENT = 8
"""Closed sessions remembered to give a late event's correction the right ``seq``."""


def _first(w: Window) -> float:
    return float(w[FIRST])


class Session(WindowOperator):
    """Gap-based session windows per key, with the features of ``window.tumbling``.

    Events less than ``gap`` apart (in event time) belong to the same session; an
    out-of-order event that bridges two open sessions merges them. A session is emitted
    when the watermark (the newest event time minus ``lateness``, or ``on_tick(now)``)
    reaches its last event time plus ``gap``, or its first event time plus ``max_length``:
    a session never spans ``max_length`` or more, a longer burst is cut into several.

    An event is late when it would belong to a session already emitted, or when a session
    of its own would already be over (its time plus ``gap`` is at or before the watermark)
    and it can join no open session. It is counted in ``metrics()["late"]``; with
    ``on_late: emit`` it is also emitted as a one-event session flagged ``LATE`` that
    carries the ``seq`` and ``time`` of the session it missed (``seq`` -1 and its own time
    when that session is no longer remembered, or there is none).

    Parameters
    ----------
    gap
        Silence that ends a session (``30s``, ``5m``...).
    max_length
        Longest span of a session, first to last event (default: unbounded).
    fields, features, lateness, on_late, bands, rate
        As for ``window.tumbling``; ``duration`` is the session's span.

    Output: one event per session, ``seq`` = the session's number for the key (0, 1, ...,
    in the order they close), ``time`` = its last event time, the ``IMPUTED`` flag if any
    of its events was imputed, and the fields of ``window.tumbling``.

    Examples
    --------
    In a topology::

        - id: runs
          use: window.session
          with: {gap: 2m, max_length: 8h, fields: [current], features: [count, duration, mean]}

    >>> from fogrt.event import Event
    >>> op = Session(gap=10, fields=["v"], features=["count", "duration", "max"])
    >>> [op.process(Event("d", i, t, {"v": float(i)})) for i, t in enumerate([0, 4, 9])]
    [(), (), ()]
    >>> [(e.seq, e.time, e.fields) for e in op.process(Event("d", 3, 30, {"v": 3.0}))]
    [(0, 9, {'count': 3, 'duration': 9.0, 'v_max': 2.0})]
    >>> [(e.seq, e.time, e.fields) for e in op.on_tick(math.inf)]
    [(1, 30, {'count': 1, 'duration': 0.0, 'v_max': 3.0})]
    """

    kind = "window.session"

    def __init__(
        self,
        gap: Duration,
        max_length: Duration | None = None,
        fields: list[str] | None = None,
        features: Sequence[str] = ("mean", "std", "min", "max"),
        lateness: Duration = 0.0,
        on_late: OnLate = "drop",
        bands: list[tuple[float, float]] | None = None,
        rate: float | None = None,
    ) -> None:
        self.gap = gap
        self.max_length = max_length
        self.fields = fields
        self.features = features
        self.lateness = lateness
        self.on_late = on_late
        self.bands = bands
        self.rate = rate
        if not (gap > 0 and math.isfinite(gap)):
            raise ParamError("gap", f"must be a positive duration, got {gap!r}")
        if max_length is not None and not (max_length > 0 and math.isfinite(max_length)):
            raise ParamError("max_length", f"must be a positive duration, got {max_length!r}")
        self._setup(fields, features, bands, rate, lateness, on_late)
        self._times = True
        self._cap = _INF if max_length is None else max_length
        self._open: list[Window] = []  # by first event time
        self._max_time = -_INF
        self._done = -_INF  # the watermark
        self._closed_until = -_INF  # events before this belong to emitted sessions
        self._next_seq = 0
        self._recent: deque[tuple[int, float, float]] = deque(maxlen=_RECENT)

    def _has_state(self) -> bool:
        return bool(self._open)

    def _due(self, w: Window) -> float:
        """When a session closes: its last time + gap, or its first time + max_length."""
        return float(min(w[LAST] + self.gap, w[FIRST] + self._cap))

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
        t = event.time
        if t < self._closed_until:  # it belongs to a session already emitted
            return self._late_one(event)
        if not self._join(event):
            if t + min(self.gap, self._cap) <= self._done:  # alone, it would be over
                return self._late_one(event)
            w = self._new_window(event.key)
            self._add(w, event)
            self._open.append(w)
            self._open.sort(key=_first)
        if t > self._max_time:
            self._max_time = t
            watermark = t - self.lateness
            if watermark > self._done:
                self._done = watermark
                return self._close()
        return ()

    def _join(self, event: Event) -> bool:
        """Add the event to the open session(s) it reaches, merging those it bridges."""
        t, gap, cap = event.time, self.gap, self._cap
        near = [w for w in self._open if w[FIRST] - gap < t < w[LAST] + gap]
        if not near:
            return False
        if len(near) > 1:
            first = min(t, *(w[FIRST] for w in near))
            last = max(t, *(w[LAST] for w in near))
            if last - first < cap:
                merged = self._merge(near)
                self._open = [w for w in self._open if all(w is not n for n in near)]
                self._open.append(merged)
                near = [merged]
            else:  # try the nearest first
                near.sort(key=lambda w: min(abs(t - w[FIRST]), abs(t - w[LAST])))
        for w in near:  # join one that stays shorter than max_length
            if max(t, w[LAST]) - min(t, w[FIRST]) < cap:
                self._add(w, event)
                break
        else:
            return False
        if len(self._open) > 1:
            self._open.sort(key=_first)
        return True

    def _late_one(self, event: Event) -> tuple[Event, ...]:
        self._late += 1
        if not self._emit_late:
            return ()
        t, gap = event.time, self.gap
        for seq, first, last in reversed(self._recent):
            if first - gap < t < last + gap:
                return (self._late_event(event, seq, last),)
        return (self._late_event(event, -1, t),)

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if now > self._done:
            self._done = now
            return self._close()
        return ()

    # -- emission ----------------------------------------------------------------------------

    def _close(self) -> tuple[Event, ...]:
        done = self._done
        due = [w for w in self._open if self._due(w) <= done]
        if not due:
            return ()
        self._open = [w for w in self._open if self._due(w) > done]
        out = []
        for w in due:  # in order of first event time
            seq = self._next_seq
            self._next_seq += 1
            self._recent.append((seq, w[FIRST], w[LAST]))
            self._closed_until = max(self._closed_until, self._due(w))
            out.append(self._emit(w, seq, w[LAST]))
        return tuple(out)

    # -- contract ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        return {"late": self._late, "open_sessions": len(self._open)}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"gap": "3s", "max_length": "20s"}
        yield {
            "gap": "1500ms",
            "max_length": 30,
            "fields": ["x", "y"],
            "features": ["count", "duration", "mean", "q75", "zero_crossings"],
            "lateness": "2s",
            "on_late": "emit",
        }
