"""``fogrt simulate``: the real edge agent on simulated boards against a real fog node.

Every run here starts a ``FogNode`` (in this process, or ``fogrt run`` as a child process
for ``--fog``), runs ``edge_agent/fogagent`` under CPython with a simulated clock at
``--speed max``, and checks the books against the fog's own output: the readings in the
topology's jsonl sink, the per-policy summary JSON. No assertion depends on wall time.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fogrt.sim.cli import main
from fogrt.sim.energy import Board
from fogrt.sim.sensors import SyntheticSignal
from fogrt.types import FieldType

pytestmark = pytest.mark.integration

TOPOLOGY = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {name: sim-test}
sources:
  room: {coap: /r/room, fields: {temp: float, hum: float, door: bool}}
sinks:
  - {id: raw, use: jsonl, from: room, with: {path: raw.jsonl}}
control:
  policy: {use: policy.fixed, with: {interval: 30s}}
"""

SCHEMA: dict[str, FieldType] = {"temp": "float", "hum": "float", "door": "bool"}
EPSILON = 0.3
# A suppressed sample is within epsilon of what the fog assumes for it (send-on-delta: the
# last value sent; dual prediction: the forecast both sides compute from the values the fog
# knows); a sent one arrives exactly, up to float32 rounding on the wire (2**-24 relative,
# about 2e-6 at these magnitudes). So no error exceeds epsilon + ROUNDING, and the RMSE
# cannot exceed the largest error.
ROUNDING = 1e-5
DEVICES = 3
HOURS = 3
ANOMALIES_PER_DAY = 24.0


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def sink_rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines()]


def by_policy(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["policy"]: p for p in summary["policies"]}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run of three policies on the same synthetic data (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("sim")
    topology = write(tmp / "room.yaml", TOPOLOGY)
    code = main(
        [
            "simulate",
            str(topology),
            "--devices",
            str(DEVICES),
            "--dataset",
            "synthetic",
            "--duration",
            f"{HOURS}h",
            "--speed",
            "max",
            "--anomalies-per-day",
            str(ANOMALIES_PER_DAY),
            "--policy",
            "fixed",
            "--policy",
            f"send_on_delta:epsilon={EPSILON}",
            "--policy",
            f"dual_prediction:epsilon={EPSILON}",
            "--output",
            str(tmp / "out"),
            "--summary",
            str(tmp / "summary.json"),
            "--no-progress",
        ]
    )
    return {
        "code": code,
        "summary": json.loads((tmp / "summary.json").read_text()),
        "rows": sink_rows(tmp / "out"),
    }


def test_the_run_succeeds_and_the_summary_has_every_policys_numbers(
    synthetic: dict[str, Any],
) -> None:
    assert synthetic["code"] == 0
    summary = synthetic["summary"]
    assert summary["devices"] == DEVICES and summary["dataset"] == "synthetic"
    assert summary["baseline"] == "fixed"
    policies = by_policy(summary)
    assert list(policies) == ["fixed", "send_on_delta", "dual_prediction"]
    for p in policies.values():
        assert p["duration_s"] == HOURS * 3600
        for key in ("samples", "sent", "sent_pct", "mah_per_day", "battery_days"):
            assert isinstance(p[key], int | float) and p[key] > 0, key
        assert set(p["rmse"]) == {"temp", "hum"} == set(p["max_error"]) == set(p["rmse_grid"])
        assert set(p["anomalies"]) == {"total", "caught", "missed", "unsampled"}
        assert [d["device"] for d in p["per_device"]] == [
            f"sim-{p['policy']}-{i:03d}" for i in range(DEVICES)
        ]


def test_every_reading_sent_reached_the_fogs_sink(synthetic: dict[str, Any]) -> None:
    per_device = Counter(row["device"] for row in synthetic["rows"])
    for p in synthetic["summary"]["policies"]:
        assert p["missing"] == 0 and p["unacked"] == 0
        for d in p["per_device"]:
            assert d["sent"] > 0
            assert per_device[d["device"]] == d["sent"], d["device"]
    # The bool field has no sensor: sent as missing, as a board sends it.
    assert all(row["door"] is None for row in synthetic["rows"])


def test_fixed_transmits_every_sample(synthetic: dict[str, Any]) -> None:
    fixed = by_policy(synthetic["summary"])["fixed"]
    # One sample a minute per device, plus the boot time: the agent times its sleep from
    # when it starts running, which a deep-sleep wake reaches only after booting (0.635 s).
    period = 60.0 + Board().boot_s
    assert fixed["samples"] == sum(
        math.floor((HOURS * 3600 - 1 - start) / period) + 1 for start in (0, 20, 40)
    )
    assert fixed["sent"] == fixed["samples"] and fixed["sent_pct"] == 100.0
    assert fixed["uplinks"] == fixed["samples"]
    assert all(e <= ROUNDING for e in fixed["max_error"].values())


@pytest.mark.parametrize("policy", ["send_on_delta", "dual_prediction"])
def test_suppressing_policies_send_less_and_save_energy_within_epsilon(
    synthetic: dict[str, Any], policy: str
) -> None:
    policies = by_policy(synthetic["summary"])
    fixed, p = policies["fixed"], policies[policy]
    assert p["samples"] == fixed["samples"]  # same sample period: only transmissions differ
    assert p["sent"] < fixed["sent"] / 2
    assert p["mah_per_day"] < fixed["mah_per_day"]
    assert p["energy_vs_baseline_pct"] < 0
    assert p["battery_days"] > fixed["battery_days"]
    for field in ("temp", "hum"):
        assert 0 < p["max_error"][field] <= EPSILON + ROUNDING
        assert p["rmse"][field] <= EPSILON + ROUNDING
    assert all(n == 0 for n in p["unknown_samples"].values())


def test_anomalies_have_a_known_answer(synthetic: dict[str, Any]) -> None:
    signal = SyntheticSignal(
        SCHEMA, DEVICES, duration=HOURS * 3600, anomalies_per_day=ANOMALIES_PER_DAY
    )
    expected = sum(len(signal.anomalies(d, HOURS * 3600)) for d in range(DEVICES))
    assert expected > 0
    for p in synthetic["summary"]["policies"]:
        a = p["anomalies"]
        assert a["total"] == expected
        # Every injected anomaly lasts three sample periods or more and moves the signal by
        # at least twice the daily amplitude (>> epsilon): no policy here may miss one.
        assert a["caught"] == expected and a["missed"] == 0 and a["unsampled"] == 0


def write_dataset(path: Path) -> dict[str, list[float]]:
    """Two motes, a reading every 30 s for 2 hours; mote a has one labelled event."""
    temps: dict[str, list[float]] = {"a": [], "b": []}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "mote", "temp", "hum", "pressure_hpa", "label"])
        for k in range(240):
            for mote, base in (("a", 20.0), ("b", 25.0)):
                temp = round(base + 2.0 * math.sin(k / 40.0), 2)
                temps[mote].append(temp)
                label = 1 if mote == "a" and 100 <= k < 110 else 0
                w.writerow([1_700_000_000 + 30 * k, mote, temp, 40.0, 1013.0, label])
    return temps


