"""Evaluate the example topologies on their datasets, next to the benchmarks' own anchors.

Every topology runs through the real engine: the YAML file is compiled as shipped (plus an
evaluation sink on the node being scored, and, where a benchmark's protocol says so, a
documented parameter override), and the dataset's CSV files are read by ``fogrt.replay``'s
``CsvInput`` and pushed through ``fogrt.engine.dataflow.Dataflow``, exactly as ``fogrt
replay`` does. Labels are read from the same files only to score the outputs.

    python bench/evaluate.py --datasets PATH/TO/shared/datasets
    python bench/evaluate.py --datasets PATH --only skab --sweep   # + threshold sensitivity

- SKAB (``topologies/pump-monitoring.yaml``): the published outlier protocol: per file the
  first 400 rows train (the detector learns them and raises no alert), the rest are scored
  point-wise on ``anomaly``: F1, FAR (false alarms / normal rows), MAR (missed / anomalous
  rows), pooled over every labelled file. Anchors: the SKAB leaderboard.
- UCI HAPT (``topologies/activity-recognition.yaml``): progressive accuracy of the activity
  of 2.56 s windows (every window predicted before its label is learned), with the
  majority-class baseline measured in the same run.
- TON_IoT (``topologies/intrusion-detection.yaml``): progressive accuracy on the attack
  ``type`` per device, recall per attack type, and two baselines measured in the same run
  (the majority class so far; the last label already known, with the same 1 h delay).
- LWSNDR: how often each anomaly threshold alerts on per-reading Half-Space Trees scores
  that drift upward (the outdoor motes), and how many labelled readings it catches.

The evaluation is meant to run on other portions of the same datasets too: nothing here
is specific to a file.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fogrt.engine.dataflow import Dataflow
from fogrt.event import Event
from fogrt.replay import CsvInput
from fogrt.topology.compile import compile_topology

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"
EVAL_SINK = "_evaluate"

SKAB_TRAIN = 400
PROTOCOL = {"learn": "warmup", "warmup": SKAB_TRAIN}
"""SKAB's protocol as parameters: learn the first 400 rows (no alerts), score the rest."""
SKAB_ANCHORS = [  # (algorithm, F1, FAR %, MAR %) from the SKAB README leaderboard
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("T-squared", 0.66, 19.21, 42.6),
    ("Isolation forest", 0.29, 2.56, 82.89),
    ("Null detector", 0.0, 0.0, 100.0),
]


# -- running a topology through the engine ---------------------------------------------------


@dataclass
class Run:
    """The events one node emitted, and the dataflow (for the operators' metrics)."""

    events: list[Event]
    flow: Dataflow
    rows: int
    seconds: float


def compile_with_sink(
    path: Path, node: str, overrides: dict[str, Any] | None = None, key: str | None = None
) -> Any:
    """The topology, with a sink on ``node`` and, if given, parameter overrides for it."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for op in doc["operators"]:
        if op["id"] == node:
            op.setdefault("with", {}).update(overrides or {})
            if key is not None:
                op["key"] = key
    doc.setdefault("sinks", []).append(
        {"id": EVAL_SINK, "use": "jsonl", "from": node, "with": {"path": "unused.jsonl"}}
    )
    return compile_topology(yaml.safe_dump(doc, sort_keys=False), str(path))


def replay(
    topology: Any,
    source: str,
    files: list[Path],
    *,
    time_column: str | None = None,
    time_scale: float = 1.0,
    key_column: str | None = None,
) -> Run:
    """Push every row of ``files`` (in order) through one dataflow; collect the eval sink."""
    flow = Dataflow(topology)
    schema = topology.node(source).schema
    events: list[Event] = []
    rows = 0
    started = time.perf_counter()
    for path in files:
        reader = CsvInput(
            path,
            schema,
            time_column=time_column,
            key_column=key_column,
            time_scale=time_scale,
            bad_values="null",
        )
        for batch in reader.batches():
            flow.push(source, batch)
            events.extend(flow.take_sink_batches().get(EVAL_SINK, ()))
        rows += reader.rows_read
    flow.tick(math.inf)
    events.extend(flow.take_sink_batches().get(EVAL_SINK, ()))
    return Run(events, flow, rows, time.perf_counter() - started)


def read_rows(path: Path, delimiter: str | None = None) -> Iterator[dict[str, str]]:
    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as fh:
        first = fh.readline()
        fh.seek(0)
        sep = delimiter or (";" if first.count(";") > first.count(",") else ",")
        yield from csv.DictReader(fh, delimiter=sep)


# -- scores --------------------------------------------------------------------------------


@dataclass
class Binary:
    """Confusion counts of a binary detector, and SKAB's F1 / FAR / MAR."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, predicted: bool, actual: bool) -> None:
        if predicted and actual:
            self.tp += 1
        elif predicted:
            self.fp += 1
        elif actual:
            self.fn += 1
        else:
            self.tn += 1

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)

    @property
    def far(self) -> float:
        return 100.0 * self.fp / max(1, self.fp + self.tn)

    @property
    def mar(self) -> float:
        return 100.0 * self.fn / max(1, self.fn + self.tp)


