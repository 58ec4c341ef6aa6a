"""Benchmark: ``fogrt replay`` against a bare Python loop doing the same work.

Both sides read the same CSV (``;``-separated, SKAB-shaped: a time column, a device column,
eight sensor columns), drop out-of-range rows, keep 10 s tumbling windows per device with
mean/std/min/max of every field, score and learn each window with the same River pipeline
(MinMaxScaler | HalfSpaceTrees, same seed) against a running 0.99 quantile threshold, and
write the anomalies as JSON lines. The bare loop is what a careful engineer would write by
hand for exactly this job, with nothing general about it. The figure of merit is
``fogrt events/s / bare events/s`` (goal >= 0.85); the anomaly files are compared too.

    python bench/replay.py --dataset PATH/TO/skab            # every SKAB file, as devices
    python bench/replay.py --synthetic 200000 --devices 20   # generated data
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FIELDS = [
    "accelerometer1rms", "accelerometer2rms", "current", "pressure", "temperature",
    "thermocouple", "voltage", "volume_flow_raterms",
]  # fmt: skip
LIMITS = {"current": (0.0, 10.0), "temperature": (-20.0, 150.0), "voltage": (0.0, 400.0)}
SIZE = 10.0
QUANTILE = 0.99
WARMUP = 20
NEEDED = math.ceil(1.0 / (1.0 - QUANTILE) - 1e-9)
"""Scores a quantile threshold needs before it gives a limit (as learn.anomaly's)."""
SEED = 7
HST = {"n_trees": 10, "height": 8, "window_size": 100}

TOPOLOGY = f"""\
apiVersion: fogrt/v1
kind: Topology
metadata: {{name: bench-replay}}
sources:
  pump:
    fields: {{{", ".join(f"{f}: float" for f in FIELDS)}}}
operators:
  - id: clean
    use: preprocess.range_check
    from: pump
    with: {{limits: {json.dumps({k: list(v) for k, v in LIMITS.items()})}, action: drop}}
  - id: feats
    use: window.tumbling
    from: clean
    with: {{size: {SIZE}s, features: [mean, std, min, max]}}
  - id: detect
    use: learn.anomaly
    from: feats
    with:
      model: [{{MinMaxScaler: {{}}}}, {{HalfSpaceTrees: {json.dumps(HST)}}}]
      threshold: {{quantile: {QUANTILE}}}
      warmup: {WARMUP}
      seed: {SEED}
sinks:
  - {{id: alerts, use: jsonl, from: detect, where: "is_anomaly", with: {{path: fogrt.jsonl}}}}
"""


# -- input ---------------------------------------------------------------------------------


def build_input(args: argparse.Namespace, path: Path) -> int:
    """Write the combined CSV; return its number of rows."""
    rows = 0
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["datetime", "device", *FIELDS])
        if args.dataset:
            root = Path(args.dataset)
            files = sorted(root.rglob("*.csv")) if root.is_dir() else [root]
            for f in files:
                with f.open(newline="") as src:
                    r = csv.DictReader(src, delimiter=";")
                    if not r.fieldnames or "Accelerometer1RMS" not in r.fieldnames:
                        continue
                    cols = [
                        c for c in r.fieldnames if c not in ("datetime", "anomaly", "changepoint")
                    ]
                    device = str(f.relative_to(root) if root.is_dir() else f.name)
                    for row in r:
                        w.writerow([row["datetime"], device, *(row[c] for c in cols)])
                        rows += 1
        else:
            rng = random.Random(1)
            per = args.synthetic // args.devices
            t0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
            for d in range(args.devices):
                for s in range(per):
                    stamp = datetime.fromtimestamp(t0 + s, UTC).strftime("%Y-%m-%d %H:%M:%S")
                    spike = 3.0 if rng.random() < 0.002 else 1.0
                    vals = [
                        0.03 * spike + rng.gauss(0, 0.002),
                        0.04 + rng.gauss(0, 0.002),
                        1.3 + rng.gauss(0, 0.05),
                        0.3 + rng.gauss(0, 0.05),
                        75 + 3 * math.sin(s / 600) + rng.gauss(0, 0.2),
                        26 + rng.gauss(0, 0.1),
                        230 + rng.gauss(0, 2),
                        32 + rng.gauss(0, 1),
                    ]
                    w.writerow([stamp, f"pump-{d}", *(f"{v:.6g}" for v in vals)])
                    rows += 1
    return rows


# -- the bare loop ---------------------------------------------------------------------------


