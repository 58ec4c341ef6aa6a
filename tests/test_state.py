"""Durable state: signed checkpoints, file and Redis backends, restore + replay, refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiocoap
import pytest

from fogrt.errors import StateError
from fogrt.ingest.wire import Control, encode_uplink
from fogrt.node import FogNode, NodeConfig
from fogrt.state.checkpoint import Checkpoint, pack, unpack
from fogrt.state.files import FileBackend
from fogrt.state.redis import RedisBackend
from fogrt.state.sealed import open_sealed, seal
from fogrt.topology import compile_topology
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

TOPOLOGY = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {name: state-test}
sources:
  s: {fields: {x: float, y: float}}
operators:
  - id: detect
    use: learn.anomaly
    from: s
    with:
      model: [{MinMaxScaler: {}}, {HalfSpaceTrees: {n_trees: 3, height: 4, window_size: 20}}]
      warmup: 5
sinks:
  - {id: out, use: jsonl, from: detect, with: {path: out.jsonl}}
"""
KEY = b"k" * 32


def test_sealed_blob_round_trip_and_every_tampering_is_refused() -> None:
    blob = seal({"offset": 7}, b"payload bytes", KEY)
    header, payload = open_sealed(blob, KEY)
    assert header["offset"] == 7 and payload == b"payload bytes"
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(StateError):
            open_sealed(bytes(bad), KEY)
    with pytest.raises(StateError, match="written with another state key"):
        open_sealed(blob, b"x" * 32)
    with pytest.raises(StateError, match="not a fogrt state blob"):
        open_sealed(blob[:10], KEY)
    with pytest.raises(StateError, match="HMAC"):
        open_sealed(blob[:-1], KEY)


def test_checkpoint_is_refused_for_another_topology() -> None:
    topo = compile_topology(TOPOLOGY, "t.yaml")
    blob = pack(Checkpoint(3, {"detect": {"a": b"x"}}), topo, KEY)
    assert unpack(blob, topo, KEY, what="ckpt").operators == {"detect": {"a": b"x"}}
    other = compile_topology(TOPOLOGY.replace("n_trees: 3", "n_trees: 4"), "t.yaml")
    with pytest.raises(StateError, match="written for topology 'state-test' with other"):
        unpack(blob, other, KEY, what="ckpt")


async def test_file_backend_is_atomic_and_keeps_the_newest(tmp_path: Path) -> None:
    backend = FileBackend(tmp_path, keep=2)
    for offset in (10, 20, 30):
        await backend.write(offset, f"blob{offset}".encode())
    stored = await backend.checkpoints()
    assert [(c.offset, c.blob) for c in stored] == [(30, b"blob30"), (20, b"blob20")]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "00000000000000000020.ckpt",
        "00000000000000000030.ckpt",
    ]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


async def test_redis_backend_round_trip_in_parts(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fogrt.state.redis as redis_backend

    monkeypatch.setattr(redis_backend, "PART", 1000)  # force several parts
    backend = RedisBackend(redis_server.url, "t", keep=2)
    try:
        blobs = {o: bytes([o % 256]) * 2500 for o in (1, 2, 3)}
        for offset, blob in blobs.items():
            await backend.write(offset, blob)
        stored = await backend.checkpoints()
        assert [(c.offset, c.blob) for c in stored] == [(3, blobs[3]), (2, blobs[2])]
        keys = await backend._client.keys("fogrt:t:*")
        assert len(keys) == 1 + 3 + 3  # the index and two checkpoints of three parts
    finally:
        await backend.close()


# -- a node that restarts ------------------------------------------------------------------


def config(tmp_path: Path, **kw: object) -> NodeConfig:
    return NodeConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        checkpoint_every=3600,
        **kw,
    )  # type: ignore[arg-type]


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


async def send(ctx: aiocoap.Context, node: FogNode, device: str, seq: int, n: int) -> None:
    readings = [(0.0, {"x": float(seq * n + i), "y": 1.0}) for i in range(n)]
    host, port = node.address[:2]
    msg = aiocoap.Message(
        code=aiocoap.POST,
        uri=f"coap://{host}:{port}/r/s",
        payload=encode_uplink(device, 0, seq, readings),
    )
    resp = await asyncio.wait_for(ctx.request(msg).response, 10)
    assert str(resp.code) == "2.04 Changed"


def events_learned(node: FogNode) -> dict[str, float]:
    assert node.engine is not None
    return {k: op.metrics()["events"] for k, op in node.engine.flow.instances("detect").items()}


