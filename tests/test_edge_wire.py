"""Wire compatibility of the edge agent with fogrt, both ways, over random inputs.

The agent's modules run here under CPython — the same source that runs on the board (the
MicroPython runs of the same code are in test_edge_micropython.py). What the agent encodes,
fogrt decodes to the same readings (float32-rounded, as the agent sends floats), byte for
byte what fogrt's own encoder produces; control deltas fogrt encodes, the agent decodes and
applies to the same record. The dual-prediction policy keeps the fog's reconstruction
within epsilon of every reading.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.ingest.wire import (
    CONTROL_KEYS,
    MAX_BOOT,
    MAX_CLOCK,
    MAX_SEQ,
    Control,
    UplinkDecoder,
    apply_delta,
    encode_control_delta,
    encode_uplink,
)
from tests.edge.support import agent_on_path

agent_on_path()
from fogagent import mpack, wire  # noqa: E402
from fogagent.predictor import Predictor  # noqa: E402

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,11}", fullmatch=True)
DEVICE = st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True)
TYPES = st.sampled_from(["float", "int", "bool", "str"])


def f32(x: float) -> float:
    out: float = struct.unpack(">f", struct.pack(">f", x))[0]
    return out


def value(kind: str) -> st.SearchStrategy[Any]:
    base: dict[str, st.SearchStrategy[Any]] = {
        # fogrt's reference encoder refuses floats beyond float32's range (the agent's
        # answer to those, inf, is tested below)
        "float": st.floats(-3.4e38, 3.4e38),
        "int": st.integers(-(2**63), 2**64 - 1),
        "bool": st.booleans(),
        "str": st.text(max_size=40).filter(lambda s: len(s.encode()) <= 256),
    }
    return st.none() | base[kind]


@st.composite
def uplinks(draw: st.DrawFn) -> dict[str, Any]:
    schema = draw(st.dictionaries(NAMES, TYPES, min_size=1, max_size=8))
    names = list(schema)
    readings = draw(
        st.lists(
            st.tuples(
                st.integers(0, 2**32 - 1),
                st.tuples(*(value(schema[n]) for n in names)),
            ),
            min_size=1,
            max_size=20,
        )
    )
    return {
        "schema": schema,
        "device": draw(DEVICE),
        "boot": draw(st.integers(0, MAX_BOOT)),
        "seq": draw(st.integers(0, MAX_SEQ)),
        "version": draw(st.integers(0, 2**32 - 1)),
        "battery": draw(st.none() | st.integers(0, 10000)),
        "clock": draw(st.none() | st.integers(0, int(MAX_CLOCK))),
        "readings": readings,
    }


@settings(max_examples=40, deadline=None)
@given(uplinks())
def test_what_the_agent_encodes_fogrt_decodes_identically(case: dict[str, Any]) -> None:
    schema, names = case["schema"], list(case["schema"])
    now = 10**12
    body = wire.uplink(
        bytearray(),
        case["device"],
        case["boot"],
        case["seq"],
        [[now - age, list(values)] for age, values in case["readings"]],
        now,
        case["version"],
        case["battery"],
        0,
        case["clock"],
    )
    reference = encode_uplink(
        case["device"],
        case["boot"],
        case["seq"],
        [(age / 1000, dict(zip(names, values, strict=True))) for age, values in case["readings"]],
        control_version=case["version"],
        battery_mv=case["battery"],
        clock=case["clock"],
        positional_fields=names,
        float32=True,
    )
    assert bytes(body) == reference
    up = UplinkDecoder(schema).decode(bytes(body))
    assert (up.device, up.boot, up.seq, up.control_version, up.battery_mv, up.clock) == (
        case["device"],
        case["boot"],
        case["seq"],
        case["version"],
        case["battery"],
        None if case["clock"] is None else float(case["clock"]),
    )
    for (age, values), (age_s, decoded) in zip(case["readings"], up.readings, strict=True):
        assert age_s == age / 1000
        for name, v in zip(names, values, strict=True):
            want = f32(v) if schema[name] == "float" and v is not None else v
            assert decoded[name] == want, (name, v, decoded[name])


def test_a_float_beyond_float32_goes_as_infinity_and_arrives_missing() -> None:
    body = wire.uplink(bytearray(), "d", 0, 0, [[0, [1e39, -1e300, 2.0]]], 0, dropped=5)
    up = UplinkDecoder({"a": "float", "b": "float", "c": "float"}).decode(bytes(body))
    assert up.readings[0][1] == {"a": None, "b": None, "c": 2.0} and up.nonfinite == 2
    assert mpack.unpackb(bytes(body))["x"] == 5  # the dropped count: ignored by the decoder


CONTROLS = st.builds(
    Control,
    interval=st.integers(1, 604800),
    sample_period=st.floats(1e-3, 86400),
    tx=st.sampled_from(["always", "delta", "predict"]),
    epsilon=st.floats(0, 1e300),
    coeffs=st.lists(st.floats(-1e300, 1e300), max_size=16).map(tuple),
    power_mode=st.sampled_from(["none", "min", "max"]),
    burst_until=st.integers(0, 2**32 - 1),
    batch=st.integers(1, 1024),
)


@settings(max_examples=80, deadline=None)
@given(CONTROLS, CONTROLS | st.none(), st.integers(0, 2**32 - 1))
def test_control_deltas_fogrt_encodes_the_agent_applies(
    current: Control, since: Control | None, version: int
) -> None:
    body = encode_control_delta(current, version, since)
    delta = wire.decode_control(body)
    control = wire.default_control()
    if since is not None:
        control.update({k: list(v) if isinstance(v, tuple) else v for k, v in since.wire().items()})
    wire.apply_control(control, delta)
    expected = (
        apply_delta(since or Control(), delta).wire() if delta else (since or Control()).wire()
    )
    assert {k: control[k] for k in CONTROL_KEYS} == expected
    assert control["v"] == (version if body else 0)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=20) | st.dictionaries(st.text(max_size=8), inner, max_size=20)
    ),
    max_leaves=15,
)


@settings(max_examples=60, deadline=None)
@given(JSONISH)
def test_the_agents_msgpack_round_trips_and_agrees_with_msgpack_python(obj: Any) -> None:
    packed = mpack.packb(obj, f64=True)  # the RTC state's encoding
    assert mpack.unpackb(packed) == obj
    assert msgpack.unpackb(packed, raw=False, strict_map_key=False) == obj
    assert mpack.unpackb(msgpack.packb(obj, use_bin_type=True)) == obj


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(-1000, 1000), min_size=1, max_size=200),
    st.floats(0.01, 10),
    st.sampled_from([[], [0.0, 1.0], [0.0, 2.0, -1.0], [1.0, 0.5, 0.25, 0.25]]),
)
def test_dual_prediction_keeps_the_fogs_reconstruction_within_epsilon(
    xs: list[float], epsilon: float, coeffs: list[float]
) -> None:
    """What the fog rebuilds — the reading when sent, the same forecast otherwise — is never
    more than epsilon off what the device measured."""
    control = {**wire.default_control(), "tx": "predict", "e": epsilon, "c": coeffs}
    device = Predictor([[]], [None])
    fog_history: list[float] = []
    c = coeffs or [0.0, 1.0]
    for x in xs:
        sent = device.check([x], control)
        device.commit([x], sent, control)
        forecast = c[0]
        for i, past in enumerate(fog_history[: len(c) - 1]):
            forecast += c[i + 1] * past  # the agent's order of additions, bit for bit
        rebuilt = x if sent else forecast
        assert abs(rebuilt - x) <= epsilon or sent
        fog_history.insert(0, rebuilt)
        del fog_history[max(len(c) - 1, 1) :]
        assert device.hist[0] == fog_history  # both sides hold the same history
