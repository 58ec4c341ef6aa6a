"""Control policies: the shared protocol, each policy's decisions on crafted signals, the
fog's imputation against the device's forecasts, and savings on a signal with a known answer."""

from __future__ import annotations

import importlib.util
import math
import random
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from fogrt.errors import ParamError
from fogrt.ingest.wire import MAX_COEFFS, Control
from fogrt.sim.energy import Board, EnergyMeter
from operators.policy import (
    BUILTINS,
    BatteryAware,
    Burst,
    DualPrediction,
    Fixed,
    Mirror,
    Reading,
    SendOnDelta,
    build,
)
from operators.policy.bandit import Bandit
from operators.policy.dual import coeffs_from_trend, holt
from operators.policy.protocol import (
    depth,
    heartbeat_due,
    in_burst,
    predict,
    remember,
    should_transmit,
    suppressed_times,
)
from operators.policy.replay import ReplayResult, replay

AGENT_PREDICTOR = Path(__file__).resolve().parents[1] / "edge_agent/fogagent/predictor.py"


def rmse(result: ReplayResult, times: list[float], values: list[float]) -> float:
    order = np.argsort(result.recon_times, kind="stable")
    rec = np.interp(
        times, np.asarray(result.recon_times)[order], np.asarray(result.recon_values)[order]
    )
    return float(np.sqrt(np.mean((rec - np.asarray(values)) ** 2)))


def received(result: ReplayResult) -> list[float]:
    return [t for t, imp in zip(result.recon_times, result.recon_imputed, strict=True) if not imp]


def random_walk(n: int, seed: int, step: float = 0.05) -> list[float]:
    rng = random.Random(seed)
    x = 20.0
    out: list[float] = []
    for _ in range(n):
        x += rng.gauss(0.0, step) + 0.01 * math.sin(len(out) / 40.0)
        out.append(round(x, 2))
    return out


# -- the protocol ------------------------------------------------------------------------


def test_predict_is_c0_plus_lagged_terms_and_needs_history() -> None:
    assert predict((0.5, 2.0, -1.0), [3.0, 1.0]) == 0.5 + 2.0 * 3.0 - 1.0 * 1.0
    assert predict((0.5, 2.0, -1.0), [3.0]) is None
    assert predict((), [7.0]) == 7.0  # no coefficients: the previous value


def test_should_transmit_rules() -> None:
    always = Control()
    delta = Control(tx="delta", epsilon=0.5)
    pred = Control(tx="predict", epsilon=0.5, coeffs=(0.0, 2.0, -1.0))
    assert should_transmit(always, 1.0, 1.0, [])
    assert should_transmit(delta, 1.0, None, [])  # nothing sent yet
    assert not should_transmit(delta, 1.5, 1.0, [])  # exactly epsilon: kept back
    assert should_transmit(delta, 1.51, 1.0, [])
    assert should_transmit(pred, 5.0, 5.0, [5.0])  # not enough history for a forecast
    assert not should_transmit(pred, 7.4, 5.0, [6.0, 5.0])  # forecast 7.0
    assert should_transmit(pred, 7.6, 5.0, [6.0, 5.0])
    assert should_transmit(pred, 7.0, 5.0, [1e308, -1e308])  # overflow: inf/nan forecast
    assert not should_transmit(delta, None, 1.0, [])  # a missing value never triggers


def test_remember_keeps_the_fog_value_and_the_depth() -> None:
    c = Control(tx="predict", epsilon=0.5, coeffs=(0.0, 2.0, -1.0))
    h = [6.0, 5.0]
    remember(c, h, 7.4, sent=False)
    assert h == [7.0, 6.0]  # the forecast, not the reading
    remember(c, h, 9.0, sent=True)
    assert h == [9.0, 7.0]
    remember(Control(tx="delta"), h, 1.0, sent=True)
    assert h == []
    assert depth(Control(tx="predict")) == 1 and depth(Control()) == 0


def test_heartbeat_burst_and_gap_helpers() -> None:
    c = Control(interval=60, burst_until=1000)
    assert heartbeat_due(c, 0.0, None) and heartbeat_due(c, 60.0, 0.0)
    assert not heartbeat_due(c, 59.9, 0.0)
    assert in_burst(c, 999.0) and not in_burst(c, 1000.0) and not in_burst(Control(), 5.0)
    assert suppressed_times(0.0, 100.0, 25.0) == [25.0, 50.0, 75.0]
    assert suppressed_times(0.0, 31.0, 30.0) == []  # jitter is not a skipped sample


