"""window.sliding: overlapping event-time windows of ``size``, one every ``slide``.

Each event is added once, to a *pane*: panes are ``gcd(size, slide)`` long, so every window
is a run of ``size / pane`` consecutive panes and a window's summary is the exact merge of
its panes' accumulators. That costs one accumulator update per event whatever the overlap
(instead of ``size / slide``), and one merge of a few panes per emitted window.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any

from fogrt.errors import ParamError
from fogrt.event import Event
from fogrt.types import Duration, Timestamp
from operators.window.base import OnLate, Window, WindowOperator

_INF = math.inf
_floor = math.floor
MAX_PANES = 1000
"""Most panes a window may span: ``size / gcd(size, slide)``."""


def panes(size: float, slide: float) -> tuple[float, int, int]:
    """``(pane length, panes per window, panes per slide)``; durations are taken to the µs."""
    us_size, us_slide = round(size * 1e6), round(slide * 1e6)
    if us_slide <= 0:
        raise ParamError("slide", f"must be at least 1us, got {slide!r}")
    g = math.gcd(us_size, us_slide)
    z, s = us_size // g, us_slide // g
    if z > MAX_PANES:
        raise ParamError(
            "slide",
            f"size {size:g}s and slide {slide:g}s only divide into panes of {g / 1e6:g}s, "
            f"{z} per window (at most {MAX_PANES}); choose a slide that divides the size",
        )
    return g / 1e6, z, s


class Sliding(WindowOperator):
    """Event-time sliding (hopping) windows per key, with the features of ``window.tumbling``.

    Window ``j`` covers ``[j*slide, j*slide + size)`` (aligned on the epoch), so every event
    is in ``size / slide`` windows (rounded up). A window is emitted once the watermark (the
    newest event time minus ``lateness``, or ``on_tick(now)``) reaches its end, that is at
    each slide boundary; a window in which no event fell is not emitted.

    An event is late when at least one window it belongs to has been emitted: it is then
    counted once in ``metrics()["late"]``, still added to its windows that are open, and,
    with ``on_late: emit``, its contribution to each window it missed is emitted as a
    one-event window with that window's ``seq`` and ``time``, flagged ``LATE``.

    Parameters
    ----------
    size
        Window length (``60s``, ``5m``...).
    slide
        Distance between window starts; at most ``size`` (``slide == size`` gives tumbling
        windows). ``size / gcd(size, slide)`` must be at most 1000.
    fields, features, lateness, on_late, bands, rate
        As for ``window.tumbling``.

    Output: one event per window with ``seq`` = ``j``, ``time`` = the window end, the
    ``IMPUTED`` flag if any event in it was imputed, and the fields of ``window.tumbling``.

    Examples
    --------
    In a topology::

        - id: trend
          use: window.sliding
          with: {size: 5m, slide: 1m, fields: [temp], features: [mean, slope, q95]}

    >>> from fogrt.event import Event
    >>> op = Sliding(size=10, slide=5, fields=["v"], features=["count", "mean"])
    >>> def feed(t, v):
    ...     return [(e.seq, e.time, e.fields) for e in op.process(Event("d", 0, t, {"v": v}))]
    >>> feed(1, 1.0)  # in windows -1 [-5, 5) and 0 [0, 10)
    []
    >>> feed(6, 3.0)  # the watermark passes 5: window -1 closes
    [(-1, 5.0, {'count': 1, 'v_mean': 1.0})]
    >>> feed(12, 8.0)
    [(0, 10.0, {'count': 2, 'v_mean': 2.0})]
    >>> [(e.seq, e.time, e.fields) for e in op.on_tick(math.inf)]
    [(1, 15.0, {'count': 2, 'v_mean': 5.5}), (2, 20.0, {'count': 1, 'v_mean': 8.0})]
    """

    kind = "window.sliding"

    def __init__(
        self,
        size: Duration,
        slide: Duration,
        fields: list[str] | None = None,
        features: Sequence[str] = ("mean", "std", "min", "max"),
        lateness: Duration = 0.0,
        on_late: OnLate = "drop",
        bands: list[tuple[float, float]] | None = None,
        rate: float | None = None,
    ) -> None:
        self.size = size
        self.slide = slide
        self.fields = fields
        self.features = features
        self.lateness = lateness
        self.on_late = on_late
        self.bands = bands
        self.rate = rate
        if not (size > 0 and math.isfinite(size)):
            raise ParamError("size", f"must be a positive duration, got {size!r}")
        if not (slide > 0 and math.isfinite(slide)):
            raise ParamError("slide", f"must be a positive duration, got {slide!r}")
        if slide > size:
            raise ParamError("slide", f"{slide:g}s is longer than the size {size:g}s")
        self._setup(fields, features, bands, rate, lateness, on_late)
        self._pane, self._z, self._s = panes(size, slide)
        self._panes: dict[int, Window] = {}
        self._cur_i: int | None = None
        self._cur_p: Any = None  # the pane of _cur_i
        self._cur_first_end = _INF  # end of the first window containing _cur_i
        self._max_time = -_INF
        self._done = -_INF  # windows ending at or before this are closed
        self._next_due = _INF  # end of the oldest open window that has a pane

    def _has_state(self) -> bool:
        return bool(self._panes)

    def _end(self, j: int) -> float:
        return (j * self._s + self._z) * self._pane

    def _first_window(self, i: int) -> int:
        """The first window containing pane ``i``: ``ceil((i - z + 1) / s)``."""
        return -((self._z - 1 - i) // self._s)

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
        t = event.time
        i = _floor(t / self._pane)
        late: tuple[Event, ...] = ()
        if i != self._cur_i or self._cur_first_end <= self._done:
            late = self._enter(i, event)
            if i != self._cur_i:  # every window of this event is closed
                return late
        self._add(self._cur_p, event)
        if t > self._max_time:
            self._max_time = t
            watermark = t - self.lateness
            if watermark > self._done:
                old, self._done = self._done, watermark
                if watermark >= self._next_due:
                    return late + self._close(old, watermark)
        return late

    def _enter(self, i: int, event: Event) -> tuple[Event, ...]:
        """Find or open pane ``i``; count (and emit) the event's part in closed windows."""
        first, last = self._first_window(i), i // self._s
        missed = [j for j in range(first, last + 1) if self._end(j) <= self._done]
        out: tuple[Event, ...] = ()
        if missed:
            self._late += 1
            if self._emit_late:
                out = tuple(self._late_event(event, j, self._end(j)) for j in missed)
            if len(missed) == last - first + 1:
                return out
        p = self._panes.get(i)
        if p is None:
            p = self._panes[i] = self._new_window(event.key)
            self._next_due = min(self._next_due, self._end(first + len(missed)))
        self._cur_i, self._cur_p, self._cur_first_end = i, p, self._end(first)
        return out

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if now > self._done:
            old, self._done = self._done, now
            if now >= self._next_due:
                return self._close(old, now)
        return ()

    # -- emission ----------------------------------------------------------------------------

    def _close(self, old: float, new: float) -> tuple[Event, ...]:
        """Emit the windows ending in ``(old, new]``, oldest first; drop finished panes."""
        s, z = self._s, self._z
        keys = sorted(self._panes)
        j = self._first_window(keys[0])
        while self._end(j) <= old:
            j += 1
        last = keys[-1] // s
        out = []
        while j <= last and self._end(j) <= new:
            lo = bisect.bisect_left(keys, j * s)
            hi = bisect.bisect_left(keys, j * s + z)
            if lo < hi:
                window = self._merge([self._panes[i] for i in keys[lo:hi]])
                out.append(self._emit(window, j, self._end(j)))
            elif lo == len(keys):
                break
            else:  # no pane in this window: jump to the first window of the next pane
                j = max(j + 1, self._first_window(keys[lo]))
                continue
            j += 1
        for i in keys:
            if self._end(i // s) <= new:
                del self._panes[i]
        self._after_close(new)
        return tuple(out)

    def _after_close(self, new: float) -> None:
        if self._cur_i is not None and self._cur_i not in self._panes:
            self._cur_i, self._cur_p, self._cur_first_end = None, None, _INF
        if not self._panes:
            self._next_due = _INF
            return
        j = self._first_window(min(self._panes))
        while self._end(j) <= new:
            j += 1
        self._next_due = self._end(j)

    # -- contract ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        return {"late": self._late, "open_panes": len(self._panes)}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"size": "10s", "slide": "5s"}
        yield {
            "size": 6,
            "slide": 4,
            "fields": ["x", "y"],
            "features": ["count", "q50", "slope", "zero_crossings"],
            "lateness": "3s",
            "on_late": "emit",
        }
        yield {
            "size": "8s",
            "slide": "2s",
            "fields": ["z"],
            "features": ["rms", "skew", "kurtosis", "bands"],
            "bands": [[0, 0.2], [0.2, 0.6]],
        }
