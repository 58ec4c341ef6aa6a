"""The window features: parameters, known answers, and agreement with numpy and scipy."""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.errors import ParamError
from fogrt.event import IMPUTED, LATE, Event
from fogrt.operator import build
from operators.window import Session, Sliding, Tumbling
from operators.window.features import (
    CTV,
    M2,
    M2T,
    MAX,
    MEAN,
    MIN,
    MT,
    TS,
    VS,
    N,
    add_value,
    merge,
    parse_features,
)
from operators.window.features import (
    T0 as FIRST_TIME,
)

T0 = 1_700_000_000.0  # epoch-sized times, as in production


def ev(t: float, seq: int = 0, flags: int = 0, **fields: Any) -> Event:
    return Event("dev-1", seq, t, fields, 0.0, flags)


def one_window(features: list[str], times: list[float], values: list[Any], **params: Any) -> Event:
    """Every event in one tumbling window [T0, T0 + 1000); the closed window."""
    op = build(Tumbling, {"size": 1000, "fields": ["v"], "features": features, **params})
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        assert op.process(ev(T0 + t, i, v=v)) == ()
    (w,) = op.on_tick(math.inf)
    return w


# -- parameters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("features", "path", "message"),
    [
        (["mean", "meen"], ("features", 1), "did you mean 'mean'"),
        (["median"], ("features", 0), "q50"),
        (["q05"], ("features", 0), "'q5'"),
        (["q101"], ("features", 0), "q0..q100"),
        (["kurtosis", "skew", "kurtosis"], ("features", 2), "twice"),
        (["zero_crossing"], ("features", 0), "did you mean 'zero_crossings'"),
        (["bands"], ("bands",), "needs bands"),
        ([], ("features",), "give a list"),
    ],
)
def test_bad_features(features: list[str], path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ParamError) as info:
        build(Tumbling, {"size": 10, "features": features})
    assert info.value.path == path
    assert message in info.value.message


@pytest.mark.parametrize(
    ("params", "path"),
    [
        ({"features": ["mean"], "bands": [[0, 5]]}, ("bands",)),
        ({"features": ["bands"], "bands": []}, ("bands",)),
        ({"features": ["bands"], "bands": [[0, 5], [5, 2]]}, ("bands", 1)),
        ({"features": ["bands"], "bands": [[-1, 5]]}, ("bands", 0)),
        ({"features": ["bands"], "bands": [[0, 5, 9]]}, ("bands", 0)),
        ({"features": ["bands"], "bands": [[0, 5]], "rate": 0}, ("rate",)),
        ({"features": ["bands"], "bands": [[0, 5]], "rate": -3.0}, ("rate",)),
        ({"on_late": "keep"}, ("on_late",)),
    ],
)
def test_bad_band_and_late_params(params: dict[str, Any], path: tuple[Any, ...]) -> None:
    for cls, base in ((Tumbling, {"size": 10}), (Sliding, {"size": 10, "slide": 5})):
        with pytest.raises(ParamError) as info:
            build(cls, {**base, **params})  # type: ignore[type-abstract]
        assert info.value.path[: len(path)] == path


def test_every_feature_has_a_schema_type() -> None:
    features = ["count", "duration", "mean", "std", "var", "min", "max", "ptp", "peak"]
    features += ["rms", "slope", "skew", "kurtosis", "q0", "q50", "q100", "zero_crossings"]
    op = build(Tumbling, {"size": 10, "features": [*features, "bands"], "bands": [[0, 1], [1, 9]]})
    schema = op.schema({"v": "float", "s": "str"})
    assert list(schema)[:2] == ["count", "duration"]
    assert schema["count"] == "int" and schema["v_zero_crossings"] == "int"
    assert [n for n in schema if n.startswith("v_band")] == ["v_band0", "v_band1"]
    assert len(schema) == len(features) + 2
    assert {t for n, t in schema.items() if n not in ("count", "v_zero_crossings")} == {"float"}


# -- known answers -----------------------------------------------------------------------------


