"""A fog node end to end over real CoAP on loopback: acknowledgement, order, bad input, control."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiocoap
import msgpack
import pytest

from fogrt.ingest import coap
from fogrt.ingest.registry import DeviceRegistry
from fogrt.ingest.wire import (
    CONTENT_FORMAT,
    Registration,
    decode_control,
    encode_registration,
    encode_uplink,
)
from fogrt.log import IngestLog
from fogrt.node import FogNode, NodeConfig
from fogrt.topology import compile_topology
from tests.nodes import TOPOLOGY

pytestmark = pytest.mark.integration


ENGINE_PROCESS = False
ENGINES = 1


@pytest.fixture(autouse=True, params=["inline", "engine-process", "engine-partitions"])
def engine_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test runs three times: engine in the node's process, in a process of its own,
    and in two processes over the devices hashing to each."""
    global ENGINE_PROCESS, ENGINES
    ENGINE_PROCESS = request.param != "inline"
    ENGINES = 2 if request.param == "engine-partitions" else 1
    yield
    ENGINE_PROCESS, ENGINES = False, 1


async def start_node(tmp_path: Path, **config: object) -> FogNode:
    topology = compile_topology(TOPOLOGY, "t.yaml")
    config.setdefault("engine_process", ENGINE_PROCESS)
    config.setdefault("engines", ENGINES)
    cfg = NodeConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        **config,
    )  # type: ignore[arg-type]
    node = FogNode(topology, cfg)
    await node.start()
    return node


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FogNode]:
    n = await start_node(tmp_path)
    yield n
    await n.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


def url(node: FogNode, path: str) -> str:
    host, port = node.address[:2]
    return f"coap://{host}:{port}{path}"


async def post(
    ctx: aiocoap.Context, node: FogNode, body: bytes, path: str = "/r/room", **opts: object
) -> aiocoap.Message:
    msg = aiocoap.Message(code=aiocoap.POST, uri=url(node, path), payload=body, **opts)
    return await asyncio.wait_for(ctx.request(msg).response, 10)


def reading(temp: float, age: float = 0.0) -> tuple[float, dict[str, object]]:
    return (age, {"temp": temp, "hum": 40.0, "door": False})


async def test_uplink_is_acknowledged_with_control_and_reaches_the_engine_in_order(
    node: FogNode, client: aiocoap.Context, tmp_path: Path
) -> None:
    # A batch of readings, oldest first: ages 0.9 s .. 0 s before the send.
    batch = [reading(20.0 + i, age=(9 - i) / 10) for i in range(10)]
    resp = await post(
        client, node, encode_uplink("dev-1", 1, 0, batch), content_format=CONTENT_FORMAT
    )
    assert str(resp.code) == "2.04 Changed"
    control = decode_control(resp.payload)  # version 0 -> the topology's fixed policy
    assert control["v"] == 1 and control["i"] == 30
    # Applying that version: the next answer is the empty "no change".
    resp = await post(
        client, node, encode_uplink("dev-1", 1, 1, [reading(35.0)], control_version=1)
    )
    assert str(resp.code) == "2.04 Changed" and resp.payload == b""
    assert await node.drain(10)
    await asyncio.sleep(0.1)  # the sink writes after the micro-batch
    raw = [json.loads(x) for x in (tmp_path / "out" / "raw.jsonl").read_text().splitlines()]
    assert [r["temp"] for r in raw] == [20.0 + i for i in range(10)] + [35.0]
    times = [r["time"] for r in raw[:10]]
    assert times == sorted(times) and round(times[9] - times[0], 3) == 0.9
    hot = [json.loads(x) for x in (tmp_path / "out" / "hot.jsonl").read_text().splitlines()]
    assert [h["temp"] for h in hot] == [35.0]


async def test_resend_is_acknowledged_but_applied_once(
    node: FogNode, client: aiocoap.Context, tmp_path: Path
) -> None:
    body = encode_uplink("dev-2", 4, 7, [reading(25.0)])
    for _ in range(3):  # new message ids each time: only the log's dedup can tell
        assert str((await post(client, node, body)).code) == "2.04 Changed"
    assert node.service is not None
    assert (node.service.accepted, node.service.duplicates) == (1, 2)
    assert await node.drain(10)
    await asyncio.sleep(0.1)
    assert (tmp_path / "out" / "raw.jsonl").read_text().count('"dev-2"') == 1


