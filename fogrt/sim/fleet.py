"""``fogrt simulate``: N virtual nodes running the real edge agent against a real fog node.

Each virtual node is a :class:`~fogrt.sim.device.VirtualDevice`: the agent's own main loop
on a simulated board (clock, sensors from a :class:`~fogrt.sim.sensors.Signal`, energy
meter), sending real CoAP over UDP. :func:`simulate` starts a :class:`~fogrt.node.FogNode`
in this process on 127.0.0.1 (or talks to a running one, ``fog=(host, port)``) and runs
the fleet once per policy on the same data, then scores each run (:mod:`fogrt.sim.score`;
:mod:`fogrt.sim.report` shows it). :func:`simulate_alongside` runs a fleet next to a node
that ``fogrt run`` serves, until cancelled (a live demo).

The other modules of the simulator: :mod:`~fogrt.sim.sensors` (synthetic data, datasets),
:mod:`~fogrt.sim.device` (the simulated board), :mod:`~fogrt.sim.policies` (``--policy``),
:mod:`~fogrt.sim.target` (the fog node and its view), :mod:`~fogrt.sim.energy` (the energy
model), :mod:`~fogrt.sim.cli` (the command line).

Scheduling: wakes are dispatched in simulated-time order from a heap to a small pool of
threads (a wake blocks on its socket while the fog node, on this event loop, answers).
``speed=None`` runs as fast as the fog answers, keeping every device within
:data:`LOOKAHEAD_S` of simulated time of the slowest one (so the fog sees the fleet move
together, as a real one would); ``speed=k`` paces simulated time at ``k`` x wall time.
Devices interact only through the fog, and a device's control changes only between its
wakes, so with one uplink per wake the result of a run does not depend on the thread
schedule (the tests check exact sample counts).

The fog node stamps a reading with its arrival time minus the age the agent sends (the
agent sends no clock): faster than real time (``speed`` > 1), the node's event times are
compressed accordingly. The simulator's own scores use the exact simulated sample times.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from fogrt.errors import FogError, InputError
from fogrt.ingest.wire import Control
from fogrt.sim.device import SimHal, VirtualDevice, agent_config, load_agent
from fogrt.sim.energy import Board
from fogrt.sim.policies import Driver, PolicySpec, make_driver
from fogrt.sim.score import PolicyResult, evaluate
from fogrt.sim.sensors import DAY, Signal, numeric_fields
from fogrt.sim.target import (
    SYNTHETIC_EPOCH,
    Target,
    acked_view,
    fog_view,
    ping,
    select_source,
)
from fogrt.topology.compile import CompiledTopology
from fogrt.types import Value

__all__ = [
    "LOOKAHEAD_S",
    "Options",
    "check_alongside",
    "run_policy",
    "simulate",
    "simulate_alongside",
]

log = structlog.get_logger("fogrt.sim")

LOOKAHEAD_S = 300.0
"""At ``speed=None``, how far (simulated seconds) a device may run ahead of the slowest."""
STAGGER_S = 60.0
"""First wakes are spread evenly over this much simulated time (boards are not powered on
in the same millisecond; a fleet waking in step would also be an unrealistic load)."""
MAX_WORKERS = 4
"""Threads running wakes: enough to overlap round trips to the fog; more only contend for
the GIL with the fog node's event loop (measured: 4 is the fastest of 1, 2, 4, 8)."""


@dataclass
class Options:
    """How to run a simulation (everything ``fogrt simulate`` takes besides the topology)."""

    devices: int = 10
    duration: float | None = None
    """Simulated seconds; None: the dataset's span, or one day of synthetic data."""
    speed: float | None = None
    """Simulated seconds per wall second; None: as fast as possible."""
    policies: Sequence[PolicySpec] = ()
    board: Board = field(default_factory=Board)
    id_prefix: str = "sim"
    workers: int = MAX_WORKERS


def _device_ids(prefix: str, label: str, n: int) -> list[str]:
    ids = [f"{prefix}-{label}-{i:03d}" for i in range(n)]
    if len(ids[-1]) > 64:
        raise InputError(f"--id-prefix {prefix!r}: device ids would exceed 64 characters")
    return ids