def test_streaming_features_by_hand() -> None:
    w = one_window(
        ["count", "duration", "var", "ptp", "peak", "rms", "slope"],
        [0.0, 1.0, 2.0, 3.0],
        [-4.0, 1.0, None, 3.0],
    )
    assert w.fields == {
        "count": 4,
        "duration": 3.0,
        "v_var": pytest.approx(np.var([-4.0, 1.0, 3.0])),
        "v_ptp": 7.0,
        "v_peak": 4.0,
        "v_rms": pytest.approx(math.sqrt((16 + 1 + 9) / 3)),
        "v_slope": pytest.approx(np.polyfit([0.0, 1.0, 3.0], [-4.0, 1.0, 3.0], 1)[0]),
    }


def test_slope_of_a_ramp_with_epoch_times() -> None:
    times = [0.1 * i for i in range(50)]
    w = one_window(["slope"], times, [3.0 - 0.25 * t for t in times])
    assert w.fields["v_slope"] == pytest.approx(-0.25, rel=1e-6)


def test_slope_needs_two_distinct_times() -> None:
    assert one_window(["slope"], [5.0], [1.0]).fields == {"v_slope": None}
    assert one_window(["slope"], [5.0, 5.0], [1.0, 2.0]).fields == {"v_slope": None}


def test_quantiles_are_exact() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    w = one_window(["q0", "q25", "q50", "q95", "q100"], list(range(6)), values)
    expected = np.quantile(values, [0, 0.25, 0.5, 0.95, 1.0])
    assert list(w.fields.values()) == pytest.approx(list(expected))
    assert w.fields["v_q50"] == 3.5


def test_skew_and_kurtosis_of_equal_values_are_undefined() -> None:
    w = one_window(["skew", "kurtosis", "std"], [0, 1, 2], [2.5, 2.5, 2.5])
    assert w.fields == {"v_skew": None, "v_kurtosis": None, "v_std": 0.0}


def test_zero_crossings_around_the_mean_in_time_order() -> None:
    # Arrival order differs from time order (lateness allows it): time order counts.
    times = [0.0, 2.0, 1.0, 3.0, 4.0]
    values = [11.0, 11.0, 9.0, 9.0, 10.0]  # in time order: 11 9 11 9 10, mean 10
    w = one_window(["zero_crossings"], times, values)
    assert w.fields == {"v_zero_crossings": 3}  # the value equal to the mean is skipped
    assert type(w.fields["v_zero_crossings"]) is int


def test_band_energies_of_a_sine() -> None:
    rate, f, amplitude = 50.0, 3.0, 2.0
    times = [i / rate for i in range(100)]  # two seconds: whole periods
    values = [7.0 + amplitude * math.sin(2 * math.pi * f * t) for t in times]
    w = one_window(
        ["var", "bands"], times, values, bands=[[0, 5], [5, 12.5], [12.5, 30]], rate=rate
    )
    assert w.fields["v_band0"] == pytest.approx(amplitude**2 / 2)  # the power of the sine
    assert w.fields["v_band1"] == pytest.approx(0.0, abs=1e-12)
    assert w.fields["v_band2"] == pytest.approx(0.0, abs=1e-12)  # the offset is removed
    total = w.fields["v_band0"] + w.fields["v_band1"] + w.fields["v_band2"]
    assert total == pytest.approx(w.fields["v_var"])


def test_band_rate_is_derived_from_timestamps() -> None:
    rate = 40.0
    times = [i / rate for i in range(80)]
    values = [math.sin(2 * math.pi * 15.0 * t) for t in times]
    w = one_window(["bands"], times, values, bands=[[0, 10], [10, 20]])
    assert w.fields["v_band0"] == pytest.approx(0.0, abs=1e-9)
    assert w.fields["v_band1"] == pytest.approx(0.5, rel=0.02)
    lone = one_window(["bands"], [1.0], [3.0], bands=[[0, 10]])
    assert lone.fields == {"v_band0": None}  # one event: no rate to derive


