"""``fogrt simulate``: the command line of the fleet simulator.

``add_parser(subparsers)`` adds the ``simulate`` command to ``fogrt``'s parser and stores
its handler in ``args.handler`` (``handler(args) -> exit code``: 0 done, 1 failed while
running, 2 invalid input). ``main(argv)`` runs it without the rest of ``fogrt``'s command
line (tests).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fogrt.errors import FogError, InputError, TopologyError, TopologyErrors

__all__ = ["add_parser", "main", "parse_speed"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
_FMT = argparse.RawDescriptionHelpFormatter


def parse_speed(text: str) -> float | None:
    """``max`` -> None (as fast as possible); ``10x`` or ``10`` -> 10.0.

    >>> parse_speed("max"), parse_speed("60x"), parse_speed("0.5")
    (None, 60.0, 0.5)
    """
    if text.strip().lower() == "max":
        return None
    try:
        value = float(text.strip().lower().removesuffix("x"))
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise InputError(f"--speed {text!r}: expected max or a factor such as 10x or 0.5x")
    return value


def add_parser(subparsers: Any) -> None:
    """Add ``simulate`` to ``fogrt``'s sub-commands."""
    s = subparsers.add_parser(
        "simulate",
        formatter_class=_FMT,
        help="run N simulated ESP32 nodes (the real edge agent) against a fog node",
        description=textwrap.dedent("""\
            Simulate a fleet of battery-powered nodes. Each runs the real edge agent
            (edge_agent/fogagent, as flashed to an ESP32) under CPython on a simulated
            board: a simulated clock (its sleeps advance simulated time), sensors fed
            from a dataset or a synthetic signal, and an energy meter (fogrt.sim.energy).
            The nodes send real CoAP over UDP to a real fog node: one started in this
            process with the topology FILE (state in a temporary directory unless --state),
            or a running one (--fog HOST:PORT).

            Each --policy runs the whole fleet once, on the same data, and the closing
            table compares them: readings sent (% of samples), energy per node per day,
            projected battery life, the fog's reconstruction error (RMSE against every
            sample taken) and anomalies caught. A policy is NAME or
            NAME:key=value,... with the parameters of a topology's control.policy:
            fixed, send_on_delta, dual_prediction (with a policy registry also bandit,
            battery_aware, burst and the adaptive parameters, e.g. max_sample_period);
            `fog`: the fog node's own control loop decides (its topology's control:
            section: policies per device, skipped samples imputed into its stream).

            --dataset PATH: a CSV/CSV.gz with a time column and a key column (one device
            per key, keys reused round-robin when --devices is larger); the value at a
            simulated time is the key's latest reading at or before it (sample-and-hold).
            The source's fields must be columns of the file (or mapped with --column).
            --dataset synthetic: a daily cycle + noise + injected spikes and steps per
            numeric field, with a known answer for the anomaly score."""),
        epilog=textwrap.dedent("""\
            examples:
              fogrt simulate topologies/room-climate.yaml --devices 10 --dataset synthetic
              fogrt simulate topologies/room-climate.yaml --devices 10 \\
                  --dataset intel_lab_motes_shared.csv.gz --key-column moteid \\
                  --policy fixed --policy send_on_delta:epsilon=0.5 \\
                  --policy dual_prediction:epsilon=0.5 --duration 2d --plot out/sim.png
              fogrt simulate topologies/wsn-events.yaml --devices 4 \\
                  --dataset topologies/data/lwsndr_single_hop.csv.gz \\
                  --time-column reading --time-scale 5 --summary out/sim.json
              fogrt simulate room.yaml --fog 192.168.1.10:5683 --devices 50 --speed 60x

            --speed max runs as fast as the fog node answers; --speed 10x paces simulated
            time at 10 times wall time. The in-process node logs at --log-level (use
            `fogrt --log-level warning simulate ...` for a quiet run).

            exit codes: 0 done, 1 failed while running (e.g. --fog unreachable),
                        2 invalid topology, dataset or arguments
            """),
    )
    s.add_argument("file", type=Path, metavar="FILE", help="the topology")
    s.add_argument("--devices", "-n", type=int, default=10, metavar="N", help="default 10")
    s.add_argument(
        "--dataset",
        default="synthetic",
        metavar="PATH|synthetic",
        help="CSV/CSV.gz to replay, or `synthetic` (default)",
    )
    s.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME[:k=v,...]",
        help="repeatable; default: fixed, send_on_delta and dual_prediction (with --fog: fog)",
    )
    s.add_argument("--speed", default="max", metavar="max|Nx", help="default max")
    s.add_argument(
        "--duration",
        metavar="DURATION",
        help="simulated time, e.g. 6h, 2d (default: the dataset's span; synthetic: 1d)",
    )
    s.add_argument("--source", help="the source the devices post to (default: the only one)")
    s.add_argument(
        "--fog",
        metavar="HOST:PORT",
        help="a running fog node (fogrt run FILE) instead of an in-process one",
    )
    s.add_argument(
        "--state",
        type=Path,
        metavar="DIR",
        help="keep the in-process node's state and the devices' flash here "
        "(default: a temporary directory)",
    )
    s.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="DIR",
        help="directory for the topology's file sinks (default: inside the state directory)",
    )
    s.add_argument("--summary", type=Path, metavar="FILE", help="also write the results as JSON")
    s.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="signal vs the fog's reconstruction, and charge over time (needs matplotlib)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    d = s.add_argument_group("dataset (--dataset PATH)")
    d.add_argument("--time-column", metavar="COL", help="default: timestamp, time, datetime")
    d.add_argument("--key-column", metavar="COL", help="default: moteid, mote_id, device, ...")
    d.add_argument("--label-column", metavar="COL", help="anomaly labels (default: label)")
    d.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="map a source field to a column (repeatable)",
    )
    d.add_argument(
        "--time-scale", type=float, default=1.0, metavar="X", help="multiply numeric times by X"
    )
    d.add_argument("--delimiter", help="CSV delimiter (default: sniffed)")
    d.add_argument(
        "--bad-values",
        default="error",
        choices=["error", "skip", "null"],
        help="a cell that does not parse as its field's type: stop (default), skip the "
        "row, or make it missing (empty cells are always missing)",
    )
    g = s.add_argument_group("synthetic data and devices")
    g.add_argument("--seed", type=int, default=1, help="synthetic data seed (default 1)")
    g.add_argument(
        "--anomalies-per-day", type=float, default=2.0, metavar="X", help="per device (2)"
    )
    g.add_argument("--noise", type=float, default=0.05, metavar="SD", help="noise sd (0.05)")
    g.add_argument(
        "--capacity", type=float, default=2000.0, metavar="MAH", help="battery (2000 mAh)"
    )
    g.add_argument("--dhcp", action="store_true", help="boards use DHCP, not a static IP")
    g.add_argument("--id-prefix", default="sim", metavar="PREFIX", help="device ids (sim)")
    s.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        return _simulate(args)
    except (InputError, TopologyError, TopologyErrors) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except FogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise InputError(f"--fog {text!r}: expected HOST:PORT, e.g. 192.168.1.10:5683")
    return host, int(port)


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fogrt import aio
    from fogrt.replay import parse_columns
    from fogrt.sim.energy import Board
    from fogrt.sim.fleet import Options, simulate
    from fogrt.sim.policies import DEFAULT_POLICIES, parse_policy
    from fogrt.sim.report import plot, print_results, summary
    from fogrt.sim.sensors import DatasetSignal, Signal, SyntheticSignal
    from fogrt.sim.target import SYNTHETIC_EPOCH, select_source
    from fogrt.topology.compile import load_topology
    from fogrt.types import parse_duration

    if not 1 <= args.devices <= 10_000:
        raise InputError(f"--devices {args.devices}: expected 1..10000")
    speed = parse_speed(args.speed)
    duration = None
    if args.duration is not None:
        try:
            duration = parse_duration(args.duration)
        except ValueError as exc:
            raise InputError(f"--duration: {exc}") from None
        if duration <= 0:
            raise InputError("--duration: must be positive")
    fog = _address(args.fog) if args.fog else None
    policies = args.policy or (["fog"] if fog else list(DEFAULT_POLICIES))
    specs = [parse_policy(p) for p in policies]
    topology = load_topology(args.file)
    source, schema = select_source(topology, args.source)
    signal: Signal
    epoch0 = SYNTHETIC_EPOCH
    if args.dataset == "synthetic":
        signal = SyntheticSignal(
            schema,
            args.devices,
            duration=duration or 86400.0,
            seed=args.seed,
            noise=args.noise,
            anomalies_per_day=args.anomalies_per_day,
        )
    else:
        data = DatasetSignal.load(
            Path(args.dataset),
            schema,
            time_column=args.time_column,
            key_column=args.key_column,
            label_column=args.label_column,
            columns=parse_columns(args.column),
            time_scale=args.time_scale,
            delimiter=args.delimiter,
            bad_values=args.bad_values,
        )
        signal, epoch0 = data, data.t0
    if args.plot is not None:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            print(
                "--plot: matplotlib is not installed (pip install matplotlib): "
                "running without the plot",
                file=sys.stderr,
            )
            args.plot = None
    options = Options(
        devices=args.devices,
        duration=duration,
        speed=speed,
        policies=specs,
        board=Board(capacity_mah=args.capacity, dhcp=args.dhcp),
        id_prefix=args.id_prefix,
    )
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    started = time.perf_counter()
    with _progress(console, args.no_progress) as bar:
        tasks: dict[str, Any] = {}

        def progress(label: str, done: float, total: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total, sim="")
            bar.update(tasks[label], completed=done, sim=f"{_hms(done)} / {_hms(total)}")

        results = aio.run(
            simulate(
                topology,
                signal,
                options,
                source=source,
                fog=fog,
                state=args.state,
                output=args.output,
                epoch0=epoch0,
                progress=progress,
            )
        )
    meta = {
        "topology": topology.name,
        "file": str(args.file),
        "source": source,
        "fog": f"{fog[0]}:{fog[1]}" if fog else "in-process node",
        "dataset": signal.name,
        "devices": args.devices,
        "speed": "max" if speed is None else f"{speed:g}x",
        "seed": args.seed,
        "wall_s": round(time.perf_counter() - started, 3),
    }
    print_results(console, results, meta)
    if args.summary is not None:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        doc = summary(results, meta)
        args.summary.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    if args.plot is not None:
        why = plot(args.plot, results)
        print(why or f"plot written to {args.plot}", file=sys.stderr)
    return EXIT_OK


def _hms(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    out = f"{hours:02d}:{s // 60:02d}"
    return f"{days}d {out}" if days else out


def _progress(console: Any, disabled: bool) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("simulated {task.fields[sim]}"),
        TimeElapsedColumn(),
        console=console,
        disable=disabled or not console.is_terminal,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``fogrt simulate ...`` without the rest of fogrt's command line."""
    parser = argparse.ArgumentParser(prog="fogrt", formatter_class=_FMT)
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code
