"""The embedded engine: keyed instances, filters, failures, timers, backpressure, sinks."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from fogrt.engine.dataflow import Dataflow
from fogrt.engine.runner import Engine
from fogrt.errors import SkipRecord
from fogrt.event import Event
from fogrt.operator import Operator
from fogrt.registry import OPERATORS, SINKS
from fogrt.sinks import Sink
from fogrt.topology import compile_topology


class Boom(Operator):
    """Fails on x > 100, skips x < 0 on purpose, counts what it passes."""

    kind = "test.boom"

    def __init__(self) -> None:
        self.passed = 0

    def process(self, event: Event) -> Iterable[Event]:
        x = event.fields["x"]
        assert isinstance(x, float)
        if x > 100:
            raise ValueError("x is far too large")
        if x < 0:
            raise SkipRecord
        self.passed += 1
        return (event,)


class Collect(Sink):
    """Keeps what it receives; ``gate`` (when set) makes writes wait for the test."""

    kind = "sinks.collect"
    received: list[list[Event]] = []
    gate: asyncio.Event | None = None

    def __init__(self) -> None:
        pass

    async def write(self, events: Sequence[Event]) -> None:
        if Collect.gate is not None:
            await Collect.gate.wait()
        Collect.received.append(list(events))


@pytest.fixture(autouse=True)
def test_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPERATORS._builtins, "test.boom", f"{__name__}:Boom")
    monkeypatch.setitem(SINKS._builtins, "sinks.collect", f"{__name__}:Collect")
    Collect.received = []
    Collect.gate = None


def topo(operators: str, sinks: str = "- {id: out, use: collect, from: last}") -> Any:
    text = textwrap.dedent("""\
        apiVersion: fogrt/v1
        kind: Topology
        metadata: {name: t}
        sources:
          s: {fields: {x: float, y: float, kind: str}}
        operators:
        """)
    text += textwrap.indent(textwrap.dedent(operators).rstrip() + "\n", "  ")
    text += "sinks:\n" + textwrap.indent(textwrap.dedent(sinks).rstrip() + "\n", "  ")
    return compile_topology(text, "t.yaml")


def ev(key: str, seq: int, t: float, x: float, y: float = 0.0, kind: str = "a") -> Event:
    return Event(key, seq, float(t), {"x": float(x), "y": float(y), "kind": kind})


def test_one_instance_per_device_created_lazily() -> None:
    flow = Dataflow(topo("- {id: last, use: test.boom, from: s}"))
    assert flow.instances("last") == {}
    flow.push("s", [ev("a", 0, 0, 1), ev("b", 0, 0, 1), ev("a", 1, 1, 1)])
    instances = flow.instances("last")
    assert sorted(instances) == ["a", "b"]
    assert [instances["a"].passed, instances["b"].passed] == [2, 1]  # type: ignore[attr-defined]


def test_global_and_field_keys() -> None:
    flow = Dataflow(
        topo("""\
        - {id: shared, use: test.boom, from: s, key: global}
        - {id: last, use: test.boom, from: shared, key: kind}
        """)
    )
    flow.push(
        "s", [ev("a", 0, 0, 1, kind="p"), ev("b", 0, 0, 1, kind="q"), ev("c", 0, 0, 1, kind="p")]
    )
    assert list(flow.instances("shared")) == ["*"]
    assert sorted(flow.instances("last")) == ["p", "q"]


def test_where_filters_and_counts() -> None:
    flow = Dataflow(topo("- {id: last, use: test.boom, from: s, where: 'x > 1 and kind == \"a\"'}"))
    flow.push("s", [ev("a", 0, 0, 0.5), ev("a", 1, 1, 2), ev("a", 2, 2, 3, kind="b")])
    st = flow.stats["last"]
    assert (st.filtered, st.events_in, st.events_out) == (2, 1, 1)
    assert [e.seq for e in flow.take_sink_batches()["out"]] == [1]


def test_failing_event_is_counted_logged_and_the_rest_flow_on() -> None:
    flow = Dataflow(topo("- {id: last, use: test.boom, from: s}"))
    with capture_logs() as logs:
        flow.push("s", [ev("a", 0, 0, 1), ev("a", 1, 1, 500), ev("a", 2, 2, -1), ev("a", 3, 3, 2)])
    st = flow.stats["last"]
    assert (st.events_in, st.errors, st.skipped, st.events_out) == (4, 1, 1, 2)
    assert [e.seq for e in flow.take_sink_batches()["out"]] == [0, 3]
    failed = [entry for entry in logs if entry["event"] == "operator_failed"]
    assert failed == [
        {
            "event": "operator_failed",
            "log_level": "warning",
            "node": "last",
            "device": "a",
            "seq": 1,
            "error": "ValueError: x is far too large",
            "errors": 1,
        }
    ]


def test_fan_out_and_fan_in_keep_order() -> None:
    flow = Dataflow(
        topo("""\
        - {id: left, use: test.boom, from: s, where: "kind == 'l'"}
        - {id: right, use: test.boom, from: s, where: "kind == 'r'"}
        - {id: last, use: test.boom, from: [left, right]}
        """)
    )
    kinds = ["l", "r", "r", "l", "r"]
    flow.push("s", [ev("a", i, i, 1, kind=k) for i, k in enumerate(kinds)])
    assert [e.seq for e in flow.take_sink_batches()["out"]] == [0, 1, 2, 3, 4]


def test_end_of_stream_tick_closes_windows() -> None:
    flow = Dataflow(
        topo(
            "- {id: last, use: window.tumbling, from: s, with: {size: 10s, "
            "fields: [x], features: [count, mean]}}"
        )
    )
    flow.push("s", [ev("a", i, 100 + i, float(i)) for i in range(15)])
    closed = flow.take_sink_batches()["out"]
    assert [(e.time, e.fields["count"], e.fields["x_mean"]) for e in closed] == [(110, 10, 4.5)]
    flow.tick(float("inf"))
    closed = flow.take_sink_batches()["out"]
    assert [(e.time, e.fields["count"], e.fields["x_mean"]) for e in closed] == [(120, 5, 12.0)]


async def test_live_watermark_closes_windows_of_a_quiet_device() -> None:
    now = [1000.0]
    engine = Engine(
        topo(
            "- {id: last, use: window.tumbling, from: s, with: {size: 10s, fields: [x], "
            "features: [count]}}"
        ),
        tick_interval=0.01,
        idle_grace=2.0,
        clock=lambda: now[0],
    )
    await engine.start()
    await engine.submit("s", [ev("a", 0, 1000.0, 1.0), ev("a", 1, 1003.0, 1.0)])
    await asyncio.sleep(0.05)
    assert Collect.received == []  # the window [1000, 1010) is still open
    now[0] = 1015.0  # the device went quiet; 12 s of wall time passed since its last reading
    for _ in range(100):
        await asyncio.sleep(0.01)
        if Collect.received:
            break
    assert [[(e.time, e.fields["count"]) for e in b] for b in Collect.received] == [[(1010, 2)]]
    await engine.stop()


async def test_backpressure_blocks_producers_when_the_engine_is_behind() -> None:
    Collect.gate = asyncio.Event()
    engine = Engine(topo("- {id: last, use: test.boom, from: s}"), queue_size=1)
    await engine.start()
    await engine.submit("s", [ev("a", 0, 0, 1)])  # taken by the consumer, stuck in the sink
    await asyncio.sleep(0.01)
    await engine.submit("s", [ev("a", 1, 1, 1)])  # fills the queue
    blocked = asyncio.create_task(engine.submit("s", [ev("a", 2, 2, 1)]))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "a full queue must make the producer wait"
    Collect.gate.set()
    await asyncio.wait_for(blocked, 1)
    await engine.stop()
    assert [e.seq for batch in Collect.received for e in batch] == [0, 1, 2]


async def test_sink_failure_stops_the_engine_with_the_error(tmp_path: Path) -> None:
    engine = Engine(
        topo(
            "- {id: last, use: test.boom, from: s}",
            "- {id: out, use: jsonl, from: last, with: {path: x.jsonl}}",
        ),
        output_dir=tmp_path,
    )
    await engine.start()
    (tmp_path / "x.jsonl").unlink()
    engine.sinks["out"]._fh.close()  # type: ignore[attr-defined]
    await engine.submit("s", [ev("a", 0, 0, 1)])
    with capture_logs() as logs, pytest.raises(ValueError, match="closed file"):
        await engine.stop()
    assert logs[0]["event"] == "sink_failed" and logs[0]["sink"] == "out"


class Level(Operator):
    """Reports a count and a level, to check how instances are aggregated."""

    kind = "test.level"

    def __init__(self) -> None:
        self.n = 0

    def process(self, event: Event) -> Iterable[Event]:
        self.n += 1
        return ()

    def metrics(self) -> dict[str, float]:
        return {"events": self.n, "mae": 0.1 if self.n < 3 else 0.4}


def test_metrics_sum_counts_and_average_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(OPERATORS._builtins, "test.level", f"{__name__}:Level")
    flow = Dataflow(topo("- {id: last, use: test.level, from: s}"))
    flow.push("s", [ev("a", 0, 0, 1), ev("b", 0, 0, 1), ev("b", 1, 1, 1), ev("b", 2, 2, 1)])
    m = flow.metrics("last")
    assert m["events"] == 4
    assert m["mae"] == pytest.approx((1 * 0.1 + 3 * 0.4) / 4)
