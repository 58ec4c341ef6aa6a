"""Benchmark: checkpoint cost and recovery time, and a long kill -9 run.

Part 1 (``--devices 100,1000,10000``): per-device anomaly models (the default
``learn.anomaly`` pipeline, trained on ``--events`` readings each); measures taking a
checkpoint (snapshot every instance, seal with HMAC, write the file atomically), its size,
and recovery (read, verify, unpickle every instance) plus replaying ``--replay`` log
records through the engine, the work a restart does after a crash.

Part 2 (``--kills 8 --readings 100000``): the fault-injection test at scale: real
``fogrt run`` processes, 20 devices over real CoAP, SIGKILL at random moments, restart;
checks every acknowledged reading was applied exactly once and prints the time lost to
each restart.

    python bench/recovery.py --devices 100,1000,10000
    python bench/recovery.py --kills 8 --readings 100000 --no-checkpoint-bench
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fogrt.engine.dataflow import Dataflow
from fogrt.event import Event
from fogrt.state.checkpoint import Checkpoint, pack, unpack
from fogrt.state.files import FileBackend
from fogrt.topology import compile_topology

TOPOLOGY = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {name: bench-recovery}
sources:
  s: {fields: {x: float, y: float, z: float}}
operators:
  - {id: detect, use: learn.anomaly, from: s, with: {warmup: 20}}
sinks:
  - {id: out, use: jsonl, from: detect, where: "is_anomaly", with: {path: /dev/null}}
"""
KEY = os.urandom(32)


def events(device: int, n: int, start: int = 0) -> list[Event]:
    rng = random.Random(device * 1_000_003 + start)
    return [
        Event(
            f"d{device}",
            i,
            float(i),
            {"x": rng.gauss(0, 1), "y": rng.gauss(5, 2), "z": rng.random()},
        )
        for i in range(start, start + n)
    ]


def checkpoint_bench(devices: int, per_device: int, replay: int, tmp: Path) -> dict[str, float]:
    topo = compile_topology(TOPOLOGY, "bench.yaml")
    flow = Dataflow(topo)
    for d in range(devices):
        flow.push("s", events(d, per_device))
    backend = FileBackend(tmp / f"state-{devices}")

    t0 = time.perf_counter()
    operators = flow.snapshot()
    t1 = time.perf_counter()
    blob = pack(Checkpoint(devices * per_device, operators), topo, KEY)
    t2 = time.perf_counter()
    asyncio.run(backend.write(devices * per_device, blob))
    t3 = time.perf_counter()

    stored = asyncio.run(backend.checkpoints())[0]
    t4 = time.perf_counter()
    ckpt = unpack(stored.blob, topo, KEY, what="bench")
    fresh = Dataflow(topo)
    fresh.restore(ckpt.operators)
    t5 = time.perf_counter()
    tail = [
        e
        for d in range(min(devices, replay))
        for e in events(d, max(1, replay // devices or 1), per_device)
    ]
    tail = tail[:replay]
    fresh.push("s", tail)
    t6 = time.perf_counter()
    return {
        "devices": devices,
        "snapshot_s": t1 - t0,
        "seal_s": t2 - t1,
        "write_s": t3 - t2,
        "bytes": len(blob),
        "per_device_kb": len(blob) / devices / 1024,
        "read_restore_s": t5 - t4,
        "replay_records": len(tail),
        "replay_s": t6 - t5,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def kill_bench(kills: int, readings: int, seed: int) -> None:
    import tests.test_recovery as rec
    from tests.test_recovery import Harness

    per = 10
    rec.UPLINKS = readings // (rec.DEVICES * per)
    rec.PER = per
    with tempfile.TemporaryDirectory() as tmp:
        harness = Harness(Path(tmp))
        started = time.perf_counter()
        fleet = asyncio.run(harness.stream_with_kills(kills, seed))
        elapsed = time.perf_counter() - started
        sys.path.insert(0, str(Path(tmp) / "plugins"))
        operators = rec.final_checkpoint(harness)
        rec.check_exactly_once(operators)
        logs = [p.read_text() for p in sorted((Path(tmp) / "out").glob("node-*.log"))]
        restored = sum("checkpoint_restored" in t for t in logs)
    print(
        f"\nkill -9 run: {rec.DEVICES} devices, {fleet.acked * per:,} readings acknowledged, "
        f"{kills} kills (seed {seed}), {restored} restores from a checkpoint"
    )
    print(f"  elapsed {elapsed:.1f} s, resends {fleet.resends}, 5.03 answers {fleet.busy}")
    print("  every acknowledged reading applied exactly once: yes (counts and sums checked)")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--devices", default="100,1000,10000", help="fleet sizes, comma separated")
    p.add_argument("--events", type=int, default=300, help="readings learned per device")
    p.add_argument("--replay", type=int, default=10_000, help="log records replayed")
    p.add_argument("--no-checkpoint-bench", action="store_true")
    p.add_argument("--kills", type=int, default=0, help="kill -9 run: number of kills")
    p.add_argument("--readings", type=int, default=100_000, help="kill -9 run: readings")
    p.add_argument("--seed", type=int, default=None)
    args = p.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    if not args.no_checkpoint_bench:
        print(
            f"{'devices':>8} {'snapshot':>9} {'seal':>7} {'write':>7} {'size':>10} "
            f"{'KB/dev':>7} {'restore':>9} {'replay':>16} {'max RSS':>9}"
        )
        with tempfile.TemporaryDirectory() as tmp:
            for n in (int(x) for x in args.devices.split(",")):
                r = checkpoint_bench(n, args.events, args.replay, Path(tmp))
                print(
                    f"{n:>8} {r['snapshot_s']:>8.2f}s {r['seal_s']:>6.2f}s "
                    f"{r['write_s']:>6.2f}s {r['bytes'] / 1e6:>8.1f}MB "
                    f"{r['per_device_kb']:>7.1f} {r['read_restore_s']:>8.2f}s "
                    f"{r['replay_records']:>7} in {r['replay_s']:>5.2f}s "
                    f"{r['max_rss_mb']:>7.0f}MB",
                    flush=True,
                )
    if args.kills:
        seed = args.seed if args.seed is not None else random.randrange(1 << 30)
        kill_bench(args.kills, args.readings, seed)


if __name__ == "__main__":
    main()
