"""Benchmark: the engine alone, in one process and in several partitioned by device.

What ``fogrt run``'s engine process does with the log's records, without CoAP or the log:
ten-reading uplinks of many devices, encoded as the log stores them, go through a
``LogApplier`` and an ``Engine`` (decode, the control loop if any, operators, sinks) in
steps of 128 records, as in the engine process. Readings/s are wall time over the whole
stream, after the warm-up share (first sight of every device: instances are built then).

Reference, in the same run: one process over every device. Then ``--processes K`` processes
at the same time, each over the devices whose id hashes to its partition (CRC-32 mod K):
their readings/s together, and the ratio to the single process, which says how far
partitioning the engine by device would scale on this machine (a topology whose operators
are all keyed by device gives the same results partitioned). Values are synthetic (a SKAB
pump's channel means and deviations, or N(1, 0.1) for other fields).

    python bench/engine.py          # the pump topology, 5,000 devices, 2 processes
    python bench/engine.py --topology topologies/room-climate.yaml --devices 1000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from ingest import PUMP_VALUES  # bench/ingest.py: a script's folder comes first on sys.path

REPO = Path(__file__).resolve().parent.parent
PUMP = REPO / "topologies" / "pump-monitoring.yaml"
STEP = 128  # records per engine step, as in fogrt.engine.process


def _records(
    source: str, fields: list[str], devices: list[str], uplinks: int, per: int, seed: int
) -> list[bytes]:
    from fogrt.ingest import record
    from fogrt.ingest.wire import encode_uplink

    rng = random.Random(seed)
    seqs: dict[str, int] = {}
    t0 = 1_700_000_000.0
    out = []
    for i in range(uplinks):
        device = devices[rng.randrange(len(devices))]
        seq = seqs.get(device, 0)
        seqs[device] = seq + 1
        clock = t0 + i * 0.01
        batch = [
            (
                (per - 1 - k) * 0.5,
                {f: round(rng.gauss(*PUMP_VALUES.get(f, (1.0, 0.1))), 4) for f in fields},
            )
            for k in range(per)
        ]
        body = encode_uplink(device, 1, seq, batch, clock=clock, positional_fields=fields)
        out.append(record.encode(source, device, 1, seq, clock, body))
    return out


async def _run(cfg: dict[str, Any]) -> dict[str, Any]:
    from fogrt.control import ControlStore
    from fogrt.engine.applier import LogApplier, control_loop
    from fogrt.engine.runner import Engine
    from fogrt.ingest.wire import Limits, UplinkDecoder
    from fogrt.topology.compile import load_topology

    topology = load_topology(cfg["topology"])
    (source,) = topology.by_role("source")
    fields = list(source.schema)
    k, part = cfg["processes"], cfg["partition"]
    names = [f"dev-{i:05d}" for i in range(cfg["devices"])]
    mine = [d for d in names if zlib.crc32(d.encode()) % k == part]
    uplinks = cfg["uplinks"] * len(mine) // len(names)
    records = _records(source.id, fields, mine, uplinks, cfg["per"], seed=part + 1)
    out = Path(cfg["out"])
    engine = Engine(topology, output_dir=out, queue_size=1)
    decoders = {source.id: UplinkDecoder(source.schema, Limits())}
    applier = LogApplier(topology, engine, control_loop(topology, ControlStore()), decoders)
    for node in topology.by_role("operator"):
        node.build()  # imports, as the engine process does before it answers
    await engine.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, len(records), STEP):
        await applier.apply(list(enumerate(records[i : i + STEP], i)))
    await engine.idle()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    await engine.stop(flush=False)
    readings = len(records) * cfg["per"]
    return {"readings": readings, "seconds": seconds, "cpu": cpu, "devices": len(mine)}


def _child(cfg: dict[str, Any]) -> None:
    import uvloop

    print(json.dumps(uvloop.run(_run(cfg))), flush=True)


def _launch(cfg: dict[str, Any]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", json.dumps(cfg)], stdout=subprocess.PIPE
    )


def _collect(procs: list[subprocess.Popen[bytes]]) -> list[dict[str, Any]]:
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"a benchmark process failed (exit {p.returncode})")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--topology", type=Path, default=PUMP, help="default: the pump topology")
    p.add_argument("--devices", type=int, default=5000, help="devices (default 5000)")
    p.add_argument("--uplinks", type=int, default=30000, help="uplinks in all (default 30000)")
    p.add_argument("--per", type=int, default=10, help="readings per uplink (default 10)")
    p.add_argument("--processes", type=int, default=2, help="partitions (default 2)")
    p.add_argument("--repeat", type=int, default=2, help="rounds; the best is kept (default 2)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return
    if args.processes < 2:
        p.error("--processes: at least 2 (one process is the reference)")

    from fogrt import __version__

    print(
        f"fogrt {__version__}; {platform.machine()}, {os.cpu_count()} cores, "
        f"CPython {platform.python_version()}; {args.topology.name}, {args.devices:,} devices, "
        f"{args.uplinks:,} uplinks of {args.per} readings, steps of {STEP} records",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="fogrt-bench-engine-"))
    base = {
        "topology": str(args.topology),
        "devices": args.devices,
        "uplinks": args.uplinks,
        "per": args.per,
    }
    best_one, best_many = 0.0, 0.0
    try:
        for r in range(args.repeat):
            one = _collect(
                [_launch({**base, "processes": 1, "partition": 0, "out": str(tmp / "1")})]
            )[0]
            rate_one = one["readings"] / one["seconds"]
            procs = [
                _launch(
                    {**base, "processes": args.processes, "partition": i, "out": str(tmp / f"k{i}")}
                )
                for i in range(args.processes)
            ]
            many = _collect(procs)
            # Together: all readings over the time until the last partition finished.
            rate_many = sum(m["readings"] for m in many) / max(m["seconds"] for m in many)
            parts = ", ".join(f"{m['readings'] / m['seconds']:,.0f}" for m in many)
            print(
                f"  round {r + 1}: 1 process {rate_one:,.0f} readings/s "
                f"({one['cpu'] / one['seconds']:.2f} cores); {args.processes} processes "
                f"{rate_many:,.0f} readings/s together ({parts} each)",
                flush=True,
            )
            best_one, best_many = max(best_one, rate_one), max(best_many, rate_many)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nengine, 1 process           : {best_one:,.0f} readings/s\n"
        f"engine, {args.processes} partitions together: {best_many:,.0f} readings/s "
        f"(ratio to 1 process: {best_many / best_one:.2f}; best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
