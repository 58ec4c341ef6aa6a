"""The node's own control loop: the topology's policies decide each device's control from
the readings it sends, over real CoAP to a real node; skipped samples come back imputed."""

from __future__ import annotations

import asyncio
import json
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiocoap
import pytest

from fogrt.control import ControlStore
from fogrt.errors import TopologyError, TopologyErrors
from fogrt.ingest.wire import Control, apply_delta, decode_control, encode_uplink
from fogrt.metrics import NodeMetrics
from fogrt.node import FogNode, NodeConfig
from fogrt.topology import compile_topology

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0

HEAD = textwrap.dedent("""\
    apiVersion: fogrt/v1
    kind: Topology
    metadata: {name: control-test}
    sources:
      room: {fields: {temp: float, hum: float}}
      plant: {fields: {flow: float, label: str}}
    operators:
      - {id: hot, use: transform.compute, from: room, with: {fields: {is_anomaly: "temp > 50"}}}
    sinks:
      - {id: raw, use: jsonl, from: room, with: {path: raw.jsonl}}
    """)

DELTA = HEAD + textwrap.dedent("""\
    control:
      policy: {use: policy.send_on_delta, with: {epsilon: 0.5, sample_period: 10s}}
    """)


ENGINE_PROCESS = False
ENGINES = 1


