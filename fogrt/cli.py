"""The ``fogrt`` command line.

Exit codes (the same for every command):

- 0  done;
- 1  failed while running (an I/O error, a sink that cannot write, a crash);
- 2  invalid input: a topology, an input file or the command line is wrong;
- 3  finished, but some events failed inside operators (counted in the summary);
- 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fogrt import __version__
from fogrt.errors import FogError, InputError, TopologyError, TopologyErrors

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_DATA_ERRORS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_FMT = argparse.RawDescriptionHelpFormatter


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fogrt",
        formatter_class=_FMT,
        description="fogrt: declarative stream processing and online learning for IoT "
        "sensor streams on fog nodes.",
        epilog=textwrap.dedent("""\
            examples:
              fogrt validate topologies/*.yaml
              fogrt graph topologies/wsn-events.yaml --format mermaid
              fogrt replay topologies/wsn-events.yaml \\
                  --input topologies/data/lwsndr_single_hop.csv.gz
              fogrt run topologies/wsn-events.yaml --http 127.0.0.1:8080 --simulate 20
              fogrt simulate topologies/room-climate.yaml --devices 10 --duration 1d
              fogrt edge flash --port /dev/ttyUSB0 --device-id room-1 --fog 192.168.1.10
              fogrt operators learn.anomaly

            exit codes: 0 done, 1 failed while running, 2 invalid topology/input/usage,
                        3 finished but some events failed in operators, 130 interrupted
            """),
    )
    p.add_argument("--version", action="version", version=f"fogrt {__version__}")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (logs go to stderr; default: info)",
    )
    p.add_argument(
        "--log-format",
        default="auto",
        choices=["auto", "console", "json"],
        help="console on a terminal, JSON lines otherwise (default: auto)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    v = sub.add_parser(
        "validate",
        formatter_class=_FMT,
        help="check topology files without running them",
        description="Check topology files: YAML, structure, references, cycles, operator "
        "names and parameters, and every field each operator and `where:` uses.",
        epilog="example:\n  fogrt validate topologies/*.yaml\n\n"
        "exit 0 when every file is valid, 2 when any is not; each problem is printed "
        "as FILE:LINE:COLUMN: FIELD: MESSAGE.",
    )
    v.add_argument("files", nargs="+", type=Path, metavar="FILE")
    v.add_argument("-q", "--quiet", action="store_true", help="print only problems")

    g = sub.add_parser(
        "graph",
        formatter_class=_FMT,
        help="draw a topology as text, Graphviz dot or Mermaid",
        description="Print the dataflow graph of a topology: sources, operators, sinks, "
        "the fields that flow between them and the `where:` filters.",
        epilog="examples:\n  fogrt graph topologies/pump-monitoring.yaml\n"
        "  fogrt graph topologies/pump-monitoring.yaml --format dot | dot -Tpng > g.png",
    )
    g.add_argument("file", type=Path, metavar="FILE")
    g.add_argument("--format", default="text", choices=["text", "dot", "mermaid"])

    r = sub.add_parser(
        "replay",
        formatter_class=_FMT,
        help="run a topology over a CSV file",
        description=textwrap.dedent("""\
            Replay a CSV (or .csv.gz) file through a topology as if its rows had arrived
            from devices, then print a summary: events in/out per operator, events/s,
            anomalies. Columns map to the source's fields by name (also case- and
            punctuation-insensitively, e.g. "Volume Flow RateRMS" -> volume_flow_raterms)
            or with --column FIELD=COLUMN. Output of a run is deterministic given the input
            and the operators' seeds."""),
        epilog=textwrap.dedent("""\
            examples:
              fogrt replay topologies/wsn-events.yaml \\
                  --input topologies/data/lwsndr_single_hop.csv.gz \\
                  --key-column mote_id --time-column reading --time-scale 5
              fogrt replay topologies/pump-monitoring.yaml --input skab/valve1/0.csv \\
                  --time-column datetime --output out/
            """),
    )
    r.add_argument("file", type=Path, metavar="FILE", help="the topology")
    r.add_argument(
        "--input",
        "-i",
        type=Path,
        required=True,
        metavar="CSV",
        help="CSV file with a header row (.gz is decompressed on the fly)",
    )
    r.add_argument("--source", help="source the rows belong to (default: the only source)")
    r.add_argument(
        "--time-column",
        metavar="COL",
        help="event time: seconds since the epoch or ISO 8601 (default: row number)",
    )
    r.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="multiply numeric times by X (0.001 for ms, 5 for a reading index taken every 5 s)",
    )
    r.add_argument(
        "--key-column",
        metavar="COL",
        help="device id column (default: one device named after the file)",
    )
    r.add_argument(
        "--column",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="map a source field to a column (repeatable)",
    )
    r.add_argument("--delimiter", help="CSV delimiter (default: sniffed from the header)")
    r.add_argument(
        "--bad-values",
        default="error",
        choices=["error", "skip", "null"],
        help="a cell that does not parse: stop (default), skip the row, or treat it as missing",
    )
    r.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="DIR",
        help="directory for the file sinks' relative paths (default: .)",
    )
    r.add_argument(
        "--summary", type=Path, metavar="FILE", help="also write the summary as JSON to FILE"
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar")

    n = sub.add_parser(
        "run",
        formatter_class=_FMT,
        help="run a fog node: CoAP ingest -> durable log -> topology",
        description=textwrap.dedent("""\
            Serve a topology on a CoAP port. Devices POST readings to /r/<source> (msgpack
            bodies, see docs/wire-format.md); each is acknowledged (2.04 with the device's
            control) only once it is durable in the ingest log under --state. The engine
            (in a process of its own unless --engine inline) consumes the log in order.
            SIGINT/SIGTERM: stop accepting, drain, checkpoint, exit 0. Exit 1 if the engine
            fails (a sink, or its process): a restart replays the log."""),
        epilog=textwrap.dedent("""\
            examples:
              fogrt run topologies/wsn-events.yaml
              fogrt run topologies/pump-monitoring.yaml --coap 127.0.0.1:0 --state /var/lib/fogrt
              fogrt run topologies/wsn-events.yaml --devices allowed.txt
              fogrt run topologies/pump-monitoring.yaml --engines 2
            """),
    )
    n.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        nargs="+",
        help="the topology (one per process: run one fogrt per topology)",
    )
    n.add_argument(
        "--coap",
        default="[::]:5683",
        metavar="HOST:PORT",
        help="CoAP (UDP) address; port 0 picks a free port (default: [::]:5683)",
    )
    n.add_argument(
        "--state",
        metavar="DIR_OR_URL",
        help="where checkpoints live: a directory (file:PATH) or redis://host:port/db "
        "(credentials from FOGRT_REDIS_USERNAME/PASSWORD); default: the topology's "
        "state: section, else file:.fogrt/state",
    )
    n.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="local directory of the ingest log when --state is a Redis URL",
    )
    n.add_argument(
        "--checkpoint-every",
        type=float,
        metavar="SECONDS",
        help="checkpoint period (default: the topology's state.checkpoint_every, 5 s; "
        "stretched to 20x the last checkpoint's duration when that is longer)",
    )
    n.add_argument(
        "--output",
        "-o",
        type=Path,
        metavar="DIR",
        help="directory for the file sinks' relative paths (default: .)",
    )
    reg = n.add_mutually_exclusive_group()
    reg.add_argument(
        "--devices",
        type=Path,
        metavar="FILE",
        help="only these device ids (one per line) may send or register (4.01)",
    )
    reg.add_argument(
        "--require-registration",
        action="store_true",
        help="devices must POST /reg before their readings are accepted",
    )
    n.add_argument(
        "--max-devices",
        type=int,
        default=100_000,
        metavar="N",
        help="distinct devices tracked before new ones get 5.03 (default 100000)",
    )
    n.add_argument(
        "--max-lag",
        type=int,
        default=100_000,
        metavar="RECORDS",
        help="answer 5.03 while the engine is this far behind the log",
    )
    n.add_argument(
        "--retry-after",
        type=int,
        default=5,
        metavar="SECONDS",
        help="Max-Age of a 5.03 (engine lag, disk or device table full): how long devices "
        "are told to back off (default 5)",
    )
    n.add_argument(
        "--max-payload",
        type=int,
        default=4096,
        metavar="BYTES",
        help="largest uplink body accepted (4.13 beyond; default 4096)",
    )
    n.add_argument(
        "--max-disk",
        type=int,
        metavar="MB",
        help="bound on the ingest log's disk use (5.03 when full)",
    )
    n.add_argument(
        "--rcvbuf",
        type=int,
        metavar="BYTES",
        help="receive buffer of the CoAP socket (SO_RCVBUF): datagrams that arrive while it "
        "is full are dropped by the kernel; default: the system's (Linux: 208 KiB, about 190 "
        "uplinks; a larger request is capped at net.core.rmem_max)",
    )
    n.add_argument(
        "--no-fsync",
        action="store_true",
        help="do not fsync the log (faster; a power cut can lose acknowledged data)",
    )
    n.add_argument(
        "--engine",
        choices=("process", "inline"),
        default="process",
        help="where operators, sinks and control policies run: 'process' (default), an "
        "engine process fed from the ingest log, so ingest and engine each get a core; "
        "'inline', in this process (one core; less memory)",
    )
    n.add_argument(
        "--engines",
        type=int,
        default=1,
        metavar="N",
        help="engine processes: N > 1 splits the devices among N engine processes by a hash "
        "of the device id (for an engine that needs more than one core; every operator must "
        "be keyed by device; sinks are written by this process)",
    )
    n.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the live dashboard and Prometheus /metrics, e.g. 127.0.0.1:8080 "
        "(port 0: a free port); any non-loopback address needs a token",
    )
    n.add_argument(
        "--http-token",
        metavar="TOKEN",
        help="access token for the dashboard and /metrics (default: $FOGRT_HTTP_TOKEN, "
        "which keeps it out of ps)",
    )
    n.add_argument(
        "--simulate",
        type=int,
        metavar="N",
        help="also run N simulated ESP32 nodes (the real edge agent, synthetic data) "
        "against this node: a live demo (see fogrt simulate)",
    )
    n.add_argument(
        "--simulate-speed",
        default="1x",
        metavar="Nx",
        help="pace of the simulated nodes: 1x real time (default), 60x, max",
    )
    n.add_argument(
        "--simulate-policy",
        default="fog",
        metavar="NAME[:k=v,...]",
        help="control for the simulated nodes (default fog: this node's control loop, "
        "the topology's control: section)",
    )
    n.add_argument(
        "--for",
        dest="duration",
        type=float,
        metavar="SECONDS",
        help="stop by itself after SECONDS (demos, tests)",
    )

    o = sub.add_parser(
        "operators",
        formatter_class=_FMT,
        help="list the registered operators and sinks",
        description="List every operator (built-in and from installed packages) and sink, "
        "with parameters; with a NAME, show its documentation.",
        epilog="examples:\n  fogrt operators\n  fogrt operators window.tumbling",
    )
    o.add_argument("name", nargs="?", help="show one operator or sink in full")

    from fogrt.edge import add_parser as add_edge
    from fogrt.sim.cli import add_parser as add_simulate

    add_edge(sub)
    add_simulate(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from fogrt.logging import configure

    configure(args.log_level, args.log_format)
    commands = {
        "validate": _validate,
        "graph": _graph,
        "replay": _replay,
        "run": _run,
        "operators": _operators,
        "edge": _delegate,
        "simulate": _delegate,  # both store their handler in args.handler
    }
    handler = commands[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (TopologyError, TopologyErrors, InputError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INVALID
    except FogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _validate(args: argparse.Namespace) -> int:
    from fogrt.topology.compile import load_topology

    status = EXIT_OK
    for path in args.files:
        try:
            t = load_topology(path)
        except (TopologyError, TopologyErrors) as exc:
            print(str(exc), file=sys.stderr)
            status = EXIT_INVALID
            continue
        if not args.quiet:
            counts = {role: len(t.by_role(role)) for role in ("source", "operator", "sink")}
            print(
                f"{path}: valid ({t.name}: {counts['source']} sources, "
                f"{counts['operator']} operators, {counts['sink']} sinks)"
            )
    return status


def _graph(args: argparse.Namespace) -> int:
    from fogrt.topology.compile import load_topology
    from fogrt.topology.render import render

    sys.stdout.write(render(load_topology(args.file), args.format))
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from fogrt import aio
    from fogrt.engine.runner import Engine
    from fogrt.replay import CsvInput, parse_columns, replay
    from fogrt.topology.compile import load_topology

    topology = load_topology(args.file)
    sources = [n.id for n in topology.by_role("source")]
    source_id = args.source or (sources[0] if len(sources) == 1 else None)
    if source_id is None or source_id not in sources:
        raise InputError(
            f"--source: expected one of {', '.join(sources)}"
            + (f", got {args.source!r}" if args.source else " (the topology has several sources)")
        )
    reader = CsvInput(
        args.input,
        topology.node(source_id).schema,
        time_column=args.time_column,
        key_column=args.key_column,
        columns=parse_columns(args.column),
        delimiter=args.delimiter,
        time_scale=args.time_scale,
        bad_values=args.bad_values,
    )
    if not args.input.is_file():
        raise InputError(f"{args.input}: no such file")
    # Not a terminal (CI logs, pipes): wide enough that the summary table is not squeezed.
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)
    engine = Engine(topology, output_dir=args.output)
    started = time.perf_counter()

    async def go() -> None:
        await engine.start()
        with _progress(console, args.no_progress) as bar:
            task = bar.add_task(f"replay {args.input.name}", total=reader.size)
            await replay(engine, source_id, reader, lambda pos: bar.update(task, completed=pos))
            bar.update(task, completed=reader.size)

    aio.run(go())
    elapsed = time.perf_counter() - started
    summary = _summary(engine, reader, elapsed)
    _print_summary(console, summary)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return EXIT_DATA_ERRORS if summary["errors"] else EXIT_OK


def _progress(console: Any, disabled: bool) -> Any:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=disabled or not console.is_terminal,
        transient=True,
    )


def _summary(engine: Any, reader: Any, elapsed: float) -> dict[str, Any]:
    nodes = engine.summary()
    anomalies = sum(int(n.get("metrics", {}).get("anomalies", 0)) for n in nodes)
    return {
        "topology": engine.topology.name,
        "input": str(reader.path),
        "rows": reader.rows_read,
        "rows_skipped": reader.rows_skipped,
        "values_nulled": reader.values_nulled,
        "seconds": round(elapsed, 3),
        "events_per_second": round(reader.rows_read / elapsed, 1) if elapsed > 0 else None,
        "anomalies": anomalies,
        "errors": sum(n["errors"] for n in nodes),
        "nodes": nodes,
    }


def _print_summary(console: Any, s: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"replay of {s['input']} through {s['topology']}", title_justify="left")
    for col in ("node", "use", "in", "out", "filtered", "errors", "keys", "notes"):
        table.add_column(
            col, justify="right" if col in ("in", "out", "filtered", "errors", "keys") else "left"
        )
    for n in s["nodes"]:
        notes = ", ".join(
            f"{k}={v:.4g}" for k, v in n.get("metrics", {}).items() if v and "." not in k
        )
        if n["role"] == "sink":
            notes = f"-> {n['target']}"
        table.add_row(
            n["id"],
            n["use"],
            f"{n['in']:,}",
            f"{n['out']:,}",
            f"{n['filtered']:,}",
            f"{n['errors']:,}",
            str(n.get("instances", "")),
            notes,
        )
    console.print(table)
    extra = ""
    if s["rows_skipped"] or s["values_nulled"]:
        extra = f", {s['rows_skipped']} rows skipped, {s['values_nulled']} values nulled"
    console.print(
        f"{s['rows']:,} events in {s['seconds']:.2f} s "
        f"({s['events_per_second'] or 0:,.0f} events/s), "
        f"{s['anomalies']:,} anomalies, {s['errors']:,} operator errors{extra}"
    )


def _address(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InputError(f"{flag} {text!r}: expected HOST:PORT, e.g. [::]:5683 or 127.0.0.1:0")
    return host or "::", int(port)


def _state(args: argparse.Namespace, topology: Any) -> tuple[Path, str | None]:
    """(local state directory, Redis URL or None) from --state, --data-dir, the topology."""
    from fogrt.state.redis import check_url

    spec = topology.spec.state
    text = args.state
    if text is None:
        text = spec.url if spec.backend == "redis" else f"file:{spec.path}"
    scheme, sep, rest = text.partition(":")
    if sep and scheme in ("redis", "rediss"):
        try:
            check_url(text)
        except ValueError as exc:
            raise InputError(f"--state: {exc}") from None
        return (args.data_dir or Path(spec.path)), text
    if args.data_dir is not None:
        raise InputError("--data-dir is for the local ingest log when --state is a Redis URL")
    return Path(rest) if sep and scheme == "file" else Path(text), None


def _run(args: argparse.Namespace) -> int:
    import signal

    from fogrt import aio
    from fogrt.ingest.registry import DeviceRegistry
    from fogrt.ingest.wire import Limits
    from fogrt.node import FogNode, NodeConfig
    from fogrt.topology.compile import load_topology

    if len(args.file) > 1:
        raise InputError(
            "fogrt run serves one topology per process; start one fogrt per "
            "topology, each with its own --coap port and --state"
        )
    topology = load_topology(args.file[0])
    host, port = _address(args.coap, "--coap")
    if args.devices:
        registry = DeviceRegistry.from_allowlist(args.devices, args.max_devices)
    else:
        registry = DeviceRegistry(
            "registered" if args.require_registration else "open", max_devices=args.max_devices
        )
    state_dir, state_url = _state(args, topology)
    if not 1 <= args.retry_after <= 86_400:
        raise InputError(f"--retry-after {args.retry_after}: expected 1..86400 seconds")
    if args.rcvbuf is not None and args.rcvbuf < 1:
        raise InputError(f"--rcvbuf {args.rcvbuf}: expected a positive number of bytes")
    _check_engines(args, topology)
    config = NodeConfig(
        coap_host=host,
        coap_port=port,
        state_dir=state_dir,
        state_url=state_url,
        checkpoint_every=args.checkpoint_every or topology.spec.state.checkpoint_every,
        output_dir=args.output,
        registry=registry,
        limits=Limits(max_payload=args.max_payload),
        max_lag=args.max_lag,
        retry_after=args.retry_after,
        fsync=not args.no_fsync,
        max_disk_bytes=args.max_disk * 1024 * 1024 if args.max_disk else None,
        rcvbuf=args.rcvbuf,
        engine_process=args.engine == "process",
        engines=args.engines,
        gc_tuning=True,  # one node for the process's lifetime
    )
    speed: float | None = None
    if args.simulate is not None:  # checked before anything starts: a mistake exits 2
        from fogrt.sim.cli import parse_speed
        from fogrt.sim.fleet import check_alongside

        if not 1 <= args.simulate <= 10_000:
            raise InputError(f"--simulate {args.simulate}: expected 1..10000 devices")
        check_alongside(topology, args.simulate_policy)
        speed = parse_speed(args.simulate_speed)
    node = FogNode(topology, config)
    dash = None
    if args.http:
        from fogrt.dashboard import Dashboard

        http_host, http_port = _address(args.http, "--http")
        # Checked before anything starts: a public address without a token exits 2 here.
        dash = Dashboard(node, http_host, http_port, args.http_token)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await node.start()
        fleet = None
        try:
            if dash is not None:
                await dash.start()
            _banner(node, dash)
            if args.simulate is not None:
                from fogrt.sim.fleet import simulate_alongside

                fleet = asyncio.create_task(
                    simulate_alongside(
                        node, args.simulate, speed=speed, policy=args.simulate_policy
                    )
                )
                fleet.add_done_callback(lambda _: stop.set())  # it only ends by failing
            failed = asyncio.create_task(node.failed.wait())
            failed.add_done_callback(lambda _: stop.set())
            if args.duration is None:
                await stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), args.duration)
            failed.cancel()
        finally:
            if fleet is not None:
                fleet.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fleet  # re-raises a failure of the fleet (logged as it happened)
            await node.stop()
            if dash is not None:
                await dash.stop()

    aio.run(serve())
    if node.failed.is_set():
        print("fogrt run: the engine failed (see the log above)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _check_engines(args: argparse.Namespace, topology: Any) -> None:
    from fogrt.engine.partitions import MAX_ENGINES, unpartitionable

    if not 1 <= args.engines <= MAX_ENGINES:
        raise InputError(f"--engines {args.engines}: expected 1..{MAX_ENGINES}")
    if args.engines > 1:
        if args.engine == "inline":
            raise InputError("--engines N > 1 runs engine processes; not with --engine inline")
        why = unpartitionable(topology)
        if why is not None:
            raise InputError(f"--engines {args.engines}: {why}")


def _banner(node: Any, dash: Any = None) -> None:
    from fogrt.node import _show

    cfg = node.config
    lines = [
        f"fogrt {__version__} serving {node.topology.name}",
        f"  coap   : coap://{_show(node.address)}  (UDP; POST readings to "
        + ", ".join(node.service.paths())
        + ")",
        f"  state  : {node.backend.url}  (ingest log in {cfg.state_dir / 'log'}: "
        f"{node.ingest_log.end_offset} records; checkpoint every {cfg.checkpoint_every:g} s)",
        f"  devices: {cfg.registry.mode}",
        "  engine : " + _engine_line(node.engine_pids),
        "  stop   : Ctrl-C (drains, then exits 0)",
    ]
    if dash is not None:
        auth = "; token required" if dash.token_required else ""
        lines.insert(-1, f"  http   : {dash.url}  (dashboard; Prometheus at /metrics{auth})")
    print("\n".join(lines), file=sys.stderr, flush=True)


def _engine_line(pids: list[int]) -> str:
    if not pids:
        return "inline"
    if len(pids) == 1:
        return f"process {pids[0]}"
    return f"{len(pids)} processes ({', '.join(map(str, pids))}), devices split by hash"


def _delegate(args: argparse.Namespace) -> int:
    """Commands defined in their own modules store their handler in ``args.handler``."""
    code: int = args.handler(args)
    return code


def _operators(args: argparse.Namespace) -> int:
    from fogrt.operator import signature
    from fogrt.registry import OPERATORS, SINKS

    if args.name:
        registry = SINKS if args.name in SINKS else OPERATORS
        cls = registry.get(args.name)
        print(f"{args.name}  ({cls.__module__}:{cls.__qualname__})\n")
        print(f"parameters: {_params_text(signature(cls))}\n")
        print(inspect.getdoc(cls) or "(no documentation)")
        return EXIT_OK
    for title, registry in (("operators", OPERATORS), ("sinks", SINKS)):
        print(f"{title}:")
        for name in registry.names():
            cls = registry.get(name)
            doc = (inspect.getdoc(cls) or "").split("\n", 1)[0]
            print(f"  {name:<24} {doc}")
            print(f"  {'':<24} with: {_params_text(signature(cls))}")
    return EXIT_OK


def _params_text(sig: inspect.Signature) -> str:
    parts = [
        p.name if p.default is p.empty else f"{p.name}={p.default!r}"
        for p in sig.parameters.values()
    ]
    return ", ".join(parts) or "(none)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