BAD = [
    # (what, body, options, code, diagnostic)
    ("random bytes", b"\xc1\xff\x00garbage", {}, "4.00", b"msgpack: invalid type byte"),
    ("truncated msgpack", encode_uplink("d", 0, 0, [reading(1.0)])[:-3], {}, "4.00", None),
    ("not a map", msgpack.packb([1, 2, 3]), {}, "4.00", None),
    (
        "wrong content-format",
        encode_uplink("d", 0, 0, [reading(1.0)]),
        {"content_format": 50},
        "4.15",
        None,
    ),
    ("huge declared map", b"\xdf\xff\xff\xff\xff", {}, "4.00", None),
    ("huge declared string", b"\x81\xa1d\xdb\xff\xff\xff\xff", {}, "4.00", None),
    ("deep nesting", b"\x91" * 500 + b"\xc0", {}, "4.00", None),
    (
        "unknown field",
        msgpack.packb({"d": "x", "b": 0, "s": 0, "r": [[0, {"pressure": 1.0}]]}),
        {},
        "4.00",
        b"r[0].values.pressure: unknown field",
    ),
    (
        "wrong type",
        msgpack.packb({"d": "x", "b": 0, "s": 0, "r": [[0, {"temp": "hot"}]]}),
        {},
        "4.00",
        b"r[0].values.temp: expected float, got str",
    ),
    ("too large", b"\x00" * 5000, {}, "4.13", None),
]


@pytest.mark.parametrize(
    ("what", "body", "opts", "code", "diagnostic"), BAD, ids=[b[0] for b in BAD]
)
async def test_bad_input_gets_its_code_and_the_node_keeps_serving(
    node: FogNode,
    client: aiocoap.Context,
    what: str,
    body: bytes,
    opts: dict[str, object],
    code: str,
    diagnostic: bytes | None,
) -> None:
    resp = await post(client, node, body, **opts)
    assert str(resp.code).split()[0] == code, (what, resp.code, resp.payload)
    if diagnostic is not None:
        assert resp.payload == diagnostic
    assert resp.payload, "every error carries a diagnostic"
    ok = await post(client, node, encode_uplink("after", 0, 0, [reading(1.0)]))
    assert str(ok.code) == "2.04 Changed"
    assert node.service is not None and node.endpoint is not None
    # Counted once, by reason: block-wise bodies over the limit are refused by the endpoint.
    refused = sum(node.service.rejected.values()) + node.endpoint.stats["too_large"]
    assert refused == 1


async def test_unknown_source_is_404(node: FogNode, client: aiocoap.Context) -> None:
    resp = await post(client, node, encode_uplink("d", 0, 0, [reading(1.0)]), path="/r/nope")
    assert str(resp.code) == "4.04 Not Found" and resp.payload == b"no source at /r/nope"


async def test_non_finite_values_become_missing(
    node: FogNode, client: aiocoap.Context, tmp_path: Path
) -> None:
    body = encode_uplink(
        "nan-dev", 0, 0, [(0.0, {"temp": float("nan"), "hum": float("inf"), "door": True})]
    )
    assert str((await post(client, node, body)).code) == "2.04 Changed"
    assert await node.drain(10)
    await asyncio.sleep(0.1)
    rec = json.loads((tmp_path / "out" / "raw.jsonl").read_text())
    assert (rec["temp"], rec["hum"], rec["door"]) == (None, None, True)


