"""Benchmark: duty-cycle policies on the Intel Lab motes' temperature, in projected battery life.

Every policy runs on every mote's recorded temperature through the trace replay of
``operators.policy.replay``: the device side (sample, decide, batch, send, apply the control
of the ACK, sleep, all metered by ``fogrt.sim.energy.EnergyMeter`` with the default ESP32
board) and the fog side (the policy, fed each uplink after its ACK: new controls reach the
device one uplink later). Policies, each at several error bounds ``eps``:

- ``fixed``: sample every base period (the motes' ~31 s) and send every reading;
- ``send_on_delta``: sample at the base period, send when the value moved > eps;
- ``dual_prediction``: sample at the base period, fog-fitted damped-trend predictor;
- ``bandit``: dual prediction; a UCB bandit picks sample period x batch size per epoch;
- ``adaptive``: dual prediction with adaptive sampling (base period .. ``--max-period``).

Data handling: rows failing a physical range check (temperature -10..60 C, relative
humidity 0..100 %, supply 2.0..3.6 V: this drops the corrupted row of mote 8) and repeated
timestamps are dropped. The device samples the recorded signal at its own wake times by
linear interpolation between recorded readings (also across the lossy network's gaps).

Error: the fog's reconstruction is the value it holds at each of the device's sample times
(received, or imputed by the policy), linearly interpolated to the *original* timestamps;
RMSE is against the recorded temperature there, pooled over all motes.

Ratios: battery life vs ``fixed``; transmissions (uplinks) vs what send-on-delta needs at
the same RMSE (log-log interpolation along its eps curve). Goals (issue 7): at RMSE <= 0.1
C, <= 0.5x send-on-delta's transmissions and >= 12x fixed's battery life.

    python bench/energy.py --dataset ../shared/datasets/intel_lab [--motes 1,2,3] [--plot out.png]
        [--eps 0.05,0.1,0.2,0.5] [--max-period 300] [--interval 3600] [--board boot_mas=3.32]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# Running ``python bench/energy.py`` puts bench/ first on sys.path, where a module named
# ``operators`` would shadow the operator package: look the package up from the repository.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from fogrt.sim.energy import Board, EnergyMeter, battery_life_days  # noqa: E402
from operators.policy import DualPrediction, Fixed, Policy, SendOnDelta  # noqa: E402
from operators.policy.bandit import Bandit  # noqa: E402
from operators.policy.replay import ReplayResult, replay  # noqa: E402

FILE = "intel_lab_motes_shared.csv.gz"
LIMITS = {"temperature": (-10.0, 60.0), "humidity": (0.0, 100.0), "voltage": (2.0, 3.6)}
EPS = (0.05, 0.1, 0.2, 0.5)
SOD_CURVE = (0.02, 0.03, 0.075, 0.15, 0.3, 0.75)  # extra points for the matched-RMSE curve
GOAL_RMSE = 0.1
GOAL_TX = 0.5
GOAL_LIFE = 12.0

Series = tuple[np.ndarray, np.ndarray]


# -- data -------------------------------------------------------------------------------


def load(path: Path, motes: Sequence[int] | None) -> tuple[dict[int, Series], int, float]:
    """Per-mote ``(times, temperature)``, how many rows the checks dropped, and the motes'
    sample period (TinyDB's ``epoch`` counts sample periods: time / epochs elapsed)."""
    file = path / FILE if path.is_dir() else path
    if not file.exists():
        sys.exit(f"no {FILE} at {path}")
    rows: dict[int, list[tuple[float, float]]] = {}
    epochs: dict[int, list[tuple[float, int]]] = {}
    dropped = 0
    with gzip.open(file, "rt", newline="") as f:
        for r in csv.DictReader(f):
            mote = int(r["moteid"])
            if motes and mote not in motes:
                continue
            try:
                values = {k: float(r[k]) for k in LIMITS}
            except (TypeError, ValueError):
                dropped += 1
                continue
            if not all(lo <= values[k] <= hi for k, (lo, hi) in LIMITS.items()):
                dropped += 1
                continue
            when = datetime.fromisoformat(r["timestamp"]).replace(tzinfo=UTC).timestamp()
            rows.setdefault(mote, []).append((when, values["temperature"]))
            if (r.get("epoch") or "").isdigit():
                epochs.setdefault(mote, []).append((when, int(r["epoch"])))
    out: dict[int, Series] = {}
    for mote, pairs in sorted(rows.items()):
        pairs.sort()
        t = np.array([p[0] for p in pairs])
        x = np.array([p[1] for p in pairs])
        keep = np.concatenate([[True], np.diff(t) > 0])
        dropped += int((~keep).sum())
        if keep.sum() >= 10:
            out[mote] = (t[keep], x[keep])
    periods = []
    for marks in epochs.values():
        (t0, e0), (t1, e1) = min(marks), max(marks)
        if e1 > e0:
            periods.append((t1 - t0) / (e1 - e0))
    return out, dropped, float(np.median(periods)) if periods else 0.0


# -- runs -------------------------------------------------------------------------------


@dataclass
class Run:
    """One policy at one eps on one mote."""

    policy: str
    eps: float | None
    mote: int
    readings: int
    duration: float
    wakes: int
    uplinks: int
    heartbeats: int
    readings_sent: int
    sq_err: float
    mah_per_day: float
    recon: tuple[list[float], list[float]] | None = None
    charge: list[tuple[float, float]] | None = None


def make_board(overrides: Sequence[str]) -> Board:
    """The default board with ``NAME=VALUE`` overrides (numbers, or true/false)."""
    values: dict[str, Any] = {}
    for item in overrides:
        name, _, text = item.partition("=")
        low = text.strip().lower()
        values[name.strip()] = low == "true" if low in ("true", "false") else float(text)
    try:
        return Board.from_mapping(values)
    except ValueError as exc:
        sys.exit(f"--board: {exc}")


def make_policy(name: str, eps: float | None, base: float, args: argparse.Namespace) -> Policy:
    interval = args.interval
    if name == "fixed":
        return Fixed(interval=base)
    assert eps is not None
    if name == "send_on_delta":
        return SendOnDelta(eps, sample_period=base, interval=interval)
    if name == "dual_prediction":
        return DualPrediction(eps, sample_period=base, interval=interval)
    if name == "adaptive":
        return DualPrediction(
            eps, sample_period=base, max_sample_period=args.max_period, interval=interval
        )
    if name == "bandit":
        return Bandit(eps, sample_period=base, interval=interval, seed=args.seed)
    raise ValueError(name)


def run_one(job: tuple[str, float | None, int, Series, float, argparse.Namespace, bool]) -> Run:
    name, eps, mote, (t, x), base, args, keep = job
    meter = EnergyMeter(make_board(args.board))
    result: ReplayResult = replay(
        make_policy(name, eps, base, args), t.tolist(), x.tolist(), meter=meter
    )
    order = np.argsort(result.recon_times, kind="stable")
    rt = np.asarray(result.recon_times)[order]
    rv = np.asarray(result.recon_values)[order]
    rec = np.interp(t, rt, rv)
    return Run(
        name,
        eps,
        mote,
        len(t),
        result.duration,
        result.wakes,
        result.uplinks,
        result.heartbeats,
        result.readings_sent,
        float(np.sum((rec - x) ** 2)),
        meter.mah_per_day(),
        (rt.tolist(), rv.tolist()) if keep else None,
        result.charge if keep else None,
    )


@dataclass
class Row:
    """One policy at one eps, over every mote."""

    policy: str
    eps: float | None
    readings: int
    uplinks: int
    heartbeats: int
    sent: int
    wakes_per_day: float
    rmse: float
    mah_per_day: float
    life_days: float
    tx_vs_sod: float | None = None
    life_vs_fixed: float | None = None

    @property
    def tx_pct(self) -> float:
        return 100.0 * self.uplinks / self.readings


def aggregate(runs: list[Run], board: Board) -> Row:
    readings = sum(r.readings for r in runs)
    days = sum(r.duration for r in runs) / 86400.0
    load = float(np.mean([r.mah_per_day for r in runs]))
    return Row(
        runs[0].policy,
        runs[0].eps,
        readings,
        sum(r.uplinks for r in runs),
        sum(r.heartbeats for r in runs),
        sum(r.readings_sent for r in runs),
        sum(r.wakes for r in runs) / days,
        math.sqrt(sum(r.sq_err for r in runs) / readings),
        load,
        battery_life_days(load, board),
    )


def sod_curve(rows: list[Row]) -> Callable[[float], float | None]:
    """Send-on-delta's transmissions (%) at a given RMSE, log-log interpolated (None outside)."""
    pts = sorted((r.rmse, r.tx_pct) for r in rows if r.policy == "send_on_delta" and r.rmse > 0)
    xs = np.log([p[0] for p in pts])
    ys = np.log([p[1] for p in pts])

    def at(rmse: float) -> float | None:
        if rmse <= 0 or not xs[0] <= math.log(rmse) <= xs[-1]:
            return None
        return float(np.exp(np.interp(math.log(rmse), xs, ys)))

    return at


# -- output -----------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    head = (
        "| policy | eps C | uplinks % of readings | readings sent % | heartbeats | sample wakes "
        "/day | RMSE C | mAh/day | battery days (2000 mAh) | life vs fixed | uplinks vs SoD "
        "@ same RMSE |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        eps = "-" if r.eps is None else f"{r.eps:g}"
        vs = "-" if r.tx_vs_sod is None else f"{r.tx_vs_sod:.2f}x"
        life = "-" if r.life_vs_fixed is None else f"{r.life_vs_fixed:.1f}x"
        lines.append(
            f"| {r.policy} | {eps} | {r.tx_pct:.2f} | {100 * r.sent / r.readings:.2f} "
            f"| {r.heartbeats} | {r.wakes_per_day:,.0f} "
            f"| {r.rmse:.4f} | {r.mah_per_day:.2f} | {r.life_days:,.0f} | {life} | {vs} |"
        )
    return "\n".join(lines)


def plot(path: str, mote: int, data: dict[int, Series], runs: list[Run], board: Board) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install matplotlib); no plot written")
        return
    t, x = data[mote]
    fig, (ax1, ax0, ax2) = plt.subplots(3, 1, figsize=(12, 11))
    hours = (t - t[0]) / 3600.0
    # the 3 hours that wiggle most (total variation), to see the reconstructions apart
    span = 3.0
    starts = np.arange(0.0, max(hours[-1] - span, 0.0) + 1e-9, 0.25)
    wiggle = [float(np.abs(np.diff(x[(hours >= s0) & (hours < s0 + span)])).sum()) for s0 in starts]
    zoom = float(starts[int(np.argmax(wiggle))]) if len(starts) else 0.0
    for ax, (lo, hi) in ((ax1, (0.0, hours[-1])), (ax0, (zoom, zoom + span))):
        m = (hours >= lo) & (hours <= hi)
        ax.plot(hours[m], x[m], color="0.6", lw=2.0, label="recorded")
        for r in runs:
            if r.mote == mote and r.recon is not None and r.policy != "fixed":
                rt = (np.asarray(r.recon[0]) - t[0]) / 3600.0
                k = (rt >= lo) & (rt <= hi)
                ax.plot(rt[k], np.asarray(r.recon[1])[k], lw=0.9, label=f"{r.policy} eps={r.eps:g}")
        ax.set_xlabel("hours")
        ax.set_ylabel("temperature, C")
        ax.legend(fontsize=8)
    ax1.set_title(f"mote {mote}: recorded temperature and the fog's reconstruction")
    ax0.set_title(f"the same, hours {zoom:g} to {zoom + span:g}")
    for r in runs:
        if r.mote == mote and r.charge:
            ct = np.array([c[0] for c in r.charge])
            used = np.array([c[1] for c in r.charge])
            days = (ct - t[0]) / 86400.0
            k = -math.log(1.0 - board.self_discharge_per_month) / 30.44
            remaining = 100.0 * (1.0 - (used + board.capacity_mah * (1 - np.exp(-k * days)))
                                 / board.capacity_mah)  # fmt: skip
            eps = "" if r.eps is None else f" eps={r.eps:g}"
            life = battery_life_days(r.mah_per_day, board)
            ax2.plot(days, remaining, label=f"{r.policy}{eps}: empty after {life:,.0f} days")
    ax2.set_xlabel("days")
    ax2.set_ylabel("battery left, % of 2000 mAh")
    ax2.set_title("battery over the recorded days (self-discharge included), projected life")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot written to {path}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", required=True, help="the intel_lab folder (or its .csv.gz)")
    p.add_argument("--motes", help="comma-separated mote ids (default: every mote in the file)")
    p.add_argument("--eps", default=",".join(map(str, EPS)), help="error bounds, C")
    p.add_argument("--base", type=float, default=0.0, help="base sample period s (0: the data's)")
    p.add_argument("--max-period", type=float, default=300.0, help="adaptive: longest period s")
    p.add_argument("--interval", type=float, default=3600.0, help="heartbeat interval s")
    p.add_argument("--seed", type=int, default=0, help="bandit seed")
    p.add_argument(
        "--board",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a fogrt.sim.energy.Board figure (repeatable), e.g. boot_mas=3.32",
    )
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--plot", help="write a PNG: one mote's reconstruction and battery curves")
    p.add_argument("--plot-mote", type=int, default=0, help="mote to plot (default: first)")
    args = p.parse_args()

    motes = [int(m) for m in args.motes.split(",")] if args.motes else None
    eps_list = [float(e) for e in args.eps.split(",")]
    t0 = time.perf_counter()
    data, dropped, period = load(Path(args.dataset), motes)
    if not data:
        sys.exit("no mote data")
    if not period:  # no epoch column: the typical gap, lost readings (2+ periods) aside
        gaps = np.concatenate([np.diff(t) for t, _ in data.values()])
        period = float(np.median(gaps[gaps < 1.5 * np.percentile(gaps, 10)]))
    base = args.base or round(period, 1)
    board = make_board(args.board)
    plot_mote = args.plot_mote or next(iter(data))
    jobs: list[tuple[str, float | None, int, Series, float, argparse.Namespace, bool]] = []
    for mote, series in data.items():
        keep = bool(args.plot) and mote == plot_mote
        jobs.append(("fixed", None, mote, series, base, args, keep))
        for eps in sorted(set(eps_list) | set(SOD_CURVE)):
            jobs.append(("send_on_delta", eps, mote, series, base, args, keep and eps == 0.1))
        for name in ("dual_prediction", "bandit", "adaptive"):
            for eps in eps_list:
                jobs.append((name, eps, mote, series, base, args, keep and eps == 0.1))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = list(pool.map(run_one, jobs, chunksize=4))

    groups: dict[tuple[str, float | None], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.policy, run.eps), []).append(run)
    order = {"fixed": 0, "send_on_delta": 1, "dual_prediction": 2, "bandit": 3, "adaptive": 4}
    rows = [aggregate(g, board) for _, g in sorted(groups.items(), key=lambda kv: (
        order[kv[0][0]], kv[0][1] or 0.0))]  # fmt: skip
    fixed = next(r for r in rows if r.policy == "fixed")
    sod_at = sod_curve(rows)
    for r in rows:
        r.life_vs_fixed = r.life_days / fixed.life_days
        if r.policy not in ("fixed", "send_on_delta"):
            ref = sod_at(r.rmse)
            r.tx_vs_sod = None if ref is None else r.tx_pct / ref
    shown = [r for r in rows if r.policy != "send_on_delta" or r.eps in eps_list]
    readings = sum(len(t) for t, _ in data.values())
    days = sum(t[-1] - t[0] for t, _ in data.values()) / 86400.0
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print(
        f"data: motes {', '.join(map(str, data))}; {readings:,} readings over {days:.1f} "
        f"mote-days ({readings / days:,.0f} readings per mote-day), {dropped} rows dropped by "
        f"the checks; base sample period {base:g} s; heartbeat interval {args.interval:g} s; "
        f"adaptive max period {args.max_period:g} s"
    )
    print(
        f"board: {board.name}: sample wake {board.wake_mas():.1f} mAs, uplink "
        f"{board.uplink_mas(60, 20):.1f} mAs, sleep {board.sleep_ma() * 1000:.0f} uA, "
        f"{board.capacity_mah:g} mAh, self-discharge {board.self_discharge_per_month:.0%}/month"
    )
    print()
    print(table(shown))
    print()
    print("send-on-delta curve (eps: uplinks %, RMSE): " + ", ".join(
        f"{r.eps:g}: {r.tx_pct:.2f} %, {r.rmse:.3f}" for r in rows if r.policy == "send_on_delta"
    ))  # fmt: skip
    print()
    for name in ("dual_prediction", "bandit", "adaptive"):
        met = [
            r
            for r in rows
            if r.policy == name
            and r.rmse <= GOAL_RMSE
            and r.tx_vs_sod is not None
            and r.tx_vs_sod <= GOAL_TX
            and (r.life_vs_fixed or 0.0) >= GOAL_LIFE
        ]
        verdict = (
            "MET at eps " + ", ".join(f"{r.eps:g}" for r in met) if met else "not met at any eps"
        )
        print(
            f"goals for {name} (RMSE <= {GOAL_RMSE} C, uplinks <= {GOAL_TX}x send-on-delta at "
            f"the same RMSE, battery >= {GOAL_LIFE:g}x fixed, in the same run): {verdict}"
        )
    print(f"\nwall time {time.perf_counter() - t0:.0f} s")
    if args.plot:
        plot(args.plot, plot_mote, data, [r for r in runs if r.mote == plot_mote], board)


if __name__ == "__main__":
    main()