def bare_loop(csv_path: Path, out_path: Path) -> float:
    """The same job written by hand; returns seconds."""
    from river import anomaly, compose, preprocessing, stats

    start = time.perf_counter()
    inf = math.inf
    models: dict[str, Any] = {}
    quantiles: dict[str, Any] = {}
    learned: dict[str, int] = {}
    thresholded: dict[str, int] = {}
    windows: dict[str, dict[int, list[list[float]]]] = {}
    done: dict[str, float] = {}
    limits = [(FIELDS.index(k), lo, hi) for k, (lo, hi) in LIMITS.items()]
    nf = len(FIELDS)
    names = [f"{f}_{feat}" for f in FIELDS for feat in ("mean", "std", "min", "max")]

    with csv_path.open(newline="") as fh, out_path.open("w") as out:
        reader = csv.reader(fh, delimiter=";")
        next(reader)
        seqs: dict[str, int] = {}

        def emit(device: str, k: int, accs: list[list[float]]) -> None:
            x: dict[str, float] = {}
            feats: dict[str, Any] = {}
            for i, a in enumerate(accs):
                n = a[0]
                base = 4 * i
                if n == 0:
                    for j in range(4):
                        feats[names[base + j]] = None
                    continue
                vals = (a[1], math.sqrt(a[2] / n) if n > 1 else 0.0, float(a[3]), float(a[4]))
                for j in range(4):
                    feats[names[base + j]] = x[names[base + j]] = vals[j]
            model = models.get(device)
            if model is None:
                model = models[device] = compose.Pipeline(
                    preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=SEED, **HST)
                )
                quantiles[device] = stats.Quantile(QUANTILE)
                learned[device] = thresholded[device] = 0
            # learn.anomaly's semantics (operators/learn/thresholds.py): the threshold
            # learns the scores once HalfSpaceTrees' first window is full (every score is
            # 0 before), and a 0.99-quantile gives no limit before 100 of them.
            ready = not model["HalfSpaceTrees"]._first_window
            score = float(model.score_one(x))
            learned[device] += 1
            q = quantiles[device]
            limit = q.get() if thresholded[device] >= NEEDED else None
            flag = learned[device] > WARMUP and limit is not None and score > limit
            model.learn_one(x)
            if ready:
                q.update(score)
                thresholded[device] += 1
            if flag:
                rec = {
                    "device": device,
                    "seq": k,
                    "time": (k + 1) * SIZE,
                    **feats,
                    "score": score,
                    "is_anomaly": True,
                }
                out.write(json.dumps(rec) + "\n")

        for row in reader:
            device = row[1]
            seqs[device] = seqs.get(device, 0) + 1
            t = datetime.fromisoformat(row[0]).replace(tzinfo=UTC).timestamp()
            vals = [float(c) if c else None for c in row[2:]]
            if any(
                v is not None and not lo <= v <= hi
                for i, lo, hi in limits
                if (v := vals[i]) is not None
            ):
                continue
            k = math.floor(t / SIZE)
            wins = windows.setdefault(device, {})
            accs = wins.get(k)
            if accs is None:
                if (k + 1) * SIZE <= done.get(device, -inf):
                    continue  # late
                accs = wins[k] = [[0, 0.0, 0.0, inf, -inf] for _ in range(nf)]
            for a, v in zip(accs, vals, strict=True):
                if v is None:
                    continue
                n = a[0] + 1
                a[0] = n
                d = v - a[1]
                a[1] += d / n
                a[2] += d * (v - a[1])
                if v < a[3]:
                    a[3] = v
                if v > a[4]:
                    a[4] = v
            if t > done.get(device, -inf):
                done[device] = t
                for kk in sorted(kk for kk in wins if (kk + 1) * SIZE <= t):
                    emit(device, kk, wins.pop(kk))
        for device, wins in windows.items():
            for kk in sorted(wins):
                emit(device, kk, wins[kk])
    return time.perf_counter() - start


# -- fogrt -----------------------------------------------------------------------------------


def fogrt_replay(topology: Path, csv_path: Path, out_dir: Path) -> float:
    """``fogrt replay`` in this process (imports already paid); returns seconds."""
    from fogrt.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(
            [
                "--log-level",
                "warning",
                "replay",
                str(topology),
                "--input",
                str(csv_path),
                "--time-column",
                "datetime",
                "--key-column",
                "device",
                "--output",
                str(out_dir),
                "--no-progress",
            ]
        )
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"fogrt replay failed with exit code {code}")
    return elapsed


def _anomalies(path: Path) -> list[tuple[str, int, float]]:
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out.append((rec["device"], rec["seq"], round(rec["score"], 9)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", help="a SKAB CSV file or a folder of them (e.g. skab/)")
    src.add_argument("--synthetic", type=int, default=200_000, help="rows to generate")
    p.add_argument("--devices", type=int, default=20, help="devices for --synthetic")
    p.add_argument("--repeat", type=int, default=3, help="runs of each side (best is kept)")
    args = p.parse_args()

    import river  # noqa: F401 - import cost is paid up front, for both sides

    import fogrt.cli  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "input.csv"
        rows = build_input(args, data)
        topology = tmp / "bench.yaml"
        topology.write_text(TOPOLOGY)
        print(
            f"input: {rows:,} rows ({'dataset ' + args.dataset if args.dataset else 'synthetic'})"
        )
        bare_times, fogrt_times = [], []
        for i in range(args.repeat):
            bare_times.append(bare_loop(data, tmp / "bare.jsonl"))
            fogrt_times.append(fogrt_replay(topology, data, tmp))
            print(
                f"  run {i + 1}: bare {rows / bare_times[-1]:,.0f} ev/s, "
                f"fogrt {rows / fogrt_times[-1]:,.0f} ev/s",
                flush=True,
            )
        bare_best, fogrt_best = min(bare_times), min(fogrt_times)
        same = _anomalies(tmp / "bare.jsonl") == _anomalies(tmp / "fogrt.jsonl")
        n_anom = len(_anomalies(tmp / "fogrt.jsonl"))
    bare_eps, fogrt_eps = rows / bare_best, rows / fogrt_best
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(
        f"bare loop     : {bare_eps:>10,.0f} events/s  (best of {args.repeat}, median "
        f"{rows / statistics.median(bare_times):,.0f})"
    )
    print(
        f"fogrt replay  : {fogrt_eps:>10,.0f} events/s  (best of {args.repeat}, median "
        f"{rows / statistics.median(fogrt_times):,.0f})"
    )
    print(f"ratio fogrt/bare: {fogrt_eps / bare_eps:.3f}  (goal >= 0.85)")
    print(f"anomalies: {n_anom}; identical to the bare loop's: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