async def test_restart_restores_the_checkpoint_and_replays_only_what_follows(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    topo = compile_topology(TOPOLOGY, "t.yaml")
    node = FogNode(topo, config(tmp_path))
    await node.start()
    for seq in range(4):
        await send(client, node, "a", seq, 5)
        await send(client, node, "b", seq, 5)
    assert await node.drain(10)
    first = await node.checkpoint()
    node.controls.set("a", Control(interval=15))
    for seq in range(4, 6):
        await send(client, node, "a", seq, 5)
    # A crash: no drain, no final checkpoint; the engine's state is simply lost.
    assert node.endpoint is not None and node.ingest_log is not None
    await node.endpoint.stop()
    await node.ingest_log.close()
    for task in node._tasks:
        task.cancel()
    assert node.engine is not None
    await node.engine.stop(flush=False)  # the process is gone: its files close, state lost

    node = FogNode(topo, config(tmp_path))
    await node.start()
    try:
        assert node.checkpoints.last_offset == first == 8
        assert await node.drain(10)
        # 8 uplinks from the checkpoint + 2 replayed from the log, each applied once.
        assert events_learned(node) == {"a": 30, "b": 20}
        await send(client, node, "a", 5, 5)  # a resend across the restart: deduplicated
        assert node.service is not None and node.service.duplicates == 1
        assert node.controls.get("a")[1].interval != 15  # set after the checkpoint: gone
    finally:
        await node.stop()


async def test_final_checkpoint_on_stop_and_log_released(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    topo = compile_topology(TOPOLOGY, "t.yaml")
    node = FogNode(topo, config(tmp_path, segment_bytes=4096))
    await node.start()
    for seq in range(40):
        await send(client, node, "a", seq, 5)
    await node.stop()
    assert node.checkpoints.last_offset == 40
    node = FogNode(topo, config(tmp_path, segment_bytes=4096))
    await node.start()
    try:
        assert node.ingest_log is not None and node.ingest_log.start_offset > 0
        assert events_learned(node) == {"a": 200}
    finally:
        await node.stop()


async def test_corrupted_checkpoint_is_refused_clearly(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    topo = compile_topology(TOPOLOGY, "t.yaml")
    node = FogNode(topo, config(tmp_path))
    await node.start()
    await send(client, node, "a", 0, 5)
    await node.stop()
    (ckpt,) = (tmp_path / "state" / "checkpoints").glob("*.ckpt")
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))
    node = FogNode(topo, config(tmp_path))
    with pytest.raises(StateError, match=r"checkpoint 1 in file:.* failed its HMAC check"):
        await node.start()
    assert node.ingest_log is not None
    await node.ingest_log.close()


async def test_state_survives_in_redis_and_outages_lose_nothing(
    tmp_path: Path, client: aiocoap.Context, redis_server: RedisServer
) -> None:
    topo = compile_topology(TOPOLOGY, "t.yaml")
    cfg = config(tmp_path, state_url=redis_server.url)
    node = FogNode(topo, cfg)
    await node.start()
    try:
        await send(client, node, "a", 0, 5)
        assert await node.drain(10)
        await node.checkpoint()
        redis_server.kill()  # Redis goes away mid-stream
        for seq in range(1, 4):
            await send(client, node, "a", seq, 5)  # still acknowledged: the log is local
        assert await node.drain(10)
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises
            await node.checkpoint()
        redis_server.start()  # it comes back (append-only file: it kept what it had)
        assert await node.checkpoint() == 4
    finally:
        await node.stop()
    node = FogNode(topo, cfg)
    await node.start()
    try:
        assert node.checkpoints.last_offset == 4
        assert events_learned(node) == {"a": 20}
    finally:
        await node.stop()


async def test_file_sinks_keep_earlier_output_across_restarts(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    topo = compile_topology(TOPOLOGY, "t.yaml")
    node = FogNode(topo, config(tmp_path))
    await node.start()
    for seq in range(3):
        await send(client, node, "a", seq, 2)
    await node.stop()
    node = FogNode(topo, config(tmp_path))
    await node.start()
    try:
        await send(client, node, "a", 3, 2)
        assert await node.drain(10)
        await asyncio.sleep(0.1)
    finally:
        await node.stop()
    lines = (tmp_path / "out" / "out.jsonl").read_text().splitlines()
    assert len(lines) == 8, "the first run's 6 outputs are kept, the second adds 2"
