"""Delayed labels: predictions held in bounded buffers until their label is known.

In the field, ground truth comes late: a technician confirms a fault an hour after the
readings, an activity is annotated after the fact. A supervised operator predicts each event
as it arrives and learns from it only when its label arrives, in one of two ways:

- **by delay** (:class:`DelayQueue`): the label travels with the features but may only be
  used ``delay`` seconds of event time later (what a replay of a labelled file needs to be
  honest about when the label would have been known);
- **by id** (:class:`JoinBuffer`): the label arrives in a later event that carries the same
  value in a join field (a reading id, or the reading's timestamp as a field).

Both are bounded: past ``capacity`` entries the oldest is dropped and counted as expired,
so a label source that went quiet cannot grow an operator's memory without end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

from fogrt.types import Timestamp, Value


@dataclass(slots=True)
class Held:
    """A prediction waiting for its label: the features, what was predicted, and when."""

    time: Timestamp
    x: dict[str, Any]
    prediction: Value
    confidence: float | None  # the model's probability of class 1 / the prediction itself
    label: Value = None


class DelayQueue:
    """Labelled events released ``delay`` seconds of event time after they happened."""

    def __init__(self, delay: float, capacity: int) -> None:
        self.delay = delay
        self.capacity = capacity
        self.expired = 0
        self._queue: deque[Held] = deque()
        self._watermark = float("-inf")

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, held: Held) -> None:
        self._queue.append(held)
        if len(self._queue) > self.capacity:
            self._queue.popleft()
            self.expired += 1

    def due(self, now: Timestamp) -> Iterator[Held]:
        """Pop, in arrival order, what is due once event time has reached ``now``."""
        if now > self._watermark:
            self._watermark = now
        queue, horizon = self._queue, self._watermark - self.delay
        while queue and queue[0].time <= horizon:
            yield queue.popleft()


class JoinBuffer:
    """Predictions by join value, oldest dropped past ``capacity``."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.expired = 0
        self.unmatched = 0
        self._held: dict[Hashable, Held] = {}

    def __len__(self) -> int:
        return len(self._held)

    def add(self, key: Hashable, held: Held) -> None:
        held_ = self._held
        held_.pop(key, None)  # a repeated id: the newest features win
        held_[key] = held
        if len(held_) > self.capacity:
            del held_[next(iter(held_))]
            self.expired += 1

    def take(self, key: Hashable) -> Held | None:
        held = self._held.pop(key, None)
        if held is None:
            self.unmatched += 1
        return held