def test_fields_without_values_give_none_for_every_feature() -> None:
    features = ["mean", "slope", "skew", "q50", "zero_crossings", "bands"]
    w = one_window(features, [0.0, 1.0], [None, math.nan], bands=[[0, 1]], rate=1.0)
    assert set(w.fields.values()) == {None}


def test_duration_is_window_level() -> None:
    op = build(Tumbling, {"size": 10, "fields": ["v"], "features": ["duration", "count"]})
    for i, t in enumerate([3.0, 1.0, 7.5]):
        op.process(ev(t, i, v=1.0))
    (w,) = op.on_tick(math.inf)
    assert w.fields == {"duration": 6.5, "count": 3}


def test_tumbling_late_events_emitted_as_corrections() -> None:
    op = build(
        Tumbling, {"size": 10, "fields": ["v"], "features": ["count", "q50"], "on_late": "emit"}
    )
    op.process(ev(1.0, v=1.0))
    (closed,) = op.process(ev(12.0, v=2.0))
    (late,) = op.process(ev(9.0, v=5.0, flags=IMPUTED))
    assert (late.seq, late.time) == (closed.seq, closed.time) == (0, 10.0)
    assert late.flags == LATE | IMPUTED
    assert late.fields == {"count": 1, "v_q50": 5.0}
    assert op.metrics()["late"] == 1


def test_discovered_fields_with_buffered_features() -> None:
    op = build(Tumbling, {"size": 10, "features": ["q50", "slope"]})  # never bound
    for i, (t, fields) in enumerate([(0.0, {"a": 1.0}), (1.0, {"a": 3.0, "b": 2}), (2.0, {})]):
        op.process(ev(t, i, **fields))
    (w,) = op.on_tick(math.inf)
    assert w.fields == {"a_q50": 2.0, "a_slope": 2.0, "b_q50": 2.0, "b_slope": None}


def test_snapshot_restores_buffers() -> None:
    params = {"size": 10, "fields": ["v"], "features": ["q50", "slope", "zero_crossings"]}
    op = build(Tumbling, params)
    for i in range(15):
        op.process(ev(float(i), i, v=float(i % 4)))
    twin = op.clone()
    twin.restore(op.snapshot())
    rest = [ev(15.0 + i, v=float(i)) for i in range(10)]
    a = [e for x in rest for e in op.process(x)] + list(op.on_tick(math.inf))
    b = [e for x in rest for e in twin.process(x)] + list(twin.on_tick(math.inf))
    assert a == b


# -- against numpy and scipy -------------------------------------------------------------------

ALL = ["mean", "std", "var", "min", "max", "ptp", "peak", "rms", "slope", "skew", "kurtosis"]
ALL += ["q5", "q25", "q50", "q75", "q95", "zero_crossings", "bands"]
BANDS = [[0.0, 1.0], [1.0, 2.5], [2.5, 100.0]]

samples = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=900_000).map(lambda ms: ms / 1000),  # distinct at T0
        st.floats(min_value=-1e4, max_value=1e4, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda r: r[0],
)


def _zero_crossings(values: np.ndarray) -> int:
    signs = [s for s in np.sign(values - values.mean()) if s != 0]
    return sum(1 for a, b in itertools.pairwise(signs) if a != b)


def _bands_direct(values: np.ndarray, rate: float) -> list[float]:
    """Band power from the full two-sided spectrum, |f| in [lo, hi)."""
    d = values - values.mean()
    spectrum = np.abs(np.fft.fft(d)) ** 2 / d.size**2
    freqs = np.abs(np.fft.fftfreq(d.size, d=1.0 / rate))
    return [float(spectrum[(freqs >= lo) & (freqs < hi)].sum()) for lo, hi in BANDS]


