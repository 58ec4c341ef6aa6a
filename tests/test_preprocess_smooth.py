"""preprocess.smooth: EWMA, rolling median, Hampel, Kalman, output naming, parameters."""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

import numpy as np
import pytest

from fogrt.errors import FieldError, ParamError
from fogrt.event import IMPUTED, Event
from fogrt.operator import build
from operators.preprocess import Smooth


def make(**params: Any) -> Smooth:
    op = build(Smooth, params)
    assert isinstance(op, Smooth)
    return op


def smooth(op: Smooth, values: list[Any], name: str = "v", dt: float = 1.0) -> list[Any]:
    out = []
    for i, v in enumerate(values):
        (e,) = op.process(Event("d", i, i * dt, {name: v}))
        out.append(e.fields[name])
    return out


def test_ewma() -> None:
    assert smooth(make(alpha=0.5), [4.0, 8.0, None, 0.0]) == [4.0, 6.0, None, 3.0]


def test_median_is_causal_and_removes_short_spikes() -> None:
    out = smooth(make(method="median", window=3), [1.0, 1.0, 50.0, 1.0, 2.0, 3.0])
    assert out == [1.0, 1.0, 1.0, 1.0, 2.0, 2.0]


def test_hampel_replaces_outliers_with_the_window_median() -> None:
    rng = random.Random(4)
    values = [10.0 + rng.gauss(0, 0.1) for _ in range(40)]
    values[25] = 15.0
    op = make(method="hampel", window=9, n_sigmas=5)
    out = smooth(op, values)
    assert out[25] == pytest.approx(statistics.median(values[16:25]))
    assert [i for i, (a, b) in enumerate(zip(values, out, strict=True)) if a != b] == [25]
    assert op.metrics() == {"smoothed": 40, "outliers": 1}


def test_hampel_passes_values_until_the_window_is_full() -> None:
    out = smooth(make(method="hampel", window=3), [1.0, 100.0, 1.0, 1.0, 100.0])
    assert out == [1.0, 100.0, 1.0, 1.0, 1.0]


def test_hampel_min_spread_for_quantized_sensors() -> None:
    values = [20.0] * 6 + [20.01, 20.0, 20.01, 25.0, 20.01]
    classic = make(method="hampel", window=5)
    assert smooth(classic, values)[6] == 20.0  # a MAD of 0: one resolution step is "outlier"
    op = make(method="hampel", window=5, min_spread=0.01)
    out = smooth(op, values)
    assert out[:9] == values[:9]
    assert out[9] == 20.0  # the spike still is one: replaced by the median
    assert op.metrics()["outliers"] == 1


def test_kalman_reduces_noise_and_tracks_the_level() -> None:
    rng = random.Random(1)
    truth = [5.0] * 200 + [8.0] * 200
    noisy = [t + rng.gauss(0, 1.0) for t in truth]
    out = smooth(make(method="kalman", process_noise=0.01, measurement_noise=1.0), noisy)
    error = np.abs(np.array(out) - truth)
    raw = np.abs(np.array(noisy) - truth)
    assert error[100:200].mean() < raw[100:200].mean() / 3
    assert abs(out[-1] - 8.0) < 0.5  # it followed the step


def test_kalman_by_hand_and_irregular_time() -> None:
    op = make(method="kalman", process_noise=1.0, measurement_noise=1.0)
    op.process(Event("d", 0, 0.0, {"v": 0.0}))  # x = 0, P = R = 1
    (e,) = op.process(Event("d", 1, 3.0, {"v": 10.0}))  # P = 1 + 3 s * 1, K = 4 / 5
    assert e.fields["v"] == pytest.approx(8.0)


def test_not_in_place_adds_a_field() -> None:
    op = make(fields=["v"], alpha=0.5, in_place=False)
    (e,) = op.process(Event("d", 1, 0.0, {"v": 2.0, "s": "x"}, 0.0, IMPUTED))
    assert (e.fields, e.flags) == ({"v": 2.0, "s": "x", "v_smooth": 2.0}, IMPUTED)
    (e,) = op.process(Event("d", 2, 1.0, {"v": None, "s": "y"}))
    assert e.fields == {"v": None, "s": "y", "v_smooth": None}


def test_int_fields_become_floats() -> None:
    op = make(fields=["n"], method="median", window=2)
    assert smooth(op, [1, 2], "n") == [1.0, 1.5]
    assert make(fields=["n"]).schema({"n": "int", "s": "str"}) == {"n": "float", "s": "str"}


def test_fields_default_to_numeric_input() -> None:
    op = make(alpha=0.5)
    op.bind({"a": "float", "s": "str"})
    op.process(Event("d", 1, 0.0, {"a": 0.0, "s": "x"}))
    (e,) = op.process(Event("d", 2, 1.0, {"a": 2.0, "s": "y"}))
    assert e.fields == {"a": 1.0, "s": "y"}
    assert make(in_place=False).schema({"a": "float", "s": "str"}) == {
        "a": "float",
        "s": "str",
        "a_smooth": "float",
    }


def test_nan_is_left_alone() -> None:
    out = smooth(make(), [1.0, math.nan, 3.0])
    assert out[0] == 1.0 and math.isnan(out[1]) and out[2] == pytest.approx(1.6)


def test_snapshot() -> None:
    op = make(method="hampel", window=3)
    smooth(op, [1.0, 2.0, 3.0])
    twin = op.clone()
    twin.restore(op.snapshot())
    assert smooth(op, [50.0, 2.0]) == smooth(twin, [50.0, 2.0]) == [2.0, 2.0]


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"method": "lowess"}, ("method",)),
        ({"alpha": 0}, ("alpha",)),
        ({"method": "hampel", "window": 2}, ("window",)),
        ({"method": "median", "window": 0}, ("window",)),
        ({"n_sigmas": 0}, ("n_sigmas",)),
        ({"min_spread": -0.1}, ("min_spread",)),
        ({"process_noise": -1}, ("process_noise",)),
        ({"measurement_noise": 0}, ("measurement_noise",)),
        ({"fields": ["a", "a"]}, ("fields", 1)),
    ],
)
def test_bad_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    with pytest.raises(ParamError) as info:
        build(Smooth, params)
    assert info.value.path == path


def test_schema_errors() -> None:
    with pytest.raises(FieldError) as info:
        make(fields=["presure"]).schema({"pressure": "float"})
    assert "did you mean 'pressure'" in info.value.message
    with pytest.raises(FieldError) as info:
        make(fields=["p"], in_place=False).schema({"p": "float", "p_smooth": "float"})
    assert info.value.path == ("in_place",)
