"""``fogrt edge``: put the MicroPython edge agent (``edge_agent/``) on an ESP32.

- ``fogrt edge flash``  validate a config.json, copy the agent and it with mpremote, reset
- ``fogrt edge config`` validate a config.json and print it with every default filled in
- ``fogrt edge build``  compile the agent to .mpy with mpy-cross and print the sizes

``add_parser(subparsers)`` adds the ``edge`` command to ``fogrt``'s parser; each
sub-command stores its handler in ``args.handler`` (``handler(args) -> exit code``).
``main(argv)`` runs it without the rest of ``fogrt``'s command line (tests). Exit codes
as for every fogrt command: 0 done, 1 failed while running (mpremote or mpy-cross failed),
2 invalid input (a bad config.json, bad arguments, mpremote not installed).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fogrt.errors import InputError

__all__ = ["add_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
_FMT = argparse.RawDescriptionHelpFormatter


def add_parser(subparsers: Any) -> None:
    """Add ``edge`` (with ``flash``, ``config``, ``build``) to ``fogrt``'s sub-commands."""
    edge = subparsers.add_parser(
        "edge",
        formatter_class=_FMT,
        help="flash the MicroPython edge agent to an ESP32, check its config",
        description="The MicroPython edge agent (edge_agent/): install it on a board over "
        "USB with mpremote, validate its config.json, compile it to .mpy.",
        epilog="examples:\n  fogrt edge flash --port /dev/ttyUSB0 --device-id room-1 "
        "--fog 192.168.1.10\n  fogrt edge config board.json\n  fogrt edge build",
    )
    sub = edge.add_subparsers(dest="edge_command", metavar="SUBCOMMAND", required=True)

    f = sub.add_parser(
        "flash",
        formatter_class=_FMT,
        help="install the agent and its config.json on a board",
        description=textwrap.dedent("""\
            Validate a config.json (by default edge_agent/config.json, the documented
            example) with the device id, fog address and Wi-Fi given here, then copy it,
            boot.py, main.py and the fogagent package to the board with one mpremote
            session, and reset the board. The agent starts after its boot grace period
            (power.boot_grace_ms, default 3 s). Files the agent keeps on the board (its
            boot epoch, its outbox, its log) are left alone."""),
        epilog=textwrap.dedent("""\
            examples:
              fogrt edge flash --port /dev/ttyUSB0 --device-id room-1 --fog 192.168.1.10 \\
                  --wifi-ssid lab --wifi-psk "$WIFI_PSK"
              fogrt edge flash --port COM5 --device-id pump-7 --fog fog.local:5683 \\
                  --config pump.json --compile
              fogrt edge flash --port /dev/ttyACM0 --device-id t1 --fog [fd00::1]:5683 --dry-run

            exit codes: 0 flashed, 1 mpremote or mpy-cross failed, 2 invalid config or
                        arguments, or mpremote not installed (pip install 'fogrt[edge]')
            """),
    )
    f.add_argument("--port", required=True, help="serial port of the board (mpremote connect)")
    f.add_argument("--device-id", required=True, metavar="ID", help="the device id it sends")
    f.add_argument(
        "--fog", required=True, metavar="HOST[:PORT]", help="the fog node's CoAP address"
    )
    f.add_argument("--source", help="topology source to post to (/r/SOURCE; default: the config's)")
    f.add_argument("--wifi-ssid", metavar="SSID")
    f.add_argument(
        "--wifi-psk", metavar="KEY", help="Wi-Fi key (written to config.json on the board)"
    )
    f.add_argument(
        "--config", type=Path, metavar="FILE", help="base config.json (default: the example)"
    )
    f.add_argument("--compile", action="store_true", help="copy .mpy files compiled by mpy-cross")
    f.add_argument("--mpremote", metavar="PATH", help="the mpremote executable (default: on PATH)")
    f.add_argument("--agent-dir", type=Path, metavar="DIR", help="the edge_agent directory")
    f.add_argument("--dry-run", action="store_true", help="print the mpremote command, run nothing")
    f.set_defaults(handler=_flash)

    c = sub.add_parser(
        "config",
        formatter_class=_FMT,
        help="validate a config.json and print it with its defaults",
        description="Validate a config.json with the agent's own validator and print the "
        "configuration the board would run (every default filled in, the Wi-Fi key masked).",
        epilog="examples:\n  fogrt edge config\n  fogrt edge config board.json\n\n"
        "exit 0 when valid; 2 otherwise, each problem printed as FILE: KEY.PATH: MESSAGE.",
    )
    c.add_argument("file", nargs="?", type=Path, metavar="FILE", help="default: the example")
    c.add_argument("--agent-dir", type=Path, metavar="DIR", help="the edge_agent directory")
    c.set_defaults(handler=_config)

    b = sub.add_parser(
        "build",
        formatter_class=_FMT,
        help="compile the agent to .mpy and print source and .mpy sizes",
        description="Compile every fogagent module a board needs with mpy-cross and print "
        "the size of each, source and compiled.",
        epilog="examples:\n  fogrt edge build\n  fogrt edge build --out dist/edge",
    )
    b.add_argument("--out", type=Path, metavar="DIR", help="keep the .mpy files in DIR")
    b.add_argument("--agent-dir", type=Path, metavar="DIR", help="the edge_agent directory")
    b.set_defaults(handler=_build)


