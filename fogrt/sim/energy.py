"""Energy model of a battery-powered ESP32 sensor node running the MicroPython edge agent.

The agent sleeps in deep sleep between wakes. A wake boots MicroPython, reads the sensor,
decides, and only when it transmits connects to Wi-Fi, sends one CoAP uplink and waits
for the 2.04 with its control. Charge is counted in milliamp-seconds (mAs = mC); a
:class:`Board` holds every figure, so a different board (another regulator, a faster boot,
DHCP instead of a static IP) is one ``Board(...)`` or ``board.replace(...)`` away.

Figures and where they come from (defaults of :class:`Board`):

================================  ==========================  ==================================
phase                             default                     source
================================  ==========================  ==================================
deep sleep (RTC timer + memory)   10 uA                       ESP32 Series Datasheet v3.5, §3.7
                                                              "RTC and Low-Power Management",
                                                              Table 6 "Power Consumption by
                                                              Power Modes"
light sleep                       0.8 mA                      same table
modem sleep (CPU on, RF off)      30 mA                       same table: 27-44 mA at 160 MHz,
                                                              20-31 mA at 80 MHz
Wi-Fi TX                          233 mA average              "Current Consumption Depending on
                                                              RF Modes" (802.11b 1 Mbps, average;
                                                              368 mA peak) of the current ESP32
                                                              datasheets; v3.5 §5.4 Table 15
                                                              "RF Power-Consumption
                                                              Specifications" gives 240 mA
Wi-Fi RX / listening              100 mA                      v3.5 §5.4 Table 15: 95-100 mA
boot from deep sleep to the       0.635 s, 66 mA (41.9 mC)    stock MicroPython, measured with a
agent running, and back                                       Nordic PPK2 (glenn20,
                                                              upy-esp32-experiments,
                                                              "OptimisingMicropythonBootTime")
wake + connect, static IP         0.734 s, 100.2 mC           same author, "ESPNowvsWifiEnergy-
wake + connect, DHCP              1.626 s, 204.3 mC           Usage" (fast-boot build, 70 ms /
                                                              3.32 mC of it is the boot): the
                                                              ~0.7 s vs ~1.6 s of issue 7
SHT3x single-shot measurement     15 ms at 0.6 mA (sensor)    Sensirion SHT3x-DIS datasheet §2:
                                  + the CPU at modem sleep    high repeatability 12.5 ms typ /
                                                              15 ms max; 600 uA measuring, 0.2 uA
                                                              idle
battery self-discharge            2 % of the charge a month   typical Li-ion cell after the
                                                              first days; set 0 for a primary
                                                              Li-SOCl2 cell
================================  ==========================  ==================================

So one wake that only samples costs ~42.4 mAs and one that also transmits ~141.5 mAs: with
per-reading wakes, sampling dominates the budget as soon as transmissions are rare, which
is why the adaptive policies lengthen the sample period and not only suppress uplinks.

>>> board = Board()
>>> round(board.wake_mas(), 1), round(board.uplink_mas(60, 20), 1)
(42.4, 99.1)
>>> meter = EnergyMeter(board)
>>> meter.wake(); meter.sample(); meter.sleep(30.0)
>>> round(meter.charge_mas, 2)
42.81
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "DAYS_PER_MONTH",
    "Board",
    "EnergyMeter",
    "SleepMode",
    "battery_life_days",
    "daily_charge_mah",
]

DAYS_PER_MONTH: Final = 30.44
"""Mean length of a month, days (self-discharge is quoted per month)."""

SleepMode = Literal["deep", "light"]


@dataclass(frozen=True, slots=True)
class Board:
    """Every figure of the energy model; currents in mA, times in s, charges in mAs (= mC).

    Override per board: ``Board(dhcp=True)``, ``Board().replace(boot_s=0.07, boot_mas=3.32)``
    (a fast-boot MicroPython build), or ``Board.from_mapping({...})`` from a config file.
    """

    name: str = "esp32-micropython-sht3x"
    """Free text, shown in reports."""
    deep_sleep_ma: float = 0.010
    """Deep sleep with RTC timer and RTC memory on (the agent keeps its state there)."""
    light_sleep_ma: float = 0.8
    """Light sleep (CPU paused, RAM kept)."""
    quiescent_ma: float = 0.005
    """Always drawn besides the chip: regulator quiescent current, sensor idle, leakage.
    5 uA suits a low-Iq LDO; a development board with an AMS1117 draws ~5 mA, set that here."""
    cpu_ma: float = 30.0
    """CPU running with the radio off (modem sleep)."""
    boot_s: float = 0.635
    """Deep-sleep wake to the agent running, plus going back to sleep (stock MicroPython)."""
    boot_mas: float = 41.9
    """Charge of that boot."""
    sample_s: float = 0.015
    """One sensor reading: SHT3x single shot, high repeatability (max duration)."""
    sensor_ma: float = 0.6
    """Sensor supply current while measuring (the CPU's ``cpu_ma`` is added)."""
    connect_static_s: float = 0.664
    """Wi-Fi association + static IP, after the boot (0.734 s wake - 0.070 s fast boot)."""
    connect_static_mas: float = 96.9
    """Charge of that connect (100.2 mC - 3.32 mC)."""
    connect_dhcp_s: float = 1.556
    """Wi-Fi association + DHCP, after the boot (1.626 s - 0.070 s)."""
    connect_dhcp_mas: float = 201.0
    """Charge of that connect (204.3 mC - 3.32 mC)."""
    dhcp: bool = False
    """Whether the node gets its address by DHCP (else a static IP)."""
    tx_ma: float = 233.0
    """Wi-Fi transmit, average over a frame."""
    rx_ma: float = 100.0
    """Wi-Fi receive and listening."""
    phy_bps: float = 6.0e6
    """PHY rate of uplink and downlink frames (6 Mb/s: a conservative OFDM rate)."""
    frame_overhead_s: float = 0.0005
    """Per frame: preamble, DIFS/backoff, the 802.11 ACK (time at ``tx_ma``)."""
    header_bytes: int = 70
    """802.11 + IP + UDP + CoAP headers of one datagram (added to each body)."""
    rtt_s: float = 0.020
    """CoAP request to 2.04 on the LAN, incl. the fog's ACK path, listening at ``rx_ma``."""
    ps_wait_s: Mapping[str, float] = field(
        default_factory=lambda: {"none": 0.0, "min": 0.051, "max": 0.154}
    )
    """Extra wait for the response by Wi-Fi power-save mode (``pm``): the AP buffers it to
    the next beacon the station listens to: half a 102.4 ms beacon interval at DTIM 1
    (``min``), 1.5 intervals at listen interval 3 (``max``, ESP-IDF's default)."""
    ps_ma: Mapping[str, float] = field(
        default_factory=lambda: {"none": 100.0, "min": 30.0, "max": 25.0}
    )
    """Average current while waiting for the response in each power-save mode."""
    capacity_mah: float = 2000.0
    """Nominal battery capacity."""
    usable_fraction: float = 1.0
    """Share of the capacity usable before the regulator drops out."""
    self_discharge_per_month: float = 0.02
    """Fraction of the remaining charge lost per month with no load."""

    def replace(self, **changes: Any) -> Board:
        """A copy with some figures changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Board:
        """A board from a mapping of field names (unknown names raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown board parameter(s): {', '.join(unknown)}")
        return cls(**dict(values))

    # -- per-event charges (mAs) ---------------------------------------------------------

    def wake_mas(self) -> float:
        """One wake that samples and goes back to sleep: boot + one sensor reading."""
        return self.boot_mas + self.sample_mas()

    def sample_mas(self) -> float:
        """One sensor reading, CPU included."""
        return self.sample_s * (self.cpu_ma + self.sensor_ma)

    def connect_mas(self) -> float:
        """Wi-Fi association and address (static IP or DHCP)."""
        return self.connect_dhcp_mas if self.dhcp else self.connect_static_mas

    def connect_s(self) -> float:
        return self.connect_dhcp_s if self.dhcp else self.connect_static_s

    def airtime_s(self, nbytes: int) -> float:
        """On-air time of one datagram carrying ``nbytes`` of CoAP payload."""
        return self.frame_overhead_s + 8.0 * (nbytes + self.header_bytes) / self.phy_bps

    def uplink_mas(self, up_bytes: int, down_bytes: int, power_mode: str = "none") -> float:
        """Connect, send one uplink, wait for and receive its 2.04 (without the boot)."""
        return (
            self.connect_mas()
            + self.airtime_s(up_bytes) * self.tx_ma
            + self.rtt_s * self.rx_ma
            + self.ps_wait_s[power_mode] * self.ps_ma[power_mode]
            + self.airtime_s(down_bytes) * self.rx_ma
        )

    def sleep_ma(self, mode: SleepMode = "deep") -> float:
        """Current drawn while sleeping, board quiescent current included."""
        chip = self.deep_sleep_ma if mode == "deep" else self.light_sleep_ma
        return chip + self.quiescent_ma


EMPTY_MV: Final = 3300.0
"""A single Li-ion cell at the ESP32 regulator's dropout: empty, for the node."""
FULL_MV: Final = 4200.0
"""A fully charged Li-ion cell."""


def state_of_charge(
    battery_pct: float | None,
    battery_mv: float | None,
    empty_mv: float = EMPTY_MV,
    full_mv: float = FULL_MV,
) -> float | None:
    """0..1 from a reported percentage, else a linear estimate from the cell voltage (what
    the edge agent reports); None when neither is known.

    >>> state_of_charge(80, None), state_of_charge(None, 3750), state_of_charge(None, 3000)
    (0.8, 0.5, 0.0)
    """
    if battery_pct is not None:
        return min(1.0, max(0.0, battery_pct / 100))
    if battery_mv is not None:
        return min(1.0, max(0.0, (battery_mv - empty_mv) / (full_mv - empty_mv)))
    return None


def daily_charge_mah(
    board: Board,
    *,
    wakes: float,
    uplinks: float,
    up_bytes: float = 60.0,
    down_bytes: float = 0.0,
    period_s: float = 86400.0,
    power_mode: str = "none",
    sleep: SleepMode = "deep",
) -> float:
    """Average load in mAh per day of a schedule counted over ``period_s`` seconds.

    ``wakes`` sample wakes (each boots and reads the sensor), ``uplinks`` of them also
    transmit, carrying ``up_bytes``/``down_bytes`` of CoAP payload on average; the rest of
    the time is spent asleep. Self-discharge is not a load: see :func:`battery_life_days`.

    >>> board = Board()
    >>> round(daily_charge_mah(board, wakes=86400 / 31, uplinks=86400 / 31), 1)  # fixed rate
    109.9
    """
    awake_s = wakes * (board.boot_s + board.sample_s) + uplinks * (
        board.connect_s()
        + board.airtime_s(round(up_bytes))
        + board.rtt_s
        + board.ps_wait_s[power_mode]
        + board.airtime_s(round(down_bytes))
    )
    charge = (
        wakes * board.wake_mas()
        + uplinks * board.uplink_mas(round(up_bytes), round(down_bytes), power_mode)
        + max(0.0, period_s - awake_s) * board.sleep_ma(sleep)
    )
    return charge / 3600.0 * (86400.0 / period_s)


def battery_life_days(load_mah_per_day: float, board: Board | None = None) -> float:
    """Days until the battery is empty at a constant load, self-discharge included.

    The remaining charge Q obeys dQ/dt = -L - kQ (load L, self-discharge rate k per day,
    from ``self_discharge_per_month``), so a usable charge Q0 lasts ln(1 + k Q0 / L) / k
    days (Q0 / L when k = 0).

    >>> round(battery_life_days(10.0, Board(self_discharge_per_month=0.0)), 1)
    200.0
    >>> round(battery_life_days(10.0), 1)  # 2 %/month costs about 6 %
    187.8
    """
    board = board or Board()
    q0 = board.capacity_mah * board.usable_fraction
    k = -math.log(1.0 - board.self_discharge_per_month) / DAYS_PER_MONTH
    if load_mah_per_day <= 0.0:
        return math.inf  # self-discharge alone decays exponentially: never quite empty
    if k == 0.0:
        return q0 / load_mah_per_day
    return math.log1p(k * q0 / load_mah_per_day) / k


class EnergyMeter:
    """Counts the charge of one node event by event: the simulator or a trace replay calls
    ``wake``, ``sample``, ``connect``, ``tx``, ``rx``, ``awake`` and ``sleep`` as the agent
    would do them. ``charge_mas`` is the total, ``by_phase`` and ``seconds`` the breakdown.
    """

    def __init__(self, board: Board | None = None) -> None:
        self.board = board or Board()
        self.by_phase: dict[str, float] = {}
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.cycle_awake_s = 0.0
        """Seconds awake since the last ``wake`` (the caller sleeps the rest of the period)."""

    def _add(self, phase: str, seconds: float, mas: float) -> None:
        self.by_phase[phase] = self.by_phase.get(phase, 0.0) + mas
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self.counts[phase] = self.counts.get(phase, 0) + 1
        if not phase.startswith("sleep"):
            self.cycle_awake_s += seconds

    @property
    def charge_mas(self) -> float:
        """Total charge so far, mAs."""
        return sum(self.by_phase.values())

    @property
    def charge_mah(self) -> float:
        return self.charge_mas / 3600.0

    @property
    def elapsed_s(self) -> float:
        """Time accounted for (awake + asleep)."""
        return sum(self.seconds.values())

    def wake(self) -> None:
        """Boot from deep sleep to the agent running (and, later, back to sleep)."""
        self.cycle_awake_s = 0.0
        self._add("boot", self.board.boot_s, self.board.boot_mas)

    def sample(self) -> None:
        """Read the sensor once."""
        self._add("sample", self.board.sample_s, self.board.sample_mas())

    def connect(self) -> None:
        """Associate and get an address."""
        self._add("connect", self.board.connect_s(), self.board.connect_mas())

    def tx(self, nbytes: int) -> None:
        """Send one datagram with ``nbytes`` of CoAP payload."""
        t = self.board.airtime_s(nbytes)
        self._add("tx", t, t * self.board.tx_ma)

    def rx(self, nbytes: int, power_mode: str = "none") -> None:
        """Wait for and receive one response with ``nbytes`` of payload."""
        b = self.board
        wait = b.rtt_s + b.ps_wait_s[power_mode]
        t = b.airtime_s(nbytes)
        mas = b.rtt_s * b.rx_ma + b.ps_wait_s[power_mode] * b.ps_ma[power_mode] + t * b.rx_ma
        self._add("rx", wait + t, mas)

    def awake(self, seconds: float) -> None:
        """CPU time with the radio off (decoding, deciding, writing RTC memory)."""
        self._add("cpu", seconds, seconds * self.board.cpu_ma)

    def sleep(self, seconds: float, mode: SleepMode = "deep") -> None:
        """Sleep for ``seconds`` (a negative time counts as none)."""
        seconds = max(0.0, seconds)
        self._add(f"sleep_{mode}", seconds, seconds * self.board.sleep_ma(mode))

    def mah_per_day(self, period_s: float | None = None) -> float:
        """Average load over ``period_s`` (default: the time accounted for)."""
        period = self.elapsed_s if period_s is None else period_s
        return 0.0 if period <= 0.0 else self.charge_mah * 86400.0 / period

    def battery_life_days(self, period_s: float | None = None) -> float:
        """Projected battery life at this meter's average load (see :func:`battery_life_days`)."""
        return battery_life_days(self.mah_per_day(period_s), self.board)
