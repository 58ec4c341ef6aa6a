"""Showing a simulation run: the closing table, the ``--summary`` JSON, the ``--plot`` PNG.

The numbers come from :mod:`fogrt.sim.score` (see there what each one means). Energy is
compared with a baseline run: the first ``fixed`` policy of the run, else the first one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fogrt.sim.energy import Board
from fogrt.sim.score import GRID_S, PolicyResult

__all__ = ["plot", "print_results", "summary"]


def _baseline(results: Sequence[PolicyResult]) -> PolicyResult | None:
    """The run energy is compared with: the first ``fixed`` policy, else the first run."""
    for r in results:
        if r.spec.name == "fixed":
            return r
    return results[0] if len(results) > 1 else None


def summary(results: Sequence[PolicyResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``--summary`` JSON document: ``meta`` (run settings) + one entry per policy."""
    base = _baseline(results)
    board = results[0].board if results else Board()
    return {
        **meta,
        "board": {
            "name": board.name,
            "capacity_mah": board.capacity_mah,
            "boot_s": board.boot_s,
            "connect_s": board.connect_s(),
            "deep_sleep_ma": board.deep_sleep_ma,
        },
        "baseline": base.label if base is not None else None,
        "policies": [r.as_json(base) for r in results],
    }


def _days(x: float) -> str:
    if math.isinf(x):
        return "inf"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def _duration(seconds: float) -> str:
    if seconds >= 86400 and seconds % 3600 == 0:
        days = seconds / 86400
        return f"{days:g} day" + ("s" if days != 1 else "")
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds:g} s"


def print_results(console: Any, results: Sequence[PolicyResult], meta: Mapping[str, Any]) -> None:
    """The closing table (one row per policy) and its footnotes, on ``console`` (rich)."""
    from rich.table import Table

    if not results:
        return
    first = results[0]
    shown = first.fields[:3]
    base = _baseline(results)
    table = Table(
        title=f"{meta.get('devices')} devices x {_duration(first.duration_s)} of "
        f"{meta.get('dataset')} through {meta.get('topology')} ({meta.get('fog')})",
        title_justify="left",
    )
    table.add_column("policy")
    for col in ("samples", "sent", "sent %", "mAh/day", "battery days"):
        table.add_column(col, justify="right")
    if base is not None:
        table.add_column(f"energy vs {base.spec.name}", justify="right")
    for f in shown:
        table.add_column(f"RMSE {f}", justify="right")
    # Policies that sample less often look better at their own sample times: then also
    # show the error on the common grid, which charges them for what they did not sample.
    grid = len({r.samples for r in results}) > 1 and bool(shown)
    if grid:
        table.add_column(f"RMSE {shown[0]} ({GRID_S:g} s grid)", justify="right")
    table.add_column("anomalies caught", justify="right")
    for r in results:
        a = r.anomalies()
        errs = r.errors()
        row = [
            r.label,
            f"{r.samples:,}",
            f"{r.sent:,}",
            f"{r.sent_pct:.1f}" if r.sent_pct is not None else "-",
            f"{r.mah_per_day:.1f}",
            _days(r.battery_days),
        ]
        if base is not None:
            row.append(
                f"{100.0 * (r.mah_per_day / base.mah_per_day - 1.0):+.0f}%"
                if base.mah_per_day > 0
                else "-"
            )
        for f in shown:
            rmse = errs[f].rmse
            row.append("-" if rmse is None else f"{rmse:.3g}")
        if grid:
            rmse = r.errors(grid=True)[shown[0]].rmse
            row.append("-" if rmse is None else f"{rmse:.3g}")
        row.append(f"{a.caught}/{a.total}" if a.total else "-")
        table.add_row(*row)
    console.print(table)
    b = first.board
    notes = [f"{r.label}: {r.description}" for r in results]
    notes.append(
        f"energy: {b.name} (fogrt.sim.energy.Board): deep sleep {b.deep_sleep_ma * 1000:g} uA, "
        f"boot {b.boot_s:g} s, Wi-Fi connect {b.connect_s():g} s; battery life projected on "
        f"{b.capacity_mah:g} mAh with {b.self_discharge_per_month:.0%}/month self-discharge"
    )
    notes.append(
        "RMSE: the fog's reconstruction (readings received; predicted or held where the "
        "policy suppressed them) against every sample taken"
        + (
            f"; on the grid: interpolated, against the true signal every {GRID_S:g} s"
            if grid
            else ""
        )
    )
    unsampled = {r.label: r.anomalies().unsampled for r in results}
    if any(r.anomalies().total for r in results):
        between = ", ".join(f"{k}: {v}" for k, v in unsampled.items() if v)
        notes.append(
            "anomalies: caught = a reading taken during it reached the fog"
            + (f"; missed because no sample fell into them: {between}" if between else "")
        )
    if len(first.fields) > len(shown):
        notes.append("RMSE of every field: --summary FILE")
    missing = sum(d.missing for r in results for d in r.devices)
    if missing:
        notes.append(f"[red]{missing} acknowledged readings are missing at the fog[/red]")
    refused = [why for r in results for d in r.devices for why in d.refused]
    if refused:
        notes.append(
            f"[red]{len(refused)} uplinks were refused by the fog's decoder, e.g. "
            f"{refused[0]!r}[/red]"
        )
    wall = sum(r.wall_s for r in results)
    simulated = sum(r.duration_s * len(r.devices) for r in results)
    notes.append(
        f"simulated {simulated / 86400:,.2f} device-days in {wall:.1f} s "
        f"({sum(r.duration_s for r in results) / wall if wall else 0:,.0f}x real time)"
    )
    for line in notes:
        console.print(f"  {line}", highlight=False)


def plot(path: Path, results: Sequence[PolicyResult]) -> str | None:
    """Signal vs the fog's reconstruction, and charge over time, of the first device under
    each policy, as a PNG. Returns None when written, else why not (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "--plot: matplotlib is not installed (pip install matplotlib); no plot written"
    runs = [(r, r.devices[0].series) for r in results if r.devices and r.devices[0].series]
    if not runs:
        return "--plot: nothing to plot (the source has no numeric field)"
    first = runs[0][1]
    assert first is not None
    span = max(first.times[-1] if first.times else 1.0, 1.0)
    unit, scale = ("days", 86400.0) if span > 2 * 86400 else ("hours", 3600.0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    fieldname = results[0].fields[0]
    top.plot(
        [t / scale for t in first.times],
        first.truth,
        color="0.3",
        lw=2.0,
        alpha=0.35,
        label="true signal",
    )
    for r, s in runs:
        assert s is not None
        top.step([t / scale for t in s.times], s.fog, where="post", lw=1.0, label=f"fog: {r.label}")
        bottom.plot(
            [t / scale for t in s.battery_times],
            s.battery_mah,
            label=f"{r.label}: {r.devices[0].mah_per_day:.1f} mAh/day, "
            f"{_days(r.devices[0].battery_days)} days",
        )
    for a, b in first.anomalies:
        top.axvspan(a / scale, b / scale, color="tab:red", alpha=0.15, lw=0)
    top.set_ylabel(fieldname)
    top.set_title(
        f"device 0 ({results[0].devices[0].data}): {fieldname}, "
        "true signal vs the fog's reconstruction (anomalies shaded)"
    )
    top.legend(loc="best", fontsize="small")
    bottom.set_ylabel("charge used, mAh")
    bottom.set_xlabel(f"simulated time, {unit}")
    bottom.legend(loc="best", fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return None
