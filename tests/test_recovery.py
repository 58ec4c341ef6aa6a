"""Fault injection with real processes: kill -9 of the fog node (and of Redis) mid-stream.

Twenty simulated devices send 20,000 readings over real CoAP; the node is SIGKILLed at
random moments five times and restarted each time; devices resend what was not
acknowledged. Afterwards every acknowledged reading must have been applied exactly once
(per-device count and sum in the final checkpoint), and the per-device anomaly models must
behave exactly like those of an uninterrupted run over the same readings.
"""

from __future__ import annotations

import asyncio
import os
import random
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from fogrt.engine.dataflow import Dataflow
from fogrt.event import Event
from fogrt.state.checkpoint import unpack
from fogrt.state.files import FileBackend
from fogrt.state.redis import RedisBackend
from fogrt.state.sealed import load_key
from fogrt.topology import compile_topology
from tests.fleet import Fleet, install_tally_plugin, reading_value
from tests.nodes import NodeProcess
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPOLOGY = textwrap.dedent("""\
    apiVersion: fogrt/v1
    kind: Topology
    metadata: {name: recovery}
    sources:
      s: {fields: {x: float, y: float}}
    operators:
      - {id: tally, use: test.tally, from: s}
      - id: detect
        use: learn.anomaly
        from: s
        with:
          model: [{MinMaxScaler: {}}, {HalfSpaceTrees: {n_trees: 3, height: 5, window_size: 50}}]
          warmup: 10
    sinks:
      - {id: out, use: jsonl, from: detect, where: "is_anomaly", with: {path: alerts.jsonl}}
    """)
DEVICES, UPLINKS, PER = 20, 100, 10  # 20,000 readings


