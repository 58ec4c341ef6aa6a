"""The RFC 7252 message codec: round trips, the RFC's examples, malformed input, the hot filter."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fogrt.errors import FogError
from fogrt.ingest import coap
from fogrt.ingest.coap import CoapFormatError, build, parse, peek_uplink

# -- strategies --------------------------------------------------------------------------------

option_numbers = st.one_of(
    st.sampled_from(sorted(coap.KNOWN_OPTIONS)),
    st.integers(0, 12),  # within the short delta form
    st.integers(13, 300),  # around the 1-byte/2-byte boundary at 269
    st.integers(0, 0xFFFF),
)
option_values = st.one_of(
    st.binary(max_size=20),
    st.binary(min_size=12, max_size=14),  # around the 13 boundary
    st.binary(min_size=266, max_size=272),  # around the 269 boundary
)
options = st.lists(st.tuples(option_numbers, option_values), max_size=8)


@st.composite
def messages(draw: st.DrawFn) -> coap.Message:
    code = draw(st.integers(0, 255))
    mtype = draw(st.integers(0, 3))
    mid = draw(st.integers(0, 0xFFFF))
    if code == coap.EMPTY:
        return coap.Message(1, mtype, code, mid, b"", [], b"")
    opts = draw(options)
    return coap.Message(
        1,
        mtype,
        code,
        mid,
        draw(st.binary(max_size=8)),
        sorted(opts, key=lambda o: o[0]),  # sorted() is stable: repeats keep their order
        draw(st.binary(max_size=64)),
    )


uplink_options = st.lists(
    st.one_of(
        st.tuples(st.just(coap.URI_PATH), st.text(max_size=20).map(str.encode)),
        st.tuples(st.just(coap.URI_HOST), st.binary(max_size=10)),
        st.tuples(st.just(coap.URI_PORT), st.binary(max_size=2)),
        st.tuples(st.just(coap.CONTENT_FORMAT), st.binary(max_size=3)),
        st.tuples(st.sampled_from([coap.BLOCK1, coap.OBSERVE, coap.OSCORE, 9999]), st.binary()),
    ),
    max_size=6,
)


# -- round trips -------------------------------------------------------------------------------


@given(messages())
@settings(max_examples=400)
def test_build_then_parse_is_identity(msg: coap.Message) -> None:
    wire = build(msg.type, msg.code, msg.mid, msg.token, msg.options, msg.payload)
    assert parse(wire) == msg


@given(st.binary(max_size=80))
@settings(max_examples=1000)
def test_random_bytes_raise_nothing_but_format_errors(data: bytes) -> None:
    try:
        msg = parse(data)
    except CoapFormatError:
        pass
    else:
        # Whatever parses re-encodes to something that parses to the same message.
        again = build(msg.type, msg.code, msg.mid, msg.token, msg.options, msg.payload)
        assert parse(again) == msg
    peek_uplink(data)  # never raises


@given(st.binary(max_size=80))
@settings(max_examples=300)
def test_random_bytes_behind_a_post_header_never_break_peek(tail: bytes) -> None:
    data = bytes((0x40, coap.POST, 0, 1)) + tail
    result = peek_uplink(data)
    if result is not None:
        msg = parse(data)  # anything peek accepts is well-formed
        assert result[5] == msg.payload


def test_build_sorts_options_and_keeps_repeats_in_order() -> None:
    wire = build(coap.CON, "0.02", 1, b"", [(12, b"\x32"), (11, b"r"), (11, b"t1")])
    assert parse(wire).options == [(11, b"r"), (11, b"t1"), (12, b"\x32")]


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="token"):
        build(coap.CON, "0.01", 1, b"123456789")
    with pytest.raises(ValueError, match="message id"):
        build(coap.CON, "0.01", 0x10000)
    with pytest.raises(ValueError, match="Empty"):
        build(coap.CON, 0, 1, b"\x01")
    with pytest.raises(ValueError, match="option number"):
        build(coap.CON, "0.01", 1, b"", [(0x10000, b"")])
    with pytest.raises(ValueError):
        build(coap.CON, "2.4", 1)


# -- RFC 7252 examples -----------------------------------------------------------------------


def test_rfc7252_get_temperature_without_token() -> None:
    # Appendix A, figure 16: CON [0x7d34] GET /temperature; ACK [0x7d34] 2.05 "22.3 C".
    request = bytes.fromhex("40017d34bb") + b"temperature"
    assert build(coap.CON, "0.01", 0x7D34, b"", [(coap.URI_PATH, b"temperature")]) == request
    msg = parse(request)
    assert (msg.type, msg.code, msg.mid, msg.token, msg.path) == (
        coap.CON,
        coap.GET,
        0x7D34,
        b"",
        ("temperature",),
    )
    response = bytes.fromhex("60457d34ff") + b"22.3 C"
    assert build(coap.ACK, "2.05", 0x7D34, b"", (), b"22.3 C") == response
    assert parse(response).payload == b"22.3 C"


def test_rfc7252_get_temperature_with_token() -> None:
    # Appendix A, figure 17: the same exchange with token 0x20.
    request = bytes.fromhex("41017d3420bb") + b"temperature"
    msg = parse(request)
    assert msg.token == b"\x20" and msg.path == ("temperature",)
    assert build(coap.ACK, "2.05", 0x7D34, b"\x20", (), b"22.3 C") == (
        bytes.fromhex("61457d3420ff") + b"22.3 C"
    )


def test_option_deltas_use_the_extended_forms() -> None:
    wire = build(
        coap.CON,
        "0.02",
        7,
        b"",
        [(coap.BLOCK1, b"\x0e"), (coap.SIZE1, b"\x04\x00"), (coap.NO_RESPONSE, b"\x1a")],
    )
    # Block1 27 = 13 + 14 (1-byte form); Size1 60 = 27 + 33 (1-byte form, 33 - 13 = 20);
    # No-Response 258 = 60 + 198 (1-byte form, 198 - 13 = 185).
    assert wire[4:] == bytes([0xD1, 14, 0x0E, 0xD2, 20, 0x04, 0x00, 0xD1, 185, 0x1A])
    far = build(coap.CON, "0.02", 7, b"", [(2000, b"")])
    assert far[4:] == bytes([0xE0]) + (2000 - 269).to_bytes(2, "big")
    long_value = build(coap.CON, "0.02", 7, b"", [(coap.URI_PATH, b"x" * 300)])
    assert long_value[4:7] == bytes([0xBE]) + (300 - 269).to_bytes(2, "big")
    assert parse(long_value).options == [(coap.URI_PATH, b"x" * 300)]


def test_code_helpers() -> None:
    assert coap.code_to_str(68) == "2.04"
    assert coap.code_from_str("2.04") == 68
    assert coap.code_from_str("4.02") == coap.BAD_OPTION
    assert coap.code_to_str(coap.CONTINUE) == "2.31"
    assert all(coap.code_from_str(coap.code_to_str(c)) == c for c in range(256))
    for text in ("2.4", "24", "8.00", "2.32", "a.bc", "2.0x", "٢.٠٤"):
        with pytest.raises(ValueError):
            coap.code_from_str(text)


def test_option_properties_and_uint_values() -> None:
    assert coap.is_critical(coap.URI_PATH) and coap.is_critical(coap.BLOCK1)
    assert not coap.is_critical(coap.CONTENT_FORMAT) and not coap.is_critical(coap.NO_RESPONSE)
    assert coap.is_critical(coap.OSCORE) and not coap.is_critical(coap.OBSERVE)
    assert coap.encode_uint(0) == b"" and coap.encode_uint(50) == b"\x32"
    assert coap.encode_uint(65362) == b"\xff\x52"
    assert coap.decode_uint(b"") == 0 and coap.decode_uint(b"\xff\x52") == 65362


# -- malformed input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "shorter"),
        (b"\x40\x01\x00", "shorter"),
        (b"\x80\x01\x00\x01", "version"),
        (b"\x00\x01\x00\x01", "version"),
        *[(bytes([0x40 | tkl, 1, 0, 1]) + b"\x00" * 15, "token length") for tkl in range(9, 16)],
        (b"\x44\x01\x00\x01ab", "inside the token"),
        (b"\x40\x00\x00\x01\x00", "Empty"),
        (b"\x40\x01\x00\x01\xb5ab", "past the end"),
        (b"\x40\x01\x00\x01\xd0", "delta"),
        (b"\x40\x01\x00\x01\xe0\x01", "delta"),
        (b"\x40\x01\x00\x01\x1d", "length"),
        (b"\x40\x01\x00\x01\x1e\x00", "length"),
        (b"\x40\x01\x00\x01\xf0", "nibble 15"),
        (b"\x40\x01\x00\x01\x1f", "nibble 15"),
        (b"\x40\x01\x00\x01\xff", "empty payload"),
        (b"\x40\x01\x00\x01\xbbtemperature\xff", "empty payload"),
        (b"\x40\x01\x00\x01\xe0\xff\xff\xe0\xff\xff", "exceeds 65535"),
    ],
)
def test_malformed_datagrams_raise_format_errors(data: bytes, reason: str) -> None:
    with pytest.raises(CoapFormatError, match=reason) as info:
        parse(data)
    assert isinstance(info.value, FogError) and isinstance(info.value, ValueError)
    assert peek_uplink(data) is None


def test_empty_message_is_just_a_header() -> None:
    ping = coap.build_empty(coap.CON, 0xBEEF)
    assert ping == b"\x40\x00\xbe\xef"
    msg = parse(ping)
    assert msg.is_empty and msg.mid == 0xBEEF and msg.options == [] and msg.payload == b""


# -- the hot path's filter ---------------------------------------------------------------------


def test_peek_uplink_accepts_a_plain_post() -> None:
    wire = build(
        coap.NON,
        "0.02",
        0x0102,
        b"\xaa\xbb",
        [
            (coap.URI_HOST, b"fog.local"),
            (coap.URI_PORT, b"\x16\x33"),
            (coap.URI_PATH, b"r"),
            (coap.URI_PATH, b"plant-3"),
            (coap.URI_PATH, b"t\xc3\xa9"),
            (coap.CONTENT_FORMAT, coap.encode_uint(65362)),
        ],
        b"\x01\x02",
    )
    assert peek_uplink(wire) == (
        coap.NON,
        0x0102,
        b"\xaa\xbb",
        ("r", "plant-3", "té"),
        65362,
        b"\x01\x02",
    )
    assert peek_uplink(build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"r")])) == (
        coap.CON,
        1,
        b"",
        ("r",),
        None,
        b"",
    )


def test_peek_uplink_remembers_option_blocks_only_up_to_a_payload_marker() -> None:
    path = [(coap.URI_PATH, b"r"), (coap.URI_PATH, b"t1")]
    cf255 = [*path, (coap.CONTENT_FORMAT, b"\xff")]  # an option value that looks like a marker
    block = build(coap.CON, "0.02", 7, b"\x01", cf255, b"").removeprefix(b"\x41\x02\x00\x07\x01")
    assert block.endswith(b"\xff") and b"\xff" not in block[:-1]
    wires = [
        build(coap.CON, "0.02", 7, b"\x01", cf255, b"payload"),
        build(coap.NON, "0.02", 8, b"\x01\x02\x03", cf255, b"\xff\xff"),
        build(coap.CON, "0.02", 9, b"", cf255, b""),  # the same options, no payload
        build(coap.CON, "0.02", 9, b"", cf255, b"") + b"\xff",  # a marker, then nothing
        build(coap.CON, "0.02", 9, b"", path, b"x"),  # a shorter block
        build(coap.CON, "0.02", 9, b"", [*cf255, (coap.BLOCK1, b"\x0a")], b"x"),  # a longer one
        build(coap.CON, "0.02", 10, b"", [*path, (coap.CONTENT_FORMAT, b"\x01")], b"x"),
    ]
    expected = [
        (coap.CON, 7, b"\x01", ("r", "t1"), 255, b"payload"),
        (coap.NON, 8, b"\x01\x02\x03", ("r", "t1"), 255, b"\xff\xff"),
        (coap.CON, 9, b"", ("r", "t1"), 255, b""),
        None,
        (coap.CON, 9, b"", ("r", "t1"), None, b"x"),
        None,
        (coap.CON, 10, b"", ("r", "t1"), 1, b"x"),
    ]
    for _ in range(2):  # the second time round, every block has been seen
        assert [peek_uplink(w) for w in wires] == expected
    for size in range(1, 80):  # more blocks than are remembered: still the same answers
        peek_uplink(build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"x" * size)], b"y"))
        assert [peek_uplink(w) for w in wires] == expected


@pytest.mark.parametrize(
    "wire",
    [
        build(coap.CON, "0.01", 1, b"", [(coap.URI_PATH, b"r")]),  # GET
        build(coap.ACK, "0.02", 1, b"", [(coap.URI_PATH, b"r")]),  # not CON/NON
        build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"r"), (coap.BLOCK1, b"\x0a")]),
        build(coap.CON, "0.02", 1, b"", [(coap.OBSERVE, b""), (coap.URI_PATH, b"r")]),
        build(coap.CON, "0.02", 1, b"", [(coap.OSCORE, b"\x09"), (coap.URI_PATH, b"r")]),
        build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"r"), (coap.URI_QUERY, b"a=1")]),
        build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"r"), (coap.ACCEPT, b"")]),
        build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"r"), (65000, b"x")]),
        build(coap.CON, "0.02", 1, b"", [(coap.CONTENT_FORMAT, b"\x00\x00\x01")]),
        build(coap.CON, "0.02", 1, b"", [(coap.CONTENT_FORMAT, b""), (coap.CONTENT_FORMAT, b"")]),
        build(coap.CON, "0.02", 1, b"", [(coap.URI_PATH, b"\xff")]),  # not UTF-8
        b"\x40\x02\x00\x01\xb1r\xff",  # payload marker without payload
        b"\x40\x02\x00\x01\xb5r",  # truncated option
        b"\x80\x02\x00\x01",  # version 2
        b"\x49\x02\x00\x01" + b"\x00" * 9,  # token length 9
    ],
)
def test_peek_uplink_refuses_everything_else(wire: bytes) -> None:
    assert peek_uplink(wire) is None


@given(
    st.integers(0, 3),
    st.sampled_from([coap.POST, coap.GET, coap.PUT]),
    st.binary(max_size=8),
    uplink_options,
    st.binary(max_size=20),
)
@settings(max_examples=400)
def test_peek_uplink_agrees_with_parse(
    mtype: int, code: int, token: bytes, opts: list[tuple[int, bytes]], payload: bytes
) -> None:
    wire = build(mtype, code, 0x4242, token, opts, payload)
    msg = parse(wire)
    numbers = [n for n, _ in msg.options]
    cfs = msg.option_values(coap.CONTENT_FORMAT)
    plain = (
        mtype in (coap.CON, coap.NON)
        and code == coap.POST
        and set(numbers) <= coap.UPLINK_OPTIONS
        and len(cfs) <= 1
        and all(len(v) <= 2 for v in cfs)
    )
    result = peek_uplink(wire)
    if plain:
        assert result == (mtype, 0x4242, token, msg.path, msg.content_format, payload)
    else:
        assert result is None
