"""The agent's msgpack, uplink, registration and control codecs against fogrt's bytes.

Inputs (computed by fogrt in the pytest process): uplinks with the bytes
``fogrt.ingest.wire.encode_uplink(..., float32=True)`` gives, registrations, control deltas
from ``encode_control_delta`` with their decoded form, and msgpack-python encodings.
"""

from binascii import hexlify, unhexlify

from fogagent import mpack, wire


def _hex(b):
    return hexlify(bytes(b)).decode()


def test_doc_hex_dump_of_one_compact_reading(inputs):
    # docs/wire-format.md, "Hex dump: one reading, compact form" (30 bytes)
    doc = "85a164a26e31a16203a1732aa170cd0e80a17291920093ca41ac000030c2"
    body = wire.uplink(bytearray(), "n1", 3, 42, [[1000, [21.5, 48, False]]], 1000, 0, 3712)
    assert _hex(body) == doc, _hex(body)


def test_uplinks_are_byte_identical_to_fogrt(inputs):
    for case in inputs["uplinks"]:
        body = wire.uplink(
            bytearray(),
            case["device"],
            case["boot"],
            case["seq"],
            case["readings"],
            case["now"],
            case["version"],
            case["battery"],
            0,
            case["clock"],
        )
        assert _hex(body) == case["hex"], (case, _hex(body))


def test_dropped_count_goes_as_x(inputs):
    body = wire.uplink(bytearray(), "n1", 0, 1, [[5, [1.0]]], 5, 0, None, 7)
    doc = mpack.unpackb(body)
    assert doc["x"] == 7 and doc["r"] == [[0, [1.0]]], doc


def test_registration_is_byte_identical_to_fogrt(inputs):
    for case in inputs["registrations"]:
        body = wire.registration(case["device"], case["fw"], case["sensors"], case["cap"])
        assert _hex(body) == case["hex"], (case, _hex(body))


def test_control_deltas_from_fogrt_decode_and_apply(inputs):
    for case in inputs["controls"]:
        delta = wire.decode_control(unhexlify(case["hex"]))
        assert delta == case["delta"], (delta, case["delta"])
        control = wire.default_control()
        wire.apply_control(control, delta)
        assert control == case["applied"], (control, case["applied"])


def test_empty_body_is_no_change(inputs):
    assert wire.decode_control(b"") == {}


def test_bad_control_is_refused_whole(inputs):
    for hexbody, why in inputs["bad_controls"]:
        try:
            wire.decode_control(unhexlify(hexbody))
        except ValueError as e:
            assert why in str(e), (str(e), why)
        else:
            raise AssertionError("accepted " + hexbody)


def test_msgpack_decodes_what_msgpack_python_encodes(inputs):
    for case in inputs["msgpack"]:
        assert mpack.unpackb(unhexlify(case["hex"])) == case["obj"], case


def test_msgpack_encodes_like_msgpack_python(inputs):
    for case in inputs["msgpack"]:
        if case["f32hex"] is not None:
            assert _hex(mpack.packb(case["obj"])) == case["f32hex"], case


def test_float32_decodes(inputs):
    assert mpack.unpackb(b"\xca\x41\xac\x00\x00") == 21.5


def test_hostile_msgpack_is_refused(inputs):
    for hexbody in ("dfffffffff", "dbffffffff61", "c1", "d40100", "91" * 20 + "c0", "92", "c0c0"):
        try:
            mpack.unpackb(unhexlify(hexbody))
        except ValueError:
            continue
        raise AssertionError("accepted " + hexbody)
