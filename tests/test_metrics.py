"""Prometheus metrics of a live node: names, types, values, bounds, per-node registries."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import aiocoap
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

import tests.test_dashboard
from fogrt.ingest.wire import Control
from fogrt.metrics import ENERGY_MODEL, EnergyModel, NodeMetrics
from fogrt.node import FogNode
from fogrt.sim.energy import Board
from tests.test_dashboard import Devices, engine_mode, start_node, wait_for  # noqa: F401

pytestmark = pytest.mark.integration


def scrape(metrics: NodeMetrics) -> dict[str, tuple[str, list[Sample]]]:
    """family name -> (type, samples), parsed the way Prometheus would."""
    text = metrics.render().decode()
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def value(families: dict[str, tuple[str, list[Sample]]], sample: str, **labels: str) -> float:
    name = sample
    for suffix in ("_total", "_count", "_sum", "_bucket"):
        name = name.removesuffix(suffix)
    for s in families[name][1]:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise KeyError((sample, labels))


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[FogNode]:
    n = await start_node(tmp_path)
    yield n
    await n.stop()


@pytest.fixture
async def metrics(node: FogNode) -> AsyncIterator[NodeMetrics]:
    m = NodeMetrics(node)
    m.attach()
    yield m
    m.detach()


@pytest.fixture
async def devices(node: FogNode) -> AsyncIterator[Devices]:
    ctx = await aiocoap.Context.create_client_context()
    yield Devices(ctx, node)
    await ctx.shutdown()


@pytest.mark.usefixtures("engine_mode")
async def test_metrics_parse_and_carry_the_standard_names(
    node: FogNode, metrics: NodeMetrics, devices: Devices
) -> None:
    assert (node.engine_pid is not None) == tests.test_dashboard.ENGINE_PROCESS
    f = scrape(metrics)  # at once: before anything arrived (or any engine status)
    assert value(f, "fogrt_operator_instances", node="detect") == 0
    assert await devices.send("dev-1", [20.0, 21.0]) == "2.04"
    assert await devices.send("dev-1", [20.0, 21.0], seq=0) == "2.04"  # resent
    assert await devices.send("dev-2", [99.0], battery_pct=50, battery_mv=3700) == "2.04"
    assert await devices.post(b"\xc1") == "4.00"
    assert await node.drain(10)
    assert node.engine is not None
    await wait_for(lambda: node.engine.sink_writes["alerts"] == 1, what="the sinks")  # type: ignore[union-attr]

    f = scrape(metrics)
    expected_types = {
        "fogrt_build_info": "gauge",
        "fogrt_uplinks_received": "counter",
        "fogrt_uplinks_accepted": "counter",
        "fogrt_uplinks_duplicate": "counter",
        "fogrt_uplinks_acknowledged": "counter",
        "fogrt_readings_received": "counter",
        "fogrt_uplinks_rejected": "counter",
        "fogrt_ack_latency_seconds": "histogram",
        "fogrt_coap_messages": "counter",
        "fogrt_log_lag_records": "gauge",
        "fogrt_log_disk_usage_bytes": "gauge",
        "fogrt_engine_events_submitted": "counter",
        "fogrt_node_events_in": "counter",
        "fogrt_node_events_out": "counter",
        "fogrt_operator_instances": "gauge",
        "fogrt_operator_metric": "gauge",
        "fogrt_sink_latency_seconds": "histogram",
        "fogrt_checkpoint_age_seconds": "gauge",
        "fogrt_checkpoint_duration_seconds": "gauge",
        "fogrt_checkpoints": "counter",
        "fogrt_devices_known": "gauge",
        "fogrt_devices_online": "gauge",
        "fogrt_device_battery_volts": "gauge",
        "fogrt_device_projected_battery_life_seconds": "gauge",
        "fogrt_device_transmissions_saved": "counter",
        "fogrt_redis_configured": "gauge",
        "process_cpu_seconds": "counter",
    }
    assert {name: f[name][0] for name in expected_types if name in f} == expected_types
    assert value(f, "fogrt_uplinks_received_total") == 4
    assert value(f, "fogrt_uplinks_accepted_total") == 2
    assert value(f, "fogrt_uplinks_duplicate_total") == 1
    assert value(f, "fogrt_uplinks_acknowledged_total") == 3
    assert value(f, "fogrt_readings_received_total") == 3
    assert value(f, "fogrt_uplinks_rejected_total", reason="malformed") == 1
    assert value(f, "fogrt_ack_latency_seconds_count") == 3
    assert value(f, "fogrt_ack_latency_seconds_bucket", le="+Inf") == 3
    assert 0 < value(f, "fogrt_ack_latency_seconds_sum") < 30
    assert value(f, "fogrt_log_lag_records") == 0
    assert value(f, "fogrt_log_disk_usage_bytes") > 0
    assert value(f, "fogrt_node_events_in_total", node="detect", role="operator") == 3
    assert value(f, "fogrt_node_events_out_total", node="alerts", role="sink") == 1
    assert value(f, "fogrt_operator_instances", node="detect") == 2  # one per device
    assert value(f, "fogrt_operator_metric", node="clean", metric="violations") == 1
    assert value(f, "fogrt_operator_metric", node="clean", metric="violations.temp") == 1
    assert value(f, "fogrt_sink_latency_seconds_count", sink="raw") >= 1
    assert math.isnan(value(f, "fogrt_checkpoint_age_seconds"))
    assert math.isnan(value(f, "fogrt_checkpoint_duration_seconds"))
    assert value(f, "fogrt_devices_known") == 2 and value(f, "fogrt_devices_online") == 2
    assert value(f, "fogrt_device_battery_volts", device="dev-2") == pytest.approx(3.7)
    assert value(f, "fogrt_device_battery_ratio", device="dev-2") == pytest.approx(0.5)
    assert value(f, "fogrt_device_report_interval_seconds", device="dev-2") == 10
    assert value(f, "fogrt_device_transmissions_saved_total", device="dev-2") == 0
    assert value(f, "fogrt_device_info", device="dev-2", policy="policy.fixed", tx="always") == 1
    assert value(f, "fogrt_redis_configured") == 0 and "fogrt_redis_up" not in f
    if tests.test_dashboard.ENGINE_PROCESS:  # the engine process's own CPU and memory
        assert value(f, "fogrt_engine_process_cpu_seconds_total") > 0
        assert value(f, "fogrt_engine_process_resident_memory_bytes") > 10 << 20
    else:
        assert "fogrt_engine_process_cpu_seconds" not in f


async def test_checkpoint_gauges_merge_the_node_stats_and_reports(
    node: FogNode, metrics: NodeMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    metrics.clock = lambda: now[0]
    # A node without checkpoint statistics of its own: only checkpoint_done() reports.
    monkeypatch.setattr(node, "checkpoints", None, raising=False)
    metrics.checkpoint_done(0.25)
    now[0] += 3
    f = scrape(metrics)
    assert value(f, "fogrt_checkpoint_duration_seconds") == 0.25
    assert value(f, "fogrt_checkpoint_age_seconds") == 3
    assert value(f, "fogrt_checkpoints_total") == 1
    assert math.isnan(value(f, "fogrt_checkpoint_size_bytes"))
    assert "fogrt_state_backend_up" not in f
    # The node's own statistics (FogNode.checkpoints), a newer checkpoint, Redis down.
    stats = SimpleNamespace(
        count=2, failures=1, last_time=1002.0, last_duration=0.5, last_bytes=4096, backend_up=False
    )
    monkeypatch.setattr(node, "checkpoints", stats, raising=False)
    monkeypatch.setattr(node.config, "state_url", "redis://fog:6379/0", raising=False)
    f = scrape(metrics)
    assert value(f, "fogrt_checkpoints_total") == 3
    assert value(f, "fogrt_checkpoint_failures_total") == 1
    assert value(f, "fogrt_checkpoint_age_seconds") == 1
    assert value(f, "fogrt_checkpoint_duration_seconds") == 0.5
    assert value(f, "fogrt_checkpoint_size_bytes") == 4096
    assert value(f, "fogrt_redis_configured") == 1
    assert value(f, "fogrt_state_backend_up", backend="redis") == 0


async def test_per_device_series_are_capped_to_the_most_recent(
    node: FogNode, devices: Devices
) -> None:
    metrics = NodeMetrics(node, max_device_series=2)
    for name in ("old", "mid", "new"):
        assert await devices.send(name, [20.0]) == "2.04"
    f = scrape(metrics)
    exported = {s.labels["device"] for s in f["fogrt_device_last_seen_timestamp_seconds"][1]}
    assert exported == {"mid", "new"}
    assert value(f, "fogrt_devices_known") == 3 and value(f, "fogrt_devices_unexported") == 1


async def test_each_node_has_its_own_registry(tmp_path: Path, node: FogNode) -> None:
    other = await start_node(tmp_path / "other")
    try:
        a, b = NodeMetrics(node), NodeMetrics(other)
        a.attach()
        b.attach()
        a.checkpoint_done(1.0)
        assert value(scrape(a), "fogrt_checkpoints_total") == 1
        assert value(scrape(b), "fogrt_checkpoints_total") == 0
        b.detach()
        a.detach()
    finally:
        await other.stop()


async def test_detach_gives_back_the_ack_hook(node: FogNode) -> None:
    assert node.service is not None
    seen: list[float] = []
    node.service.on_ack = seen.append
    metrics = NodeMetrics(node)
    metrics.attach()
    assert node.service.on_ack is not None
    node.service.on_ack(0.5)  # both the metrics and the previous hook see it
    assert seen == [0.5] and metrics.ack_latency.count == 1
    metrics.detach()
    assert node.service.on_ack == seen.append


def test_projected_battery_life_follows_the_control_and_the_battery() -> None:
    m = ENERGY_MODEL
    every_minute = Control(interval=60, sample_period=60.0)
    assert m.projected_life_s(every_minute, None, None, None) is None  # nothing reported
    life = partial(m.projected_life_s, battery_mv=None, capacity_mah=None)
    slow = life(Control(interval=600, sample_period=600.0), 50)
    fast = life(Control(interval=10, sample_period=10.0), 50)
    assert slow is not None and fast is not None and slow > 8 * fast > 0
    # Sending every tenth sample costs less than sending each, more than not sampling.
    delta = Control(interval=3600, sample_period=60.0, tx="delta", epsilon=0.1)
    sparse = life(delta, 50, uplinks_per_day=144.0)
    assert life(every_minute, 50) < sparse < life(Control(interval=600, sample_period=600.0), 50)
    # The measured uplink rate counts: more uplinks, shorter life.
    assert life(delta, 50, uplinks_per_day=1000.0) < sparse
    full = m.projected_life_s(every_minute, 100, None, 2000)
    double = m.projected_life_s(every_minute, 100, None, 4000)
    assert full is not None and double is not None and 1.8 * full < double < 2 * full
    # Without a percentage the voltage is mapped linearly between empty and full.
    assert m.projected_life_s(every_minute, None, 3750, None) == pytest.approx(
        m.projected_life_s(every_minute, 50, None, None)
    )
    assert m.projected_life_s(every_minute, None, 3000, None) == 0.0
    # The board's figures are the energy model's: a board that draws nothing asleep and
    # wakes for free lasts as long as its self-discharge allows.
    leaky = EnergyModel(board=Board(quiescent_ma=5.0))
    assert leaky.projected_life_s(every_minute, 100, None, None) < life(every_minute, 100)