def _labels(specs: Sequence[PolicySpec]) -> list[str]:
    """Device-id-safe names, unique per run (``send_on_delta``, ``send_on_delta.2``)."""
    seen: dict[str, int] = {}
    out = []
    for s in specs:
        seen[s.name] = seen.get(s.name, 0) + 1
        out.append(s.name if seen[s.name] == 1 else f"{s.name}.{seen[s.name]}")
    return out


class _Fleet:
    """The devices of one run, their policy driver, and the wake scheduler."""

    def __init__(
        self,
        target: Target,
        signal: Signal,
        driver: Driver,
        ids: list[str],
        options: Options,
    ) -> None:
        load_agent()
        self.target = target
        self.signal = signal
        self.driver = driver
        self.options = options
        self.loop = asyncio.get_running_loop()
        numeric = numeric_fields(target.schema)
        self.fields = list(target.schema)
        self.watched = self.fields.index(numeric[0]) if numeric else 0
        self.devices: list[VirtualDevice] = []
        n = len(ids)
        for i, device_id in enumerate(ids):
            flash = target.flash / device_id
            cfg = agent_config(
                device_id,
                target.host,
                target.port,
                target.source,
                self.fields,
                numeric or self.fields[:1],
                flash,
                options.board.capacity_mah,
            )
            self.devices.append(
                VirtualDevice(
                    i,
                    cfg,
                    flash,
                    _reader(signal, i),
                    options.board,
                    target.schema,
                    start_ms=round(i * STAGGER_S * 1000 / n),
                    epoch0=target.epoch0,
                    on_ack=self._acked,
                )
            )

    def set_initial_controls(self) -> None:
        node = self.target.node
        if node is None:
            return
        loop = getattr(node, "control_loop", None)
        for d in self.devices:
            control = self.driver.initial(d.id)
            if control is not None:  # the simulator's policy, not the node's, decides
                if loop is not None:
                    loop.external.add(d.id)
                node.controls.set(d.id, control)

    # -- policy feedback: device thread -> event loop -----------------------------------

    def _acked(
        self, hal: SimHal, readings: list[tuple[int, list[Value]]], applied: Control
    ) -> None:
        """On the device's thread: hand the acknowledged readings to the policy, on the loop
        (policies and the node's control records are only touched there).

        It is queued before the wake's completion (run_in_executor reports it through the
        same call_soon_threadsafe queue, later), so the new control is set before the
        device's next wake whatever the thread schedule: deterministic for one uplink per
        wake. A second uplink in the same wake may get it one ACK later, as with a node
        whose control loop runs beside ingest.
        """
        if self.target.node is None:
            return
        e0 = self.target.epoch0
        rows = [(e0 + t / 1000, v[self.watched]) for t, v in readings]
        full = hal.board.capacity_mah * hal.board.usable_fraction
        battery = max(0.0, 1.0 - hal.meter.charge_mah / full) if full > 0 else None
        arrival = e0 + hal.clock / 1000
        self.loop.call_soon_threadsafe(
            self._observe, hal.trace.device, rows, applied, battery, arrival
        )

    def _observe(
        self,
        device: str,
        rows: list[tuple[float, Value]],
        applied: Control,
        battery: float | None,
        arrival: float,
    ) -> None:
        try:
            control = self.driver.observe(device, rows, applied, battery, arrival)
        except Exception as exc:  # a policy bug must not stop the fleet: log, keep control
            log.error("policy_failed", device=device, error=f"{type(exc).__name__}: {exc}")
            return
        if control is not None:
            self.target.node.controls.set(device, control)

    # -- scheduling ---------------------------------------------------------------------

    async def run(
        self,
        until_s: float | None,
        speed: float | None,
        progress: Callable[[float], None] | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        """Wake devices in simulated-time order until every one is past ``until_s``."""
        loop = self.loop
        until_ms = None if until_s is None else round(until_s * 1000)
        heap = [(d.next_ms, d.index) for d in self.devices]
        heapq.heapify(heap)
        inflight: dict[asyncio.Future[int], int] = {}
        started: dict[int, int] = {}
        workers = max(1, min(self.options.workers, len(self.devices)))
        wall0 = loop.time()
        pool = ThreadPoolExecutor(workers, thread_name_prefix="fogrt-sim")
        try:
            while heap or inflight:
                if stop is not None and stop.is_set():
                    break
                pending = list(started.values())
                if heap:
                    pending.append(heap[0][0])
                floor = min(pending)  # the loop runs while something is pending
                if speed is None:
                    limit = floor + LOOKAHEAD_S * 1000
                else:
                    limit = (loop.time() - wall0) * speed * 1000
                while heap and len(inflight) < workers:
                    t, i = heap[0]
                    if until_ms is not None and t >= until_ms:
                        heapq.heappop(heap)  # this device is done
                        continue
                    if t > limit:
                        break
                    heapq.heappop(heap)
                    fut = loop.run_in_executor(pool, self.devices[i].wake)
                    inflight[fut] = i
                    started[i] = t
                if progress is not None:
                    progress(floor / 1000)
                timeout: float | None = None
                if speed is not None and heap and len(inflight) < workers:
                    timeout = max(0.001, heap[0][0] / 1000 / speed - (loop.time() - wall0))
                if not inflight:
                    if not heap:
                        break
                    await _sleep(timeout or 0.001, stop)
                    continue
                done, _ = await asyncio.wait(
                    inflight, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for fut in done:
                    i = inflight.pop(fut)
                    del started[i]
                    heapq.heappush(heap, (fut.result(), i))
        finally:
            if inflight:  # a wake ends within the agent's max_awake_ms: let it finish
                await asyncio.wait(inflight)
            pool.shutdown(wait=True)
        if progress is not None and until_s is not None:
            progress(until_s)


def _reader(signal: Signal, device: int) -> Callable[[float], list[Value]]:
    return lambda t: signal.values(device, t)


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run_policy(
    target: Target,
    signal: Signal,
    spec: PolicySpec,
    label: str,
    options: Options,
    progress: Callable[[float], None] | None = None,
) -> PolicyResult:
    """One run of the fleet under one policy; the scored result."""
    numeric = numeric_fields(target.schema)
    driver = make_driver(spec, watched=numeric[0] if numeric else "", remote=target.remote)
    duration = _duration(options, signal)
    fleet = _Fleet(
        target, signal, driver, _device_ids(options.id_prefix, label, options.devices), options
    )
    fleet.set_initial_controls()
    start = target.node.ingest_log.end_offset if target.node is not None else 0
    wall = time.perf_counter()
    await fleet.run(duration, options.speed, progress)
    wall = time.perf_counter() - wall
    if target.node is not None:
        view = fog_view(target.node, start, target.source, target.schema, fleet.devices)
    else:
        view = acked_view(fleet.devices)
    result = evaluate(
        spec,
        driver.description,
        fleet.devices,
        view,
        signal,
        target.schema,
        options.board,
        duration,
        wall,
    )
    if not target.remote or any(d.trace.acked for d in fleet.devices):
        return result
    raise FogError(
        f"no uplink was acknowledged by {target.host}:{target.port}: is a fog node "
        f"(`fogrt run TOPOLOGY`) serving source {target.source!r} there?"
    )


def _duration(options: Options, signal: Signal) -> float:
    if options.duration is not None:
        return options.duration
    return signal.duration if signal.duration else DAY


async def simulate(
    topology: CompiledTopology,
    signal: Signal,
    options: Options,
    *,
    source: str | None = None,
    fog: tuple[str, int] | None = None,
    state: Path | None = None,
    output: Path | None = None,
    epoch0: float = SYNTHETIC_EPOCH,
    progress: Callable[[str, float, float], None] | None = None,
) -> list[PolicyResult]:
    """Run the fleet once per policy; see the module docstring.

    ``fog=None``: a FogNode on 127.0.0.1:<free port> serving ``topology``, its state in
    ``state`` (default: a temporary directory) and its file sinks writing under ``output``
    (default: the state directory); the devices' flash lives in ``state`` too, so their
    boot epochs keep increasing across runs that share it. ``progress(label, done_s,
    total_s)`` reports simulated time.
    """
    source_id, schema = select_source(topology, source)
    specs = list(options.policies) or [PolicySpec("fog")]
    numeric = numeric_fields(schema)
    for spec in specs:  # invalid input is refused before anything starts
        make_driver(spec, watched=numeric[0] if numeric else "", remote=fog is not None)
    duration = _duration(options, signal)
    tmp = Path(tempfile.mkdtemp(prefix="fogrt-sim-"))
    try:
        node = None
        if fog is None:
            from fogrt.node import FogNode, NodeConfig

            state_dir = state or tmp / "state"
            node = FogNode(
                topology,
                NodeConfig(
                    coap_host="127.0.0.1",
                    coap_port=0,
                    state_dir=state_dir,
                    output_dir=output or state_dir,
                    # A simulation scores no power cut: skip fsync, and do not hold each ACK
                    # for a group-commit window (2 ms each would dominate the run time).
                    fsync=False,
                    fsync_interval=0.0,
                ),
            )
            await node.start()
            host, port = "127.0.0.1", int(node.address[1])
        else:
            host, port = fog
            await asyncio.to_thread(ping, host, port)
        flash = (state / "simulated-devices") if state is not None else tmp / "flash"
        target = Target(host, port, source_id, schema, flash, node, epoch0)
        results = []
        try:
            for spec, label in zip(specs, _labels(specs), strict=True):

                def report(done: float, label: str = spec.label) -> None:
                    if progress is not None:
                        progress(label, min(done, duration), duration)

                results.append(await run_policy(target, signal, spec, label, options, report))
        finally:
            if node is not None:
                await node.stop()
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_alongside(
    topology: CompiledTopology, policy: str = "fog", source: str | None = None
) -> None:
    """Raise InputError now if :func:`simulate_alongside` could not run with these
    arguments (call it before starting the node: ``fogrt run --simulate`` exits 2 at once)."""
    from fogrt.sim.policies import parse_policy
    from fogrt.sim.sensors import SyntheticSignal

    _, schema = select_source(topology, source)
    SyntheticSignal(schema, 1)
    numeric = numeric_fields(schema)
    make_driver(parse_policy(policy), watched=numeric[0], remote=False)


async def simulate_alongside(
    node: Any,
    devices: int,
    *,
    speed: float | None = 1.0,
    signal: Signal | None = None,
    policy: str = "fog",
    source: str | None = None,
    id_prefix: str = "sim",
    seed: int = 1,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
) -> PolicyResult:
    """Run ``devices`` simulated boards against ``node`` (a started FogNode) until
    cancelled, ``stop`` is set, or ``duration`` simulated seconds have passed.

    For ``fogrt run FILE --simulate N``: synthetic data by default, paced at ``speed`` x
    real time (1.0: readings arrive when a real fleet's would), policy ``fog`` (the
    node's own control). The boards' flash lives in ``<state_dir>/simulated-devices``, so
    their boot epochs carry on across restarts of the node (which remembers them).
    Returns the scored run (when it ends by ``stop`` or ``duration``).
    """
    from fogrt.sim.policies import parse_policy
    from fogrt.sim.sensors import SyntheticSignal

    source_id, schema = select_source(node.topology, source)
    if signal is None:
        signal = SyntheticSignal(schema, devices, duration=duration, seed=seed)
    host, port = node.address[0], int(node.address[1])
    if host in ("::", "0.0.0.0", ""):
        host = "127.0.0.1"  # the node binds the wildcard dual-stack: loopback reaches it
    options = Options(devices=devices, speed=speed, id_prefix=id_prefix)
    target = Target(
        host, port, source_id, schema, Path(node.config.state_dir) / "simulated-devices", node
    )
    spec = parse_policy(policy)
    numeric = numeric_fields(schema)
    driver = make_driver(spec, watched=numeric[0] if numeric else "", remote=False)
    ids = _device_ids(id_prefix, spec.name, devices)
    fleet = _Fleet(target, signal, driver, ids, options)
    fleet.set_initial_controls()
    start = node.ingest_log.end_offset
    log.info(
        "simulation_started", devices=devices, speed=speed, policy=spec.label, source=source_id
    )
    wall = time.perf_counter()
    try:
        await fleet.run(duration, speed, stop=stop)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the node keeps serving: say why its simulated fleet stopped
        log.error("simulation_failed", error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        log.info("simulation_stopped", wakes=sum(d.wakes for d in fleet.devices))
    simulated = max((d.next_ms for d in fleet.devices), default=0) / 1000
    view = fog_view(node, start, source_id, schema, fleet.devices)
    return evaluate(
        spec,
        driver.description,
        fleet.devices,
        view,
        signal,
        schema,
        options.board,
        duration or simulated,
        time.perf_counter() - wall,
    )