def load_agent_predictor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_predictor", AGENT_PREDICTOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "control",
    [
        Control(tx="predict", epsilon=0.1, coeffs=coeffs_from_trend(holt(14, 0.12, 0.97))),
        Control(tx="predict", epsilon=0.05, coeffs=(0.01, 1.0)),
        Control(tx="predict", epsilon=0.2),
        Control(tx="delta", epsilon=0.1),
        Control(tx="always"),
    ],
)
def test_protocol_decides_as_the_edge_agent_predictor(control: Control) -> None:
    agent = load_agent_predictor()
    wire = {"tx": control.tx, "e": control.epsilon, "c": list(control.coeffs)}
    device = agent.Predictor([[]], [None])
    history: list[float] = []
    last: float | None = None
    for x in random_walk(400, seed=3):
        want = should_transmit(control, x, last, history)
        assert device.check([x], wire) is want
        device.commit([x], want, wire)
        remember(control, history, x, sent=want)
        if want:
            last = x
        assert device.hist[0] == history
        assert device.last[0] == last


def test_fog_imputation_equals_the_device_forecasts() -> None:
    control = Control(  # the heartbeat below: every 120 samples, i.e. 1200 s
        interval=1200,
        tx="predict",
        epsilon=0.08,
        sample_period=10.0,
        coeffs=coeffs_from_trend(holt(6, 0.3, 0.9)),
    )
    device_history: list[float] = []
    last: float | None = None
    assumed: dict[float, float] = {}  # what the device put in its history for each sample
    mirror = Mirror()
    imputed: dict[float, float] = {}
    sent = 0
    for j, x in enumerate(random_walk(1500, seed=11, step=0.02)):
        t = 1000.0 + 10.0 * j
        want = should_transmit(control, x, last, device_history) or j % 120 == 0
        remember(control, device_history, x, sent=want)
        assumed[t] = device_history[0]
        if want:
            last = x
            sent += 1
            gap, _ = mirror.receive(Reading(t, x, control))
            imputed.update(gap)
            assert mirror.history == device_history
    assert 20 < sent < 1000  # something was suppressed, something was sent
    assert len(imputed) > 500
    for t, value in imputed.items():
        assert value == assumed[t]  # exactly: same floats, same order of operations


# -- the policies ------------------------------------------------------------------------


def test_fixed_sends_every_sample() -> None:
    times = [float(t) for t in range(0, 3600, 10)]
    values = random_walk(len(times), seed=1)
    result = replay(Fixed(interval=30.0), times, values)
    assert result.uplinks == result.wakes == result.readings_sent == 120
    assert not any(result.recon_imputed)


def test_send_on_delta_transmits_exactly_at_the_step() -> None:
    times = [float(t) for t in range(0, 7200, 10)]
    values = [20.0 if t < 3000.0 else 21.0 for t in times]
    result = replay(SendOnDelta(0.5, sample_period=10.0, interval=86400.0), times, values)
    assert received(result) == [0.0, 3000.0]
    held = [v for v, imp in zip(result.recon_values, result.recon_imputed, strict=True) if imp]
    assert held[:299] == [20.0] * 299 and set(held[299:]) == {21.0}
    assert rmse(result, times, values) == 0.0


def test_dual_prediction_on_a_constant_stops_sending_and_stretches_sampling() -> None:
    times = [float(t) for t in range(0, 86400, 10)]
    values = [21.5] * len(times)
    policy = DualPrediction(0.1, sample_period=10.0, max_sample_period=640.0, interval=1800.0)
    result = replay(policy, times, values)
    history_fill = len(policy.initial().coeffs) - 1  # no forecast until then: sent
    assert received(result)[:history_fill] == times[:history_fill]
    later = received(result)[history_fill:]
    assert len(later) == pytest.approx(86400 / 1920, abs=2)  # heartbeats only (3 x 640 s)
    # The first heartbeat shows a run of ~180 predicted samples: the fog stretches the period
    # 32-fold at once (180 / 32 >= stretch_after), which the device applies at its next
    # uplink (the second heartbeat); the next heartbeat takes it to the longest period.
    assert [sp for _, sp in result.periods] == [10.0, 320.0, 640.0]
    assert result.periods[1][0] == pytest.approx(2 * 1800 + 10 * history_fill, abs=20)
    assert result.wakes < 2 * 1800 / 10 + 86400 / 640 + 50
    assert rmse(result, times, values) < 1e-9  # exact but for float rounding
    assert result.recon_values == pytest.approx([21.5] * len(result.recon_values))


