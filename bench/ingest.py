"""Benchmark: the ingest hot path of ``fogrt run`` against stock CoAP servers, under load.

A separate load-generator process (uvloop, every datagram encoded before the clock starts)
plays thousands of virtual devices: each device has its own (boot, seq) sequence, so no
uplink is a duplicate. It keeps a fixed window of CON requests in flight over several UDP
sockets (several peers for the server), matches each response by socket + message ID +
token, never retransmits (an unanswered request counts as a timeout after ``--timeout``
seconds; its slot comes back ACK-clocked, as the window grows at the start), and measures,
after a warm-up, the acknowledged (2.xx) requests per second and the send -> ACK latency.
Every response code is counted, and so are the datagrams the kernel drops because a receive
buffer is full (every server keeps the default 208 KiB buffer, about 190 small datagrams,
unless ``--rcvbuf`` sets the fogrt targets' one).

Targets, each started by this script on 127.0.0.1 and stopped afterwards:

  fogrt     ``fogrt run`` (one source with 3 float fields, one sink whose ``where`` never
            matches: the engine still decodes every record, but writes nothing), fsync ON
            (the default): each 2.04 means the uplink is durable. One reading per uplink.
  fogrt10   the same, 10 readings per uplink (readings/s = requests/s x 10).
  aiocoap   stock aiocoap (on uvloop) with one resource at /r/bench answering 2.04 to POST.
  libcoap   libcoap's C example server ``coap-server-notls``: the same body is PUT to its
            /example_data resource (stored in memory, answered 2.04 Changed).
  echo      a raw uvloop UDP echo server in Python (it sends each datagram back): the ceiling
            of any Python server on this machine, and of this load generator.
  pump10    end to end: ``fogrt run topologies/pump-monitoring.yaml`` (range check, a control
            chart per pump over 8 channels, 10 s windows, drift, file sinks), 10 readings of
            the 8 pump channels per uplink, ``--max-lag 2000``: past 2,000 uplinks of engine
            lag the node answers 5.03, so the acknowledged rate is what ingest *and* the
            engine sustain together.

Goals printed beside the figures: fogrt, single-reading CON uplinks acknowledged durably, at
>= 50% of libcoap's C server; >= 300,000 readings/s with 10-reading batches; pump10 >= 40,000
readings/s end to end.

``fogrt run`` runs its engine in a second process by default (``--engine process``; this
script's ``--engine inline`` keeps one process, ``--engines N`` runs N engine processes over
partitions of the devices): their CPU and memory are counted with the server's.

On a 2-core machine the load generator and the server share the two cores: when a server
is faster than the generator (the C server, the echo), the figure is the generator's. The
table also gives each side's CPU use and the server's CPU time per acknowledged request,
which other jobs on the machine disturb much less than the rates.

    python bench/ingest.py                                  # all targets, 10 s each
    python bench/ingest.py --targets fogrt,libcoap --window 1024
    python bench/ingest.py --soak 60                        # fogrt RSS over 60 s of load
    python bench/ingest.py --targets pump10 --duration 20   # the pump topology, end to end
    python bench/ingest.py --targets pump10 --honor-max-age --pump-max-lag 8000 --engines 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

FIELDS = ("a", "b", "c")
SOURCE = "bench"
TOPOLOGY = f"""\
apiVersion: fogrt/v1
kind: Topology
metadata: {{name: bench-ingest}}
sources:
  {SOURCE}: {{coap: /r/{SOURCE}, fields: {{{", ".join(f"{f}: float" for f in FIELDS)}}}}}
sinks:
  - {{id: nothing, use: jsonl, from: {SOURCE}, where: "a > 1e9", with: {{path: none.jsonl}}}}