def _agent_dir(args: argparse.Namespace) -> Path:
    from fogrt.edge.flash import check_agent_dir, default_agent_dir

    return check_agent_dir(args.agent_dir or default_agent_dir())


def _invalid(exc: Exception) -> int:
    print(str(exc), file=sys.stderr)
    return EXIT_INVALID


def _flash(args: argparse.Namespace) -> int:
    from fogrt.edge import flash as fl

    try:
        agent_dir = _agent_dir(args)
        base_path = args.config or agent_dir / "config.json"
        doc = fl.board_config(
            fl.read_config(base_path),
            device=args.device_id,
            fog=args.fog,
            source=args.source,
            ssid=args.wifi_ssid,
            psk=args.wifi_psk,
        )
        cfg = fl.validate(doc, str(base_path), agent_dir)
        result = fl.flash(
            args.port,
            cfg,
            agent_dir,
            compile=args.compile,
            mpremote=args.mpremote,
            dry_run=args.dry_run,
        )
    except InputError as exc:
        return _invalid(exc)
    except fl.EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.dry_run:
        print(" ".join(_quote(x) for x in result.command))
        return EXIT_OK
    kind = ".mpy" if args.compile else ".py"
    fog = cfg["fog"]
    kept = cfg["log"]["file"]
    print(
        f"flashed {cfg['device']} on {args.port}: {len(result.modules)} {kind} modules + "
        f"boot.py, main.py, config.json ({result.bytes_copied} bytes); posting to "
        f"coap://{fog['host']}:{fog['port']}/r/{fog['source']}\n"
        f"logs: mpremote connect {args.port} repl"
        + (f"  (warnings are kept in :{kept} on the board)" if kept else "")
    )
    return EXIT_OK


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _config(args: argparse.Namespace) -> int:
    from fogrt.edge import flash as fl

    try:
        agent_dir = _agent_dir(args)
        path = args.file or agent_dir / "config.json"
        cfg = fl.validate(fl.read_config(path), str(path), agent_dir)
    except InputError as exc:
        return _invalid(exc)
    print(json.dumps(fl.masked(cfg), indent=2))
    return EXIT_OK


def _build(args: argparse.Namespace) -> int:
    from fogrt.edge import flash as fl

    try:
        agent_dir = _agent_dir(args)
        if args.out is not None:
            modules = fl.build(agent_dir, args.out, compile=True)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                modules = fl.build(agent_dir, Path(tmp), compile=True)
                rows = [(m.remote, m.source_bytes, m.local.stat().st_size) for m in modules]
    except InputError as exc:
        return _invalid(exc)
    except fl.EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.out is not None:
        rows = [(m.remote, m.source_bytes, m.local.stat().st_size) for m in modules]
    print(f"{'module':<24} {'source':>8} {'.mpy':>8}")
    for name, src, mpy in rows:
        print(f"{name:<24} {src:>8} {mpy:>8}")
    print(f"{'total':<24} {sum(r[1] for r in rows):>8} {sum(r[2] for r in rows):>8}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``fogrt edge ...`` without the rest of fogrt's command line."""
    parser = argparse.ArgumentParser(prog="fogrt", formatter_class=_FMT)
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    handler = args.handler
    code: int = handler(args)
    return code