def test_dual_prediction_shrinks_the_period_on_an_overshoot() -> None:
    p = DualPrediction(0.1, sample_period=10.0, max_sample_period=80.0, predictor="naive")
    c = p.initial()
    for t in (0.0, 10.0, 20.0, 30.0, 40.0, 50.0):  # predictable: the period stretches
        c = p.observe(Reading(t, 20.0, c)).control
    assert c.sample_period == 80.0
    c = p.observe(Reading(130.0, 20.0 + 0.5, c)).control  # missed by 5 epsilon
    assert c.sample_period == 40.0


def test_dual_prediction_follows_a_ramp_with_few_uplinks() -> None:
    times = [float(t) for t in range(0, 24 * 3600, 30)]
    values = [20.0 + 0.5 * t / 3600.0 for t in times]  # 0.5 C per hour
    sod = replay(SendOnDelta(0.1, sample_period=30.0), times, values)
    dual = replay(DualPrediction(0.1, sample_period=30.0, fit=False), times, values)
    assert dual.uplinks < sod.uplinks / 2  # the trend is predicted, not re-sent
    assert rmse(dual, times, values) < 0.1


def test_battery_aware_stretches_below_the_thresholds() -> None:
    policy = BatteryAware(
        inner={"use": "policy.fixed", "with": {"interval": "1m"}},
        thresholds=[(0.5, 2.0), (0.25, 4.0), (0.1, 8.0)],
        max_sample_period=400.0,
    )
    c = policy.initial()
    seen = []
    for j, battery in enumerate((0.9, 0.5, 0.45, 0.2, 0.05, None)):
        d = policy.observe(Reading(60.0 * j, 20.0, c, battery=battery))
        seen.append((d.control.sample_period, d.control.interval))
    assert seen == [(60, 60), (60, 60), (120, 120), (240, 240), (400, 480), (400, 480)]


def test_burst_shortens_the_period_until_burst_until() -> None:
    policy = Burst(
        inner={"use": "policy.send_on_delta", "with": {"epsilon": 0.5, "sample_period": 60}},
        duration=600.0,
        sample_period=5.0,
    )
    c = policy.initial()
    c = policy.observe(Reading(900.0, 20.0, c)).control
    assert c.burst_until == 0 and c.sample_period == 60.0
    burst = policy.alert(1000.5)
    assert burst.burst_until == 1601 and burst.sample_period == 5.0 and burst.tx == "delta"
    assert burst.interval == 5  # the device checks in right after the burst
    assert policy.observe(Reading(1200.0, 25.0, burst)).control == burst
    after = policy.observe(Reading(1596.0, 25.0, burst)).control  # next sample is past bu
    assert after == c


def test_burst_in_a_replay_samples_fast_after_the_alert() -> None:
    times = [float(t) for t in range(0, 7200, 10)]
    values = [20.0 + (0.2 if 3000 <= t < 3100 else 0.0) for t in times]
    policy = Burst(
        inner={"use": "policy.send_on_delta", "with": {"epsilon": 0.1, "sample_period": 60}},
        duration=300.0,
        sample_period=10.0,
    )
    result = replay(policy, times, values, alerts=[3000.0])
    fast = [t for t, sp in result.periods if sp == 10.0]
    assert fast and 3000.0 <= fast[0] <= 3100.0  # applied at the next uplink (the step)
    burst_readings = [t for t in received(result) if fast[0] < t <= 3300.0]
    assert len(burst_readings) >= 15  # every reading sent while the burst lasts
    assert result.periods[-1][1] == 60.0  # and back to the inner policy afterwards