"""
PUMP_TOPOLOGY = Path(__file__).resolve().parent.parent / "topologies" / "pump-monitoring.yaml"
PUMP_SOURCE = "pump"
PUMP_VALUES = {  # mean, standard deviation: a SKAB pump in normal operation
    "accelerometer1rms": (0.21, 0.01),
    "accelerometer2rms": (0.27, 0.01),
    "current": (1.6, 0.4),
    "pressure": (0.3, 0.1),
    "temperature": (80.0, 4.0),
    "thermocouple": (29.0, 1.0),
    "voltage": (230.0, 2.0),
    "volume_flow_raterms": (32.0, 1.0),
}
PUMP_MAX_LAG = 2_000
"""--max-lag of the pump target (log records): the engine's lag is bounded within a second
or so, and past it the node answers 5.03, so the acknowledged rate is what the engine keeps
up with end to end, not what the log can absorb."""
ALL_TARGETS = ("fogrt", "fogrt10", "aiocoap", "libcoap", "echo", "pump10")
CONTENT_FORMAT = 65362  # application/x-msgpack (fogrt.ingest.wire.CONTENT_FORMAT)
POST, PUT, CHANGED, SERVICE_UNAVAILABLE = 0x02, 0x03, 0x44, 0xA3
GOAL_VS_LIBCOAP = 0.5
GOAL_BATCHED = 300_000
GOAL_PUMP = 40_000
BOOT = 1
VARIANTS = 64  # distinct reading sets, cycled
LIBCOAP_SERVER = "coap-server-notls"
_HEAD = struct.Struct(">BBHI")  # CON header (ver 1, TKL 4), code, message ID, 4-byte token


# -- the load generator (its own process) ---------------------------------------------------


def _options(path: tuple[str, ...]) -> bytes:
    from fogrt.ingest import coap

    opts = [(coap.URI_PATH, p.encode()) for p in path]
    opts.append((coap.CONTENT_FORMAT, coap.encode_uint(CONTENT_FORMAT)))
    return coap.encode_options(opts) + b"\xff"


def _readings(
    per_uplink: int, rng: random.Random, fields: tuple[str, ...] = FIELDS
) -> list[list[tuple[float, dict[str, float]]]]:
    """``VARIANTS`` reading batches of ``per_uplink`` readings each (ages 0.5 s apart)."""
    out = []
    for _ in range(VARIANTS):
        batch = []
        for i in range(per_uplink):
            if fields == FIELDS:
                values = {
                    "a": round(rng.uniform(15, 30), 3),
                    "b": round(rng.uniform(20, 80), 3),
                    "c": round(rng.uniform(0, 1000), 1),
                }
            else:
                values = {f: round(rng.gauss(*PUMP_VALUES[f]), 4) for f in fields}
            batch.append(((per_uplink - 1 - i) * 0.5, values))
        out.append(batch)
    return out


def encode_datagrams(cfg: dict[str, Any]) -> list[list[bytes]]:
    """Every datagram of the run, per socket: socket ``s`` speaks for devices ``s, s+S, ...``
    in turn; its ``k``-th datagram has message ID ``k mod 65536`` and token ``k`` (4 bytes),
    and carries uplink ``seq = k // devices_per_socket`` of its device.

    Bodies are assembled from pre-packed parts; a sample is checked byte for byte against
    the reference encoder (``fogrt.ingest.wire.encode_uplink``, ``fogrt.ingest.coap.build``)
    and decoded by fogrt's own hot-path filter and uplink decoder.
    """
    import msgpack

    from fogrt.ingest import coap, wire

    sockets, devices, per = cfg["sockets"], cfg["devices"], cfg["per_uplink"]
    count = cfg["per_socket"]
    code, path = cfg["code"], tuple(cfg["path"])
    fields = tuple(cfg.get("fields", FIELDS))
    rng = random.Random(7)
    batches = _readings(per, rng, fields)
    rsuffix = [
        b"\xa1r" + msgpack.packb([[round(age * 1000), [v[f] for f in fields]] for age, v in b])
        for b in batches
    ]
    opts = _options(path)
    per_socket_devices = max(1, devices // sockets)
    seqs = [msgpack.packb(s) for s in range(count // per_socket_devices + 1)]
    pack = _HEAD.pack
    join = b"".join
    out = []
    for s in range(sockets):
        names = [f"dev-{s + sockets * i:05d}" for i in range(per_socket_devices)]
        prefix = [
            b"\x84\xa1d" + msgpack.packb(n) + b"\xa1b" + msgpack.packb(BOOT) + b"\xa1s"
            for n in names
        ]
        dgs = [
            join(
                (
                    pack(0x44, code, k & 0xFFFF, k),
                    opts,
                    prefix[k % per_socket_devices],
                    seqs[k // per_socket_devices],
                    rsuffix[k % VARIANTS],
                )
            )
            for k in range(count)
        ]
        # Check a sample against the reference encoders and fogrt's decoders.
        decoder = wire.UplinkDecoder({f: "float" for f in fields})
        for k in (0, 1, count // 2, count - 1):
            dev, seq = k % per_socket_devices, k // per_socket_devices
            body = wire.encode_uplink(
                names[dev], BOOT, seq, batches[k % VARIANTS], positional_fields=list(fields)
            )
            ref = coap.build(
                coap.CON,
                code,
                k & 0xFFFF,
                k.to_bytes(4, "big"),
                [(coap.URI_PATH, p.encode()) for p in path]
                + [(coap.CONTENT_FORMAT, coap.encode_uint(CONTENT_FORMAT))],
                body,
            )
            if dgs[k] != ref:
                raise SystemExit(f"datagram {k} of socket {s} differs from the reference")
            if code == POST:
                peek = coap.peek_uplink(dgs[k])
                assert peek is not None and peek[3] == path
                up = decoder.decode(peek[5])
                assert (up.device, up.boot, up.seq, len(up.readings)) == (
                    names[dev],
                    BOOT,
                    seq,
                    per,
                )
        out.append(dgs)
    return out


class _Peer(asyncio.DatagramProtocol):
    """One UDP socket of the generator: its own window, message IDs and tokens.

    The window is ACK-clocked: a response lets one new request out, plus one more while the
    window is short (``deficit``: at the start, and after timeouts), so it grows back like
    TCP's slow start instead of in a burst that would overflow the server's receive buffer
    again (which would time out again, together, ``timeout`` later: a periodic artefact).
    """

    def __init__(self, run: _Run, datagrams: list[bytes], window: int) -> None:
        self.run = run
        self.datagrams = datagrams
        self.window = window
        self.deficit = window  # slots of the window not in flight (not yet sent, timed out)
        self.next = 0  # index of the next datagram to send
        self.inflight: dict[int, tuple[int, float]] = {}  # mid -> (k, send time)
        self.transport: asyncio.DatagramTransport | None = None
        self.sending = True
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, now: float) -> None:
        """Send the next datagram (unless the run is over or the datagrams ran out)."""
        k = self.next
        if k >= len(self.datagrams):
            self.run.exhausted(now)
            return
        self.next = k + 1
        mid = k & 0xFFFF
        old = self.inflight.pop(mid, None)
        if old is not None:  # unanswered for 65536 sends: never reuse a mid in flight
            self.run.timeouts += 1
            self.run.mid_wraps += 1
        self.inflight[mid] = (k, now)
        self.transport.sendto(self.datagrams[k])  # type: ignore[union-attr]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.perf_counter()
        run = self.run
        if len(data) < 4:
            run.malformed += 1
            return
        mid = data[2] << 8 | data[3]
        entry = self.inflight.pop(mid, None)
        if entry is None:
            run.unmatched += 1
            return
        if data[0] & 0x0F != 4 or int.from_bytes(data[4:8], "big") != entry[0]:
            self.inflight[mid] = entry  # another exchange's answer: ours is still out
            run.mismatched += 1
            return
        code = data[1] if data[0] & 0x30 != 0x30 else -1  # -1: RST
        run.codes[code] += 1
        if code in run.ok_codes:
            run.ok += 1
            run.latencies.append(now - entry[1])
        elif code == SERVICE_UNAVAILABLE and run.backoff:
            # A device that honours Max-Age: this slot of the window waits, then goes on.
            asyncio.get_running_loop().call_later(run.backoff, self._back)
            return
        if self.sending:
            self.send(now)
            if self.deficit:
                self.deficit -= 1
                self.send(now)

    def _back(self) -> None:
        if self.sending:
            self.send(time.perf_counter())

    def start(self, now: float, burst: int) -> None:
        for _ in range(min(burst, self.deficit)):
            self.deficit -= 1
            self.send(now)

    def error_received(self, exc: Exception) -> None:
        self.run.errors += 1

    def sweep(self, now: float, timeout: float) -> None:
        """Time out what is older than ``timeout`` (oldest first); their slots come back
        one per response (or, if nothing is left in flight to clock them, 4 at a time)."""
        inflight = self.inflight
        limit = now - timeout
        expired = []
        for mid, (_, sent) in inflight.items():
            if sent > limit:
                break
            expired.append(mid)
        for mid in expired:
            del inflight[mid]
        self.run.timeouts += len(expired)
        self.deficit += len(expired)
        if self.sending and not inflight:
            self.start(now, 4)


class _Run:
    """Counters shared by the peers (plain attributes: they are on the hot path)."""

    def __init__(self, ok_codes: set[int], backoff: float = 0.0) -> None:
        self.ok_codes = ok_codes
        self.backoff = backoff
        """Seconds a window slot waits after a 5.03 (0: it goes on at once)."""
        self.ok = 0
        self.codes: Counter[int] = Counter()
        self.latencies: list[float] = []
        self.timeouts = 0
        self.mid_wraps = 0
        self.unmatched = 0
        self.mismatched = 0
        self.malformed = 0
        self.errors = 0
        self.ran_out_at: float | None = None

    def exhausted(self, now: float) -> None:
        if self.ran_out_at is None:
            self.ran_out_at = now

    def snapshot(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "codes": dict(self.codes),
            "n_latencies": len(self.latencies),
            "timeouts": self.timeouts,
            "mid_wraps": self.mid_wraps,
            "unmatched": self.unmatched,
            "mismatched": self.mismatched,
            "malformed": self.malformed,
            "errors": self.errors,
        }


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``fogrt run``'s engine process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def _cpu_of(pid: int | None, tree: bool = True) -> float | None:
    """CPU seconds (user + system, all threads) of process ``pid`` and (``tree``) its
    descendants."""
    if pid is None:
        return None
    total, seen = 0.0, False
    for p in _tree(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seen = True
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total if seen else None


def _own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core, every process) so far."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def udp_drops(ports: set[int]) -> int:
    """Datagrams dropped by the kernel (receive buffer full) on 127.0.0.1 sockets ``ports``."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
            f = line.split()
            host, port = f[1].split(":")
            if host == "0100007F" and int(port, 16) in ports:
                total += int(f[-1])
    return total