@pytest.fixture(autouse=True, params=["inline", "engine-process", "engine-partitions"])
def engine_mode(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test runs three times: the loop in the node's process, in the engine process
    (where the controls it decides come back to the node's process to be sent), and in two
    engine processes, each deciding for the devices that hash to it."""
    global ENGINE_PROCESS, ENGINES
    ENGINE_PROCESS = request.param != "inline"
    ENGINES = 2 if request.param == "engine-partitions" else 1
    yield
    ENGINE_PROCESS, ENGINES = False, 1


@pytest.fixture
async def client() -> AsyncIterator[aiocoap.Context]:
    ctx = await aiocoap.Context.create_client_context()
    yield ctx
    await ctx.shutdown()


async def start(tmp_path: Path, text: str) -> FogNode:
    cfg = NodeConfig(
        coap_host="127.0.0.1",
        coap_port=0,
        state_dir=tmp_path / "state",
        output_dir=tmp_path / "out",
        fsync=False,
        tick_interval=None,
        engine_process=ENGINE_PROCESS,
        engines=ENGINES,
    )
    node = FogNode(compile_topology(text, "t.yaml"), cfg)
    await node.start()
    return node


async def send(
    ctx: aiocoap.Context,
    node: FogNode,
    device: str,
    seq: int,
    at: float,
    fields: dict[str, Any],
    version: int,
    source: str = "room",
) -> dict[str, Any]:
    """One single-reading uplink taken at ``at``; the decoded control of the 2.04 ({} when
    unchanged). Waits until the node's loop has seen it, as a sleeping device would."""
    host, port = node.address[:2]
    body = encode_uplink(device, 1, seq, [(0.0, fields)], control_version=version, clock=at)
    msg = aiocoap.Message(code=aiocoap.POST, uri=f"coap://{host}:{port}/r/{source}", payload=body)
    resp = await asyncio.wait_for(ctx.request(msg).response, 10)
    assert str(resp.code) == "2.04 Changed", resp.payload
    assert await node.drain(10)
    return decode_control(resp.payload) if resp.payload else {}


def rows(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out" / "raw.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_send_on_delta_control_is_sent_and_skipped_samples_are_imputed(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    node = await start(tmp_path, DELTA)
    try:
        ctl = await send(client, node, "r1", 0, T0, {"temp": 20.0, "hum": 40.0}, version=0)
        # the first ACK carries the policy's initial control
        assert (ctl["v"], ctl["tx"], ctl["e"], ctl["sp"]) == (1, "delta", 0.5, 10.0)
        # The device sampled at +10, +20, +30 s, stayed within 0.5 of 20.0, sent nothing,
        # and sends 21.0 at +40 s under version 1.
        ctl = await send(client, node, "r1", 1, T0 + 40, {"temp": 21.0, "hum": 41.0}, version=1)
        assert ctl == {}  # send-on-delta keeps its control
        assert node.service is not None
        facts = NodeMetrics(node).device_facts("r1", node.service.registry.devices["r1"])
        assert (facts.tx_saved, facts.policy, facts.tx) == (3, "policy.send_on_delta", "delta")
    finally:
        await node.stop()
    got = [(r["time"] - T0, r["temp"], r["hum"], r.get("flags", [])) for r in rows(tmp_path)]
    assert got == [
        (0.0, 20.0, 40.0, []),
        (10.0, 20.0, None, ["imputed"]),
        (20.0, 20.0, None, ["imputed"]),
        (30.0, 20.0, None, ["imputed"]),
        (40.0, 21.0, 41.0, []),
    ]
    assert node.control_loop is not None
    assert node.control_loop.counters()["imputed"] == 3


async def test_imputation_uses_the_control_the_device_applied(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    node = await start(tmp_path, DELTA)
    try:
        await send(client, node, "r1", 0, T0, {"temp": 20.0, "hum": 40.0}, version=0)
        # Still on version 0 (fixed 60 s, send everything: it missed the ACK's control):
        # a 40 s gap holds no skipped sample under that control.
        await send(client, node, "r1", 1, T0 + 40, {"temp": 20.1, "hum": 40.0}, version=0)
    finally:
        await node.stop()
    assert [r.get("flags") for r in rows(tmp_path)] == [None, None]


async def test_a_clock_that_jumps_is_a_gap_not_millions_of_imputed_samples(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    node = await start(tmp_path, DELTA)
    try:
        await send(client, node, "r1", 0, T0, {"temp": 20.0, "hum": 40.0}, version=0)
        # 30 years later by its clock (every 10 s a sample): a loss or a broken clock, not
        # 95 million suppressed samples; the node answers at once and keeps going.
        later = T0 + 30 * 365 * 86400
        await send(client, node, "r1", 1, later, {"temp": 20.1, "hum": 40.0}, version=1)
        await send(client, node, "r1", 2, later + 30, {"temp": 20.1, "hum": 40.0}, version=1)
        assert node.control_loop is not None
        assert node.control_loop.counters()["imputed"] == 2  # only the last gap's two
    finally:
        await node.stop()


GROUPS = HEAD + textwrap.dedent("""\
    control:
      policy: {use: policy.dual_prediction, with: {epsilon: 0.2}}
      groups:
        - devices: [pump-*]
          policy: {use: policy.fixed, with: {interval: 10s}}
        - sources: plant
          policy: {use: policy.send_on_delta, with: {epsilon: 1.5}}
    """)


async def test_groups_select_the_policy_by_device_id_and_by_source(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    node = await start(tmp_path, GROUPS)
    try:
        ctl = await send(client, node, "pump-1", 0, T0, {"temp": 1.0, "hum": 1.0}, version=0)
        pump = apply_delta(Control(), ctl)
        assert (pump.tx, pump.interval) == ("always", 10)
        ctl = await send(client, node, "room-1", 0, T0, {"temp": 1.0, "hum": 1.0}, version=0)
        room = apply_delta(Control(), ctl)
        assert (room.tx, room.epsilon) == ("predict", 0.2) and len(room.coeffs) > 1
        # A device's first ACK cannot know where it will post: the id-only rules apply...
        plant = {"flow": 3.0, "label": "a"}
        ctl = await send(client, node, "p7", 0, T0, plant, version=0, source="plant")
        p7 = apply_delta(Control(), ctl)
        assert p7.tx == "predict"
        # ...and the source's policy comes with the next one, as a delta.
        ctl = await send(client, node, "p7", 1, T0 + 60, plant, version=ctl["v"], source="plant")
        p7 = apply_delta(p7, ctl)
        assert (p7.tx, p7.epsilon, p7.coeffs) == ("delta", 1.5, ())
        loop = node.control_loop
        assert loop is not None
        names = {d: loop.policy_name(d) for d in ("pump-1", "room-1", "p7", "pump-2")}
        assert names == {
            "pump-1": "policy.fixed",
            "room-1": "policy.dual_prediction",
            "p7": "policy.send_on_delta",
            "pump-2": "policy.fixed",
        }
    finally:
        await node.stop()


def ramp(i: int) -> dict[str, Any]:
    return {"temp": 20.0 + 0.05 * i + (0.4 if i % 7 == 0 else 0.0), "hum": 40.0}


async def drive(
    ctx: aiocoap.Context, node: FogNode, seqs: range, version: int
) -> tuple[int, list[int]]:
    """A device that applies every control it is given; returns its version and the
    versions it was given."""
    given = []
    for i in seqs:
        ctl = await send(ctx, node, "r1", i, T0 + 60 * i, ramp(i), version=version)
        if ctl:
            version = ctl["v"]
            given.append(version)
    return version, given


TRACKING = HEAD + textwrap.dedent("""\
    control:
      policy:
        use: policy.dual_prediction
        with: {epsilon: 0.05, sample_period: 60s, push_tolerance: 0.0}
    """)


async def test_policy_state_survives_a_restart(tmp_path: Path, client: aiocoap.Context) -> None:
    straight = await start(tmp_path / "a", TRACKING)
    try:
        version, given = await drive(client, straight, range(24), 0)
        expected = straight.controls.get("r1")
    finally:
        await straight.stop()
    assert len(given) > 2, "the fitted predictor must move for this test to mean anything"

    node = await start(tmp_path / "b", TRACKING)
    try:
        version, _ = await drive(client, node, range(12), 0)
    finally:
        await node.stop()  # final checkpoint: the policies' state goes with it
    node = await start(tmp_path / "b", TRACKING)
    try:
        assert await node.drain(10) and node.control_loop is not None
        assert node.control_loop.counters()["devices"] == 1  # r1's policy, restored
        await drive(client, node, range(12, 24), version)
        assert node.controls.get("r1") == expected
    finally:
        await node.stop()

    # Another epsilon: the stored state belongs to another policy and is not restored.
    changed = TRACKING.replace("epsilon: 0.05", "epsilon: 0.1")
    node = await start(tmp_path / "b", changed)
    try:
        assert await node.drain(10) and node.control_loop is not None
        assert node.control_loop.counters()["devices"] == 0
    finally:
        await node.stop()


BURST = HEAD + textwrap.dedent("""\
    control:
      policy:
        use: policy.burst
        with:
          duration: 10m
          sample_period: 5s
          inner: {use: policy.send_on_delta, with: {epsilon: 0.5, sample_period: 60s}}
      alerts: {from: hot}
    """)


async def test_an_anomaly_upstream_bursts_the_device(
    tmp_path: Path, client: aiocoap.Context
) -> None:
    node = await start(tmp_path, BURST)
    try:
        ctl = await send(client, node, "r1", 0, T0, {"temp": 20.0, "hum": 40.0}, version=0)
        version, control = ctl["v"], apply_delta(Control(), ctl)
        assert (control.tx, control.sample_period, control.burst_until) == ("delta", 60.0, 0)
        ctl = await send(client, node, "r1", 1, T0 + 60, {"temp": 20.1, "hum": 40.0}, version)
        assert ctl == {}
        # 80 C: the compute operator flags it; the alert reaches the device's policy
        await send(client, node, "r1", 2, T0 + 120, {"temp": 80.0, "hum": 40.0}, version)
        ctl = await send(client, node, "r1", 3, T0 + 180, {"temp": 80.0, "hum": 40.0}, version)
        control = apply_delta(control, ctl)
        assert (control.burst_until, control.sample_period) == (round(T0 + 120 + 600), 5.0)
        # both 80 C readings were flagged; this ACK was answered before the second one's
        assert node.control_loop is not None and node.control_loop.counters()["alerts"] == 2
    finally:
        await node.stop()


@pytest.mark.parametrize(
    ("control", "problem"),
    [
        (
            "  groups: [{devices: pump-*, policy: {use: policy.fixd}}]\n",
            "t.yaml:12:44: control.groups[0].policy.use: unknown policy 'policy.fixd'",
        ),
        (
            "  groups: [{sources: [tank], policy: {use: policy.fixed}}]\n",
            "t.yaml:12:23: control.groups[0].sources[0]: unknown source 'tank'",
        ),
        (
            "  groups: [{policy: {use: policy.fixed}}]\n",
            "t.yaml:12:12: control.groups[0]: a group needs devices (globs such as pump-*) "
            "or sources",
        ),
        (
            "  policy: {use: policy.send_on_delta, with: {epsilon: 0.5, field: label}}\n",
            "t.yaml:12:67: control.policy.with.field: source 'room': unknown field 'label'",
        ),
        (
            "  groups: [{sources: plant, policy: {use: policy.send_on_delta,\n"
            "            with: {epsilon: 0.5, field: label}}}]\n",
            "t.yaml:13:41: control.groups[0].policy.with.field: field 'label' of source "
            "'plant' is str, expected a number",
        ),
        (
            "  policy: {use: policy.send_on_delta, with: {epsilon: -1}}\n",
            "t.yaml:12:55: control.policy.with.epsilon: expected a finite threshold >= 0",
        ),
        (
            "  policy: {use: policy.send_on_delta, with: {epsilon: 0.5}}\n  alerts: {from: raw}\n",
            "t.yaml:13:18: control.alerts.from[0]: unknown operator 'raw'; expected one of: hot",
        ),
        (
            "  policy: {use: policy.send_on_delta, with: {epsilon: 0.5}}\n"
            "  alerts: {from: hot, field: hot}\n",
            "t.yaml:13:30: control.alerts.field: 'hot' emits no field 'hot'",
        ),
    ],
)
def test_control_section_problems_are_located(control: str, problem: str) -> None:
    with pytest.raises((TopologyError, TopologyErrors)) as info:
        compile_topology(HEAD + "control:\n" + control, "t.yaml")
    assert str(info.value).startswith(problem), str(info.value)


def test_store_remembers_what_each_version_meant() -> None:
    fixed = Control(interval=10, sample_period=10.0)
    store = ControlStore(initial=lambda d: fixed if d.startswith("pump") else Control())
    assert store.get("pump-1") == (1, fixed) and store.get("room") == (0, Control())
    assert store.control_at("pump-1", 1) == fixed and store.control_at("pump-1", 2) is None
    delta = Control(interval=600, tx="delta", epsilon=0.5)
    assert store.set("pump-1", delta) == 2
    assert store.control_at("pump-1", 0) == Control()
    assert store.control_at("pump-1", 1) == fixed
    assert store.control_at("pump-1", 2) == delta
    # the delta from version 1 names only what changed
    assert decode_control(store.delta_for("pump-1", 1)) == {
        "v": 2,
        "i": 600,
        "sp": 60.0,
        "tx": "delta",
        "e": 0.5,
    }
    assert store.delta_for("pump-1", 2) == b""
