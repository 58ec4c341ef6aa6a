"""learn.regress and learn.forecast: lags, honest errors, progressive metrics, drift actions."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np
import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, LATE, Event
from fogrt.operator import build
from operators.learn import Forecast, Regress


def run(op: Regress | Forecast, events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for e in events:
        result = op.process(e)
        assert isinstance(result, tuple) and len(result) == 1
        out.extend(result)
    return out


def ar2(n: int, seed: int = 0, shift_at: int | None = None) -> list[Event]:
    """A stationary AR(2) temperature around 20 (a level shift of +10 at ``shift_at``)."""
    rng = np.random.default_rng(seed)
    y = [20.0, 20.0]
    for _ in range(n - 2):
        y.append(20.0 + 0.6 * (y[-1] - 20.0) + 0.3 * (y[-2] - 20.0) + rng.normal(0, 0.1))
    if shift_at is not None:
        y = [v + (10.0 if i >= shift_at else 0.0) for i, v in enumerate(y)]
    return [Event("d", i, float(i), {"temp": v, "hum": 50.0 + v % 1.0}) for i, v in enumerate(y)]


def test_lags_give_a_good_linear_model() -> None:
    op = build(Regress, {"target": "temp", "lags": 2})
    out = run(op, ar2(3000))
    assert [e.fields["prediction"] for e in out[:2]] == [None, None]
    tail = [abs(e.fields["error"]) for e in out[-500:]]
    assert float(np.mean(tail)) < 0.12  # the noise is 0.1: about as good as it gets
    metrics = op.metrics()
    assert metrics["learned"] == 2998
    assert 0 < metrics["mae"] < metrics["rmse"]


def test_prediction_comes_before_learning() -> None:
    op = build(Regress, {"target": "t", "lags": 0, "fields": ["x"], "model": "LinearRegression"})
    (first,) = op.process(Event("d", 0, 0.0, {"t": 5.0, "x": 1.0}))
    assert first.fields["prediction"] == 0.0 and first.fields["error"] == 5.0
    (unlabelled,) = op.process(Event("d", 1, 1.0, {"t": None, "x": 1.0}))
    assert unlabelled.fields["error"] is None and op.metrics()["learned"] == 1


def test_missing_target_keeps_the_lags() -> None:
    op = build(Regress, {"target": "t", "lags": 1, "model": "LinearRegression"})
    run(op, [Event("d", 0, 0.0, {"t": 1.0}), Event("d", 1, 1.0, {"t": math.nan})])
    assert list(op._history) == [1.0]


def test_drift_reset_after_a_level_shift() -> None:
    events = ar2(3000, shift_at=1500)
    params = {"target": "temp", "lags": 2, "fields": ["hum"]}
    plain = run(build(Regress, params), events)
    guarded_op = build(Regress, {**params, "drift": {"detector": "ADWIN", "action": "reset"}})
    guarded = run(guarded_op, events)
    assert guarded_op.metrics()["drifts"] >= 1
    assert any(e.fields["drift"] for e in guarded[1500:1700])

    def mae(out: list[Event]) -> float:
        return float(np.mean([abs(e.fields["error"]) for e in out[1600:2000]]))

    assert mae(guarded) < mae(plain)


def test_drift_raise_lr_boosts_then_restores_the_learning_rate() -> None:
    op = build(
        Regress,
        {"target": "temp", "lags": 2, "drift": {"action": "raise_lr", "factor": 5, "steps": 50}},
    )
    schedule = op._model["LinearRegression"].optimizer.lr
    base = schedule.learning_rate
    out = run(op, ar2(3000, shift_at=1500))
    first = next(i for i, e in enumerate(out) if e.fields["drift"])
    assert first >= 1500
    assert schedule.learning_rate == base  # restored once the boost ran out
    op2 = build(
        Regress,
        {
            "target": "temp",
            "lags": 2,
            "drift": {"action": "raise_lr", "factor": 5, "steps": 10_000},
        },
    )
    run(op2, ar2(3000, shift_at=1500))
    assert op2._model["LinearRegression"].optimizer.lr.learning_rate == pytest.approx(base * 5)


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"target": "t", "lags": -1}, ("lags",)),
        ({"target": "t", "lags": 0}, ("lags",)),
        ({"target": "t", "fields": ["x", "t"]}, ("fields", 1)),
        ({"target": "t", "model": "GaussianNB"}, ("model",)),
        (
            {"target": "t", "model": "HoeffdingTreeRegressor", "drift": {"action": "raise_lr"}},
            ("drift", "action"),
        ),
        ({"target": "t", "drift": {"action": "raise_lr", "steps": 1.5}}, ("drift", "steps")),
    ],
)
def test_bad_regress_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Regress, params)
    assert info.value.path == path


def test_regress_schema() -> None:
    up = {"t": "float", "x": "float", "s": "str"}
    assert build(Regress, {"target": "t"}).schema(up) == {
        **up,
        "prediction": "float",
        "error": "float",
    }
    with pytest.raises(FieldError) as info:
        build(Regress, {"target": "s"}).schema(up)
    assert info.value.path == ("target",)
    with pytest.raises(FieldError) as info:
        build(Regress, {"target": "t", "fields": ["y"]}).schema(up)
    assert info.value.path == ("fields", 0)


# -- forecasting -----------------------------------------------------------------------------


def test_error_is_of_the_forecast_made_horizon_steps_ago() -> None:
    op = build(Forecast, {"target": "v", "horizon": 3})
    rng = np.random.default_rng(1)
    out = run(op, [Event("d", i, float(i), {"v": float(rng.normal())}) for i in range(200)])
    made: deque[float | None] = deque(maxlen=3)
    for e in out:
        due = made[0] if len(made) == 3 else None
        expected = None if due is None else e.fields["v"] - due
        assert e.fields["error"] == expected
        made.append(e.fields["forecast"])
    assert op.metrics()["learned"] == 200


def test_forecast_keeps_the_envelope_and_learns_only_finite_numbers() -> None:
    op = build(Forecast, {"target": "v"})
    values: list[Any] = [1.0, 2, 3.0, None, math.nan, math.inf, True, "x", 4.0, 5.0]
    out = []
    for i, v in enumerate(values):
        fields = {"v": v, "n": i}
        e = Event("k", 10 + i, 100.0 + i, fields, arrival=200.0 + i, flags=IMPUTED | LATE)
        (o,) = op.process(e)
        assert (o.key, o.seq, o.time, o.arrival, o.flags) == (
            "k",
            10 + i,
            100.0 + i,
            200.0 + i,
            IMPUTED | LATE,
        )
        assert e.fields is fields and list(fields) == ["v", "n"]  # the input is untouched
        assert list(o.fields)[:2] == ["v", "n"] and o.fields["v"] is v
        out.append(o)
    learned = [0, 1, 2, 8, 9]  # 1.0, 2, 3.0, 4.0 and 5.0
    assert op.metrics()["events"] == 10 and op.metrics()["learned"] == len(learned)
    # HoltWinters forecasts from its second value on; an unlearned event forecasts nothing
    assert [o.fields["forecast"] is not None for o in out] == [i in learned[1:] for i in range(10)]
    assert all(type(o.fields["forecast"]) is float for o in out if o.fields["forecast"] is not None)
    assert out[2].fields["error"] == 3.0 - out[1].fields["forecast"]  # the int 2 was learned


def test_holt_winters_on_the_airline_passengers() -> None:
    from river import datasets

    spec = [
        {
            "HoltWinters": {
                "alpha": 0.3,
                "beta": 0.1,
                "gamma": 0.6,
                "seasonality": 12,
                "multiplicative": True,
            }
        }
    ]
    op = build(Forecast, {"target": "passengers", "horizon": 12, "model": spec})
    events = [
        Event("air", i, float(i), {"passengers": float(y)})
        for i, (_, y) in enumerate(datasets.AirlinePassengers())
    ]
    out = run(op, events)
    assert out[0].fields["forecast"] is None  # needs a season of values first
    errors = [abs(e.fields["error"]) / e.fields["passengers"] for e in out[-24:]]
    assert float(np.mean(errors)) < 0.15
    assert op.metrics()["mae"] > 0


def test_snarimax_and_drift() -> None:
    events = [Event("d", i, float(i), {"v": 1.0 if i < 300 else 8.0}) for i in range(400)]
    op = build(
        Forecast,
        {
            "target": "v",
            "model": [{"SNARIMAX": {"p": 1, "d": 0, "q": 0}}],
            "drift": {"action": "reset"},
        },
    )
    out = run(op, events)
    assert not any(e.fields["drift"] for e in out[:300])  # falling errors are no drift
    assert any(e.fields["drift"] for e in out[300:])


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"target": "v", "horizon": 0}, ("horizon",)),
        ({"target": "v", "model": "HoltWinters"}, ("model", "HoltWinters")),
        ({"target": "v", "model": "StandardScaler | HoltWinters"}, ("model",)),
        ({"target": "v", "drift": {"action": "raise_lr"}}, ("drift", "action")),
    ],
)
def test_bad_forecast_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Forecast, params)
    assert info.value.path == path
