"""Run a policy against a recorded signal: the device side and the fog side, as the protocol
would, deterministic and without I/O (the energy benchmark and the tests use it).

The device mirrors one wake of ``edge_agent/fogagent/agent.py``: wake, read the sensor (the
recorded signal, linearly interpolated at the wake time), decide with
:mod:`operators.policy.protocol` (policy, burst, heartbeat), batch, and when the batch is
due connect, send one uplink, and apply the control of the ACK; then sleep until the next
sample period. The fog answers each uplink with the control it holds *before* processing
that uplink (the ingest log acknowledges before the engine runs), then feeds the uplink's
readings to the policy: a new control reaches the device one uplink later. Nothing is lost
or retried: the replay measures policies, not the network.

The fog's reconstruction is every sample time it knows a value for: received readings and
the imputed samples the policy returned (plus, at the end, what :meth:`Policy.peek` can say
about samples after the last uplink).

An optional ``meter`` (``fogrt.sim.energy.EnergyMeter`` or anything with the same methods)
is told every wake, sample, connect, transmission, reception and sleep.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from fogrt.ingest.wire import Control, encode_control_delta, encode_uplink
from operators.policy.base import Policy, Reading
from operators.policy.protocol import heartbeat_due, in_burst, remember, should_transmit

__all__ = ["Meter", "ReplayResult", "replay"]


class Meter(Protocol):
    """What the replay tells an energy meter (``fogrt.sim.energy.EnergyMeter`` fits)."""

    cycle_awake_s: float

    @property
    def charge_mah(self) -> float: ...
    def wake(self) -> None: ...
    def sample(self) -> None: ...
    def connect(self) -> None: ...
    def tx(self, nbytes: int) -> None: ...
    def rx(self, nbytes: int, power_mode: str = "none") -> None: ...
    def sleep(self, seconds: float) -> None: ...


@dataclass
class ReplayResult:
    """What happened, on both sides."""

    start: float
    end: float
    wakes: int = 0
    uplinks: int = 0
    readings_sent: int = 0
    heartbeats: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    control_changes: int = 0
    recon_times: list[float] = field(default_factory=list)
    """Sample times the fog knows a value for, ascending."""
    recon_values: list[float] = field(default_factory=list)
    recon_imputed: list[bool] = field(default_factory=list)
    """Whether each value was imputed (not received)."""
    periods: list[tuple[float, float]] = field(default_factory=list)
    """``(time, sample period)`` each time the device applied a new period."""
    charge: list[tuple[float, float]] = field(default_factory=list)
    """``(time, mAh used)`` after each uplink (with a meter)."""

    @property
    def duration(self) -> float:
        return self.end - self.start


def _signal(times: Sequence[float], values: Sequence[float]) -> _Interp:
    return _Interp(list(times), list(values))


class _Interp:
    """Linear interpolation of a recorded signal at increasing query times."""

    def __init__(self, times: list[float], values: list[float]) -> None:
        if len(times) != len(values) or not times:
            raise ValueError("times and values must be non-empty and of the same length")
        self.t = times
        self.v = values

    def __call__(self, at: float) -> float:
        t, v = self.t, self.v
        j = bisect.bisect_right(t, at)
        if j <= 0:
            return v[0]
        if j >= len(t):
            return v[-1]
        t0, t1 = t[j - 1], t[j]
        w = (at - t0) / (t1 - t0) if t1 > t0 else 0.0
        return v[j - 1] + w * (v[j] - v[j - 1])


def replay(
    policy: Policy,
    times: Sequence[float],
    values: Sequence[float],
    *,
    meter: Meter | None = None,
    capacity_mah: float = 2000.0,
    initial_soc: float = 1.0,
    alerts: Sequence[float] = (),
    device: str = "node-01",
    field_name: str = "x",
) -> ReplayResult:
    """Replay ``policy`` on the signal ``values`` at ``times`` (ascending epoch seconds).

    ``alerts``: event times at which an operator upstream flags an anomaly (the fog calls
    :meth:`Policy.alert` once its clock passes them). The battery's state of charge sent
    with each uplink is ``initial_soc - used / capacity_mah`` when a meter is given.
    """
    signal = _signal(times, values)
    start, end = float(times[0]), float(times[-1])
    result = ReplayResult(start, end)
    control = policy.initial()  # delivered at registration
    fog_control = control
    version = 1  # of fog_control, as a ControlStore would number it
    applied_version = 1  # of control, the one the device applies (sent in each uplink)
    seq = 0
    history: list[float] = []
    last_sent: float | None = None
    last_up: float | None = None
    batch: list[tuple[float, float, Control]] = []
    pending_alerts = sorted(alerts)
    result.periods.append((start, control.sample_period))
    now = start
    while now <= end:
        while pending_alerts and pending_alerts[0] <= now:
            alerted = policy.alert(pending_alerts.pop(0))
            if alerted is not None and alerted != fog_control:
                fog_control = alerted
                version += 1
        result.wakes += 1
        if meter is not None:
            meter.wake()
            meter.sample()
        value = signal(now)
        burst = in_burst(control, now)
        heartbeat = heartbeat_due(control, now, last_up)
        wanted = should_transmit(control, value, last_sent, history)
        send = wanted or burst or heartbeat
        remember(control, history, value, sent=send)
        if send:
            last_sent = value
            batch.append((now, value, control))
            result.readings_sent += 1
            result.heartbeats += int(heartbeat and not wanted and not burst)
        if batch and (len(batch) >= control.batch or burst or heartbeat):
            last_up = now
            soc = None
            if meter is not None:
                soc = max(0.0, min(1.0, initial_soc - meter.charge_mah / capacity_mah))
            up = len(
                encode_uplink(
                    device,
                    1,
                    seq,
                    [(now - t, {field_name: v}) for t, v, _ in batch],
                    control_version=applied_version,
                    battery_pct=None if soc is None else round(soc * 100),
                    positional_fields=[field_name],
                    float32=True,
                )
            )
            seq += 1
            down = (
                0
                if fog_control == control
                else len(encode_control_delta(fog_control, version, control))
            )
            result.uplinks += 1
            result.bytes_up += up
            result.bytes_down += down
            if meter is not None:
                meter.connect()
                meter.tx(up)
                meter.rx(down, control.power_mode)
            acked, acked_version = fog_control, version  # the ACK carries what the fog
            # holds now, and the engine processes the uplink after it:
            for t, v, applied in batch:
                decision = policy.observe(Reading(t, v, applied, battery=soc, arrival=now))
                for ti, vi in decision.imputed:
                    result.recon_times.append(ti)
                    result.recon_values.append(vi)
                    result.recon_imputed.append(True)
                result.recon_times.append(t)
                result.recon_values.append(v)
                result.recon_imputed.append(False)
                if decision.control != fog_control:
                    fog_control = decision.control
                    version += 1
            batch.clear()
            if acked != control:
                result.control_changes += 1
                if acked.sample_period != control.sample_period:
                    result.periods.append((now, acked.sample_period))
                control = acked
                applied_version = acked_version
            if meter is not None:
                result.charge.append((now, meter.charge_mah))
        if meter is not None:
            meter.sleep(control.sample_period - meter.cycle_awake_s)
        now += control.sample_period
    for ti, vi in policy.peek(end, control):
        result.recon_times.append(ti)
        result.recon_values.append(vi)
        result.recon_imputed.append(True)
    return result