@dataclass
class Multiclass:
    """Progressive accuracy, recall per class and a majority-class baseline."""

    right: int = 0
    total: int = 0
    per_class: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    seen: Counter[str] = field(default_factory=Counter)
    baseline_right: int = 0

    def add(self, predicted: Any, actual: Any) -> None:
        actual, predicted = str(actual), None if predicted is None else str(predicted)
        # the baseline predicts the most frequent class among the labels seen so far
        if self.seen and self.seen.most_common(1)[0][0] == actual:
            self.baseline_right += 1
        self.seen[actual] += 1
        self.total += 1
        self.right += predicted == actual
        self.per_class[actual][0] += predicted == actual
        self.per_class[actual][1] += 1

    @property
    def accuracy(self) -> float:
        return self.right / max(1, self.total)

    @property
    def baseline(self) -> float:
        return self.baseline_right / max(1, self.total)

    def recall(self) -> dict[str, float]:
        return {c: r / n for c, (r, n) in sorted(self.per_class.items())}


# -- SKAB ----------------------------------------------------------------------------------


def skab_files(datasets: Path) -> list[Path]:
    """Every labelled SKAB file (the anomaly-free one has no labels)."""
    return sorted(p for p in (datasets / "skab").rglob("*.csv") if "anomaly-free" not in p.parts)


def skab_score(files: list[Path], overrides: dict[str, Any] | None = None) -> tuple[Binary, Run]:
    """Pump topology on each SKAB file (one pump per file), scored after the training rows."""
    topology = compile_with_sink(TOPOLOGIES / "pump-monitoring.yaml", "detect", overrides)
    conf = Binary()
    total = Run([], Dataflow(topology), 0, 0.0)
    for path in files:
        labels = [float(row["anomaly"]) > 0 for row in read_rows(path)]
        run = replay(topology, "pump", [path], time_column="datetime")
        flags = {e.seq: bool(e.fields["is_anomaly"]) for e in run.events}
        for i, actual in enumerate(labels[SKAB_TRAIN:], start=SKAB_TRAIN):
            conf.add(flags.get(i, False), actual)
        total.rows += run.rows
        total.seconds += run.seconds
    return conf, total


def print_skab(datasets: Path, sweep: bool) -> None:
    files = skab_files(datasets)
    print(
        f"\n## SKAB outlier detection ({len(files)} labelled files, first {SKAB_TRAIN} rows "
        "of each for training)\n"
    )
    print("| detector | F1 | FAR % | MAR % |")
    print("|---|---|---|---|")
    variants: list[tuple[str, dict[str, Any]]] = [
        ("fogrt pump-monitoring.yaml (learns 400 rows, then frozen: the protocol)", PROTOCOL),
        (
            "same with `learn: normal` (also learns the test rows it does not flag)",
            {**PROTOCOL, "learn": "normal"},
        ),
    ]
    for i, (name, overrides) in enumerate(variants):
        conf, run = skab_score(files, overrides)
        b = "**" if i == 0 else ""
        print(f"| {b}{name}{b} | {b}{conf.f1:.3f}{b} | {conf.far:.2f} | {conf.mar:.2f} |")
    for name, f1, far, mar in SKAB_ANCHORS:
        print(f"| {name} (leaderboard) | {f1:.2f} | {far:.2f} | {mar:.2f} |")
    print(f"\n{run.rows:,} rows per pass, {run.rows / run.seconds:,.0f} rows/s through the engine")
    if sweep:
        skab_sweep(files)