def test_a_dataset_drives_the_devices_round_robin(tmp_path: Path) -> None:
    temps = write_dataset(tmp_path / "motes.csv")
    topology = write(tmp_path / "room.yaml", TOPOLOGY.replace(", door: bool", ""))
    code = main(
        [
            "simulate",
            str(topology),
            "--devices",
            "3",
            "--dataset",
            str(tmp_path / "motes.csv"),
            "--key-column",
            "mote",
            "--policy",
            "fixed",
            "--policy",
            "send_on_delta:epsilon=0.5",
            "--output",
            str(tmp_path / "out"),
            "--summary",
            str(tmp_path / "summary.json"),
            "--no-progress",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    fixed, delta = summary["policies"]
    assert fixed["duration_s"] == 239 * 30  # the dataset's span
    assert [d["data"] for d in fixed["per_device"]] == ["mote a", "mote b", "mote a"]
    # Sample-and-hold: what reached the fog is always one of the mote's own readings.
    keys = {d["device"]: d["data"][-1] for d in fixed["per_device"]}
    rows = [r for r in sink_rows(tmp_path / "out") if r["device"] in keys]
    assert len(rows) == fixed["sent"] == fixed["samples"]
    for r in rows:
        assert min(abs(r["temp"] - t) for t in temps[keys[r["device"]]]) < ROUNDING
    # The label column: one event on mote a, so one anomaly on each of its two devices.
    assert fixed["anomalies"]["total"] == 2 == fixed["anomalies"]["caught"]
    assert delta["sent"] < fixed["sent"] and delta["mah_per_day"] < fixed["mah_per_day"]
    assert delta["max_error"]["temp"] <= 0.5 + ROUNDING


@pytest.mark.parametrize(
    ("change", "messages"),
    [
        (
            ("door: bool", "pressure: float"),
            [
                "no column for field 'pressure'",
                "timestamp, mote, temp, hum, pressure_hpa, label",
                "--column pressure=COLUMN",
            ],
        ),
        (
            ("temp: float, hum: float, door: bool", "temp: int, hum: float"),
            ["motes.csv:4: column 'temp': expected int, got '20.05'"],
        ),
    ],
)
def test_a_topology_whose_fields_do_not_match_the_data_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    messages: list[str],
) -> None:
    write_dataset(tmp_path / "motes.csv")
    wrong = TOPOLOGY.replace(*change)
    assert wrong != TOPOLOGY
    code = main(
        [
            "simulate",
            str(write(tmp_path / "t.yaml", wrong)),
            "--dataset",
            str(tmp_path / "motes.csv"),
            "--key-column",
            "mote",
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    for message in messages:
        assert message in err


@pytest.mark.parametrize(
    ("topology", "message"),
    [
        (
            TOPOLOGY.replace("{temp: float, hum: float, door: bool}", "{door: bool, name: str}"),
            "synthetic data fills numeric fields, and the source declares none",
        ),
        (TOPOLOGY.replace("coap: /r/room", "coap: /x/room"), "the edge agent posts to /r/<source>"),
    ],
)
def test_synthetic_data_that_cannot_fit_the_source_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], topology: str, message: str
) -> None:
    code = main(["simulate", str(write(tmp_path / "t.yaml", topology)), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "send_on_dleta"], "did you mean 'send_on_delta'"),
        (["--policy", "fixed:epsilon=1"], "epsilon: unknown parameter 'epsilon'"),
        (["--speed", "fast"], "--speed 'fast'"),
        (["--fog", "127.0.0.1:9", "--policy", "fixed"], "with --fog the remote node decides"),
        (["--dataset", "missing.csv"], "no such file"),
    ],
)
def test_invalid_arguments_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["simulate", str(write(tmp_path / "t.yaml", TOPOLOGY)), "--no-progress", *args])
    assert code == 2
    assert message in capsys.readouterr().err


