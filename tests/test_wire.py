"""The CoAP wire format (``fogrt.ingest.wire``): round trips, every refusal, hostile bodies."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fogrt.errors import IngestError
from fogrt.ingest.wire import (
    CONTENT_FORMAT,
    CONTROL_KEYS,
    DEFAULT_LIMITS,
    MAX_BOOT,
    MAX_READINGS,
    MAX_SEQ,
    Control,
    Limits,
    Registration,
    Uplink,
    UplinkDecoder,
    WireError,
    apply_delta,
    check_content_format,
    decode_control,
    decode_registration,
    decode_uplink,
    encode_control_delta,
    encode_registration,
    encode_uplink,
    event_seq,
    split_event_seq,
)
from fogrt.types import FieldType, Value

SCHEMA: dict[str, FieldType] = {"temp": "float", "hum": "int", "door": "bool", "mode": "str"}
ORDER = list(SCHEMA)
DEC = UplinkDecoder(SCHEMA)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pack(doc: Any) -> bytes:
    body: bytes = msgpack.packb(doc, use_bin_type=True)
    return body


def full(**values: Value) -> dict[str, Value]:
    """A decoded reading: every field of SCHEMA, in order, None where not given."""
    return {name: values.get(name) for name in SCHEMA}


def doc(**changes: Any) -> dict[str, Any]:
    """A valid uplink document with some keys replaced (``...`` removes a key)."""
    base: dict[str, Any] = {"d": "n1", "b": 3, "s": 42, "r": [[0, [21.5, 48, False, "auto"]]]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def refused(body: bytes, decoder: UplinkDecoder = DEC) -> WireError:
    with pytest.raises(WireError) as info:
        decoder.decode(body)
    err = info.value
    assert len(err.diagnostic.encode("ascii")) <= 100
    return err


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("positional", [True, False], ids=["compact", "map"])
def test_round_trip_both_forms(positional: bool) -> None:
    readings = [
        (0.0, full(temp=21.5, hum=48, door=False, mode="auto")),
        (1.5, full(temp=-3.25, hum=None, door=True, mode=None)),
        (60.0, full()),
        (0.001, full(temp=1e300, hum=-(2**63), door=None, mode="")),
    ]
    body = encode_uplink(
        "pump-17",
        MAX_BOOT,
        MAX_SEQ,
        readings,
        control_version=9,
        battery_mv=3712,
        battery_pct=80,
        clock=1_700_000_000.25,
        positional_fields=ORDER if positional else None,
    )
    assert DEC.decode(body) == Uplink(
        "pump-17", MAX_BOOT, MAX_SEQ, 9, 3712, 80, 1_700_000_000.25, readings, 0
    )


def test_compact_form_is_positional_and_drops_trailing_missing_values() -> None:
    body = encode_uplink("n1", 0, 0, [(0, {"temp": 1.0, "hum": None})], positional_fields=ORDER)
    assert msgpack.unpackb(body)["r"] == [[0, [1.0]]]
    assert DEC.decode(body).readings == [(0.0, full(temp=1.0))]


def test_map_form_drops_missing_values_and_optional_keys_are_omitted() -> None:
    body = encode_uplink("n1", 0, 0, [(0.25, {"hum": 5, "door": None})])
    assert msgpack.unpackb(body) == {"d": "n1", "b": 0, "s": 0, "r": [[250, {"hum": 5}]]}


def test_float32_bodies_decode_and_ints_are_accepted_for_floats() -> None:
    body = encode_uplink("n1", 0, 0, [(0, {"temp": 21.5})], positional_fields=ORDER, float32=True)
    assert b"\xca" in body and b"\xcb" not in body
    assert DEC.decode(body).readings[0][1]["temp"] == 21.5
    value = DEC.decode(pack(doc(r=[[0, [21]]]))).readings[0][1]["temp"]
    assert value == 21.0 and type(value) is float


def test_keys_in_any_order_and_nil_optional_keys_are_absent() -> None:
    body = pack({"r": [[7, {"mode": "x"}]], "t": None, "v": None, "s": 1, "b": 2, "d": "a"})
    assert DEC.decode(body) == Uplink("a", 2, 1, readings=[(0.007, full(mode="x"))])


def test_events_key_seq_and_time() -> None:
    readings = [(2.0, full(temp=1.0)), (1.0, full(temp=2.0)), (0.0, full(temp=3.0))]
    up = DEC.decode(encode_uplink("n1", 5, 77, readings, positional_fields=ORDER))
    events = up.events(arrival=1000.0)
    assert [(e.key, split_event_seq(e.seq), e.time, e.arrival) for e in events] == [
        ("n1", (5, 77, 0), 998.0, 1000.0),
        ("n1", (5, 77, 1), 999.0, 1000.0),
        ("n1", (5, 77, 2), 1000.0, 1000.0),
    ]
    assert [e.fields["temp"] for e in events] == [1.0, 2.0, 3.0]
    clocked = dataclasses.replace(up, clock=500.0)
    assert [e.time for e in clocked.events(arrival=1000.0)] == [498.0, 499.0, 500.0]


def test_event_seq_is_unique_and_ordered_like_boot_seq_index() -> None:
    triples = [(0, 0, 0), (0, 0, 1), (0, 0, MAX_READINGS - 1), (0, 1, 0), (0, MAX_SEQ, 1023)]
    triples += [(1, 0, 0), (MAX_BOOT, MAX_SEQ, MAX_READINGS - 1)]
    values = [event_seq(*t) for t in triples]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert [split_event_seq(v) for v in values] == triples
    assert values[-1] == 2**63 - 1


def test_decode_uplink_helper_and_error_type() -> None:
    assert decode_uplink(pack(doc()), SCHEMA).device == "n1"
    with pytest.raises(IngestError):
        decode_uplink(b"", SCHEMA)


# -- the documentation -------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"


def _blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def _hex_dump(block: str) -> bytes:
    """The bytes of an annotated dump: the first column of each line (split at 2+ spaces)."""
    return bytes.fromhex(
        " ".join(re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines())
    )


def test_documented_hex_dumps_and_reference_encoder() -> None:
    uplink_dump, control_dump = (_hex_dump(b) for b in _blocks(""))
    body = encode_uplink(
        "n1",
        3,
        42,
        [(0.0, {"temp": 21.5, "hum": 48, "door": False})],
        battery_mv=3712,
        positional_fields=["temp", "hum", "door"],
        float32=True,
    )
    assert uplink_dump == body and len(body) == 30
    up = UplinkDecoder({"temp": "float", "hum": "int", "door": "bool"}).decode(body)
    assert (up.device, up.boot, up.seq, up.battery_mv) == ("n1", 3, 42, 3712)
    assert control_dump == encode_control_delta(
        Control(interval=300, tx="delta", epsilon=0.25), 7, Control()
    )
    (micropython,) = _blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(micropython, str(DOC), "exec"), namespace)
    assert namespace["uplink"]("n1", 3, 42, [(0, [21.5, 48, False])], battery_mv=3712) == body
    out = bytearray()
    sample = {
        "k": [None, True, -1, -33, 200, 70000, 2**40, 0.5, "x" * 40, "y" * 300, list(range(20))]
    }
    namespace["pack"](sample, out)
    assert msgpack.unpackb(bytes(out)) == sample


# -- non-finite floats -----------------------------------------------------------------------


def test_nonfinite_floats_become_missing_and_are_counted() -> None:
    rows = [[0, [math.nan, 1]], [0, {"temp": math.inf}], [0, [-math.inf]], [0, [2.5]]]
    up = DEC.decode(pack(doc(r=rows)))
    assert [r[1]["temp"] for r in up.readings] == [None, None, None, 2.5]
    assert up.readings[0][1]["hum"] == 1
    assert up.nonfinite == 3
    one = pack({"d": "a", "b": 0, "s": 0, "r": [[0, [0.0]]]})
    one = one.replace(b"\xcb" + struct.pack(">d", 0.0), b"\xca" + struct.pack(">f", math.nan))
    assert DEC.decode(one).nonfinite == 1


FLOATS: dict[str, FieldType] = {"a": "float", "b": "float", "c": "float"}
float_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, -0.0, math.nan, math.inf, -math.inf]),
    st.integers(-(2**63), 2**64 - 1),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
)


@FAST
@given(
    rows=st.lists(
        st.lists(float_values, max_size=4) | st.dictionaries(st.sampled_from("abcx"), float_values),
        min_size=1,
        max_size=12,
    ),
)
def test_all_float_fast_path_agrees_with_the_general_checks(rows: list[Any]) -> None:
    """The all-float fast path (every value a finite float) must decide as the general one."""
    fast = UplinkDecoder(FLOATS)
    general = UplinkDecoder(FLOATS)
    general._float_row = None
    body = pack({"d": "n1", "b": 0, "s": 1, "r": [[i, r] for i, r in enumerate(rows)]})
    try:
        want = general.decode(body)
    except WireError as exc:
        assert refused(body, fast).diagnostic == exc.diagnostic
        return
    got = fast.decode(body)
    assert got.nonfinite == want.nonfinite
    assert [a for a, _ in got.readings] == [a for a, _ in want.readings]
    for (_, g), (_, w) in zip(got.readings, want.readings, strict=True):
        assert list(g) == list(FLOATS)
        assert [repr(v) for v in g.values()] == [repr(v) for v in w.values()]


def test_all_float_fast_path_edge_cases() -> None:
    dec = UplinkDecoder(FLOATS)
    rows = [
        [0, [1.5, 2.5, 3.5]],  # the fast path
        [1, [1e308, 1e308, 1e308]],  # huge but finite
        [2, [math.nan, 1.0, 2.0]],  # NaN: missing, counted
        [3, [1.0, 2, 3.0]],  # an int for a float
        [4, [1.0, None, 3.0]],  # missing
        [5, [1.0, 2.0]],  # shorter
    ]
    up = dec.decode(pack({"d": "n1", "b": 0, "s": 1, "r": rows}))
    assert [list(values.values()) for _, values in up.readings] == [
        [1.5, 2.5, 3.5],
        [1e308, 1e308, 1e308],
        [None, 1.0, 2.0],
        [1.0, 2.0, 3.0],
        [1.0, None, 3.0],
        [1.0, 2.0, None],
    ]
    assert type(up.readings[3][1]["b"]) is float and up.nonfinite == 1
    err = refused(pack({"d": "n1", "b": 0, "s": 1, "r": [[0, [1.0, True, 3.0]]]}), dec)
    assert err.diagnostic == "r[0].values.b: expected float, got bool"
    odd = UplinkDecoder({"it's": "float", 'q"\\': "float", "x) or (1": "float"})
    up = odd.decode(pack({"d": "n1", "b": 0, "s": 1, "r": [[0, [1.0, 2.0, 3.0]]]}))
    assert up.readings[0][1] == {"it's": 1.0, 'q"\\': 2.0, "x) or (1": 3.0}


# -- refusals: code and exact diagnostic -----------------------------------------------------

BAD_DOCS = [
    (doc(d=...), "d: required"),
    (doc(d=7), "d: expected str, got int"),
    (doc(d=None), "d: expected str, got nil"),
    (doc(d="a b"), "d: invalid device id (1..64 of A-Z a-z 0-9 _ . : -)"),
    (doc(d="x" * 65), "d: invalid device id (1..64 of A-Z a-z 0-9 _ . : -)"),
    (doc(d=""), "d: invalid device id (1..64 of A-Z a-z 0-9 _ . : -)"),
    (doc(b=...), "b: required"),
    (doc(b=-1), "b: -1 out of range 0..2097151"),
    (doc(b=MAX_BOOT + 1), "b: 2097152 out of range 0..2097151"),
    (doc(b=True), "b: expected int, got bool"),
    (doc(b=1.0), "b: expected int, got float"),
    (doc(s=...), "s: required"),
    (doc(s=2**32), "s: 4294967296 out of range 0..4294967295"),
    (doc(v="1"), "v: expected int, got str"),
    (doc(v=-2), "v: -2 out of range 0..4294967295"),
    (doc(p=10001), "p: 10001 out of range 0..10000"),
    (doc(p=3.7), "p: expected int, got float"),
    (doc(q=101), "q: 101 out of range 0..100"),
    (doc(t="now"), "t: expected float, got str"),
    (doc(t=-1), "t: -1.0 out of range 0..1e+10"),
    (doc(t=math.nan), "t: nan out of range 0..1e+10"),
    (doc(t=math.inf), "t: inf out of range 0..1e+10"),
    (doc(r=...), "r: required"),
    (doc(r={"0": 1}), "r: expected array, got map"),
    (doc(r=[]), "r: no readings"),
    (doc(r=[5]), "r[0]: expected [age_ms, values], got int"),
    (doc(r=[[0, [1.0]], [0]]), "r[1]: expected [age_ms, values], got array of 1"),
    (doc(r=[[0, [1.0], 2]]), "r[0]: expected [age_ms, values], got array of 3"),
    (doc(r=[[0.5, [1.0]]]), "r[0].age: expected int, got float"),
    (doc(r=[[-1, [1.0]]]), "r[0].age: -1 out of range 0..4294967295"),
    (doc(r=[[2**32, [1.0]]]), "r[0].age: 4294967296 out of range 0..4294967295"),
    (doc(r=[[0, "21.5"]]), "r[0].values: expected map or array, got str"),
    (doc(r=[[0, None]]), "r[0].values: expected map or array, got nil"),
    (doc(r=[[0, [1.0, 2, True, "x", 5]]]), "r[0].values: 5 values > 4 fields"),
    (doc(r=[[0, [1.0]], [0, {"foo": 1}]]), "r[1].values.foo: unknown field"),
    (doc(r=[[0, {"t\u00e9mp": 1}]]), "r[0].values.t?mp: unknown field"),
    (doc(r=[[0, {"x" * 40: 1}]]), "r[0].values.xxxxxxxxxxxxxxxxxxxxx...: unknown field"),
    (doc(r=[[0, ["21.5"]]]), "r[0].values.temp: expected float, got str"),
    (doc(r=[[0, [True]]]), "r[0].values.temp: expected float, got bool"),
    (doc(r=[[0, [[1.0]]]]), "r[0].values.temp: expected float, got array"),
    (doc(r=[[0, [{"a": 1}]]]), "r[0].values.temp: expected float, got map"),
    (doc(r=[[0, [None, 4.0]]]), "r[0].values.hum: expected int, got float"),
    (doc(r=[[0, {"hum": False}]]), "r[0].values.hum: expected int, got bool"),
    (doc(r=[[0, [None, None, 1]]]), "r[0].values.door: expected bool, got int"),
    (doc(r=[[0, {"mode": 1}]]), "r[0].values.mode: expected str, got int"),
    (doc(r=[[0, [b""]]]), "r[0].values.temp: expected float, got bin"),
    (doc(r=[[0, [msgpack.ExtType(5, b"")]]]), "r[0].values.temp: expected float, got ext"),
    ([1, 2], "body: expected map, got array"),
    ("d", "body: expected map, got str"),
    ({**doc(), **{f"x{i}": i for i in range(9)}}, "body: 9 unknown keys > 8"),
    (doc(x=[[[[1]]]]), "x: nested deeper than 4"),
    (doc(x={"a": {"b": {"c": {}}}}), "x: nested deeper than 4"),
]


@pytest.mark.parametrize(("document", "diagnostic"), BAD_DOCS, ids=[d for _, d in BAD_DOCS])
def test_invalid_documents_are_refused_with_a_diagnostic(document: Any, diagnostic: str) -> None:
    err = refused(pack(document))
    assert (err.code, err.diagnostic) == ("4.00", diagnostic)
    assert str(err) == f"4.00 {diagnostic}"


def test_unknown_keys_are_ignored_up_to_the_limit() -> None:
    body = pack({**doc(), **{f"x{i}": [[[i]]] for i in range(8)}})  # depth 1 + 3
    assert DEC.decode(body).seq == 42


def test_too_many_readings() -> None:
    rows = [[0, [1.0]]] * 5
    err = refused(pack(doc(r=rows)), UplinkDecoder(SCHEMA, Limits(max_readings=4)))
    assert err.diagnostic == "r: 5 readings > 4"
    # with the defaults msgpack itself stops the 257-item array
    err = refused(pack(doc(r=[[0, []]] * 257)))
    assert err.diagnostic == "msgpack: array of 257 items > max_array_len 256"
    assert DEC.decode(pack(doc(r=[[0, []]] * 256))).readings[255] == (0.0, full())


def test_diagnostics_are_clipped_to_100_ascii_bytes() -> None:
    long = "f" * 63
    dec = UplinkDecoder({long: "float"})
    err = refused(pack(doc(r=[[0, [1.0]]] * 100 + [[0, ["x"]]])), dec)
    assert len(err.diagnostic) == 100
    assert err.diagnostic == f"r[100].values.{long}: expected float, got str"[:97] + "..."
    assert WireError("4.00", "caf\u00e9\n").diagnostic == "caf??"


BAD_BODIES = [
    (b"", "4.00", "empty payload"),
    (b"\xc1", "4.00", "msgpack: invalid type byte"),
    (pack(doc())[:-1], "4.00", "msgpack: truncated"),
    (pack(doc())[:1], "4.00", "msgpack: truncated"),
    (pack(doc()) + b"\x00", "4.00", "msgpack: trailing bytes after the body"),
    (pack(doc()) + pack(doc()), "4.00", "msgpack: trailing bytes after the body"),
    (b"\xdf\xff\xff\xff\xff", "4.00", "msgpack: map of 4294967295 entries > max_map_len 64"),
    (b"\xdd\xff\xff\xff\xff", "4.00", "msgpack: array of 4294967295 items > max_array_len 256"),
    (b"\x81\xa1d\xdb\xff\xff\xff\xff", "4.00", "msgpack: truncated"),
    (b"\x81\xa1d\xda\x01\x2c" + b"a" * 300, "4.00", "msgpack: str of 300 bytes > max_str_len 256"),
    (b"\x81\xa1d\xc6\xff\xff\xff\xff", "4.00", "msgpack: truncated"),
    (b"\x81\xa1d\xc4\x01a", "4.00", "msgpack: bin not allowed"),
    (b"\x81\xa1d\xd4\x01\x00", "4.00", "msgpack: ext not allowed"),
    (b"\x81\xa1d\xc9\xff\xff\xff\xff\x01", "4.00", "msgpack: ext not allowed"),
    (b"\x81\xa1d\xd6\xff\x00\x00\x00\x01", "4.00", "msgpack: ext not allowed"),  # timestamp
    (b"\x81\xa1d\xa1\xff", "4.00", "msgpack: str is not valid UTF-8"),
    (b"\x81\x01\x02", "4.00", "msgpack: map keys must be str"),
    (b"\x81\x91\x01\x02", "4.00", "msgpack: map keys must be str"),
    (b"\x91" * 1000 + b"\xc0", "4.00", "body: expected map, got array"),
    (b"\x91" * 2000 + b"\xc0", "4.00", "msgpack: nested too deep"),
    (b"\xc7\x00\x05", "4.00", "body: expected map, got ext"),
    (b"\xc4\x00", "4.00", "body: expected map, got bin"),
    (b"\x00" * 4097, "4.13", "payload of 4097 bytes > 4096"),
]


@pytest.mark.parametrize(
    ("body", "code", "diagnostic"), BAD_BODIES, ids=[d for *_, d in BAD_BODIES]
)
def test_hostile_bodies_are_refused_cleanly(body: bytes, code: str, diagnostic: str) -> None:
    err = refused(body)
    assert (err.code, err.diagnostic) == (code, diagnostic)
    assert err.size1 == (4096 if code == "4.13" else None)


def test_deep_nesting_inside_a_value_is_a_type_error() -> None:
    head = pack({"d": "n1", "b": 0, "s": 0})
    body = b"\x84" + head[1:] + b"\xa1r\x91\x92\x00\x91" + b"\x91" * 1000 + b"\xc0"
    assert refused(body).diagnostic == "r[0].values.temp: expected float, got array"


def test_payload_cap_is_configurable() -> None:
    dec = UplinkDecoder(SCHEMA, Limits(max_payload=20))
    body = pack(doc())
    err = refused(body, dec)
    assert (err.code, err.diagnostic, err.size1) == (
        "4.13",
        f"payload of {len(body)} bytes > 20",
        20,
    )


def test_hostile_headers_do_not_allocate() -> None:
    """A header claiming 2**32 entries allocates nothing; nesting is bounded by msgpack's
    stack (1024) times max_array_len slots (about 2 MiB with the defaults), all transient."""
    cases = [b"\xdf\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\x81\xa1d\xdb\xff\xff\xff\xff"]
    for body in [*cases, b"\xdc\x00\xff" * 1365]:
        tracemalloc.start()
        try:
            with pytest.raises(WireError):
                DEC.decode(body)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < (4 << 20 if len(body) > 100 else 64 << 10), (body[:8], peak)


def test_content_format() -> None:
    check_content_format(None)
    check_content_format(CONTENT_FORMAT)
    for other in (0, 50, 60, 65000):
        with pytest.raises(WireError) as info:
            check_content_format(other)
        assert info.value.code == "4.15"
        assert info.value.diagnostic == f"content-format {other} not accepted (use 65362 or none)"


def test_limits_are_checked() -> None:
    for bad in (
        {"max_readings": 0},
        {"max_readings": 1025},
        {"max_payload": 0},
        {"max_str_len": -1},
    ):
        with pytest.raises(ValueError):
            Limits(**bad)
    with pytest.raises(ValueError):
        UplinkDecoder({})
    with pytest.raises(ValueError):
        UplinkDecoder({"x": "complex"})  # type: ignore[dict-item]
    wide: dict[str, FieldType] = {f"f{i}": "int" for i in range(300)}
    body = pack(doc(r=[[0, {f"f{i}": i for i in range(300)}]]))
    assert len(UplinkDecoder(wide, Limits(max_payload=8192)).decode(body).readings[0][1]) == 300


def test_encoder_refuses_what_the_decoder_would() -> None:
    with pytest.raises(ValueError, match="device"):
        encode_uplink("a b", 0, 0, [(0, {})])
    with pytest.raises(ValueError, match="boot"):
        encode_uplink("a", -1, 0, [(0, {})])
    with pytest.raises(ValueError, match="seq"):
        encode_uplink("a", 0, MAX_SEQ + 1, [(0, {})])
    with pytest.raises(ValueError, match="age"):
        encode_uplink("a", 0, 0, [(-1, {})])
    with pytest.raises(ValueError, match="age"):
        encode_uplink("a", 0, 0, [(math.inf, {})])
    with pytest.raises(ValueError, match="battery_mv"):
        encode_uplink("a", 0, 0, [(0, {})], battery_mv=20000)
    with pytest.raises(ValueError, match="control_version"):
        encode_uplink("a", 0, 0, [(0, {})], control_version=-1)
    with pytest.raises(ValueError, match="clock"):
        encode_uplink("a", 0, 0, [(0, {})], clock=math.nan)
    with pytest.raises(ValueError, match="readings"):
        encode_uplink("a", 0, 0, [])
    with pytest.raises(ValueError, match="positional_fields"):
        encode_uplink("a", 0, 0, [(0, {"other": 1})], positional_fields=ORDER)


# -- property tests --------------------------------------------------------------------------


PY_TYPES = {"float": float, "int": int, "bool": bool, "str": str}


def _decodes_or_refuses(body: bytes) -> None:
    """Either a WireError, or an uplink whose every reading fits the schema."""
    try:
        up = DEC.decode(body)
    except WireError as err:
        assert err.code in ("4.00", "4.13")
        assert len(err.diagnostic.encode("ascii")) <= 100
        return
    assert 1 <= len(up.readings) <= DEFAULT_LIMITS.max_readings
    for age, values in up.readings:
        assert type(age) is float and age >= 0
        assert list(values) == ORDER
        for name, value in values.items():
            assert value is None or type(value) is PY_TYPES[SCHEMA[name]]
            assert not (type(value) is float and not math.isfinite(value))


@FAST
@given(st.binary(max_size=600))
def test_random_bytes_only_ever_raise_wire_error(body: bytes) -> None:
    _decodes_or_refuses(body)
    for decode in (decode_control, decode_registration):
        with contextlib.suppress(WireError):
            decode(body)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.floats(width=32)
    | st.text(max_size=10)
    | st.sampled_from([*SCHEMA, "d", "b", "s", "r", "v", "t"])
)
msgpack_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=4) | st.sampled_from(list(SCHEMA)), children, max_size=5)
    ),
    max_leaves=40,
)


@FAST
@given(msgpack_values)
def test_random_structures_only_ever_raise_wire_error(value: Any) -> None:
    _decodes_or_refuses(pack(value))


field_values = scalars | msgpack_values
near_valid = st.fixed_dictionaries(
    {
        "d": st.sampled_from(["n1", "a:b", "x" * 64]),
        "b": st.integers(0, MAX_BOOT),
        "s": st.integers(0, MAX_SEQ),
        "r": st.lists(
            st.tuples(
                st.integers(-1, 2**32),
                st.lists(field_values, max_size=5)
                | st.dictionaries(st.sampled_from(ORDER) | st.text(max_size=3), field_values)
                | msgpack_values,
            )
            | msgpack_values,
            max_size=4,
        ),
    },
    optional={
        "v": st.integers(0, 5) | msgpack_values,
        "p": st.integers(-1, 10001),
        "t": st.floats(0, 1e10) | msgpack_values,
        "x": msgpack_values,
    },
)


@FAST
@given(near_valid)
def test_near_valid_documents_only_ever_raise_wire_error(document: Any) -> None:
    _decodes_or_refuses(pack(document))


@FAST
@given(st.data())
def test_mutated_valid_bodies_only_ever_raise_wire_error(data: st.DataObject) -> None:
    body = bytearray(pack(doc(r=[[0, [21.5, 48, False, "auto"]], [5, {"hum": 1}]], p=3000)))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(body)))
    _decodes_or_refuses(bytes(body[:cut]))


FIELD_VALUES: dict[str, st.SearchStrategy[Value]] = {
    "temp": st.none() | st.floats(allow_nan=False, allow_infinity=False),
    "hum": st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    "door": st.none() | st.booleans(),
    "mode": st.none() | st.text(max_size=20),
}
readings = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1).map(lambda ms: ms / 1000),
        st.fixed_dictionaries({}, optional=FIELD_VALUES),
    ),
    min_size=1,
    max_size=12,
)


@FAST
@given(
    device=st.from_regex(r"[A-Za-z0-9_.:\-]{1,64}", fullmatch=True),
    boot=st.integers(0, MAX_BOOT),
    seq=st.integers(0, MAX_SEQ),
    rows=readings,
    version=st.integers(0, 2**32 - 1),
    battery_mv=st.none() | st.integers(0, 10000),
    battery_pct=st.none() | st.integers(0, 100),
    clock=st.none() | st.floats(0, 1e10),
    positional=st.booleans(),
)
def test_random_valid_uplinks_round_trip(
    device: str,
    boot: int,
    seq: int,
    rows: list[tuple[float, dict[str, Value]]],
    version: int,
    battery_mv: int | None,
    battery_pct: int | None,
    clock: float | None,
    positional: bool,
) -> None:
    body = encode_uplink(
        device,
        boot,
        seq,
        rows,
        control_version=version,
        battery_mv=battery_mv,
        battery_pct=battery_pct,
        clock=clock,
        positional_fields=ORDER if positional else None,
    )
    expected = [(age, full(**values)) for age, values in rows]
    up = DEC.decode(body)
    assert up == Uplink(device, boot, seq, version, battery_mv, battery_pct, clock, expected, 0)
    for (_, got), (_, want) in zip(up.readings, expected, strict=True):
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


# -- control ---------------------------------------------------------------------------------


def test_unchanged_control_is_an_empty_body() -> None:
    current = Control(interval=30)
    assert encode_control_delta(current, 4, Control(interval=30)) == b""
    assert decode_control(b"") == {}
    assert apply_delta(current, {}) is current


def test_delta_carries_only_the_changed_keys() -> None:
    body = encode_control_delta(Control(interval=300, tx="delta", epsilon=0.25), 7, Control())
    assert body.hex(" ") == (
        "84 a1 76 07 a1 69 cd 01 2c a2 74 78 a5 64 65 6c 74 61 a1 65 cb 3f d0 00 00 00 00 00 00"
    )  # the hex dump of docs/wire-format.md
    assert decode_control(body) == {"v": 7, "i": 300, "tx": "delta", "e": 0.25}
    same_values = encode_control_delta(Control(), 8, Control(batch=1))
    assert same_values == b""


def test_unknown_since_sends_every_key() -> None:
    current = Control(coeffs=(0.5, -1.0), power_mode="max", burst_until=1_700_000_000, batch=6)
    delta = decode_control(encode_control_delta(current, 3, None))
    assert list(delta) == ["v", *CONTROL_KEYS]
    assert apply_delta(Control(interval=5, tx="predict"), delta) == current
    assert Control().wire() == {
        "i": 60,
        "sp": 60.0,
        "tx": "always",
        "e": 0.0,
        "c": [],
        "pm": "none",
        "bu": 0,
        "bt": 1,
    }


def _control_values() -> st.SearchStrategy[Control]:
    finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300)
    return st.builds(
        Control,
        interval=st.integers(1, 7 * 86400),
        sample_period=st.floats(0.001, 86400),
        tx=st.sampled_from(["always", "delta", "predict"]),
        epsilon=st.floats(0, 1e300),
        coeffs=st.lists(finite, max_size=16).map(tuple),
        power_mode=st.sampled_from(["none", "min", "max"]),
        burst_until=st.integers(0, 2**32 - 1),
        batch=st.integers(1, 1024),
    )


@FAST
@given(_control_values(), st.none() | _control_values(), st.integers(0, 2**32 - 1))
def test_apply_delta_round_trip(current: Control, since: Control | None, version: int) -> None:
    body = encode_control_delta(current, version, since)
    delta = decode_control(body)
    base = Control() if since is None else since
    assert apply_delta(base, delta) == current
    if body:
        assert delta["v"] == version
        changed = {
            k
            for k, (attr, _) in CONTROL_KEYS.items()
            if getattr(base, attr) != getattr(current, attr)
        }
        assert set(delta) - {"v"} == (set(CONTROL_KEYS) if since is None else changed)
    else:
        assert since == current


BAD_CONTROLS = [
    ({"i": 5}, "v: required"),
    ({"v": -1}, "v: -1 out of range 0..4294967295"),
    ({"v": 1, "i": 0}, "i: 0 out of range 1..604800"),
    ({"v": 1, "i": 1.5}, "i: expected int, got float"),
    ({"v": 1, "sp": 0}, "sp: 0.0 out of range >0..86400"),
    ({"v": 1, "sp": math.nan}, "sp: nan out of range >0..86400"),
    ({"v": 1, "tx": "sometimes"}, "tx: expected one of always|delta|predict"),
    ({"v": 1, "pm": 2}, "pm: expected str, got int"),
    ({"v": 1, "e": -0.5}, "e: -0.5 out of range 0..1e+300"),
    ({"v": 1, "c": [1.0, "x"]}, "c[1]: expected float, got str"),
    ({"v": 1, "c": [0.0] * 17}, "c: 17 coefficients > 16"),
    ({"v": 1, "c": 1.0}, "c: expected array, got float"),
    ({"v": 1, "bt": 1025}, "bt: 1025 out of range 1..1024"),
    ({"v": 1, "bu": -1}, "bu: -1 out of range 0..4294967295"),
    ([1], "body: expected map, got array"),
]


@pytest.mark.parametrize(("document", "diagnostic"), BAD_CONTROLS, ids=[d for _, d in BAD_CONTROLS])
def test_bad_control_bodies(document: Any, diagnostic: str) -> None:
    with pytest.raises(WireError) as info:
        decode_control(pack(document))
    assert (info.value.code, info.value.diagnostic) == ("4.00", diagnostic)


def test_control_ignores_unknown_keys_and_accepts_ints_for_floats() -> None:
    assert decode_control(pack({"v": 2, "sp": 5, "zz": [1], "c": [1, 2.5]})) == {
        "v": 2,
        "sp": 5.0,
        "c": (1.0, 2.5),
    }


def test_control_values_are_checked() -> None:
    with pytest.raises(ValueError, match=r"Control.tx \(tx\): expected one of"):
        Control(tx="never")
    with pytest.raises(ValueError, match="version"):
        encode_control_delta(Control(), -1, None)
    assert Control(coeffs=[1, 2]).coeffs == (1.0, 2.0)  # type: ignore[arg-type]


# -- registration ----------------------------------------------------------------------------


def test_registration_round_trip() -> None:
    reg = Registration("n1", "1.2.0", ("temp", "hum", "door"), 2000, ("none", "min"))
    body = encode_registration(reg)
    assert decode_registration(body) == reg
    bare = decode_registration(pack({"d": "n2", "fw": "0.1"}))
    assert bare == Registration("n2", "0.1", (), None, ("none",))


BAD_REGISTRATIONS = [
    ({"fw": "1"}, "d: required"),
    ({"d": "n1"}, "fw: required"),
    ({"d": "n1", "fw": ""}, "fw: expected 1..64 printable ASCII characters"),
    ({"d": "n1", "fw": 1}, "fw: expected str, got int"),
    ({"d": "n1", "fw": "1", "s": "temp"}, "s: expected array, got str"),
    ({"d": "n1", "fw": "1", "s": ["temp", "9x"]}, "s[1]: invalid sensor name"),
    ({"d": "n1", "fw": "1", "s": ["a", "a"]}, "s: duplicate names"),
    ({"d": "n1", "fw": "1", "s": ["a"] * 65}, "s: 65 items > 64"),
    ({"d": "n1", "fw": "1", "cap": -1}, "cap: -1 out of range 0..1000000"),
    ({"d": "n1", "fw": "1", "pm": ["none", "turbo"]}, "pm[1]: invalid power mode"),
    ({"d": "n1", "fw": "1", "pm": [3]}, "pm[0]: expected str, got int"),
    ({"d": "n1", "fw": "1", **{f"k{i}": 0 for i in range(9)}}, "body: 9 unknown keys > 8"),
]


@pytest.mark.parametrize(
    ("document", "diagnostic"), BAD_REGISTRATIONS, ids=[d for _, d in BAD_REGISTRATIONS]
)
def test_bad_registrations(document: Any, diagnostic: str) -> None:
    with pytest.raises(WireError) as info:
        decode_registration(pack(document))
    assert (info.value.code, info.value.diagnostic) == ("4.00", diagnostic)


def test_registration_values_are_checked() -> None:
    with pytest.raises(ValueError, match="invalid device id"):
        Registration("a b", "1")
    with pytest.raises(ValueError, match="power_modes"):
        Registration("a", "1", power_modes=("fast",))
    assert DEFAULT_LIMITS.max_payload == 4096
