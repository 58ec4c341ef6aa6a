"""`fogrt run`'s engine process: it lives and dies with the node, and losing it loses nothing.

Real processes: `fogrt run` (which starts `python -m fogrt.engine.process`), real CoAP over
UDP, SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fogrt.ingest import coap
from fogrt.ingest.wire import encode_uplink
from tests.nodes import TOPOLOGY, NodeProcess

pytestmark = [pytest.mark.integration]


def engine_pid(node: NodeProcess) -> int:
    m = re.search(r"engine : process (\d+)", node.stderr)
    assert m, "the banner names the engine process:\n" + node.stderr[-2000:]
    return int(m.group(1))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not alive either.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def wait_until(condition: object, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def send(port: int, device: str, seqs: range) -> list[int]:
    """Single-reading CON uplinks, one at a time; the seqs acknowledged with 2.04."""
    acked = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        for seq in seqs:
            body = encode_uplink(device, 0, seq, [(0.0, {"temp": float(seq), "hum": 1.0})])
            path = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"room")]
            sock.sendto(coap.build(coap.CON, coap.POST, seq, b"", path, body), ("127.0.0.1", port))
            try:
                reply = coap.parse(sock.recv(2048))
            except TimeoutError:
                break
            if reply.code != coap.CHANGED:
                break
            acked.append(seq)
    return acked


def temps(out: Path, device: str) -> list[float]:
    rows = [json.loads(x) for x in (out / "raw.jsonl").read_text().splitlines()]
    return sorted(r["temp"] for r in rows if r["device"] == device)


def stops_with_exit_1(node: NodeProcess) -> str:
    """Wait for the node to stop on its own; its log, which says the engine failed."""
    assert wait_until(lambda: node.proc.poll() is not None), "the node kept running"
    assert node.proc.returncode == 1
    log = node.stderr
    assert "fogrt run: the engine failed" in log
    return log


@pytest.fixture
def topology(tmp_path: Path) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(TOPOLOGY)
    return path


def test_killing_the_node_ends_its_engine_process(tmp_path: Path, topology: Path) -> None:
    node = NodeProcess(topology, tmp_path / "state", tmp_path / "out")
    try:
        pid = engine_pid(node)
        assert alive(pid)
        assert send(node.port, "d", range(5)) == list(range(5))
    finally:
        node.kill()  # SIGKILL: the node cannot tell its engine process anything
    assert wait_until(lambda: not alive(pid)), "the engine process outlived its node"


def test_a_dead_engine_process_stops_the_node_and_a_restart_loses_nothing(
    tmp_path: Path, topology: Path
) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    node = NodeProcess(topology, state, out)
    try:
        acked = send(node.port, "d", range(20))
        assert acked == list(range(20))
        os.kill(engine_pid(node), 9)
        log = stops_with_exit_1(node)
    finally:
        node.kill()
    assert "engine_process_failed" in log
    # Nothing acknowledged is lost: a restart replays the log into a new engine process.
    node = NodeProcess(topology, state, out)
    try:
        assert send(node.port, "d", range(20, 25)) == list(range(20, 25))
    finally:
        assert node.terminate() == 0
    # Sinks are at-least-once across a crash (records after the last checkpoint are
    # written again on replay); the state is exactly-once (tests/test_recovery.py).
    assert set(temps(out, "d")) == {float(s) for s in range(25)}


def test_sigterm_to_node_and_engine_alike_still_drains_and_checkpoints(
    tmp_path: Path, topology: Path
) -> None:
    """A service manager stopping the node's cgroup (or Ctrl-C, to the process group)
    signals both processes: the engine process waits for the node's orders."""
    node = NodeProcess(topology, tmp_path / "state", tmp_path / "out")
    try:
        assert send(node.port, "d", range(10)) == list(range(10))
        engine = engine_pid(node)
        os.kill(engine, signal.SIGTERM)
        os.kill(engine, signal.SIGINT)
        time.sleep(0.2)
        assert alive(engine)
    finally:
        code = node.terminate()
    assert code == 0
    assert '"drained": true' in node.stderr and "checkpoint_written" in node.stderr
    assert temps(tmp_path / "out", "d") == [float(s) for s in range(10)]
    assert wait_until(lambda: not alive(engine))


ENGINES = {
    "process": ("--engine", "process"),
    "inline": ("--engine", "inline"),
    "partitions": ("--engines", "2"),  # the node's process writes the partitions' sinks
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_sink_that_cannot_open_is_a_clear_error(
    tmp_path: Path, topology: Path, engine: str
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    cmd = [sys.executable, "-m", "fogrt.cli", "run", str(topology), "--coap", "127.0.0.1:0"]
    cmd += ["--state", str(tmp_path / "state"), "--output", str(blocker), *ENGINES[engine]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "sink 'raw': cannot open" in last, done.stderr
    assert "Traceback" not in done.stderr


def test_retry_after_is_the_max_age_of_a_503(tmp_path: Path, topology: Path) -> None:
    node = NodeProcess(
        topology, tmp_path / "state", tmp_path / "out", "--max-devices", "1", "--retry-after", "42"
    )
    try:
        assert send(node.port, "first", range(1)) == [0]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            body = encode_uplink("second", 0, 0, [(0.0, {"temp": 1.0})])
            path = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"room")]
            sock.sendto(
                coap.build(coap.CON, coap.POST, 7, b"", path, body), ("127.0.0.1", node.port)
            )
            reply = coap.parse(sock.recv(2048))
    finally:
        assert node.terminate() == 0
    assert reply.code == 0xA3  # 5.03: the device table is full
    assert reply.option_values(coap.MAX_AGE) == [bytes([42])]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_a_failing_sink_stops_the_node_with_exit_1(tmp_path: Path, engine: str) -> None:
    """/dev/full opens, then every write fails (ENOSPC): the node must not stall with an
    engine that no longer takes anything in."""
    topology = tmp_path / "t.yaml"
    topology.write_text(TOPOLOGY.replace("path: raw.jsonl", "path: /dev/full"))
    node = NodeProcess(topology, tmp_path / "state", tmp_path / "out", *ENGINES[engine])
    try:
        assert send(node.port, "d", range(1)) == [0]  # durable: acknowledged
        log = stops_with_exit_1(node)
    finally:
        node.kill()
    assert "sink_failed" in log and "No space left on device" in log