def test_registered_policies_adapt_the_fleet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a policy registry (as fogrt will have), the real policies run per device: here
    dual prediction with a fitted predictor and an adaptive sample period."""
    from fogrt import registry

    table = {
        "policy.fixed": "operators.policy.simple:Fixed",
        "policy.dual_prediction": "operators.policy.dual:DualPrediction",
    }
    monkeypatch.setattr(
        registry, "POLICIES", registry.Registry("policy", "fogrt.policies", table), raising=False
    )
    code = main(
        [
            "simulate",
            str(write(tmp_path / "t.yaml", TOPOLOGY)),
            "--devices",
            "2",
            "--duration",
            "4h",
            "--policy",
            "fixed",
            "--policy",
            f"dual_prediction:epsilon={EPSILON},max_sample_period=10m",
            "--summary",
            str(tmp_path / "s.json"),
            "--no-progress",
        ]
    )
    assert code == 0
    fixed, dual = json.loads((tmp_path / "s.json").read_text())["policies"]
    assert "operators.policy.dual.DualPrediction" in dual["control"]
    assert dual["samples"] < fixed["samples"] / 2  # the sample period stretched
    assert dual["mah_per_day"] < fixed["mah_per_day"] / 2
    assert dual["max_error"]["temp"] <= EPSILON + ROUNDING  # at the samples it took
    assert dual["missing"] == 0


async def test_a_fleet_runs_alongside_a_served_node(tmp_path: Path) -> None:
    """``fogrt run --simulate``: the devices get the node's own control (the topology's
    fixed 30 s interval) and are paced against wall time; cancelling stops them."""
    from fogrt.node import FogNode, NodeConfig
    from fogrt.sim.fleet import simulate_alongside
    from fogrt.topology import compile_topology

    node = FogNode(
        compile_topology(TOPOLOGY, "t.yaml"),
        NodeConfig(
            coap_host="127.0.0.1",
            coap_port=0,
            state_dir=tmp_path / "state",
            output_dir=tmp_path / "out",
        ),
    )
    await node.start()
    try:
        assert node.service is not None
        result = await simulate_alongside(node, 2, speed=36_000.0, duration=1800.0)
        assert len(result.devices) == 2
        assert result.sent == result.samples > 2 * 50  # one sample every 30 s for 30 min
        assert all(d.missing == 0 for d in result.devices)
        assert {"sim-fog-000", "sim-fog-001"} <= set(node.service.registry.devices)
        # Until cancelled (a live demo runs until Ctrl-C): nothing is left running.
        task = asyncio.create_task(simulate_alongside(node, 2, speed=36_000.0))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The boards' flash is in the node's state directory: a second run took new boot
        # epochs, so none of its readings was taken for a duplicate.
        assert (tmp_path / "state" / "simulated-devices" / "sim-fog-000" / "fog_boot").exists()
        assert node.service.duplicates == 0
    finally:
        await node.stop()


def test_a_running_fog_node_is_reached_with_fog(tmp_path: Path) -> None:
    from tests.nodes import NodeProcess

    topology = write(tmp_path / "t.yaml", TOPOLOGY)
    proc = NodeProcess(topology, tmp_path / "state", tmp_path / "out")
    try:
        code = main(
            [
                "simulate",
                str(topology),
                "--fog",
                f"127.0.0.1:{proc.port}",
                "--devices",
                "2",
                "--duration",
                "20m",
                "--summary",
                str(tmp_path / "s.json"),
                "--no-progress",
            ]
        )
    finally:
        assert proc.terminate() == 0
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["fog"] == f"127.0.0.1:{proc.port}"
    (p,) = summary["policies"]
    assert p["policy"] == "fog"
    assert p["sent"] == p["samples"] > 0  # the topology's fixed policy: every reading
    rows = sink_rows(tmp_path / "out")
    assert len(rows) == p["sent"]


def test_an_unreachable_fog_node_fails_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once it is closed
    topology = write(tmp_path / "t.yaml", TOPOLOGY)
    code = main(["simulate", str(topology), "--fog", f"127.0.0.1:{port}", "--no-progress"])
    assert code == 1
    assert f"no CoAP answer from 127.0.0.1:{port}" in capsys.readouterr().err


def test_plot_is_written_or_explained_and_never_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topology = str(write(tmp_path / "t.yaml", TOPOLOGY))
    args = ["simulate", topology, "--devices", "1", "--duration", "1h", "--no-progress"]
    assert main([*args, "--plot", str(tmp_path / "sim.png")]) == 0
    err = capsys.readouterr().err
    if (tmp_path / "sim.png").exists():  # matplotlib is an optional dependency
        assert (tmp_path / "sim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plot written to {tmp_path / 'sim.png'}" in err
    else:
        assert "pip install matplotlib" in err
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a),
    )
    assert main([*args, "--plot", str(tmp_path / "other.png")]) == 0
    assert "matplotlib is not installed (pip install matplotlib)" in capsys.readouterr().err
    assert not (tmp_path / "other.png").exists()


def test_the_nodes_own_policy_drives_the_fleet_and_fills_the_gaps(tmp_path: Path) -> None:
    """``--policy fog`` with a topology whose ``control:`` runs dual prediction: the node's
    control loop (not the simulator) fits the predictors, the devices send a fraction of
    their samples, and the node imputes the rest into the stream, within epsilon."""
    text = TOPOLOGY.replace(
        "policy: {use: policy.fixed, with: {interval: 30s}}",
        f"policy: {{use: policy.dual_prediction, with: {{epsilon: {EPSILON}, "
        "sample_period: 60s}}",
    )
    code = main(
        [
            "simulate",
            str(write(tmp_path / "t.yaml", text)),
            "--devices",
            "2",
            "--duration",
            "6h",
            "--speed",
            "max",
            "--anomalies-per-day",
            "0",
            "--policy",
            "fog",
            "--policy",
            "fixed:interval=60s",
            "--output",
            str(tmp_path / "out"),
            "--summary",
            str(tmp_path / "s.json"),
            "--no-progress",
        ]
    )
    assert code == 0
    p = by_policy(json.loads((tmp_path / "s.json").read_text()))
    fog, fixed = p["fog"], p["fixed"]
    assert fixed["sent"] == fixed["samples"]  # the simulator's policy: the loop left it alone
    assert fog["sent"] < 0.5 * fog["samples"]
    rows = [r for r in sink_rows(tmp_path / "out") if r["device"].startswith("sim-fog")]
    imputed = [r for r in rows if r.get("flags") == ["imputed"]]
    measured = [r for r in rows if "flags" not in r]
    assert len(measured) == fog["sent"]
    # every skipped sample comes back, except those after a device's last uplink
    assert fog["samples"] - fog["sent"] - 2 * 10 <= len(imputed) <= fog["samples"] - fog["sent"]
    assert all(r["hum"] is None and isinstance(r["temp"], float) for r in imputed)
