"""The ESP32 energy model: hand-computed charges for a simple schedule, battery life with
self-discharge, the cited defaults, and the meter the replay drives."""

from __future__ import annotations

import math

import pytest

from fogrt.sim.energy import DAYS_PER_MONTH, Board, EnergyMeter, battery_life_days, daily_charge_mah
from operators.policy.bandit import UPLINK_COST, WAKE_COST

# Round numbers so that every figure below can be checked by hand.
SIMPLE = Board(
    boot_s=1.0,
    boot_mas=10.0,  # 10 mA for 1 s
    sample_s=0.0,
    connect_static_s=1.0,
    connect_static_mas=100.0,
    tx_ma=200.0,
    rx_ma=100.0,
    phy_bps=8000.0,  # 1 byte per ms
    frame_overhead_s=0.001,
    header_bytes=0,
    rtt_s=0.0,
    deep_sleep_ma=0.01,
    quiescent_ma=0.0,
    capacity_mah=1000.0,
    self_discharge_per_month=0.0,
)


def test_a_simple_day_by_hand() -> None:
    # 24 wakes a day, 4 of which send 100 bytes and get an empty ACK:
    #   wakes:   24 x 10 mAs                                      =  240.0 mAs
    #   uplinks: 4 x (100 connect + 0.101 s x 200 mA + 0.001 s x 100 mA) = 4 x 120.3 = 481.2
    #   asleep:  86400 s - 24 x 1 s - 4 x (1 + 0.101 + 0.001) s = 86371.592 s x 0.01 mA
    #                                                             =  863.71592 mAs
    expected = (240.0 + 481.2 + 863.71592) / 3600.0
    got = daily_charge_mah(SIMPLE, wakes=24, uplinks=4, up_bytes=100, down_bytes=0)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == pytest.approx(0.44025442, abs=1e-8)


def test_the_meter_adds_up_the_same_day_event_by_event() -> None:
    meter = EnergyMeter(SIMPLE)
    for hour in range(24):
        meter.wake()
        meter.sample()
        if hour % 6 == 0:
            meter.connect()
            meter.tx(100)
            meter.rx(0)
        meter.sleep(3600.0 - meter.cycle_awake_s)
    assert meter.elapsed_s == pytest.approx(86400.0)
    assert meter.mah_per_day() == pytest.approx(
        daily_charge_mah(SIMPLE, wakes=24, uplinks=4, up_bytes=100, down_bytes=0), rel=1e-12
    )
    assert meter.by_phase["connect"] == 400.0 and meter.counts["boot"] == 24
    assert meter.battery_life_days() == pytest.approx(1000.0 / meter.mah_per_day())


def test_battery_life_with_self_discharge_matches_integration() -> None:
    board = Board(capacity_mah=2000.0, self_discharge_per_month=0.03)
    load = 5.0
    k = -math.log(1 - 0.03) / DAYS_PER_MONTH
    q, days, dt = 2000.0, 0.0, 0.01
    while q > 0:  # dQ/dt = -L - kQ, integrated by small steps
        q -= (load + k * q) * dt
        days += dt
    assert battery_life_days(load, board) == pytest.approx(days, abs=0.05)
    assert battery_life_days(load, board) < 2000.0 / load  # self-discharge shortens it
    no_drain = Board(self_discharge_per_month=0.0, capacity_mah=2000.0, usable_fraction=0.9)
    assert battery_life_days(load, no_drain) == pytest.approx(360.0)
    assert battery_life_days(0.0, board) == math.inf


def test_defaults_are_the_cited_figures() -> None:
    b = Board()
    assert (b.tx_ma, b.rx_ma, b.cpu_ma, b.light_sleep_ma, b.deep_sleep_ma) == (
        233.0, 100.0, 30.0, 0.8, 0.010)  # fmt: skip
    fast_boot = 0.070  # the part of the measured wakes that was the (fast) boot
    assert b.connect_static_s + fast_boot == pytest.approx(0.734)  # ~0.7 s with a static IP
    assert b.connect_dhcp_s + fast_boot == pytest.approx(1.626)  # ~1.6 s with DHCP
    assert Board(dhcp=True).connect_mas() > 2 * b.connect_mas()
    # a wake that transmits costs about 3.3 sample-only wakes
    assert (b.wake_mas() + b.uplink_mas(60, 20)) / b.wake_mas() == pytest.approx(3.34, abs=0.01)


def test_power_save_modes_trade_current_for_waiting() -> None:
    b = Board()
    costs = {pm: b.uplink_mas(60, 20, pm) for pm in ("none", "min", "max")}
    assert costs["none"] < costs["min"] < costs["max"]  # for one short exchange, PS loses


def test_board_overrides() -> None:
    b = Board.from_mapping({"dhcp": True, "capacity_mah": 3000})
    assert b.dhcp and b.capacity_mah == 3000 and b.replace(dhcp=False).dhcp is False
    with pytest.raises(ValueError, match="unknown board parameter"):
        Board.from_mapping({"capacity": 3000})


def test_bandit_costs_are_the_board_defaults() -> None:
    b = Board()
    assert pytest.approx(b.wake_mas(), abs=0.05) == WAKE_COST
    assert pytest.approx(b.uplink_mas(60, 20), abs=0.05) == UPLINK_COST