async def test_registry_enforced(tmp_path: Path, client: aiocoap.Context) -> None:
    node = await start_node(tmp_path, registry=DeviceRegistry("registered"))
    try:
        body = encode_uplink("newbie", 0, 0, [reading(1.0)])
        resp = await post(client, node, body)
        assert str(resp.code) == "4.01 Unauthorized"
        assert resp.payload == b"device newbie is unregistered"
        reg = encode_registration(Registration("newbie", "1.0.0", ("temp", "hum"), 2000, ()))
        resp = await post(client, node, reg, path="/reg", content_format=CONTENT_FORMAT)
        assert str(resp.code) == "2.01 Created"
        assert decode_control(resp.payload)["i"] == 30
        assert str((await post(client, node, body)).code) == "2.04 Changed"
    finally:
        await node.stop()
    # Registrations are in the log: after a restart the device is still known.
    node = await start_node(tmp_path, registry=DeviceRegistry("registered"))
    try:
        body = encode_uplink("newbie", 0, 1, [reading(2.0)])
        assert str((await post(client, node, body)).code) == "2.04 Changed"
    finally:
        await node.stop()


async def test_engine_lag_answers_503_with_max_age(tmp_path: Path, client: aiocoap.Context) -> None:
    node = await start_node(tmp_path, max_lag=2, retry_after=7)
    try:
        node._tasks[0].cancel()  # the log consumer stops: the engine's lag builds up
        for seq in range(3):
            resp = await post(client, node, encode_uplink("d", 0, seq, [reading(1.0)]))
            assert str(resp.code) == "2.04 Changed"
        resp = await post(client, node, encode_uplink("d", 0, 3, [reading(1.0)]))
        assert str(resp.code) == "5.03 Service Unavailable"
        assert resp.opt.max_age == 7
        assert node.service is not None and node.service.rejected["engine_lag"] == 1
    finally:
        node._tasks[0] = asyncio.create_task(node._consume())  # catches up, then stops
        await node.stop()


async def test_observe_control_and_discovery(node: FogNode, client: aiocoap.Context) -> None:
    msg = aiocoap.Message(code=aiocoap.GET, uri=url(node, "/.well-known/core"))
    links = (await client.request(msg).response).payload.decode()
    assert '</r/room>;rt="fogrt.source.room"' in links and "</reg>" in links
    msg = aiocoap.Message(code=aiocoap.GET, uri=url(node, "/c/dev-9"), observe=0)
    req = client.request(msg)
    first = await asyncio.wait_for(req.response, 10)
    assert decode_control(first.payload)["i"] == 30
    assert first.opt.observe is not None, "the control resource is observable"
    req.observation.cancel()


def test_retransmitted_con_gets_the_same_answer_from_a_raw_socket(tmp_path: Path) -> None:
    async def run() -> None:
        node = await start_node(tmp_path)
        try:
            host, port = node.address[:2]
            body = encode_uplink("raw", 0, 0, [reading(1.0)])
            datagram = coap.build(
                coap.CON,
                coap.POST,
                0x1234,
                b"tk",
                [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"room")],
                body,
            )
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.connect((host, port))
                answers = []
                for _ in range(2):
                    await loop.sock_sendall(sock, datagram)
                    answers.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 5))
            assert answers[0] == answers[1]
            ack = coap.parse(answers[0])
            assert (ack.type, ack.mid, ack.token) == (coap.ACK, 0x1234, b"tk")
            assert node.service is not None and node.service.accepted == 1
        finally:
            await node.stop()

    asyncio.run(run())


def test_acknowledged_reading_survives_kill_9(tmp_path: Path) -> None:
    from tests.nodes import NodeProcess

    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY)
    engine = ("--engines", str(ENGINES)) if ENGINE_PROCESS else ("--engine", "inline")
    proc = NodeProcess(topo, tmp_path / "state", tmp_path / "out", *engine)
    acked = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            for seq in range(50):
                body = encode_uplink("k9", 0, seq, [reading(float(seq))])
                sock.sendto(
                    coap.build(
                        coap.CON,
                        coap.POST,
                        seq,
                        b"",
                        [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"room")],
                        body,
                    ),
                    ("127.0.0.1", proc.port),
                )
                reply = coap.parse(sock.recv(2048))
                if reply.code == coap.CHANGED:
                    acked.append(seq)
    finally:
        proc.kill()  # SIGKILL right after the last ACK: no shutdown, no flush
    assert acked == list(range(50))

    async def logged() -> list[int]:
        from fogrt.ingest import record

        ingest_log = IngestLog.open(tmp_path / "state" / "log")
        try:
            return [record.decode(b).seq for _, b in ingest_log.read(0)]
        finally:
            await ingest_log.close()

    assert asyncio.run(logged()) == acked


