"""`fogrt run --engines N`: the engine in N processes, each over the devices hashing to it.

Real engine processes, real CoAP over UDP, real checkpoints; SIGKILL for the failure case.
(Checkpoints taken while readings flow, under kill -9 and with N changing at every restart,
are in tests/test_recovery.py; the dashboard and /metrics over partitions in
tests/test_dashboard.py and tests/test_metrics.py.)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fogrt.engine.partitions import EnginePartitions, partition_of, unpartitionable
from fogrt.ingest import coap
from fogrt.ingest.wire import encode_uplink
from fogrt.node import FogNode, NodeConfig
from fogrt.topology import compile_topology
from tests.nodes import TOPOLOGY, NodeProcess
from tests.test_engine_process import alive, send, stops_with_exit_1, temps, wait_until

pytestmark = [pytest.mark.integration]

WINDOWS = textwrap.dedent("""\
    apiVersion: fogrt/v1
    kind: Topology
    metadata: {name: partitions}
    sources:
      room: {coap: /r/room, fields: {temp: float}}
    operators:
      - {id: win, use: window.tumbling, from: room, with: {size: 10s, features: [count, mean]}}
    sinks:
      - {id: feats, use: jsonl, from: win, with: {path: feats.jsonl}}
    """)
DEVICES = [f"dev-{i}" for i in range(8)]
T0 = 1_700_000_000.0


def uplink(port: int, device: str, seq: int, at: float, temp: float) -> int:
    """One CON uplink with the device's clock at ``at``; the response code."""
    body = encode_uplink(device, 0, seq, [(0.0, {"temp": temp})], clock=at)
    path = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"room")]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(coap.build(coap.CON, coap.POST, seq, b"", path, body), ("127.0.0.1", port))
        return coap.parse(sock.recv(2048)).code


async def serve(tmp_path: Path, engines: int, readings: list[tuple[int, float]]) -> FogNode:
    """Start a node with ``engines`` engine processes, send every device ``readings``
    (seq, seconds after T0), wait until applied, stop (drain + checkpoint)."""
    cfg = NodeConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        fsync=False,
        engine_process=True,
        engines=engines,
        tick_interval=None,  # windows close on event time alone: no wall-clock watermarks
    )
    node = FogNode(compile_topology(WINDOWS, "w.yaml"), cfg)
    await node.start()
    try:
        assert len(node.engine_pids) == engines
        port = node.address[1]
        for device in DEVICES:
            k = DEVICES.index(device)
            for seq, dt in readings:
                code = await asyncio.to_thread(uplink, port, device, seq, T0 + dt, k * 100 + dt)
                assert code == coap.CHANGED
        assert await node.drain()
    finally:
        await node.stop()
    return node


def windows(out: Path) -> dict[tuple[str, float], tuple[int, float]]:
    rows = [json.loads(x) for x in (out / "feats.jsonl").read_text().splitlines()]
    return {(r["device"], r["time"]): (r["count"], r["temp_mean"]) for r in rows}


def test_each_devices_state_survives_restarts_with_another_number_of_engines(
    tmp_path: Path,
) -> None:
    assert {partition_of(d, 2) for d in DEVICES} == {0, 1}
    assert {partition_of(d, 3) for d in DEVICES} == {0, 1, 2}
    # Two engines take the first half of every device's first window; it stays open in the
    # checkpoint the stop takes...
    node = asyncio.run(serve(tmp_path, 2, [(s, float(s)) for s in range(5)]))
    assert windows(tmp_path / "out") == {}
    assert node.checkpoints.last_offset == 5 * len(DEVICES)
    # ...three engines restore it split three ways, add the second half and close it...
    node = asyncio.run(serve(tmp_path, 3, [(s, float(s)) for s in range(5, 10)] + [(10, 12.0)]))
    first = windows(tmp_path / "out")
    assert first == {(d, T0 + 10): (10, DEVICES.index(d) * 100 + 4.5) for d in DEVICES}
    # ...and one engine restores all of them: the reading at +12 s is still in its window.
    asyncio.run(serve(tmp_path, 1, [(11, 25.0)]))
    both = windows(tmp_path / "out")
    assert {k: v for k, v in both.items() if k[1] == T0 + 20} == {
        (d, T0 + 20): (1, DEVICES.index(d) * 100 + 12.0) for d in DEVICES
    }


def test_statuses_add_up_and_sinks_are_written_once_by_the_node(tmp_path: Path) -> None:
    node = asyncio.run(serve(tmp_path, 2, [(s, float(s)) for s in range(11)]))
    assert isinstance(node._process, EnginePartitions)
    parts = node._process.parts
    per_part = [p.engine.flow.stats["win"].events_in for p in parts]
    assert all(n > 0 for n in per_part) and sum(per_part) == 11 * len(DEVICES)
    merged = node.engine.flow.stats  # type: ignore[union-attr]
    assert merged["win"].events_in == 11 * len(DEVICES)
    assert merged["room"].events_out == 11 * len(DEVICES)
    assert node.engine.sink_writes == {"feats": len(DEVICES)}  # type: ignore[union-attr]
    lines = (tmp_path / "out" / "feats.jsonl").read_text().splitlines()
    assert len(lines) == len(DEVICES)  # one file, one row per device's closed window


def test_a_topology_with_state_across_devices_is_refused(tmp_path: Path) -> None:
    text = WINDOWS.replace("features: [count, mean]}}", "features: [count, mean]}, key: global}")
    topology = compile_topology(text, "g.yaml")
    why = unpartitionable(topology)
    assert why is not None and "'win'" in why and "key: global" in why
    with pytest.raises(ValueError, match="keyed by device"):
        FogNode(topology, NodeConfig(engine_process=True, engines=2))
    path = tmp_path / "g.yaml"
    path.write_text(text)
    cmd = [sys.executable, "-m", "fogrt.cli", "run", str(path), "--engines", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "--engines 2: operator 'win' has key: global" in done.stderr
    assert not (tmp_path / ".fogrt").exists()  # refused before anything started


def engine_pids(node: NodeProcess) -> list[int]:
    m = re.search(r"engine : (\d+) processes \(([\d, ]+)\)", node.stderr)
    assert m, "the banner names the engine processes:\n" + node.stderr[-2000:]
    pids = [int(p) for p in m.group(2).split(", ")]
    assert len(pids) == int(m.group(1))
    return pids


def test_a_dead_partition_stops_the_node_and_a_restart_loses_nothing(tmp_path: Path) -> None:
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY)
    state, out = tmp_path / "state", tmp_path / "out"
    node = NodeProcess(topology, state, out, "--engines", "2")
    try:
        pids = engine_pids(node)
        for device in ("a", "b", "c"):
            assert send(node.port, device, range(10)) == list(range(10))
        os.kill(pids[1], 9)
        log = stops_with_exit_1(node)
    finally:
        node.kill()
    assert "engine_process_failed" in log
    assert wait_until(lambda: not alive(pids[0])), "the other partition outlived the node"
    node = NodeProcess(topology, state, out, "--engines", "2")
    try:
        for device in ("a", "b", "c"):
            assert send(node.port, device, range(10, 12)) == [10, 11]
    finally:
        assert node.terminate() == 0
    for device in ("a", "b", "c"):  # at least once in the sink, every acknowledged reading
        assert set(temps(out, device)) == {float(s) for s in range(12)}
