"""The edge agent under CPython against a REAL fog node over loopback UDP.

The agent runs with ``HostHal``: real sockets and real CoAP timeouts, simulated sensors,
RTC memory, Wi-Fi and sleep (a deep sleep is a new ``Agent`` on the same HAL; a power loss
clears its RTC memory). The fog node is ``fogrt.node.FogNode`` in this process; the agent's
blocking loop runs in a worker thread while the node serves on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fogrt.ingest.wire import Control, split_event_seq
from fogrt.node import FogNode, NodeConfig
from fogrt.topology import compile_topology
from tests.edge.support import agent_config, agent_on_path
from tests.nodes import TOPOLOGY

pytestmark = pytest.mark.integration

# The raw sink appends: a restarted node (restored from its checkpoint) adds to the file
# instead of starting it again, so the file shows everything acknowledged across restarts.
APPENDING = TOPOLOGY.replace("{path: raw.jsonl}", "{path: raw.jsonl, append: true}")
assert APPENDING != TOPOLOGY

agent_on_path()
from fogagent.agent import Agent  # noqa: E402
from fogagent.hosthal import HostHal  # noqa: E402


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def start_node(tmp_path: Path, port: int = 0, **config: Any) -> FogNode:
    node = FogNode(
        compile_topology(APPENDING, "t.yaml"),
        NodeConfig(
            coap_host="127.0.0.1",
            coap_port=port,
            state_dir=tmp_path / "state",
            output_dir=tmp_path / "out",
            **config,
        ),
    )
    await node.start()
    return node


def sink(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out" / "raw.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


async def settle(node: FogNode, tmp_path: Path, count: int) -> list[dict[str, Any]]:
    """The sink once it holds ``count`` records (the engine writes after its micro-batch)."""
    assert await node.drain(10)
    for _ in range(200):
        rows = sink(tmp_path)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.02)
    return sink(tmp_path)


async def logged_seqs(tmp_path: Path) -> list[tuple[int, int]]:
    """(boot, seq) of every uplink in the node's ingest log."""
    from fogrt.ingest import record
    from fogrt.log import IngestLog

    ingest_log = IngestLog.open(tmp_path / "state" / "log")
    try:
        return [(r.boot, r.seq) for r in map(record.decode, (b for _, b in ingest_log.read(0)))]
    finally:
        await ingest_log.close()


def temps(rows: list[dict[str, Any]]) -> list[float]:
    return [r["temp"] for r in rows]


class Device:
    """A simulated board: every ``wake`` is a new Agent on the same HAL (a deep sleep)."""

    def __init__(self, cfg: dict[str, Any], readings: Callable[[Any], list[Any]]) -> None:
        self.cfg = cfg
        self.hal = HostHal(cfg, readings)
        self.agents: list[Any] = []

    def wake(self, n: int = 1) -> Any:
        for _ in range(n):
            agent = Agent(self.cfg, self.hal)
            self.agents.append(agent)
            self.hal.sleep(agent.wake())
        return self.agents[-1]

    async def wakes(self, n: int = 1) -> Any:
        return await asyncio.to_thread(self.wake, n)


def counting(start: float = 20.0) -> Callable[[Any], list[Any]]:
    """Reading k is ``start + k`` (temp) with humidity 40: every reading is distinct."""
    return lambda hal: [start + hal.samples, 40.0]