async def test_no_acknowledgement_before_the_record_is_durable(
    node: FogNode, client: aiocoap.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert node.ingest_log is not None
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    monkeypatch.setattr(node.ingest_log, "wait_durable", lambda offset: never)
    # Make the just-appended record look not yet durable, as it is until the next fsync.
    monkeypatch.setattr(type(node.ingest_log), "durable_offset", property(lambda self: 0))
    msg = aiocoap.Message(
        code=aiocoap.POST,
        uri=url(node, "/r/room"),
        payload=encode_uplink("slow", 0, 0, [reading(1.0)]),
    )
    request = client.request(msg)
    done, _ = await asyncio.wait([asyncio.ensure_future(request.response)], timeout=1.0)
    assert not done, "a 2.04 was sent for a record that is not durable"
    never.set_result(None)  # the fsync completes: now the answer goes out
    resp = await asyncio.wait_for(request.response, 10)
    assert str(resp.code) == "2.04 Changed"


COAP_CLIENT = shutil.which("coap-client-notls") or shutil.which("coap-client")


@pytest.mark.skipif(
    COAP_CLIENT is None,
    reason="libcoap's coap-client is not installed (Debian: apt-get install libcoap3-bin)",
)
@pytest.mark.parametrize("mode", ["con", "non", "blockwise"])
def test_libcoap_client_interop(tmp_path: Path, mode: str) -> None:
    """libcoap's C client POSTs a msgpack file; the reply decodes to a control message."""

    async def run() -> None:
        node = await start_node(tmp_path)
        try:
            port = node.address[1]
            readings = [reading(20.0 + i) for i in range(40 if mode == "blockwise" else 1)]
            body = tmp_path / "uplink.msgpack"
            body.write_bytes(encode_uplink("libcoap", 0, 0, readings))
            out = tmp_path / "reply.bin"
            cmd = [
                COAP_CLIENT,
                "-m",
                "post",
                "-t",
                str(CONTENT_FORMAT),
                "-f",
                str(body),
                "-o",
                str(out),
                "-B",
                "10",
            ]
            if mode == "non":
                cmd.append("-N")
            if mode == "blockwise":
                cmd += ["-b", "64"]
                assert body.stat().st_size > 640  # more than 10 blocks of 64 bytes
            cmd.append(f"coap://127.0.0.1:{port}/r/room")
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            _, stderr = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0, stderr.decode()
            control = decode_control(out.read_bytes())
            assert control["v"] == 1 and control["i"] == 30
            assert node.service is not None and node.service.readings == len(readings)
            assert await node.drain(10)
        finally:
            await node.stop()

    asyncio.run(run())


async def test_device_table_is_bounded(tmp_path: Path, client: aiocoap.Context) -> None:
    node = await start_node(tmp_path, registry=DeviceRegistry(max_devices=5))
    try:
        codes = []
        for i in range(8):  # a flood of made-up device ids
            resp = await post(client, node, encode_uplink(f"fake-{i}", 0, 0, [reading(1.0)]))
            codes.append(str(resp.code).split()[0])
        assert codes == ["2.04"] * 5 + ["5.03"] * 3
        assert node.service is not None
        assert node.service.rejected["devices_full"] == 3
        assert len(node.service.registry.devices) == 5
        # Known devices keep being served.
        resp = await post(client, node, encode_uplink("fake-0", 0, 1, [reading(2.0)]))
        assert str(resp.code) == "2.04 Changed"
    finally:
        await node.stop()


def test_run_refuses_two_topologies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fogrt.cli import main

    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY)
    assert main(["run", str(topo), str(topo), "--coap", "127.0.0.1:0"]) == 2
    assert "fogrt run serves one topology per process" in capsys.readouterr().err


def test_run_refuses_a_receive_buffer_of_no_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fogrt.cli import main

    topo = tmp_path / "t.yaml"
    topo.write_text(TOPOLOGY)
    assert main(["run", str(topo), "--coap", "127.0.0.1:0", "--rcvbuf", "0"]) == 2
    assert "--rcvbuf 0: expected a positive number of bytes" in capsys.readouterr().err