def skab_sweep(files: list[Path]) -> None:
    """Sensitivity of the shipped detector to its two numbers, and River's HST for contrast."""
    print("\nSensitivity (F1 / FAR % / MAR %; rows: `alpha`, columns: `threshold.fixed`):\n")
    limits = (4.0, 6.0, 8.0, 10.0)
    print("| alpha | " + " | ".join(f"{k:g}" for k in limits) + " |")
    print("|---|" + "---|" * len(limits))
    for alpha in (0.05, 0.1, 0.2, 0.5, 1.0):
        cells = []
        for limit in limits:
            model = [{"ControlChart": {"alpha": alpha}}]
            overrides = {**PROTOCOL, "model": model, "threshold": {"fixed": limit}}
            conf, _ = skab_score(files, overrides)
            cells.append(f"{conf.f1:.3f} / {conf.far:.1f} / {conf.mar:.1f}")
        print(f"| {alpha:g} | " + " | ".join(cells) + " |")
    hst: list[Any] = [{"MinMaxScaler": {}}, {"HalfSpaceTrees": {"window_size": 100}}]
    conf, _ = skab_score(files, {**PROTOCOL, "model": hst, "threshold": {"quantile": 0.99}})
    print(
        f"\nFor contrast, MinMaxScaler | HalfSpaceTrees(window_size=100) with a 0.99 quantile "
        f"threshold, same protocol: F1 {conf.f1:.3f}, FAR {conf.far:.2f} %, MAR {conf.mar:.2f} %"
    )


# -- UCI HAPT --------------------------------------------------------------------------------


def print_hapt(datasets: Path) -> None:
    path = datasets / "uci_hapt" / "hapt_raw_train_users.csv.gz"
    names = {
        row["activity_id"]: row["activity"]
        for row in read_rows(datasets / "uci_hapt" / "activity_labels.csv")
    }
    topology = compile_with_sink(TOPOLOGIES / "activity-recognition.yaml", "activity")
    run = replay(
        topology, "wearable", [path], time_column="sample", time_scale=0.02, key_column="exp_id"
    )
    score = Multiclass()
    for e in run.events:
        if e.fields["activity"] is not None:
            score.add(e.fields["prediction"], e.fields["activity"])
    print(
        f"\n## UCI HAPT activity recognition ({run.rows:,} samples, {len(run.events):,} "
        f"windows of 2.56 s, {score.total:,} labelled)\n"
    )
    print("| | progressive accuracy |")
    print("|---|---|")
    print(f"| **fogrt activity-recognition.yaml (ARF, shared model)** | **{score.accuracy:.3f}** |")
    print(f"| majority class so far (same run) | {score.baseline:.3f} |")
    print(
        "\nRecall per activity: "
        + ", ".join(f"{names.get(c, c)} {r:.2f}" for c, r in score.recall().items())
    )
    print(f"\n{run.rows / run.seconds:,.0f} samples/s through the engine")


# -- TON_IoT ---------------------------------------------------------------------------------

TON_DEVICES = [  # (source, operator, file)
    ("fridge", "fridge-ids", "ton_iot_fridge.csv.gz"),
    ("garage", "garage-ids", "ton_iot_garage_door.csv.gz"),
    ("modbus", "modbus-ids", "ton_iot_modbus.csv.gz"),
    ("weather", "weather-ids", "ton_iot_weather.csv.gz"),
]


TON_DELAY = 3600.0  # the topology's label_delay