async def _load(cfg: dict[str, Any], datagrams: list[list[bytes]]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    run = _Run(set(cfg["ok_codes"]), cfg.get("backoff", 0.0))
    window = cfg["window"]
    sockets = len(datagrams)
    peers = []
    for s, dgs in enumerate(datagrams):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.1", cfg["port"]))
        sock.setblocking(False)
        share = window // sockets + (1 if s < window % sockets else 0)
        peer = _Peer(run, dgs, share)
        peer.port = sock.getsockname()[1]
        await loop.create_datagram_endpoint(lambda p=peer: p, sock=sock)  # type: ignore[misc]
        peers.append(peer)

    timeout = cfg["timeout"]

    async def sweeper() -> None:
        while True:
            await asyncio.sleep(0.05)
            now = time.perf_counter()
            for p in peers:
                p.sweep(now, timeout)

    sweep_task = asyncio.create_task(sweeper())
    start = time.perf_counter()
    for p in peers:
        p.start(start, 4)  # then ACK-clocked growth to the full window

    await asyncio.sleep(max(0.0, cfg["warmup"] - (time.perf_counter() - start)))
    t0 = time.perf_counter()
    snap0 = run.snapshot()
    pid = cfg.get("server_pid")
    cpu0 = (_own_cpu(), _cpu_of(pid), machine_busy(), _cpu_of(pid, tree=False))
    samples = []
    next_sample = t0 + 1.0
    deadline = t0 + cfg["duration"]
    while True:
        now = time.perf_counter()
        if now >= deadline or run.ran_out_at is not None:
            break
        await asyncio.sleep(min(deadline, next_sample) - now)
        if cfg.get("progress") and time.perf_counter() >= next_sample:
            samples.append((round(time.perf_counter() - t0, 2), run.ok))
            next_sample += 1.0
    t1 = min(time.perf_counter(), run.ran_out_at or float("inf"))
    snap1 = run.snapshot()
    cpu1 = (_own_cpu(), _cpu_of(pid), machine_busy(), _cpu_of(pid, tree=False))
    for p in peers:
        p.sending = False
    # Let what is in flight complete (or time out) so the totals are complete.
    end_wait = time.perf_counter() + timeout + 0.2
    while any(p.inflight for p in peers) and time.perf_counter() < end_wait:
        await asyncio.sleep(0.05)
    sweep_task.cancel()
    left = sum(len(p.inflight) for p in peers)
    drops = udp_drops({p.port for p in peers})
    for p in peers:
        if p.transport is not None:
            p.transport.close()

    lat = sorted(run.latencies[snap0["n_latencies"] : snap1["n_latencies"]])

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else None

    seconds = t1 - t0
    codes = Counter(snap1["codes"])
    codes.subtract(snap0["codes"])
    diff = {k: snap1[k] - snap0[k] for k in snap1 if isinstance(snap1[k], int)}
    return {
        "seconds": seconds,
        "ok": diff["ok"],
        "rate": diff["ok"] / seconds if seconds > 0 else 0.0,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": lat[-1] * 1000 if lat else None,
        "codes": {_code_name(c): n for c, n in sorted(codes.items()) if n},
        "timeouts": diff["timeouts"],
        "mid_wraps": diff["mid_wraps"],
        "unmatched": diff["unmatched"],
        "mismatched": diff["mismatched"],
        "malformed": diff["malformed"],
        "send_errors": diff["errors"],
        "ran_out": run.ran_out_at is not None,
        "sent_total": sum(p.next for p in peers),
        "ok_total": run.ok,
        "codes_total": {_code_name(c): n for c, n in sorted(run.codes.items())},
        "timeouts_total": run.timeouts,
        "left_in_flight": left,
        "loadgen_cpu": (cpu1[0] - cpu0[0]) / seconds if seconds > 0 else None,
        "server_cpu": (
            (cpu1[1] - cpu0[1]) / seconds
            if cpu0[1] is not None and cpu1[1] is not None and seconds > 0
            else None
        ),
        "server_main_cpu": (
            (cpu1[3] - cpu0[3]) / seconds
            if cpu0[3] is not None and cpu1[3] is not None and seconds > 0
            else None
        ),
        "machine_busy": (cpu1[2] - cpu0[2]) / seconds if seconds > 0 else None,
        "loadgen_drops": drops,
        "progress": samples,
    }


def _code_name(code: int) -> str:
    if code == -1:
        return "RST"
    return f"{code >> 5}.{code & 0x1F:02d}"


def loadgen_main(cfg: dict[str, Any]) -> None:
    """Child process: encode everything, then run the load and print one JSON line."""
    import uvloop

    t = time.perf_counter()
    datagrams = encode_datagrams(cfg)
    encode_s = time.perf_counter() - t
    result = uvloop.run(_load(cfg, datagrams))
    result["encode_s"] = encode_s
    result["datagrams"] = sum(len(d) for d in datagrams)
    result["datagram_bytes"] = len(datagrams[0][0])
    print(json.dumps(result), flush=True)


# -- the reference servers (their own processes) ----------------------------------------


def serve_echo(port: int) -> None:
    import uvloop

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.transport.sendto(data, addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", port))
        print(f"echo listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        await _until_signal()

    uvloop.run(main())


def serve_aiocoap(port: int) -> None:
    import aiocoap
    import uvloop
    from aiocoap import resource as aioresource

    class Bench(aioresource.Resource):  # type: ignore[misc]
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CHANGED)

    async def main() -> None:
        site = aioresource.Site()
        site.add_resource(["r", SOURCE], Bench())
        ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        print(f"aiocoap listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
        try:
            await _until_signal()
        finally:
            await ctx.shutdown()

    uvloop.run(main())


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


# -- the parent: targets, sampling, report -----------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(port: int, code: int, path: tuple[str, ...], timeout: float = 30.0) -> None:
    """Wait until something answers a CON request on 127.0.0.1:port."""
    from fogrt.ingest import coap

    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(0.2)
        mid = 0
        while time.monotonic() < deadline:
            mid += 1
            opts = [(coap.URI_PATH, p.encode()) for p in path]
            s.send(coap.build(coap.CON, code, 0xFF00 + mid, b"probe", opts, b"\x80"))
            with contextlib.suppress(TimeoutError, ConnectionRefusedError):
                s.recv(2048)
                return
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on 127.0.0.1:{port}")


def _rss_kib(pid: int) -> int | None:
    """Resident memory of ``pid`` and its descendants (the node and its engine process)."""
    total: int | None = None
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total = (total or 0) + int(line.split()[1])
    return total


def wait_idle(limit: float, max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until the machine is busy less than ``limit`` cores over
    half a second (other jobs share it); returns the last load seen, in cores."""
    deadline = time.monotonic() + max_wait
    waited = False
    while True:
        b0, t0 = machine_busy(), time.monotonic()
        time.sleep(0.5)
        load = (machine_busy() - b0) / (time.monotonic() - t0)
        if load < limit or time.monotonic() >= deadline:
            if waited:
                print(f"    (waited for other jobs; load now {load:.2f} cores)", flush=True)
            return load
        if not waited:
            print(
                f"    (other jobs busy {load:.2f} cores: waiting up to {max_wait:g} s)", flush=True
            )
            waited = True


class Server:
    """A target server process on 127.0.0.1: ``start`` returns when it answers."""

    def __init__(
        self,
        name: str,
        tmp: Path,
        rcvbuf: int | None = None,
        engine: str = "process",
        retry_after: int | None = None,
        max_lag: int = PUMP_MAX_LAG,
        engines: int = 1,
    ) -> None:
        self.name = name
        self.engines = engines
        self.max_lag = max_lag
        self.engine = engine
        self.retry_after = retry_after
        self.tmp = tmp
        self.rcvbuf = rcvbuf
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stderr = b""
        fogrt = name.startswith("fogrt") or name == "pump10"
        self.code = PUT if name == "libcoap" else POST
        self.path: tuple[str, ...] = ("example_data",) if name == "libcoap" else ("r", SOURCE)
        self.per_uplink = 10 if name in ("fogrt10", "pump10") else 1
        self.fields: tuple[str, ...] = FIELDS
        if name == "pump10":
            self.path, self.fields = ("r", PUMP_SOURCE), tuple(PUMP_VALUES)
        self.ok_codes = [POST] if name == "echo" else list(range(0x40, 0x60))
        self.fogrt = fogrt

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.fogrt:
            work = self.tmp / self.name
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            topology = work / "bench.yaml"
            if self.name == "pump10":
                shutil.copy(PUMP_TOPOLOGY, topology)
            else:
                topology.write_text(TOPOLOGY)
            cmd = [
                sys.executable,
                "-m",
                "fogrt.cli",
                "--log-level",
                "warning",
                "run",
                str(topology),
                "--coap",
                "127.0.0.1:0",
                "--state",
                str(work / "state"),
                "--output",
                str(work),
            ]
            if self.rcvbuf:
                cmd += ["--rcvbuf", str(self.rcvbuf)]
            cmd += ["--engine", self.engine]
            if self.engines > 1:
                cmd += ["--engines", str(self.engines)]
            if self.retry_after is not None:
                cmd += ["--retry-after", str(self.retry_after)]
            if self.name == "pump10":
                cmd += ["--max-lag", str(self.max_lag)]
            self.proc = subprocess.Popen(
                cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
            )
            self.port = self._banner_port()  # it answers once the banner is out
            return
        self.port = _free_port()
        if self.name == "libcoap":
            cmd = [LIBCOAP_SERVER, "-A", "127.0.0.1", "-p", str(self.port), "-v", "0"]
        else:
            cmd = [sys.executable, __file__, "--serve", self.name, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env
        )
        _probe(self.port, self.code, self.path)

    def _banner_port(self, timeout: float = 60.0) -> int:
        assert self.proc is not None and self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                if m := re.search(rb"coap://127\.0\.0\.1:(\d+)", buf):
                    self.stderr = buf
                    # Keep draining stderr so warnings can never block the server.
                    threading.Thread(target=self._drain, args=(fd,), daemon=True).start()
                    return int(m.group(1))
        self.stop()
        raise RuntimeError("fogrt run did not start:\n" + buf.decode(errors="replace"))

    def _drain(self, fd: int) -> None:
        with contextlib.suppress(OSError):
            while chunk := os.read(fd, 65536):
                if len(self.stderr) < 1 << 20:
                    self.stderr += chunk

    def stop(self, timeout: float = 60.0) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None and not self.fogrt:
            with contextlib.suppress(OSError):
                self.stderr += proc.stderr.read()
        return proc.returncode


def run_target(name: str, args: argparse.Namespace, tmp: Path, duration: float) -> dict[str, Any]:
    if args.idle_wait > 0:
        wait_idle(0.3, args.idle_wait)
    retry = args.retry_after if args.honor_max_age else None
    server = Server(name, tmp, args.rcvbuf, args.engine, retry, args.pump_max_lag, args.engines)
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    window = args.window
    per_socket = int(args.max_rate * (args.warmup + duration) / args.sockets) + window
    cfg = {
        "port": server.port,
        "code": server.code,
        "path": list(server.path),
        "ok_codes": server.ok_codes,
        "per_uplink": server.per_uplink,
        "fields": list(server.fields),
        "sockets": args.sockets,
        "devices": args.devices,
        "window": window,
        "per_socket": per_socket,
        "warmup": args.warmup,
        "duration": duration,
        "timeout": args.timeout,
        "server_pid": pid,
        "backoff": args.retry_after if args.honor_max_age else 0.0,
        "progress": True,
    }
    gen = subprocess.Popen(
        [sys.executable, __file__, "--loadgen", json.dumps(cfg)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    rss: list[tuple[float, int]] = []
    t0 = time.monotonic()
    out = b""
    assert gen.stdout is not None
    while True:
        kib = _rss_kib(pid)
        if kib is not None:
            rss.append((time.monotonic() - t0, kib))
        ready, _, _ = select.select([gen.stdout], [], [], 1.0)
        if ready:
            out = gen.stdout.read()
            break
        if gen.poll() is not None:
            break
    gen.wait()
    drops = udp_drops({server.port})
    code = server.stop()
    if gen.returncode != 0 or not out.strip():
        raise SystemExit(f"the load generator failed against {name} (exit {gen.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    result.update(
        target=name,
        per_uplink=server.per_uplink,
        readings_rate=result["rate"] * server.per_uplink,
        rss_kib=rss,
        server_drops=drops,
        server_exit=code,
    )
    if server.fogrt:
        result["server_log_tail"] = _warnings(server.stderr)
    return result


def _warnings(stderr: bytes) -> list[str]:
    lines = [x for x in stderr.decode(errors="replace").splitlines() if x.strip()]
    return [x for x in lines if "warn" in x.lower() or "error" in x.lower()][-5:]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _codes(codes: dict[str, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in codes.items()) or "-"


def _report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["target"] not in best or r["rate"] > best[r["target"]]["rate"]:
            best[r["target"]] = r
    print()
    print(
        f"{'target':<9} {'requests/s':>11} {'readings/s':>11} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'timeouts':>8} {'srv cpu':>7} {'us/req':>6} {'gen cpu':>7} {'other':>6}  codes"
    )
    for name in [t for t in ALL_TARGETS if t in best]:
        r = best[name]
        readings = f"{r['readings_rate']:,.0f}" if r["per_uplink"] > 1 or name == "fogrt" else "-"
        srv = "-" if r["server_cpu"] is None else f"{r['server_cpu']:.2f}"
        per_req = (
            "-"
            if not r["server_cpu"] or not r["rate"]
            else f"{r['server_cpu'] / r['rate'] * 1e6:.1f}"
        )
        other = r["machine_busy"] - r["loadgen_cpu"] - (r["server_cpu"] or 0.0)
        print(
            f"{name:<9} {r['rate']:>11,.0f} {readings:>11} {_ms(r['p50_ms']):>8} "
            f"{_ms(r['p99_ms']):>8} {r['timeouts']:>8} {srv:>7} {per_req:>6} "
            f"{r['loadgen_cpu']:>7.2f} "
            f"{other:>6.2f}  {_codes(r['codes'])}"
        )
    print(
        f"(srv / gen cpu: cores used by the server / the load generator over the measurement; "
        f"us/req: server CPU per acknowledged request; other: cores used by everything else "
        f"on the machine; {os.cpu_count()} cores in all)"
    )
    for name in best:
        r = best[name]
        notes = []
        main, total = r.get("server_main_cpu"), r["server_cpu"]
        if main is not None and total is not None and total - main > 0.01:
            notes.append(
                f"server cores: node process {main:.2f}, engine "
                + ("process" if args.engines == 1 else f"processes ({args.engines})")
                + f" {total - main:.2f}"
            )
        if r["ran_out"]:
            notes.append(f"ran out of pre-encoded datagrams after {r['seconds']:.1f} s")
        for k in ("mid_wraps", "unmatched", "mismatched", "malformed", "send_errors"):
            if r[k]:
                notes.append(f"{k} {r[k]}")
        if r["server_drops"] or r["loadgen_drops"]:
            notes.append(
                f"datagrams dropped by the kernel (receive buffer full): server socket "
                f"{r['server_drops']}, generator sockets {r['loadgen_drops']} (whole run)"
            )
        if r.get("server_exit") not in (0, None, -signal.SIGTERM):
            notes.append(f"server exit code {r['server_exit']}")
        if r.get("server_log_tail"):
            notes.append("server warnings: " + " | ".join(r["server_log_tail"]))
        if notes:
            print(f"  {name}: " + "; ".join(notes))
    for name in best:
        if name.startswith("fogrt") or name == "pump10":
            kib = [k for _, k in best[name]["rss_kib"]]
            if kib:
                print(
                    f"  {name} server RSS: start {kib[0] / 1024:.1f} MiB, end "
                    f"{kib[-1] / 1024:.1f} MiB, max {max(kib) / 1024:.1f} MiB "
                    f"({len(kib)} samples, 1 s apart)"
                )

    print()
    f1 = best.get("fogrt")
    if f1:
        for ref, goal in (("libcoap", GOAL_VS_LIBCOAP), ("aiocoap", None), ("echo", None)):
            if ref in best and best[ref]["rate"] > 0:
                ratio = f1["rate"] / best[ref]["rate"]
                tail = (
                    f"  (goal >= {goal:.2f}: {'met' if ratio >= goal else 'MISSED'})"
                    if goal
                    else ""
                )
                print(f"ratio fogrt single / {ref:<8}: {ratio:6.3f}{tail}")
    lc = best.get("libcoap")
    if f1 and lc and f1["server_cpu"] and lc["server_cpu"] and f1["rate"] and lc["rate"]:
        us_f, us_l = f1["server_cpu"] / f1["rate"] * 1e6, lc["server_cpu"] / lc["rate"] * 1e6
        print(
            f"server CPU per request       : fogrt {us_f:.1f} us, libcoap {us_l:.1f} us -> at "
            f"equal CPU fogrt would reach {us_l / us_f:.3f} of libcoap (less disturbed by other "
            "jobs than the rates)"
        )
    f10 = best.get("fogrt10")
    if f10:
        ok = f10["readings_rate"] >= GOAL_BATCHED
        print(
            f"fogrt 10-reading batches     : {f10['readings_rate']:,.0f} readings/s  "
            f"(goal >= {GOAL_BATCHED:,}: {'met' if ok else 'MISSED'})"
        )
    pump = best.get("pump10")
    if pump:
        ok = pump["readings_rate"] >= GOAL_PUMP
        print(
            f"pump topology, end to end    : {pump['readings_rate']:,.0f} readings/s  "
            f"(goal >= {GOAL_PUMP:,}: {'met' if ok else 'MISSED'}; "
            f"5.03 backpressure: {pump['codes'].get('5.03', 0):,})"
        )
    print(
        f"\nNote: this machine has {os.cpu_count()} cores; the load generator (one Python "
        "process) and the server share them, so a server faster than the generator (C, echo) "
        "is measured at the generator's ceiling, and every figure includes the generator "
        "competing for CPU."
    )


def _machine() -> str:
    import aiocoap.meta
    import uvloop

    libcoap = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libcoap3-bin"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        libcoap = text.strip() or "?"
    rev = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        repo = Path(__file__).resolve().parent.parent
        git = ["git", "-C", str(repo)]
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "fogrt"], capture_output=True, text=True
        )
        rev = head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    return (
        f"fogrt {rev}\n"
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, CPython {platform.python_version()}, uvloop "
        f"{uvloop.__version__}, aiocoap {aiocoap.meta.version}, libcoap3 {libcoap}"
    )


def soak(args: argparse.Namespace, tmp: Path) -> None:
    print(
        f"soak: fogrt, single-reading uplinks, {args.soak:.0f} s, window {args.window}, "
        f"{args.devices} devices, fsync on",
        flush=True,
    )
    r = run_target("fogrt", args, tmp, args.soak)
    print(
        f"acknowledged {r['rate']:,.0f} requests/s over {r['seconds']:.1f} s, p50 "
        f"{_ms(r['p50_ms'])} ms, p99 {_ms(r['p99_ms'])} ms, timeouts {r['timeouts']}, "
        f"codes {_codes(r['codes'])}" + ("; RAN OUT of datagrams" if r["ran_out"] else "")
    )
    srv = r["server_cpu"] or 0.0
    print(
        f"server {srv:.2f} cores ({srv / max(r['rate'], 1) * 1e6:.1f} us/request), generator "
        f"{r['loadgen_cpu']:.2f}, everything else {r['machine_busy'] - srv - r['loadgen_cpu']:.2f}"
    )
    print("server RSS over time (from the start of the load generator):")
    step = max(1, len(r["rss_kib"]) // 30)
    for t, kib in r["rss_kib"][::step]:
        print(f"  {t:6.1f} s  {kib / 1024:8.1f} MiB")
    # Samples taken under load: the generator's warm-up and measured seconds (after them
    # the node may be stopping: its final checkpoint is not the soak's memory).
    loaded = [k for t, k in r["rss_kib"] if t <= args.warmup + args.soak] or [0]
    kib = [k for _, k in r["rss_kib"]]
    mid = loaded[len(loaded) // 2 :]
    print(
        f"start {kib[0] / 1024:.1f} MiB, end {kib[-1] / 1024:.1f} MiB, max {max(kib) / 1024:.1f}"
        f" MiB; second half of the load grew {(mid[-1] - mid[0]) / 1024:+.1f} MiB (goal: flat)"
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--duration", type=float, default=10.0, help="measured seconds per target (default 10)"
    )
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load before measuring (default 2)"
    )
    p.add_argument(
        "--window",
        type=int,
        default=256,
        help="CON requests kept in flight (default 256; beyond ~190 a server that falls behind "
        "overflows its default 208 KiB UDP receive buffer: drops, counted as timeouts)",
    )
    p.add_argument("--devices", type=int, default=5000, help="virtual devices (default 5000)")
    p.add_argument(
        "--sockets", type=int, default=8, help="UDP source ports of the generator (default 8)"
    )
    p.add_argument(
        "--targets",
        default=",".join(ALL_TARGETS),
        help=f"comma-separated, from {','.join(ALL_TARGETS)} (default: all)",
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="rounds over the targets; the best is kept"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        help="seconds before an unanswered request counts as a timeout (default 2)",
    )
    p.add_argument(
        "--max-rate",
        type=float,
        help="requests/s the pre-encoded datagrams are sized for (default 200000, or 60000 "
        "with --soak): a faster target ends its measurement early, which is reported",
    )
    p.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="instead of the table: single-reading load on fogrt for SECONDS, RSS over time",
    )
    p.add_argument(
        "--idle-wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="before each target, wait up to SECONDS for other jobs on the machine to go "
        "quiet (< 0.3 cores busy); 0: do not wait (default 30)",
    )
    p.add_argument(
        "--rcvbuf",
        type=int,
        metavar="BYTES",
        help="SO_RCVBUF of the fogrt targets' CoAP socket (fogrt run --rcvbuf); the other "
        "servers keep the system's default (default: the system's, 208 KiB)",
    )
    p.add_argument(
        "--engine",
        choices=("process", "inline"),
        default="process",
        help="fogrt run --engine of the fogrt targets: 'process' (the default: ingest and "
        "engine in two processes) or 'inline' (one process)",
    )
    p.add_argument(
        "--engines",
        type=int,
        default=1,
        metavar="N",
        help="fogrt run --engines of the fogrt targets: N engine processes, the devices split "
        "among them (default 1)",
    )
    p.add_argument(
        "--honor-max-age",
        action="store_true",
        help="a slot of the window that gets 5.03 waits --retry-after seconds before its "
        "next request, as a device honouring Max-Age does (default: it goes on at once, so "
        "an overloaded node spends its time refusing)",
    )
    p.add_argument(
        "--retry-after",
        type=int,
        default=1,
        metavar="SECONDS",
        help="with --honor-max-age: fogrt run --retry-after of the fogrt targets, and the "
        "generator's wait (default 1)",
    )
    p.add_argument(
        "--pump-max-lag",
        type=int,
        default=PUMP_MAX_LAG,
        metavar="RECORDS",
        help=f"fogrt run --max-lag of the pump10 target (default {PUMP_MAX_LAG:,})",
    )
    p.add_argument("--loadgen", help=argparse.SUPPRESS)
    p.add_argument("--serve", choices=("echo", "aiocoap"), help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.loadgen:
        loadgen_main(json.loads(args.loadgen))
        return
    if args.serve == "echo":
        serve_echo(args.port)
        return
    if args.serve == "aiocoap":
        serve_aiocoap(args.port)
        return

    if args.max_rate is None:
        args.max_rate = 60_000 if args.soak else 200_000
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(ALL_TARGETS)
    if unknown:
        p.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if "libcoap" in targets and shutil.which(LIBCOAP_SERVER) is None:
        p.error(f"{LIBCOAP_SERVER} is not installed (Debian: libcoap3-bin)")
    if args.window < args.sockets:
        p.error("--window must be at least --sockets")

    print(_machine())
    print(
        f"load: {args.sockets} UDP sockets, window {args.window} CON requests, {args.devices} "
        f"devices, warm-up {args.warmup:g} s, timeout {args.timeout:g} s, no retransmission"
        + (f", fogrt --rcvbuf {args.rcvbuf}" if args.rcvbuf else "")
        + f", fogrt --engine {args.engine}"
        + (f" --engines {args.engines}" if args.engines > 1 else "")
        + (
            f", devices honour Max-Age (fogrt --retry-after {args.retry_after})"
            if args.honor_max_age
            else ""
        ),
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="fogrt-bench-ingest-") as tmp_name:
        tmp = Path(tmp_name)
        if args.soak:
            soak(args, tmp)
            return
        results = []
        for rnd in range(args.repeat):
            for name in targets:
                r = run_target(name, args, tmp, args.duration)
                results.append(r)
                print(
                    f"  round {rnd + 1} {name:<8} {r['rate']:>10,.0f} req/s over "
                    f"{r['seconds']:.1f} s, p50 {_ms(r['p50_ms'])} ms, p99 {_ms(r['p99_ms'])} "
                    f"ms, timeouts {r['timeouts']}, codes {_codes(r['codes'])} "
                    f"(encode {r['encode_s']:.1f} s, {r['datagram_bytes']} B/datagram)",
                    flush=True,
                )
    _report(results, args)


if __name__ == "__main__":
    main()