async def test_readings_arrive_and_are_acknowledged(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        dev = Device(agent_config(tmp_path / "flash", node.address[1]), counting())
        agent = await dev.wakes(5)
        rows = await settle(node, tmp_path, 5)
        assert temps(rows) == [20.0, 21.0, 22.0, 23.0, 24.0]
        assert all(r["device"] == "edge-1" and r["hum"] == 40.0 and r["door"] is None for r in rows)
        assert sum(a.acked for a in dev.agents) == 5
        # the topology's fixed policy (interval 30 s) came with the first ACK
        assert agent.st.control["v"] == 1 and agent.st.control["i"] == 30
        assert dev.hal.slept[-1] <= 30000
    finally:
        await node.stop()


async def test_a_control_set_on_the_fog_is_applied_on_the_next_cycle(tmp_path: Path) -> None:
    node = await start_node(tmp_path)
    try:
        values = iter([20.0, 20.0, 20.2, 20.4, 25.0, 25.3, 19.0])
        dev = Device(
            agent_config(tmp_path / "flash", node.address[1]), lambda h: [next(values), 40.0]
        )
        await dev.wakes(1)
        assert node.control_loop is not None  # the topology's policy.fixed decides...
        node.control_loop.external.add("edge-1")  # ...unless something else sets it
        version = node.controls.set(
            "edge-1", Control(interval=600, sample_period=5.0, tx="delta", epsilon=1.0)
        )
        agent = await dev.wakes(1)  # this uplink's ACK carries the new control
        ctl = agent.st.control
        assert (ctl["v"], ctl["tx"], ctl["e"], ctl["sp"], ctl["i"]) == (
            version,
            "delta",
            1.0,
            5.0,
            600,
        )
        assert dev.hal.slept[-1] <= 5000  # the new sample period, from this cycle on
        await dev.wakes(5)  # send-on-delta: 20.2, 20.4, 25.3 stay home
        rows = await settle(node, tmp_path, 4)
        assert temps(rows) == [20.0, 20.0, 25.0, 19.0]
    finally:
        await node.stop()


async def test_store_and_forward_delivers_every_reading_once_after_an_outage(
    tmp_path: Path,
) -> None:
    port = free_port()
    node = await start_node(tmp_path, port)
    cfg = agent_config(
        tmp_path / "flash",
        port,
        coap={"ack_timeout_ms": 100, "max_retransmit": 1},
        power={"backoff_base_s": 60},
    )
    dev = Device(cfg, counting())
    await dev.wakes(3)
    await node.stop()  # the fog node goes away: datagrams to its port go unanswered
    await dev.wakes(12)
    dev.hal.wifi_up = False  # and the Wi-Fi too, for a while
    await dev.wakes(6)
    dev.hal.wifi_up = True
    assert dev.agents[-1].st.fails > 0
    node = await start_node(tmp_path, port)  # same port, same state: it remembers the seqs
    try:
        for _ in range(60):  # wake until the backlog is through (the back-off has grown)
            agent = await dev.wakes(1)
            if not agent.st.queue and not agent.st.batch and not agent.outbox.pending():
                break
        total = dev.hal.samples
        rows = await settle(node, tmp_path, total)
        assert temps(rows) == [20.0 + k for k in range(total)]  # each exactly once, in order
    finally:
        await node.stop()
    # The durable ingest log agrees: every uplink once, though many were sent more than once.
    logged = await logged_seqs(tmp_path)
    assert len(logged) == len(set(logged)) and len(dev.hal.sent) > len(logged)


async def test_sequence_survives_deep_sleep_and_a_cold_boot_takes_a_new_epoch(
    tmp_path: Path,
) -> None:
    node = await start_node(tmp_path)
    try:
        dev = Device(agent_config(tmp_path / "flash", node.address[1]), counting())
        await dev.wakes(3)
        dev.hal.rtc = b""  # power loss: RTC memory gone, flash (the boot epoch) kept
        await dev.wakes(2)
        assert [a.cold for a in dev.agents] == [True, False, False, True, False]
        rows = await settle(node, tmp_path, 5)
        assert [split_event_seq(r["seq"])[:2] for r in rows] == [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (1, 1),
        ]
    finally:
        await node.stop()


async def test_a_node_that_requires_registration_gets_one(tmp_path: Path) -> None:
    """``POST /reg`` goes through the node's relay to its full CoAP server."""
    from fogrt.ingest.registry import DeviceRegistry

    node = await start_node(tmp_path, registry=DeviceRegistry("registered"))
    try:
        cfg = agent_config(tmp_path / "flash", node.address[1], register=True)
        dev = Device(cfg, counting())
        agent = await dev.wakes(2)
        assert not agent.st.need_reg and agent.st.control["i"] == 30  # the full record
        assert temps(await settle(node, tmp_path, 2)) == [20.0, 21.0]
        assert node.service is not None and "edge-1" in node.service.registry.devices
    finally:
        await node.stop()


async def test_a_board_whose_clock_is_set_sends_it_and_each_reading_keeps_its_time(
    tmp_path: Path,
) -> None:
    node = await start_node(tmp_path)
    try:
        taken: list[int] = []

        def readings(hal: Any) -> list[Any]:
            taken.append(hal.now_ms())
            return [20.0 + hal.samples, 40.0]

        dev = Device(agent_config(tmp_path / "flash", node.address[1]), readings)
        dev.hal.epoch_offset = 1_700_000_000  # as after NTP at cold boot
        dev.hal.clock = 1_234  # not on a whole second
        # The simulated clock alone (HostHal adds real elapsed time, which can pass a
        # millisecond between this test's reading of the clock and the agent's).
        dev.hal.now_ms = lambda: dev.hal.clock  # type: ignore[method-assign]
        await dev.wakes(3)
        rows = await settle(node, tmp_path, 3)
        assert [r["time"] for r in rows] == [1_700_000_000 + t / 1000 for t in taken]
    finally:
        await node.stop()