class Persistence:
    """Baseline: predict the label of the newest reading whose label is already known."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.known: Any = None
        self.queue: list[tuple[float, Any]] = []
        self.head = 0
        self.right = 0

    def add(self, t: float, actual: Any) -> None:
        queue = self.queue
        while self.head < len(queue) and queue[self.head][0] <= t - self.delay:
            self.known = queue[self.head][1]
            self.head += 1
        self.right += self.known == actual
        queue.append((t, actual))


def print_ton_iot(datasets: Path) -> None:
    print("\n## TON_IoT telemetry intrusion detection (time order, labels 1 h late)\n")
    print(
        "| device | readings | progressive accuracy | last known label | majority so far | "
        "attacks flagged | false alarms | recall per attack type |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for source, node, name in TON_DEVICES:
        topology = compile_with_sink(TOPOLOGIES / "intrusion-detection.yaml", node)
        run = replay(topology, source, [datasets / "iot_intrusion" / name], time_column="timestamp")
        score, attack, persistence = Multiclass(), Binary(), Persistence(TON_DELAY)
        for e in run.events:
            actual, predicted = e.fields["type"], e.fields["prediction"]
            score.add(predicted, actual)
            persistence.add(e.time, actual)
            attack.add(predicted not in (None, "normal"), actual != "normal")
        recall = ", ".join(f"{c} {r:.2f}" for c, r in score.recall().items() if c != "normal")
        print(
            f"| {source} | {run.rows:,} | **{score.accuracy:.3f}** | "
            f"{persistence.right / max(1, score.total):.3f} | {score.baseline:.3f} | "
            f"{100 - attack.mar:.1f} % | {attack.far:.1f} % | {recall} |"
        )


# -- LWSNDR: how often thresholds alert on drifting scores -------------------------------------

LWSNDR_RAW = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {name: lwsndr-raw}
sources:
  wsn: {fields: {temperature: float, humidity: float, label: int}}
operators:
  - id: detect
    use: learn.anomaly
    from: wsn
    with: {fields: [temperature, humidity], model: "MinMaxScaler | HalfSpaceTrees", warmup: 30}
sinks:
  - {id: alerts, use: jsonl, from: detect, where: "is_anomaly", with: {path: unused.jsonl}}
"""


def print_lwsndr(datasets: Path, tmp: Path) -> None:
    """Alert rates of the thresholds on per-reading HST scores that drift (outdoor motes)."""
    path = datasets / "lwsndr" / "lwsndr_single_hop.csv.gz"
    raw = tmp / "lwsndr-raw.yaml"
    raw.write_text(LWSNDR_RAW, encoding="utf-8")
    print("\n## LWSNDR: alert rate of each threshold on drifting HalfSpaceTrees scores\n")
    print(
        "Per reading, 4 motes, MinMaxScaler | HalfSpaceTrees (defaults); share of readings "
        "alerting (the threshold asks for 2 %, or ~0.1 % for 3 sigma) and recall of the "
        "labelled events.\n"
    )
    print("| threshold | alerts | share | labelled readings flagged |")
    print("|---|---|---|---|")
    for spec in (
        {"quantile": 0.98},
        {"quantile": 0.98, "window": 1000},
        {"sigma": 3.0},
        {"sigma": 3.0, "halflife": 100},
    ):
        topology = compile_with_sink(raw, "detect", {"threshold": spec})
        run = replay(
            topology, "wsn", [path], time_column="reading", time_scale=5.0, key_column="mote_id"
        )
        conf = Binary()
        for e in run.events:
            conf.add(bool(e.fields["is_anomaly"]), bool(e.fields["label"]))
        alerts = conf.tp + conf.fp
        print(
            f"| `{json.dumps(spec)}` | {alerts:,} | {100 * alerts / len(run.events):.2f} % | "
            f"{conf.tp} of {conf.tp + conf.fn} |"
        )


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--datasets", type=Path, required=True, help="folder with skab/, uci_hapt/...")
    p.add_argument(
        "--only",
        nargs="+",
        choices=["skab", "hapt", "ton_iot", "lwsndr"],
        default=["skab", "hapt", "ton_iot", "lwsndr"],
    )
    p.add_argument("--sweep", action="store_true", help="SKAB: threshold sensitivity table")
    args = p.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print("command: python bench/evaluate.py " + " ".join(sys.argv[1:]))
    if "skab" in args.only:
        print_skab(args.datasets, args.sweep)
    if "hapt" in args.only:
        print_hapt(args.datasets)
    if "ton_iot" in args.only:
        print_ton_iot(args.datasets)
    if "lwsndr" in args.only:
        with tempfile.TemporaryDirectory() as tmp:
            print_lwsndr(args.datasets, Path(tmp))


if __name__ == "__main__":
    main()