async def test_receive_buffer_and_gc_tuning_are_applied(
    tmp_path: Path, client: aiocoap.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    calls: list[str] = []
    # Recorded, not applied: freezing would keep this test process's garbage for good.
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(f"threshold {t}"))
    node = await start_node(tmp_path, rcvbuf=300_000, gc_tuning=True)
    try:
        assert calls == ["freeze", "threshold (20000, 10, 10)"]
        assert node.endpoint is not None and node.endpoint._transport is not None
        sock = node.endpoint._transport.get_extra_info("socket")
        # Linux doubles the size (up to net.core.rmem_max); its default is 212992.
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 300_000
        resp = await post(client, node, encode_uplink("m1", 0, 0, [reading(1.0)]))
        assert str(resp.code) == "2.04 Changed"
    finally:
        await node.stop()


async def test_two_sources_on_their_own_paths(tmp_path: Path, client: aiocoap.Context) -> None:
    text = (
        TOPOLOGY.replace(
            "  room: {coap: /r/room, fields: {temp: float, hum: float, door: bool}}\n",
            "  room: {coap: /r/room, fields: {temp: float, hum: float, door: bool}}\n"
            "  pump: {coap: /r/plant/pump, fields: {vib: float}}\n",
        )
    ).replace(
        "control:", "  - {id: pumps, use: jsonl, from: pump, with: {path: pump.jsonl}}\ncontrol:"
    )
    cfg = NodeConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
    )
    node = FogNode(compile_topology(text, "t.yaml"), cfg)
    await node.start()
    try:
        body = encode_uplink("p1", 0, 0, [(0.0, {"vib": 0.5})])
        assert str((await post(client, node, body, path="/r/plant/pump")).code) == "2.04 Changed"
        bad = await post(client, node, body, path="/r/room")  # vib is not a room field
        assert str(bad.code) == "4.00 Bad Request"
        assert await node.drain(10)
        await asyncio.sleep(0.1)
        assert '"vib": 0.5' in (tmp_path / "out" / "pump.jsonl").read_text()
    finally:
        await node.stop()


@pytest.mark.skipif(
    COAP_CLIENT is None,
    reason="libcoap's coap-client is not installed (Debian: apt-get install libcoap3-bin)",
)
def test_oversized_blockwise_upload_is_refused_early(tmp_path: Path) -> None:
    async def run() -> None:
        node = await start_node(tmp_path)
        try:
            body = tmp_path / "big.msgpack"
            body.write_bytes(b"\x00" * 20_000)  # far over the 4096-byte limit
            proc = await asyncio.create_subprocess_exec(
                COAP_CLIENT,
                "-m",
                "post",
                "-b",
                "1024",
                "-f",
                str(body),
                "-B",
                "10",
                f"coap://127.0.0.1:{node.address[1]}/r/room",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), 20)
            assert b"4.13" in out + err
            assert node.endpoint is not None
            assert node.endpoint.stats["too_large"] == 1, "refused at the first block"
            assert node.service is not None and node.service.received == 0
        finally:
            await node.stop()

    asyncio.run(run())


async def test_a_boot_counter_that_went_backwards_is_reported(
    node: FogNode, client: aiocoap.Context
) -> None:
    for boot in (5, 6, 7, 8):  # the dedup tracks the 4 most recent boots
        assert (
            str((await post(client, node, encode_uplink("b", boot, 0, [reading(1.0)]))).code)
            == "2.04 Changed"
        )
    resp = await post(client, node, encode_uplink("b", 0, 0, [reading(1.0)]))  # flash erased
    assert str(resp.code) == "2.04 Changed"
    assert node.service is not None
    assert node.service.stale == 1 and node.service.counters()["stale"] == 1


def test_checkpoints_take_a_bounded_share_of_the_time() -> None:
    node = FogNode(compile_topology(TOPOLOGY, "t.yaml"), NodeConfig(checkpoint_every=5.0))
    node.checkpoints.last_duration = 0.01  # small: the configured period
    assert node._checkpoint_period() == 5.0
    node.checkpoints.last_duration = 1.5  # thousands of instances: 20x its duration
    assert node._checkpoint_period() == 30.0
