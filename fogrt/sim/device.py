"""A virtual node: the real edge agent (``edge_agent/fogagent``) on a simulated board.

:class:`VirtualDevice` runs ``fogagent.run.main`` — the loop ``main.py`` runs on an ESP32 —
with :class:`SimHal` as its hardware. One call of :meth:`VirtualDevice.wake` is one boot
of the board: MicroPython starts, ``run.main`` loads ``config.json`` from the device's
flash directory, builds an ``Agent`` from RTC memory, samples, maybe transmits, and calls
``hal.sleep(ms)``, which on a board deep-sleeps and never returns; here it raises
:class:`DeepSleep` back to the caller with the simulated clock moved to the next wake.
Nothing of the agent is re-implemented: RTC memory, the flash outbox, the boot epoch,
CoAP retransmissions and back-off all run as they would on the board.

Time: ``ticks_ms`` and ``now_ms`` are one simulated clock (ms since the simulation
started). It moves only when the board spends time, by the durations of the energy model
(:class:`fogrt.sim.energy.Board`): boot, sensor reading, Wi-Fi connect, airtime and round
trip, sleep. A CoAP wait that times out on the real socket moves it by the timeout. So a
healthy run is deterministic, and the energy meter and the clock always agree.

Network: datagrams go over a real UDP socket to a real fog node. :class:`SimSocket` also
reads them as they pass (without changing them) to keep the simulator's books: the sample
time of every reading sent (``now - age`` of its uplink), which uplinks were acknowledged,
and the control the device applies after each 2.04 (the same delta the agent applies).

The agent is MicroPython-style code without type annotations that is not an installed
package (boards get its files, not a wheel): it is put on ``sys.path`` and imported with
``importlib``, so mypy treats its modules as ``Any`` instead of following into them.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import socket
import sys
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from fogrt.errors import FogError, InputError
from fogrt.ingest.wire import (
    Control,
    UplinkDecoder,
    WireError,
    apply_delta,
    decode_control,
    decode_registration,
)
from fogrt.sim.energy import Board, EnergyMeter
from fogrt.types import Schema, Value

__all__ = ["DeepSleep", "SimHal", "Trace", "VirtualDevice", "agent_config", "load_agent"]

RTC_SIZE = 2048
_CON, _NON = 0, 1
_POST = 0x02
_ETIMEDOUT = 110
_V0 = Control()

# Li-ion open-circuit voltage, linear between empty and full: the estimate the fog's
# dashboard inverts (fogrt/metrics.py), so the percentage it shows is the meter's.
_EMPTY_MV, _FULL_MV = 3300, 4200


class DeepSleep(BaseException):
    """``hal.sleep(ms)``: the wake is over. A BaseException so that nothing in the agent
    (whose loop catches ``Exception`` around a wake) can swallow it."""

    def __init__(self, ms: int) -> None:
        super().__init__(ms)
        self.ms = ms


class AgentError(FogError):
    """The agent would not start (its configuration) or the simulated board misbehaved."""


def load_agent(agent_dir: Path | None = None) -> ModuleType:
    """``fogagent.run`` of ``agent_dir`` (default: this checkout's ``edge_agent``)."""
    from fogrt.edge.flash import check_agent_dir, default_agent_dir

    root = check_agent_dir(agent_dir or default_agent_dir())
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("fogagent.run")


def agent_config(
    device: str,
    host: str,
    port: int,
    source: str,
    fields: list[str],
    sensors: list[str],
    flash: Path,
    capacity_mah: float,
) -> dict[str, Any]:
    """The ``config.json`` of a simulated board, validated by the agent's own validator.

    Every default is the agent's (deep sleep, CoAP timing, registration, outbox bounds);
    only what a board is flashed with differs: id, fog address, fields, where flash is.
    """
    config = importlib.import_module("fogagent.config")
    doc: dict[str, Any] = {
        "device": device,
        "fog": {"host": host, "port": port, "source": source},
        "wifi": {"ssid": "fogrt-sim"},
        # The sensor type only matters to the ESP32 HAL; SimHal reads the signal instead.
        "sensors": [{"field": f, "type": "mcu_temp"} for f in sensors],
        "fields": fields,
        "battery": {"pin": 35, "capacity_mah": round(capacity_mah)},
        "store": {"dir": str(flash)},
        # The boot grace is a window for mpremote after a cold boot; a simulated board has
        # no USB (and the agent would print its notice). Its one-off ~0.1 mAh is left out.
        "power": {"boot_grace_ms": 0},
        # The clock is set at cold boot (NTP on a board; the simulated clock here), so each
        # uplink carries the time (``t``) and the fog places readings in simulated time.
        "ntp": "pool.ntp.org",
        # Warnings go to a file on the board; here they would be a file per device.
        "log": {"level": "error", "file": None},
    }
    cfg, errors = config.check(doc, f"{device}/config.json")
    if errors:
        raise InputError("the simulated board's configuration is invalid:\n" + "\n".join(errors))
    result: dict[str, Any] = cfg
    return result


@dataclass
class Trace:
    """What one device did, for the report: samples, uplinks, acknowledgements, energy."""

    device: str
    nfields: int
    sample_ms: array[int] = field(default_factory=lambda: array("q"))
    values: list[array[float]] = field(default_factory=list)  # per field; NaN = missing
    sample_control: array[int] = field(default_factory=lambda: array("H"))
    controls: list[Control] = field(default_factory=lambda: [_V0])
    taken: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    """(boot, seq) of each uplink sent -> the sample time (ms) of each of its readings."""
    acked: set[tuple[int, int]] = field(default_factory=set)
    datagrams: int = 0
    registrations: int = 0
    refused: list[str] = field(default_factory=list)
    """Why fogrt's decoder refused uplinks the agent sent (should stay empty)."""
    battery_ms: array[int] = field(default_factory=lambda: array("q"))
    battery_mah: array[float] = field(default_factory=lambda: array("d"))

    def __post_init__(self) -> None:
        if not self.values:
            self.values = [array("d") for _ in range(self.nfields)]

    def add_sample(self, t_ms: int, values: list[Value], control: int) -> None:
        self.sample_ms.append(t_ms)
        for j, v in enumerate(values):
            self.values[j].append(
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
            )
        self.sample_control.append(control)


OnAck = Callable[["SimHal", list[tuple[int, list[Value]]], Control], None]
"""Called on the device's thread when an uplink is acknowledged: (the device's HAL,
[(sample time ms, values)] of its readings, the control the device applied when it sent
them)."""


class SimHal:
    """The HAL contract of ``fogagent.hal.Hal`` for a board that exists only in time.

    Same methods as ``fogagent.fakehal.FakeHal`` (the agent's own host stand-in), but with
    the time semantics described in the module docstring and an energy meter; RTC memory
    and randomness behave exactly as in FakeHal (xorshift32, 2048 bytes).
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        read: Callable[[float], list[Value]],
        board: Board,
        trace: Trace,
        schema: Schema,
        *,
        start_ms: int = 0,
        seed: int = 1,
        epoch0: float = 1_700_000_000.0,
        on_ack: OnAck | None = None,
    ) -> None:
        self.cfg = cfg
        self.read = read
        self.board = board
        self.meter = EnergyMeter(board)
        self.trace = trace
        self.schema = schema
        self.clock = start_ms
        self.rtc = b""
        self.seed = seed or 1
        self.epoch0 = epoch0
        self.synced = False
        self.pm = "none"
        self.on_ack = on_ack
        self.control = _V0  # what the agent applies, mirrored from the control deltas
        self._control_index: dict[Control, int] = {_V0: 0}

    def spend(self, seconds: float) -> None:
        """The board spends ``seconds`` awake (the clock moves by at least 1 ms)."""
        self.clock += max(1, round(seconds * 1000))

    # -- time -------------------------------------------------------------------------

    def ticks_ms(self) -> int:
        return self.clock

    def ticks_add(self, t: int, delta: int) -> int:
        return t + delta

    def ticks_diff(self, a: int, b: int) -> int:
        return a - b

    def now_ms(self) -> int:
        return self.clock

    def epoch(self) -> int | None:
        return int(self.epoch0 + self.clock / 1000) if self.synced else None

    def epoch_ms(self) -> int | None:
        return round(self.epoch0 * 1000) + self.clock if self.synced else None

    def sync_clock(self, host: str) -> bool:
        self.synced = True
        return True

    def rand(self, bits: int) -> int:
        x = self.seed  # xorshift32, as FakeHal: the same under CPython and MicroPython
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.seed = x
        return x >> (32 - bits)

    # -- memory -------------------------------------------------------------------------

    def rtc_read(self) -> bytes:
        return self.rtc

    def rtc_write(self, blob: bytes) -> None:
        if len(blob) > RTC_SIZE:
            raise ValueError("RTC memory holds 2048 bytes")
        self.rtc = bytes(blob)

    # -- sensors and battery ------------------------------------------------------------

    def sample(self, values: list[Value]) -> None:
        got = self.read(self.clock / 1000)
        for j in range(len(values)):
            values[j] = got[j] if j < len(got) else None
        index = self._control_index.get(self.control)
        if index is None:
            index = self._control_index[self.control] = len(self.trace.controls)
            self.trace.controls.append(self.control)
        self.trace.add_sample(self.clock, list(values), index)
        self.meter.sample()
        self.spend(self.board.sample_s)

    def battery_mv(self) -> int:
        full = self.board.capacity_mah * self.board.usable_fraction
        left = max(0.0, 1.0 - self.meter.charge_mah / full) if full > 0 else 0.0
        return round(_EMPTY_MV + (_FULL_MV - _EMPTY_MV) * left)

    # -- network ------------------------------------------------------------------------

    def wifi_connect(self, timeout_ms: int, cache: Any) -> tuple[bool, Any]:
        self.meter.connect()
        self.spend(self.board.connect_s())
        return True, cache or [b"\x02\x00\x00\x00\x00\x01", 6]

    def wifi_power(self, mode: str) -> None:
        self.pm = mode

    def wifi_off(self) -> None:
        pass

    def udp_socket(self, host: str, port: int) -> tuple[SimSocket, Any]:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        return SimSocket(self, socket.socket(family, kind, proto)), addr

    # -- power --------------------------------------------------------------------------

    def sleep(self, ms: int) -> None:
        self.meter.sleep(ms / 1000)
        self.clock += int(ms)
        self.trace.battery_ms.append(self.clock)
        self.trace.battery_mah.append(self.meter.charge_mah)
        raise DeepSleep(int(ms))

    def sleep_ms(self, ms: int) -> None:
        self.meter.awake(ms / 1000)
        self.clock += int(ms)

    def wdt_start(self, ms: int) -> None:
        pass

    def wdt_feed(self) -> None:
        pass

    def safe_mode(self) -> bool:
        return False

    # -- the books (SimSocket calls these) ----------------------------------------------

    def control_applied(self, payload: bytes) -> None:
        """Mirror the agent: a 2.04's control delta becomes the applied control."""
        try:
            delta = decode_control(payload)
        except WireError:
            return  # the agent refuses it whole too (control_refused)
        if delta:
            self.control = apply_delta(self.control, delta)


class SimSocket:
    """A real UDP socket that keeps the device's books as datagrams pass (see module doc)."""

    def __init__(self, hal: SimHal, sock: socket.socket) -> None:
        self.hal = hal
        self.sock = sock
        self.timeout = 1.0
        self._coap = importlib.import_module("fogagent.coap")
        self._decoder = UplinkDecoder(hal.schema)
        # The exchange the agent waits for: (token, what) of its latest request. The agent
        # runs one exchange at a time and ignores answers to earlier ones; so do the books.
        self._pending: tuple[bytes, tuple[int, int] | None] | None = None
        self._sent_control = hal.control

    def sendto(self, data: bytes, addr: Any) -> int:
        hal = self.hal
        msg = self._coap.parse(data)
        payload = b""
        if msg is not None:
            mtype, code, _, token, _, payload = msg
            if code == _POST and mtype in (_CON, _NON):
                self._request(token, payload)
        hal.trace.datagrams += 1
        hal.meter.tx(len(payload))
        hal.spend(hal.board.airtime_s(len(payload)))
        sent: int = self.sock.sendto(data, addr)
        return sent

    def _request(self, token: bytes, payload: bytes) -> None:
        hal = self.hal
        if self._pending is not None and self._pending[0] == token:
            return  # a retransmission: same exchange
        try:
            up = self._decoder.decode(payload)
        except WireError as exc:
            self._pending = (token, None)
            try:
                decode_registration(payload)
            except WireError:
                # fogrt's reference decoder refuses what the agent sent: the fog will too
                # (4.00). Kept for the report: it means the agent and the topology disagree.
                hal.trace.refused.append(exc.diagnostic)
                return
            hal.trace.registrations += 1  # POST /reg
            return
        key = (up.boot, up.seq)
        # ages count from the uplink's clock (``t``, whole seconds) when it has one
        ref = hal.clock if up.clock is None else round(up.clock * 1000) - round(hal.epoch0 * 1000)
        hal.trace.taken[key] = [ref - round(age * 1000) for age, _ in up.readings]
        self._pending = (token, key)
        self._sent_control = hal.control

    def settimeout(self, seconds: float) -> None:
        self.timeout = seconds
        self.sock.settimeout(max(seconds, 0.001))

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        hal = self.hal
        try:
            data, addr = self.sock.recvfrom(size)
        except OSError:  # the timeout: the simulated clock waited it too
            # EnergyMeter has no "listening" phase: a wait that times out is charged as CPU
            # time (it happens only when the fog node does not answer).
            hal.meter.awake(self.timeout)
            hal.clock += max(1, round(self.timeout * 1000))
            raise OSError(_ETIMEDOUT) from None
        msg = self._coap.parse(data)
        payload = b"" if msg is None else msg[5]
        hal.meter.rx(len(payload), hal.pm)
        wait = hal.board.rtt_s + hal.board.ps_wait_s.get(hal.pm, 0.0)
        hal.spend(wait + hal.board.airtime_s(len(payload)))
        if msg is not None and self._pending is not None and msg[3] == self._pending[0]:
            self._response(msg[1], payload)
        return data, addr

    def _response(self, code: int, payload: bytes) -> None:
        assert self._pending is not None
        hal = self.hal
        _, key = self._pending
        if code >> 5 != 2:
            if code >= 0x40:  # an error response ends the exchange (code 0: an empty ACK,
                self._pending = None  # the separate response is still to come)
            return
        self._pending = None
        sent_under = self._sent_control
        hal.control_applied(payload)
        if key is None or key in hal.trace.acked:
            return
        hal.trace.acked.add(key)
        if hal.on_ack is not None:
            times = hal.trace.taken[key]
            up_values = self._readings(times)
            hal.on_ack(hal, up_values, sent_under)

    def _readings(self, times: list[int]) -> list[tuple[int, list[Value]]]:
        """The readings of an uplink, from the trace (the samples at those times)."""
        tr = self.hal.trace
        out: list[tuple[int, list[Value]]] = []
        n = len(tr.sample_ms)
        for t in times:
            i = n - 1
            while i >= 0 and tr.sample_ms[i] > t:  # the newest samples are the ones sent
                i -= 1
            if i >= 0 and tr.sample_ms[i] == t:
                vals: list[Value] = [None if math.isnan(col[i]) else col[i] for col in tr.values]
                out.append((t, vals))
        return out

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class VirtualDevice:
    """One simulated board: its flash directory, its HAL, and the agent's main loop."""

    def __init__(
        self,
        index: int,
        cfg: dict[str, Any],
        flash: Path,
        read: Callable[[float], list[Value]],
        board: Board,
        schema: Schema,
        *,
        start_ms: int = 0,
        epoch0: float = 1_700_000_000.0,
        on_ack: OnAck | None = None,
    ) -> None:
        self.index = index
        self.id: str = cfg["device"]
        self.flash = flash
        flash.mkdir(parents=True, exist_ok=True)
        self.config_path = flash / "config.json"
        self.config_path.write_text(json.dumps(cfg, indent=1))
        self.trace = Trace(self.id, len(cfg["fields"]))
        self.hal = SimHal(
            cfg,
            read,
            board,
            self.trace,
            schema,
            start_ms=start_ms,
            # Seeded by the id, not the index: device 0 of two policies must not share
            # CoAP message ids and tokens (a fog node answers a (port, message id) it saw
            # in the last minute from its cache, and a token that matches would make the
            # agent take another device's 2.04 for its own). Boards use a hardware RNG.
            seed=zlib.crc32(cfg["device"].encode()) or 1,
            epoch0=epoch0,
            on_ack=on_ack,
        )
        self.next_ms = start_ms
        self.wakes = 0
        self._run = importlib.import_module("fogagent.run")

    @property
    def meter(self) -> EnergyMeter:
        return self.hal.meter

    def wake(self) -> int:
        """One boot of the board, until it deep-sleeps; returns the next wake time (ms)."""
        hal = self.hal
        hal.clock = max(hal.clock, self.next_ms)
        hal.meter.wake()
        hal.spend(hal.board.boot_s)
        self.wakes += 1
        try:
            self._run.main(str(self.config_path), lambda cfg: hal)
        except DeepSleep:
            self.next_ms = hal.clock
            return self.next_ms
        # main() returns only when the agent refuses to start (its config, the safe pin).
        raise AgentError(f"{self.id}: the agent did not start (see its output above)")
