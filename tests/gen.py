"""Generated sensor data for tests: tests make their own data (users do not have the datasets)."""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

PUMP_TOPOLOGY = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {name: pump-test}
sources:
  pump:
    fields: {vib: float, current: float, temp: float}
operators:
  - id: clean
    use: preprocess.range_check
    from: pump
    with: {limits: {temp: [-40, 150]}, action: drop}
  - id: feats
    use: window.tumbling
    from: clean
    with: {size: 10s, features: [mean, std, max]}
  - id: detect
    use: learn.anomaly
    from: feats
    with:
      fields: [vib_mean, vib_max, current_mean, temp_mean]
      model: [{StandardScaler: {}}, {OneClassSVM: {}}]
      threshold: {quantile: 0.97}
      warmup: 50
      seed: 11
sinks:
  - {id: alerts, use: jsonl, from: detect, where: "is_anomaly", with: {path: alerts.jsonl}}
  - {id: features, use: csv, from: feats, with: {path: feats.csv}}
"""


def pump_csv(
    path: Path,
    *,
    devices: int = 3,
    seconds: int = 3000,
    anomalies: int = 6,
    seed: int = 0,
    start: float = 1_700_000_000.0,
) -> dict[str, set[int]]:
    """Write a SKAB-shaped CSV (1 Hz, ';'-separated); return {device: anomalous window indexes}.

    Each injected anomaly lasts one whole 10 s window: vibration x4, current +50%, temperature
    +15 C. A few rows carry an impossible temperature (range check drops them).
    """
    rng = random.Random(seed)
    truth: dict[str, set[int]] = {}
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["datetime", "device", "vib", "current", "temp"])
        for d in range(devices):
            dev = f"pump-{d}"
            windows = rng.sample(range(120, seconds // 10 - 1), anomalies)
            truth[dev] = {int(start // 10) + k for k in windows}
            bad = set(windows)
            for s in range(seconds):
                t = start + s
                k = s // 10
                vib = 0.03 + 0.004 * math.sin(s / 60) + rng.gauss(0, 0.002)
                current = 1.3 + rng.gauss(0, 0.03)
                temp = 70 + 3 * math.sin(s / 900) + rng.gauss(0, 0.2)
                if k in bad:
                    vib *= 4
                    current *= 1.5
                    temp += 15
                if rng.random() < 0.001:
                    temp = 9999.0
                iso = f"{_iso(t)}"
                w.writerow([iso, dev, f"{vib:.6f}", f"{current:.5f}", f"{temp:.4f}"])
    return truth


def _iso(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
