"""Deterministic streams, and an engine-like driver, for the operator tests.

The conformance stream is what ``Operator._unit_test_params`` promises: float fields ``x``,
``y``, ``z`` (``y`` is missing about one time in ten) and an int field ``label``, for keys
``a`` and ``b``, one event a second per key. About one event in twenty is a few seconds
late (its time is behind the previous event's), and about one in fifty has a spike on ``x``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from typing import Any

from fogrt.event import Event
from fogrt.operator import Operator
from fogrt.types import FieldType

START = 1_700_000_000.0
SCHEMA: dict[str, FieldType] = {"x": "float", "y": "float", "z": "float", "label": "int"}
KEYS = ("a", "b")


def conformance_stream(n: int = 300, seed: int = 20240501, start: float = START) -> list[Event]:
    """``n`` events alternating keys ``a`` and ``b``, deterministic for a given ``seed``."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        second, key = divmod(i, len(KEYS))
        t = start + second
        if rng.random() < 0.05:
            t -= rng.randint(1, 4)
        x = rng.gauss(0.0, 1.0)
        if rng.random() < 0.02:
            x += 6.0
        y = None if rng.random() < 0.1 else rng.gauss(5.0, 2.0)
        z = rng.uniform(-3.0, 3.0)
        label = int(rng.random() < 0.2)
        events.append(Event(KEYS[key], second, t, {"x": x, "y": y, "z": z, "label": label}))
    return events


def as_tuple(event: Event) -> tuple[Any, ...]:
    """What two runs must agree on: key, seq, time, fields (in order) and flags."""
    return (event.key, event.seq, event.time, list(event.fields.items()), event.flags)


class Driver:
    """Feeds events like the engine does: one operator instance per key, periodic ticks.

    Every 25th second (seen on key ``b``), every key is ticked with a watermark five
    seconds behind that event; ``finish()`` ticks every key with ``math.inf``. The tick
    schedule depends only on the events, so two drivers fed the same events agree.
    """

    def __init__(self, proto: Operator, ops: dict[str, Operator] | None = None) -> None:
        self.proto = proto
        self.ops: dict[str, Operator] = {} if ops is None else ops
        self.out: list[Event] = []

    def instance(self, key: str) -> Operator:
        op = self.ops.get(key)
        if op is None:
            op = self.ops[key] = self.proto.clone()
            op.bind(dict(SCHEMA))  # as the engine does with the compiled input
        return op

    def feed(self, events: Iterable[Event]) -> list[Event]:
        start = len(self.out)
        for event in events:
            result = self.instance(event.key).process(event)
            assert isinstance(result, tuple | list), f"process returned {type(result).__name__}"
            self.out.extend(result)
            if event.key == "b" and event.seq % 25 == 0:
                self.tick(event.time - 5.0)
        return self.out[start:]

    def tick(self, now: float) -> list[Event]:
        start = len(self.out)
        for key in sorted(self.ops):
            result = self.ops[key].on_tick(now)
            assert isinstance(result, tuple | list), f"on_tick returned {type(result).__name__}"
            self.out.extend(result)
        return self.out[start:]

    def finish(self) -> list[Event]:
        return self.tick(math.inf)

    def snapshot(self) -> dict[str, bytes]:
        return {key: op.snapshot() for key, op in self.ops.items()}

    @classmethod
    def restored(cls, proto: Operator, blobs: dict[str, bytes]) -> Driver:
        ops = {}
        for key, blob in blobs.items():
            op = proto.clone()
            op.restore(blob)
            ops[key] = op
        return cls(proto, ops)
