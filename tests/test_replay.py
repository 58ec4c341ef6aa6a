"""``fogrt replay`` end to end on generated data with injected anomalies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from fogrt.cli import main
from tests.gen import PUMP_TOPOLOGY, pump_csv


@pytest.fixture
def pump(tmp_path: Path) -> tuple[Path, Path, dict[str, set[int]]]:
    topo = tmp_path / "pump.yaml"
    topo.write_text(PUMP_TOPOLOGY)
    data = tmp_path / "pump.csv"
    truth = pump_csv(data)
    return topo, data, truth


def run_replay(topo: Path, data: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "--log-format",
            "json",
            "replay",
            str(topo),
            "--input",
            str(data),
            "--time-column",
            "datetime",
            "--key-column",
            "device",
            "--output",
            str(out),
            "--no-progress",
            "--summary",
            str(out / "summary.json"),
            *extra,
        ]
    )


def test_replay_finds_the_injected_anomalies(
    pump: tuple[Path, Path, dict[str, set[int]]], tmp_path: Path
) -> None:
    topo, data, truth = pump
    out = tmp_path / "out"
    assert run_replay(topo, data, out) == 0

    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert alerts and all(a["is_anomaly"] is True for a in alerts)
    found = {(a["device"], a["seq"]) for a in alerts}
    injected = {(dev, k) for dev, ks in truth.items() for k in ks}
    caught = found & injected
    assert len(caught) >= 0.8 * len(injected), (sorted(injected - found), sorted(found))
    assert len(found - injected) <= 0.05 * 900, "false alarms on ~900 normal windows"

    # Window features: one row per device and 10 s window, 3 x 300 windows.
    with (out / "feats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 900
    assert list(rows[0]) == [
        "device",
        "seq",
        "time",
        "vib_mean",
        "vib_std",
        "vib_max",
        "current_mean",
        "current_std",
        "current_max",
        "temp_mean",
        "temp_std",
        "temp_max",
    ]
    assert {r["device"] for r in rows} == {"pump-0", "pump-1", "pump-2"}

    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 9000
    nodes = {n["id"]: n for n in summary["nodes"]}
    dropped = nodes["clean"]["metrics"]["dropped"]
    assert dropped > 0 and nodes["clean"]["out"] == 9000 - dropped
    assert nodes["feats"]["out"] == 900
    assert nodes["detect"]["instances"] == 3
    assert summary["anomalies"] == len(alerts) == nodes["alerts"]["out"]


def test_replay_is_byte_identical_for_the_same_input_and_seed(
    pump: tuple[Path, Path, dict[str, set[int]]], tmp_path: Path
) -> None:
    topo, data, _ = pump
    assert run_replay(topo, data, tmp_path / "a") == 0
    assert run_replay(topo, data, tmp_path / "b") == 0
    for name in ("alerts.jsonl", "feats.csv"):
        first = (tmp_path / "a" / name).read_bytes()
        assert first, name
        assert first == (tmp_path / "b" / name).read_bytes(), name


def test_the_seed_decides_the_model(
    pump: tuple[Path, Path, dict[str, set[int]]], tmp_path: Path
) -> None:
    topo, data, _ = pump
    text = (
        topo.read_text().replace(
            "{OneClassSVM: {}}", "{HalfSpaceTrees: {n_trees: 5, height: 6, window_size: 50}}"
        )
        + "  - {id: scores, use: jsonl, from: detect, with: {path: scores.jsonl}}\n"
    )
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        (tmp_path / f"{name}.yaml").write_text(text.replace("seed: 11", f"seed: {seed}"))
        assert run_replay(tmp_path / f"{name}.yaml", data, tmp_path / name) == 0
    scores = {n: (tmp_path / n / "scores.jsonl").read_bytes() for n in "abc"}
    assert scores["a"] == scores["b"]
    assert scores["a"] != scores["c"]


def test_bad_cell_stops_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / "pump.yaml"
    topo.write_text(PUMP_TOPOLOGY)
    data = tmp_path / "bad.csv"
    data.write_text(
        "datetime;device;vib;current;temp\n"
        "2024-01-01 00:00:00;p;0.1;1.2;70\n"
        "2024-01-01 00:00:01;p;0.1;lots;70\n"
    )
    assert run_replay(topo, data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"{data}:3: column 'current': expected float, got 'lots'" in err

    assert run_replay(topo, data, tmp_path / "out", "--bad-values", "skip") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"] == 1 and summary["rows_skipped"] == 1


def test_missing_column_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topo = tmp_path / "pump.yaml"
    topo.write_text(PUMP_TOPOLOGY)
    data = tmp_path / "cols.csv"
    data.write_text("datetime,device,vibration,current,temp\n2024-01-01,p,1,2,3\n")
    assert run_replay(topo, data, tmp_path / "out") == 2
    assert "no column for field 'vib'" in capsys.readouterr().err
    assert run_replay(topo, data, tmp_path / "out", "--column", "vib=vibration") == 0


def test_shipped_example_replays(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    code = main(
        [
            "replay",
            str(repo / "topologies/wsn-events.yaml"),
            "--input",
            str(repo / "topologies/data/lwsndr_single_hop.csv.gz"),
            "--key-column",
            "mote_id",
            "--time-column",
            "reading",
            "--time-scale",
            "5",
            "--output",
            str(tmp_path),
            "--no-progress",
            "--summary",
            str(tmp_path / "s.json"),
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rows"] == 18914
    assert summary["anomalies"] > 0
    assert (tmp_path / "wsn-anomalies.jsonl").read_text().count("\n") == summary["anomalies"]
