"""Window operators: turn a stream of readings into a stream of per-window summaries."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, Event
from fogrt.operator import Operator, numeric_fields, require_fields
from fogrt.types import Duration, Fields, FieldType, Key, Schema, Timestamp

Feature = Literal["count", "mean", "std", "min", "max"]

_INF = math.inf
_floor = math.floor
_REAL = (int, float)

# One open window: [key, number of events, OR of IMPUTED flags, accumulators]. Accumulators
# are, per field, [n, mean, M2, min, max] (Welford); a list aligned with ``fields`` when they
# are given, a dict name -> accumulator when they are discovered from the events.
_Acc = list[float]
_Window = list[Any]


class Tumbling(Operator):
    """Event-time tumbling windows: count, mean, std, min and max of numeric fields.

    Windows are aligned on multiples of ``size`` since the epoch: ``[k*size, (k+1)*size)``.
    Each key has its own operator instance (the engine partitions by key), so windows are
    per device.

    The watermark is the largest event time seen minus ``lateness``. When an event moves
    it, every open window whose end is at or before the watermark is emitted, oldest first.
    ``on_tick(now)`` closes the windows whose end is at or before ``now`` (the engine's
    watermark for the key; ``math.inf`` at the end of a stream). An event whose window has
    already been closed (its end is at or before the watermark or a tick) is late: it is
    dropped and counted in ``metrics()["late"]``.

    Parameters
    ----------
    size
        Window length: ``10s``, ``500ms``, ``5m``... Must be positive.
    fields
        The numeric fields to summarise. Default: every numeric field, discovered from the
        events (a field appears in the output from the first window in which it had a value
        on).
    features
        Any of ``count`` (events in the window, ``int``), ``mean``, ``std``, ``min``,
        ``max``. ``std`` is the population standard deviation (``ddof=0``, as
        ``numpy.std``; ``0.0`` for a single value).
    lateness
        How far behind the newest event time an event may still be and count.

    Output: one event per window with the input's key, ``seq`` = the window index ``k``,
    ``time`` = the window end, the ``IMPUTED`` flag if any event in it was imputed, and
    fields ``count`` and ``<field>_<feature>`` in the order of ``fields`` and ``features``.
    ``None``/NaN values are skipped; a field with no value in a window gives ``None``.

    Examples
    --------
    In a topology::

        - id: per-minute
          use: window.tumbling
          with: {size: 1m, fields: [temp], features: [count, mean, max], lateness: 5s}

    >>> from fogrt.event import Event
    >>> op = Tumbling(size=10.0, fields=["temp"], features=["count", "mean", "max"])
    >>> op.process(Event("pump-1", 1, 100.0, {"temp": 20.0}))
    ()
    >>> op.process(Event("pump-1", 2, 104.0, {"temp": 22.0}))
    ()
    >>> out = op.process(Event("pump-1", 3, 111.0, {"temp": 30.0}))
    >>> out[0].seq, out[0].time, out[0].fields
    (10, 110.0, {'count': 2, 'temp_mean': 21.0, 'temp_max': 22.0})
    >>> [(e.time, e.fields) for e in op.on_tick(math.inf)]
    [(120.0, {'count': 1, 'temp_mean': 30.0, 'temp_max': 30.0})]
    """

    kind = "window.tumbling"

    def __init__(
        self,
        size: Duration,
        fields: list[str] | None = None,
        features: Sequence[Feature] = ("mean", "std", "min", "max"),
        lateness: Duration = 0.0,
    ) -> None:
        self.size = size
        self.fields = fields
        self.features = features
        self.lateness = lateness
        if not (size > 0 and math.isfinite(size)):
            raise ParamError("size", f"must be a positive duration, got {size!r}")
        if not (lateness >= 0 and math.isfinite(lateness)):
            raise ParamError("lateness", f"must be zero or a positive duration, got {lateness!r}")
        if isinstance(features, str) or not features:
            raise ParamError("features", "give a list of count, mean, std, min, max")
        for i, feature in enumerate(features):
            if feature not in ("count", "mean", "std", "min", "max"):
                raise ParamError(("features", i), f"unknown feature {feature!r}")
            if feature in features[:i]:
                raise ParamError(("features", i), f"{feature!r} is listed twice")
        if fields is not None:
            if not fields:
                raise ParamError("fields", "empty; leave it out to use every numeric field")
            for i, name in enumerate(fields):
                if name in fields[:i]:
                    raise ParamError(("fields", i), f"{name!r} is listed twice")
        self._count = "count" in features
        self._stats = tuple(f for f in features if f != "count")
        self._discover = fields is None  # until bind() says which fields come in
        self._names: list[str] = [] if fields is None else list(fields)
        self._out_names: list[tuple[tuple[str, str], ...]] = [
            self._outputs(name) for name in self._names
        ]
        self._windows: dict[int, _Window] = {}
        self._cur_k: int | None = None
        self._cur_w: Any = None  # the window of _cur_k
        self._max_time = -_INF
        self._done = -_INF  # windows ending at or before this are closed
        self._first_end = _INF  # end of the oldest open window
        self._late = 0

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, summarise every numeric field of the compiled input."""
        if self._discover and not self._windows and not self._names:
            self._discover = False
            self._names = numeric_fields(upstream)
            self._out_names = [self._outputs(name) for name in self._names]

    def _outputs(self, name: str) -> tuple[tuple[str, str], ...]:
        return tuple((feature, f"{name}_{feature}") for feature in self._stats)

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
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
                    return ()
                accs: Any = (
                    {} if self._discover else [[0, 0.0, 0.0, _INF, -_INF] for _ in self._names]
                )
                w = [event.key, 0, 0, accs]
                self._windows[k] = w
                if end < self._first_end:
                    self._first_end = end
            self._cur_k = k
            self._cur_w = w
        w[1] += 1
        if event.flags & IMPUTED:
            w[2] |= IMPUTED
        values = event.fields
        if self._discover:
            self._add_discovered(w[3], values)
        else:
            get = values.get
            for name, a in zip(self._names, w[3], strict=True):
                v = get(name)
                if v is None or v != v:  # missing or NaN
                    continue
                n = a[0] + 1
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
        if t > self._max_time:
            self._max_time = t
            watermark = t - self.lateness
            if watermark > self._done:
                self._done = watermark
                if watermark >= self._first_end:
                    return self._close(watermark)
        return ()

    def _add_discovered(self, accs: dict[str, _Acc], values: Fields) -> None:
        for name, v in values.items():
            if not isinstance(v, _REAL) or v.__class__ is bool or v != v:
                continue
            a = accs.get(name)
            if a is None:
                if name not in self._names:  # first value of this field ever
                    self._names.append(name)
                    self._out_names.append(self._outputs(name))
                a = accs[name] = [0, 0.0, 0.0, _INF, -_INF]
            n = a[0] + 1
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
        out = tuple(self._emit(k, self._windows.pop(k)) for k in due)
        self._first_end = (min(self._windows) + 1) * size if self._windows else _INF
        if self._cur_k is not None and self._cur_k not in self._windows:
            self._cur_k = None
            self._cur_w = None
        return out

    def _emit(self, k: int, w: _Window) -> Event:
        key: Key = w[0]
        fields: Fields = {}
        if self._count:
            fields["count"] = w[1]
        accs = w[3]
        discovered = self._discover
        for i, name in enumerate(self._names):
            a = accs.get(name) if discovered else accs[i]
            n = 0 if a is None else a[0]
            for feature, out_name in self._out_names[i]:
                if n == 0:
                    fields[out_name] = None
                elif feature == "mean":
                    fields[out_name] = a[1]
                elif feature == "std":
                    fields[out_name] = math.sqrt(a[2] / n) if n > 1 else 0.0
                elif feature == "min":
                    fields[out_name] = float(a[3])
                else:
                    fields[out_name] = float(a[4])
        return Event(key, k, (k + 1) * self.size, fields, 0.0, w[2])

    # -- contract ----------------------------------------------------------------------------

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        if self.fields is not None:
            require_fields(upstream, self.fields, "fields", numeric=True)
            names = self.fields
        else:
            names = numeric_fields(upstream)
            if not names and self._stats:
                raise FieldError("fields", "the input has no numeric fields to summarise")
        out: dict[str, FieldType] = {}
        if self._count:
            out["count"] = "int"
        for name in names:
            for _, out_name in self._outputs(name):
                out[out_name] = "float"
        return out

    def metrics(self) -> dict[str, float]:
        return {"late": self._late, "open_windows": len(self._windows)}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"size": "10s"}
        yield {"size": 7, "fields": ["x", "y"], "features": ["count", "mean", "max"]}
        yield {"size": "5s", "fields": ["z", "y", "label"], "lateness": "3s"}
