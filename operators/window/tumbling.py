"""window.tumbling: fixed, non-overlapping event-time windows (the hot path of most topologies)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from fogrt.errors import ParamError
from fogrt.event import IMPUTED, Event
from fogrt.types import Duration, Schema, Timestamp
from operators.window.base import ACCS, OnLate, Window, WindowOperator

_INF = math.inf
_floor = math.floor


class Tumbling(WindowOperator):
    """Event-time tumbling windows: count, moments, extremes, quantiles, slope, spectra...

    Windows are aligned on multiples of ``size`` since the epoch: ``[k*size, (k+1)*size)``.
    Each key has its own operator instance (the engine partitions by key), so windows are
    per device.

    The watermark is the largest event time seen minus ``lateness``. When an event moves
    it, every open window whose end is at or before the watermark is emitted, oldest first.
    ``on_tick(now)`` closes the windows whose end is at or before ``now`` (the engine's
    watermark for the key; ``math.inf`` at the end of a stream). An event whose window has
    already been closed (its end is at or before the watermark or a tick) is late: it is
    counted in ``metrics()["late"]`` and handled by ``on_late``.

    Parameters
    ----------
    size
        Window length: ``10s``, ``500ms``, ``5m``... Must be positive.
    fields
        The numeric fields to summarise. Default: every numeric field of the input (or,
        without a compiled input, discovered from the events: a field appears in the output
        from the first window in which it had a value on).
    features
        Window-level: ``count`` (events in the window, ``int``) and ``duration`` (seconds
        from its first to its last event). Per field, emitted as ``<field>_<feature>``:

        - streaming (constant memory): ``mean``, ``std`` and ``var`` (population,
          ``ddof=0``, as numpy; ``0.0`` for a single value), ``min``, ``max``, ``ptp``
          (max - min), ``peak`` (largest absolute value), ``rms``, ``slope`` (least-squares
          slope of the values against event time, units per second; ``None`` with fewer
          than two distinct times);
        - buffered (the window keeps its values): ``skew`` and ``kurtosis`` (population
          skewness and excess kurtosis, as ``scipy.stats`` with its defaults; ``None`` when
          the values are all equal), quantiles ``q0``..``q100`` (exact, numpy's linear
          method: ``q50`` is the median), ``zero_crossings`` (sign changes of the values
          minus the window mean, in time order, an ``int``: a signal with an offset, like
          gravity on an accelerometer, still crosses its own mean), ``bands`` (see below).
    lateness
        How far behind the newest event time an event may still be and count.
    on_late
        ``drop`` (default): a late event is only counted. ``emit``: also emit its own
        contribution to the window it missed, as a one-event window with that window's
        ``seq`` and ``time``, flagged ``LATE`` (downstream may merge it or ignore it).
    bands
        With ``bands`` in ``features``: frequency bands ``[[lo, hi], ...]`` in Hz (``lo``
        included, ``hi`` excluded), emitted as ``<field>_band0``, ``<field>_band1``... Each
        is the mean power of the de-meaned values in that band (numpy ``rfft``), so bands
        that cover ``[0, rate/2]`` add up to the window's variance. The FFT treats the
        values as evenly spaced, in time order.
    rate
        Sample rate in Hz for ``bands``. Default: derived per window from the timestamps,
        ``(n - 1) / (last - first)`` (``None`` bands for a window of one event).

    Output: one event per window with the input's key, ``seq`` = the window index ``k``,
    ``time`` = the window end, the ``IMPUTED`` flag if any event in it was imputed, and
    fields ``count``, ``duration`` and ``<field>_<feature>`` in the order of ``fields`` and
    ``features``. ``None``/NaN values are skipped; a field with no value in a window gives
    ``None``.

    Examples
    --------
    In a topology::

        - id: vibration
          use: window.tumbling
          with:
            size: 10s
            fields: [accel]
            features: [count, rms, peak, q95, zero_crossings, bands]
            bands: [[0, 5], [5, 20], [20, 50]]
            lateness: 2s

    >>> from fogrt.event import Event
    >>> op = Tumbling(size=10.0, fields=["temp"], features=["count", "mean", "max", "slope"])
    >>> op.process(Event("pump-1", 1, 100.0, {"temp": 20.0}))
    ()
    >>> op.process(Event("pump-1", 2, 104.0, {"temp": 22.0}))
    ()
    >>> out = op.process(Event("pump-1", 3, 111.0, {"temp": 30.0}))
    >>> out[0].seq, out[0].time, out[0].fields
    (10, 110.0, {'count': 2, 'temp_mean': 21.0, 'temp_max': 22.0, 'temp_slope': 0.5})
    >>> [(e.time, e.fields) for e in op.on_tick(math.inf)]
    [(120.0, {'count': 1, 'temp_mean': 30.0, 'temp_max': 30.0, 'temp_slope': None})]
    """

    kind = "window.tumbling"

    def __init__(
        self,
        size: Duration,
        fields: list[str] | None = None,
        features: Sequence[str] = ("mean", "std", "min", "max"),
        lateness: Duration = 0.0,
        on_late: OnLate = "drop",
        bands: list[tuple[float, float]] | None = None,
        rate: float | None = None,
    ) -> None:
        self.size = size
        self.fields = fields
        self.features = features
        self.lateness = lateness
        self.on_late = on_late
        self.bands = bands
        self.rate = rate
        if not (size > 0 and math.isfinite(size)):
            raise ParamError("size", f"must be a positive duration, got {size!r}")
        self._setup(fields, features, bands, rate, lateness, on_late)
        self._windows: dict[int, Window] = {}
        self._cur_k: int | None = None
        self._cur_w: Any = None  # the window of _cur_k
        self._max_time = -_INF
        self._done = -_INF  # windows ending at or before this are closed
        self._first_end = _INF  # end of the oldest open window
        self._set_path()

    def _set_path(self) -> None:
        # The inline loop in process() handles [n, mean, M2, min, max] of known fields;
        # anything else (discovery, buffers, slope, duration) takes WindowOperator._add.
        spec = self._spec
        simple = spec.basic and not spec.duration
        self._fast = simple and not self._discover
        self._fast_discover = simple and self._discover

    def bind(self, upstream: Schema) -> None:
        super().bind(upstream)
        self._set_path()

    def _has_state(self) -> bool:
        return bool(self._windows)

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
        # Longer than our usual functions on purpose: this runs once per event per window
        # node, and inlining the window lookup and the Welford update keeps it at ~1.8 us
        # an event for three fields (features needing more take WindowOperator._add).
        t = event.time
        k = _floor(t / self.size)
        if k == self._cur_k:
            w = self._cur_w
        else:
            w = self._windows.get(k)
            if w is None:
                end = (k + 1) * self.size
                if end <= self._done:
                    self._late += 1
                    return (self._late_event(event, k, end),) if self._emit_late else ()
                w = self._new_window(event.key)
                self._windows[k] = w
                if end < self._first_end:
                    self._first_end = end
            self._cur_k = k
            self._cur_w = w
        if self._fast:
            w[1] += 1
            if event.flags & IMPUTED:
                w[2] |= IMPUTED
            get = event.fields.get
            for name, a in zip(self._names, w[ACCS], strict=True):
                v = get(name)
                if v is None or v != v:  # missing or NaN
                    continue
                # add_values' update, with the accumulator read at once (fewer subscripts).
                n, mean, m2, lo, hi = a
                n += 1
                a[0] = n
                d = v - mean
                mean += d / n
                a[1] = mean
                a[2] = m2 + d * (v - mean)
                if v < lo:
                    a[3] = v
                if v > hi:
                    a[4] = v
        elif self._fast_discover:
            w[1] += 1
            if event.flags & IMPUTED:
                w[2] |= IMPUTED
            self._add_discovered(w[ACCS], event.fields, t)
        else:
            self._add(w, event)
        if t > self._max_time:
            self._max_time = t
            watermark = t - self.lateness
            if watermark > self._done:
                self._done = watermark
                if watermark >= self._first_end:
                    return self._close(watermark)
        return ()

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if now > self._done:
            self._done = now
            if now >= self._first_end:
                return self._close(now)
        return ()

    # -- emission ----------------------------------------------------------------------------

    def _close(self, horizon: float) -> tuple[Event, ...]:
        size = self.size
        due = sorted(k for k in self._windows if (k + 1) * size <= horizon)
        out = tuple(self._emit(self._windows.pop(k), k, (k + 1) * size) for k in due)
        self._first_end = (min(self._windows) + 1) * size if self._windows else _INF
        if self._cur_k is not None and self._cur_k not in self._windows:
            self._cur_k = None
            self._cur_w = None
        return out

    # -- contract ----------------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        return {"late": self._late, "open_windows": len(self._windows)}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"size": "10s"}
        yield {"size": 7, "fields": ["x", "y"], "features": ["count", "mean", "max"]}
        yield {
            "size": "5s",
            "fields": ["z", "y", "label"],
            "features": ["count", "duration", "var", "ptp", "rms", "q25", "q95", "slope", "skew"],
            "lateness": "3s",
            "on_late": "emit",
        }