class Harness:
    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.topo = tmp_path / "t.yaml"
        self.topo.write_text(TOPOLOGY)
        self.state = tmp_path / "state"
        self.out = tmp_path / "out"
        self.extra = extra
        plugins = install_tally_plugin(tmp_path / "plugins")
        self.env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
        self.node = self.start()

    def start(self) -> NodeProcess:
        return NodeProcess(
            self.topo, self.state, self.out, "--checkpoint-every", "0.3", *self.extra, env=self.env
        )

    async def checkpointed(self, timeout: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while "checkpoint_written" not in self.node.stderr:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("no checkpoint within 30 s:\n" + self.node.stderr[-2000:])
            await asyncio.sleep(0.01)

    async def stream_with_kills(
        self, kills: int, seed: int, on_kill: object = None, before_stop: object = None
    ) -> Fleet:
        rng = random.Random(seed)
        total = DEVICES * UPLINKS
        moments = sorted(rng.sample(range(total // 20, total - total // 20), kills))
        fleet = self.fleet = Fleet(DEVICES, UPLINKS, PER, lambda: self.node.port)
        devices = asyncio.create_task(fleet.run())
        for i, moment in enumerate(moments):
            while fleet.acked < moment and not devices.done():
                await asyncio.sleep(0.005)
            if i == 0:
                # The first kill waits for a checkpoint of this run, so that a restart has
                # one to restore: ingest can acknowledge the whole stream faster than the
                # engine process applies it, and a node killed before its first checkpoint
                # would only test replaying the log.
                await self.checkpointed()
            self.node.kill()
            if callable(on_kill):
                on_kill()
            self.node = await asyncio.to_thread(self.start)
        await asyncio.wait_for(devices, 240)
        if isinstance(before_stop, asyncio.Future):
            await before_stop  # e.g. Redis back before the final checkpoint is taken
        assert self.node.terminate() == 0, self.node.stderr[-2000:]
        return fleet


def reference_models(topo_text: str) -> dict[str, object]:
    """The detect instances of an uninterrupted run over the same readings."""
    flow = Dataflow(
        compile_topology(
            topo_text.replace("test.tally", "transform.compute").replace(
                "{id: tally, use: transform.compute, from: s}",
                "{id: tally, use: transform.compute, from: s, with: {fields: {z: 'x'}}}",
            ),
            "t.yaml",
        )
    )
    for d in range(DEVICES):
        for seq in range(UPLINKS):
            flow.push(
                "s",
                [
                    Event(
                        f"dev-{d:02d}",
                        seq * PER + i,
                        0.0,
                        {"x": reading_value(d, seq, i), "y": float(i)},
                    )
                    for i in range(PER)
                ],
            )
    return dict(flow.instances("detect"))


def check_exactly_once(ckpt_operators: dict[str, dict[str, bytes]]) -> None:
    from fogrt_test_ops import Tally  # type: ignore[import-not-found]

    tallies = ckpt_operators["tally"]
    assert len(tallies) == DEVICES
    for d in range(DEVICES):
        t = Tally()
        t.restore(tallies[f"dev-{d:02d}"])
        expected = [reading_value(d, s, i) for s in range(UPLINKS) for i in range(PER)]
        assert t.count == len(expected), f"dev-{d:02d}: {t.count} readings applied"
        assert t.total == pytest.approx(sum(expected), abs=1e-6)


def check_models_match(ckpt_operators: dict[str, dict[str, bytes]]) -> None:
    reference = reference_models(TOPOLOGY)
    probes = [Event("p", i, 0.0, {"x": float(i * 13 % 100), "y": float(i % 7)}) for i in range(30)]
    for device, blob in ckpt_operators["detect"].items():
        ours = reference[device].clone()  # type: ignore[attr-defined]
        ours.restore(blob)
        theirs = reference[device]
        for probe in probes:
            assert ours.process(probe) == theirs.process(probe), device  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def fresh_entry_points() -> Iterator[None]:
    """The tally plugin is put on sys.path by each test: re-read the entry points."""
    from fogrt.registry import _entry_points

    _entry_points.cache_clear()
    yield
    _entry_points.cache_clear()


def final_checkpoint(harness: Harness, url: str | None = None) -> dict[str, dict[str, bytes]]:
    async def read() -> dict[str, dict[str, bytes]]:
        backend = FileBackend(harness.state) if url is None else RedisBackend(url, "recovery")
        try:
            newest = (await backend.checkpoints())[0]
        finally:
            await backend.close()
        from fogrt.registry import _entry_points

        _entry_points.cache_clear()  # the plugin directory is on sys.path by now
        topo = compile_topology(TOPOLOGY, "t.yaml")
        return unpack(
            newest.blob, topo, load_key(harness.state, create=False), what="final"
        ).operators

    return asyncio.run(read())


def kill_9_run(
    harness: Harness, kills: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Stream with ``kills`` kill -9 and restarts; check that every acknowledged reading
    was applied exactly once and the models are those of an uninterrupted run. The logs of
    the runs, in order."""
    seed = int(os.environ.get("FOGRT_TEST_SEED", random.randrange(1 << 30)))
    print(f"kill moments seed: {seed}")
    fleet = asyncio.run(harness.stream_with_kills(kills, seed))
    assert fleet.acked == DEVICES * UPLINKS
    logs = [p.read_text() for p in sorted((tmp_path / "out").glob("node-*.log"))]
    assert len(logs) == kills + 1
    assert not any("checkpoint_failed" in text for text in logs)
    restored = sum("checkpoint_restored" in text for text in logs)
    print(f"restarts that restored a checkpoint: {restored} of {kills}")
    assert restored >= 1, "restarts must restore checkpoints, not only replay the log"
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    operators = final_checkpoint(harness)
    check_exactly_once(operators)
    check_models_match(operators)
    return logs


def test_kill_9_five_times_applies_every_acknowledged_reading_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kill_9_run(Harness(tmp_path), 5, tmp_path, monkeypatch)


def test_redis_killed_and_restarted_mid_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    redis = RedisServer(tmp_path / "redis")
    try:
        harness = Harness(tmp_path, "--state", redis.url, "--data-dir", str(tmp_path / "state"))
        seed = int(os.environ.get("FOGRT_TEST_SEED", random.randrange(1 << 30)))
        print(f"kill moments seed: {seed}")

        def outage_seen() -> bool:
            logs = "".join(p.read_text() for p in (tmp_path / "out").glob("node-*.log"))
            return "checkpoint_failed" in logs or "state_backend_unavailable" in logs

        async def outage() -> None:
            # Redis goes away while the stream is flowing and the node keeps acknowledging
            # (a node starting up would not notice a short outage): it comes back once the
            # devices got 200 more acknowledgements without it, at least a second later.
            total = DEVICES * UPLINKS
            while not hasattr(harness, "fleet") or harness.fleet.acked < total // 4:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(redis.kill)
            down_at = harness.fleet.acked
            loop = asyncio.get_running_loop()
            # Down until the node has noticed (a failed checkpoint, or a restarted node
            # waiting for its state): on a busy machine a restart can take longer than any
            # fixed outage, and would then never see it.
            deadline = loop.time() + 60.0
            while not outage_seen() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            # ...and until the devices got 200 more acknowledgements without it, at most
            # 4 s more (a node restarted meanwhile waits for Redis to start).
            give_up = loop.time() + 4.0
            while harness.fleet.acked < min(down_at + 200, total) and loop.time() < give_up:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.5)  # checkpoint attempts after the last of those records
            await asyncio.to_thread(redis.start)

        async def run() -> Fleet:
            redis_outage = asyncio.ensure_future(outage())
            fleet = await harness.stream_with_kills(2, seed, before_stop=redis_outage)
            assert fleet.acked == DEVICES * UPLINKS
            return fleet

        asyncio.run(run())
        assert outage_seen(), "the outage was seen by the node"
        monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
        operators = final_checkpoint(harness, redis.url)
        check_exactly_once(operators)
        check_models_match(operators)
    finally:
        redis.stop()


class Repartitioning(Harness):
    """A node whose engine runs in device partitions, as many as the next of ``COUNTS``
    at each (re)start: every checkpoint is split by another hash modulus than it was
    merged from."""

    COUNTS = (2, 3, 1, 2, 3, 2)
    starts = 0

    def start(self) -> NodeProcess:
        engines = self.COUNTS[self.starts % len(self.COUNTS)]
        self.starts += 1
        return NodeProcess(
            self.topo,
            self.state,
            self.out,
            "--checkpoint-every",
            "0.3",
            "--engines",
            str(engines),
            env=self.env,
        )


def test_kill_9_with_engine_partitions_of_changing_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logs = kill_9_run(Repartitioning(tmp_path), 4, tmp_path, monkeypatch)
    started = [text.count('"event": "engine_process_started"') for text in logs]
    assert started == [2, 3, 1, 2, 3]