@settings(max_examples=200, deadline=None)
@given(rows=samples)
def test_features_match_numpy_and_scipy(rows: list[tuple[float, float]]) -> None:
    w = one_window(ALL, [t for t, _ in rows], [v for _, v in rows], bands=BANDS, rate=5.0)
    by_time = sorted(rows)
    times = np.array([T0 + t for t, _ in by_time])  # the times the operator sees
    data = np.array([v for _, v in by_time])
    f = w.fields
    scale = max(1.0, float(np.abs(data).max()))
    close = {"rel": 1e-9, "abs": 1e-9 * scale}
    assert f["v_mean"] == pytest.approx(data.mean(), **close)
    assert f["v_std"] == pytest.approx(data.std(), rel=1e-7, abs=1e-6 * scale)
    assert f["v_var"] == pytest.approx(data.var(), rel=1e-7, abs=1e-6 * scale**2)
    assert (f["v_min"], f["v_max"]) == (data.min(), data.max())
    assert f["v_ptp"] == np.ptp(data)
    assert f["v_peak"] == np.abs(data).max()
    assert f["v_rms"] == pytest.approx(math.sqrt(np.mean(data**2)), **close)
    quantiles = np.quantile(data, [0.05, 0.25, 0.5, 0.75, 0.95])
    assert [f[f"v_q{p}"] for p in (5, 25, 50, 75, 95)] == pytest.approx(list(quantiles), **close)
    assert f["v_zero_crossings"] == _zero_crossings(data)
    assert [f[f"v_band{i}"] for i in range(3)] == pytest.approx(
        _bands_direct(data, 5.0), rel=1e-7, abs=1e-7 * scale**2
    )
    if len(rows) > 1:
        slope = np.polyfit(times - times[0], data, 1)[0]
        assert f["v_slope"] == pytest.approx(slope, rel=1e-6, abs=1e-6 * scale)
    else:
        assert f["v_slope"] is None
    if data.std() <= 1e-6 * scale:  # (almost) equal values: the moments are rounding noise
        assert all(f[k] is None or math.isfinite(f[k]) for k in ("v_skew", "v_kurtosis"))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skew, kurtosis = scipy.stats.skew(data), scipy.stats.kurtosis(data)
    assert f["v_skew"] == pytest.approx(skew, rel=1e-6, abs=1e-6)
    assert f["v_kurtosis"] == pytest.approx(kurtosis, rel=1e-6, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(rows=samples, cut=st.integers(min_value=0, max_value=60))
def test_merged_accumulators_equal_one_pass(rows: list[tuple[float, float]], cut: int) -> None:
    spec = parse_features(["mean", "std", "min", "max", "slope", "q50"], None, None)
    whole, left, right = spec.new_acc(), spec.new_acc(), spec.new_acc()
    for i, (t, v) in enumerate(rows):
        add_value(whole, v, T0 + t)
        add_value(left if i < cut else right, v, T0 + t)
    merged = merge(left, right)
    assert merged[N] == whole[N]
    assert merged[MEAN] == pytest.approx(whole[MEAN], rel=1e-9, abs=1e-9)
    assert merged[M2] == pytest.approx(whole[M2], rel=1e-7, abs=1e-3)
    assert merged[MIN : MAX + 1] == whole[MIN : MAX + 1]
    assert merged[MT] + merged[FIRST_TIME] == pytest.approx(
        whole[MT] + whole[FIRST_TIME], rel=1e-15
    )
    assert merged[M2T] == pytest.approx(whole[M2T], rel=1e-7, abs=1e-9)
    assert merged[CTV] == pytest.approx(whole[CTV], rel=1e-7, abs=1e-6)
    assert list(merged[VS]) == [v for _, v in rows]
    assert list(merged[TS]) == [T0 + t for t, _ in rows]


def test_sessions_and_sliding_windows_share_the_features() -> None:
    params = {"fields": ["v"], "features": ["count", "q50", "rms"]}
    sliding = build(Sliding, {"size": 100, "slide": 100, **params})
    session = build(Session, {"gap": 100, **params})
    tumbling = build(Tumbling, {"size": 100, **params})
    outs = []
    for op in (sliding, session, tumbling):
        for i, v in enumerate([3.0, -4.0, 0.0]):
            op.process(ev(float(i), i, v=v))
        (w,) = op.on_tick(math.inf)
        outs.append(w.fields)
    assert outs[0] == outs[1] == outs[2] == {"count": 3, "v_q50": 0.0, "v_rms": 2.886751345948129}
