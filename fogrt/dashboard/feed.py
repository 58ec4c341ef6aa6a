"""The live anomaly feed: events with ``is_anomaly: true`` that reach a sink, newest first.

It is an engine tap (``Engine.taps``): it sees each micro-batch a sink receives, after
``where:``. Only sinks whose input carries an ``is_anomaly`` field are scanned, so a sink of
raw readings costs nothing. The buffer is bounded; an event that reaches several sinks is
shown once.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fogrt.event import Event
from fogrt.topology.compile import CompiledTopology

MAX_ANOMALIES = 500
"""Anomalies kept for the feed (the oldest are dropped)."""

MAX_FIELDS = 16
"""Fields shown per anomaly; string values are cut to 64 characters."""


@dataclass(slots=True)
class Anomaly:
    id: int
    """Increasing; clients ask for what is newer than the last id they saw."""
    event: Event
    sink: str
    source: str
    """The node(s) feeding the sink, i.e. what flagged the event."""

    def as_json(self) -> dict[str, Any]:
        e = self.event
        fields: dict[str, Any] = {}
        for name, value in itertools.islice(e.fields.items(), MAX_FIELDS + 2):
            if name in ("is_anomaly", "score") or len(fields) >= MAX_FIELDS:
                continue
            fields[name] = value[:64] if isinstance(value, str) else value
        score = e.fields.get("score")
        return {
            "id": self.id,
            "device": e.key,
            "seq": e.seq,
            "time": e.time,
            "arrival": e.arrival or None,
            "sink": self.sink,
            "from": self.source,
            "score": score if isinstance(score, int | float) else None,
            "fields": fields,
        }


class AnomalyFeed:
    """A bounded buffer of anomalies, filled by :meth:`tap`."""

    def __init__(self, topology: CompiledTopology, maxlen: int = MAX_ANOMALIES) -> None:
        self._sources = {
            n.id: ",".join(n.inputs) for n in topology.by_role("sink") if "is_anomaly" in n.schema
        }
        self._buffer: deque[Anomaly] = deque(maxlen=maxlen)
        self._ids: set[int] = set()  # id(event) of buffered events: they are kept alive
        self.last_id = 0
        self.total = 0

    def tap(self, sink_id: str, batch: Sequence[Event]) -> None:
        source = self._sources.get(sink_id)
        if source is None:
            return
        buffer, ids = self._buffer, self._ids
        for event in batch:
            if event.fields.get("is_anomaly") is not True or id(event) in ids:
                continue
            if len(buffer) == buffer.maxlen:
                ids.discard(id(buffer[0].event))
            self.last_id += 1
            self.total += 1
            buffer.append(Anomaly(self.last_id, event, sink_id, source))
            ids.add(id(event))

    def newest(self, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Up to ``limit`` anomalies with an id above ``after``, newest first."""
        out: list[dict[str, Any]] = []
        for anomaly in reversed(self._buffer):
            if anomaly.id <= after or len(out) >= limit:
                break
            out.append(anomaly.as_json())
        return out