def test_bandit_is_deterministic_and_learns_the_cheap_arm_on_a_constant() -> None:
    times = [float(t) for t in range(0, 2 * 86400, 30)]
    values = [20.0] * len(times)

    def run() -> Bandit:
        policy = Bandit(0.1, sample_period=30.0, sample_periods=[30.0, 240.0], batches=[1],
                        epoch=1800.0, interval=1800.0, seed=3)  # fmt: skip
        replay(policy, times, values)
        return policy

    a, b = run(), run()
    assert a.pulls == b.pulls and len(a.pulls) > 10
    late = a.pulls[len(a.pulls) // 2 :]
    assert late.count("240s/bt1/none") > late.count("30s/bt1/none")


def test_every_control_fits_the_wire() -> None:
    for policy in (
        DualPrediction(0.1, sample_period=30.0, max_sample_period=300.0),
        Bandit(0.1, sample_period=30.0),
        DualPrediction(0.1, predictor="linear"),
    ):
        c = policy.initial()
        assert len(c.coeffs) <= MAX_COEFFS
        assert math.isclose(sum(c.coeffs[1:]), 1.0) and c.coeffs[0] == 0.0


# -- contract: params, build, snapshot ----------------------------------------------------


def test_build_parses_durations_and_names_errors() -> None:
    p = build(
        {"use": "policy.dual_prediction", "with": {"epsilon": 0.1, "max_sample_period": "5m"}}
    )
    assert isinstance(p, DualPrediction) and p.max_sample_period == 300.0
    with pytest.raises(ParamError, match=r"did you mean 'policy\.send_on_delta'"):
        build({"use": "policy.send_on_delt"})
    with pytest.raises(ParamError) as err:
        build({"use": "policy.dual_prediction", "with": {"epsilon": 0.1, "lags": 40}})
    assert err.value.path == ("with", "lags")
    with pytest.raises(ParamError) as err:
        build({"use": "policy.burst", "with": {"inner": {"use": "policy.dual_prediction",
                                                        "with": {"epsilon": -1}}}})  # fmt: skip
    assert err.value.path == ("with", "inner", "with", "epsilon")
    with pytest.raises(ParamError, match="max_sample_period"):
        DualPrediction(0.1, sample_period=60.0, max_sample_period=30.0)


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_snapshot_restore_gives_identical_next_decisions(name: str) -> None:
    from operators.policy import policy_class

    cls = policy_class(name)
    params: dict[str, Any] = next(iter(cls._unit_test_params()))
    policy = build({"use": name, "with": params})
    values = random_walk(300, seed=5, step=0.1)
    c = policy.initial()
    for j, x in enumerate(values[:200]):
        c = policy.observe(Reading(10.0 * j * 3, x, c, battery=0.4, arrival=30.0 * j)).control
    twin = policy.clone()
    twin.restore(policy.snapshot())
    assert repr(twin) == repr(policy)
    for j, x in enumerate(values[200:], start=200):
        r = Reading(10.0 * j * 3, x, c, battery=0.4, arrival=30.0 * j)
        a, b = policy.observe(r), twin.observe(r)
        assert a == b
        c = a.control


# -- savings on a signal with a known answer ----------------------------------------------


def test_adaptive_sampling_saves_against_fixed_on_a_slow_sine() -> None:
    # Two days of a 24 h sine (amplitude 2 C) sampled every 30 s: the dual-prediction bound
    # holds at every sample, and a smooth signal this slow needs a sample every few minutes.
    times = [float(t) for t in range(0, 2 * 86400, 30)]
    values = [20.0 + 2.0 * math.sin(2 * math.pi * t / 86400.0) for t in times]
    board = Board()
    fixed_meter, adaptive_meter = EnergyMeter(board), EnergyMeter(board)
    fixed = replay(Fixed(interval=30.0), times, values, meter=fixed_meter)
    policy = DualPrediction(0.1, sample_period=30.0, max_sample_period=600.0)
    adaptive = replay(policy, times, values, meter=adaptive_meter)
    assert fixed.uplinks == len(times)
    assert adaptive.uplinks < 0.02 * fixed.uplinks
    assert adaptive.wakes < 0.1 * fixed.wakes
    assert rmse(adaptive, times, values) < 0.1  # within the bound (samples are within eps)
    life = adaptive_meter.battery_life_days() / fixed_meter.battery_life_days()
    assert life > 12.0
