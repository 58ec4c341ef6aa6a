"""The edge agent under real MicroPython (the WebAssembly port, driven by Node) and CPython.

Each ``tests/edge/mp/mp_*.py`` module runs twice, with the same inputs: under
MicroPython-WASM (``tests/edge/js/run.mjs``; needs ``npm ci --prefix tests/edge/js``) and
under CPython. The inputs are computed here with fogrt's reference codecs, so the agent is
held to fogrt's bytes on the interpreter it ships on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgpack
import pytest

from fogrt.ingest import coap
from fogrt.ingest.wire import (
    Control,
    Registration,
    apply_delta,
    decode_control,
    encode_control_delta,
    encode_registration,
    encode_uplink,
)
from tests.edge.support import run

pytestmark = pytest.mark.integration  # starts Node (MicroPython-WASM) and Python processes

INTERPRETERS = ["micropython", "cpython"]


def _uplink_case(
    device: str,
    boot: int,
    seq: int,
    fields: list[str],
    readings: list[tuple[int, list[Any]]],
    version: int = 0,
    battery: int | None = None,
    clock: int | None = None,
) -> dict[str, Any]:
    now = 5_000_000
    body = encode_uplink(
        device,
        boot,
        seq,
        [(age / 1000, dict(zip(fields, values, strict=True))) for age, values in readings],
        control_version=version,
        battery_mv=battery,
        clock=clock,
        positional_fields=fields,
        float32=True,
    )
    return {
        "device": device,
        "boot": boot,
        "seq": seq,
        "version": version,
        "battery": battery,
        "clock": clock,
        "now": now,
        "readings": [[now - age, values] for age, values in readings],
        "hex": body.hex(),
    }


def _control_case(current: Control, version: int, since: Control | None) -> dict[str, Any]:
    body = encode_control_delta(current, version, since)
    delta = decode_control(body)
    applied = apply_delta(Control(), delta).wire()
    return {
        "hex": body.hex(),
        "delta": {k: list(v) if isinstance(v, tuple) else v for k, v in delta.items()},
        "applied": {"v": version, **applied},
    }


def wire_inputs() -> dict[str, Any]:
    f3 = ["temp", "hum", "door"]
    uplinks = [
        _uplink_case("n1", 3, 42, f3, [(0, [21.5, 48.0, False])], battery=3712),
        _uplink_case("dev-2.a:b", 0, 0, f3, [(0, [None, 40.0, None])], version=7),
        # a board whose clock is set sends it (whole seconds: beyond 2**31 in 2038)
        _uplink_case("clk", 2, 9, f3, [(1500, [20.0, 41.0, True])], clock=1_763_900_000),
        _uplink_case("clk", 2, 10, f3, [(0, [20.0, 41.0, True])], clock=2**32 + 5),
        _uplink_case(
            "n1",
            2097151,
            4294967295,
            f3,
            [(i * 60_000, [20.0 + i / 3, -1.5 * i, i % 2 == 0]) for i in range(20)],
            version=4294967295,
            battery=10000,
        ),
        _uplink_case("x" * 64, 1, 300, ["a"], [(4294967295, [-1e-3]), (0, [1e38])]),
        _uplink_case("ints", 1, 70000, ["n", "s"], [(5, [-33, "héllo"]), (6, [2**40, "x" * 40])]),
    ]
    regs = []
    for reg in (
        Registration("n1", "fogagent/0.1.0", ("temp", "hum"), 2000, ("none", "min", "max")),
        Registration("n2", "fw", (), None, ("none", "min", "max")),
    ):
        regs.append(
            {
                "device": reg.device,
                "fw": reg.firmware,
                "sensors": list(reg.sensors),
                "cap": reg.capacity_mah,
                "hex": encode_registration(reg).hex(),
            }
        )
    controls = [
        _control_case(Control(interval=300, tx="delta", epsilon=0.25), 7, Control()),
        _control_case(
            Control(tx="predict", epsilon=0.5, coeffs=(0.1, 0.9, -0.05), sample_period=2.5), 9, None
        ),
        _control_case(Control(power_mode="max", burst_until=1_800_000_000, batch=16), 1, Control()),
    ]
    bad = [
        (msgpack.packb({"i": 5}).hex(), "v"),
        (msgpack.packb({"v": 1, "tx": "sometimes"}).hex(), "tx"),
        (msgpack.packb({"v": 1, "i": 0}).hex(), "i"),
        (msgpack.packb({"v": 1, "sp": 0.0}).hex(), "sp"),
        (msgpack.packb({"v": 1, "c": [1.0, "x"]}).hex(), "c"),
        (msgpack.packb({"v": 1, "c": [0.0] * 17}).hex(), "c"),
        (msgpack.packb({"v": 1, "bt": True}).hex(), "bt"),
        (msgpack.packb([1, 2]).hex(), "map"),
    ]
    objs: list[Any] = [
        None,
        True,
        False,
        0,
        127,
        128,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**64 - 1,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        -(2**31),
        -(2**31) - 1,
        -(2**63),
        1.5,
        -0.25,
        "",
        "a" * 31,
        "b" * 32,
        "c" * 255,
        "d" * 256,
        "é€",
        [],
        list(range(15)),
        list(range(16)),
        {"k": [1, {"n": None}]},
        {str(i): i for i in range(16)},
    ]
    mp_cases = []
    for obj in objs:
        mp_cases.append(
            {
                "obj": obj,
                "hex": msgpack.packb(obj).hex(),
                # float32 packing is what the agent emits; maps only when their order is fixed
                "f32hex": None
                if isinstance(obj, dict) and len(obj) > 1
                else msgpack.packb(obj, use_single_float=True).hex(),
            }
        )
    return {
        "uplinks": uplinks,
        "registrations": regs,
        "controls": controls,
        "bad_controls": bad,
        "msgpack": mp_cases,
    }


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_wire_codecs_match_fogrt(interpreter: str, tmp_path: Path) -> None:
    run("mp_wire", wire_inputs(), tmp_path, interpreter=interpreter).check()


def coap_inputs() -> dict[str, Any]:
    requests = []
    for mtype, mid, token, path, payload in (
        (coap.CON, 0, b"", "r/room", b"\x80"),
        (coap.CON, 0xFFFF, b"\x01\x02\x03\x04", "r/a-rather-long-source-name", b"\x81\xa1d\xa1x"),
        (coap.NON, 0x1234, b"\xff" * 4, "reg", bytes(range(256)) * 2),
    ):
        options = [(coap.URI_PATH, seg.encode()) for seg in path.split("/")]
        options.append((coap.CONTENT_FORMAT, coap.encode_uint(65362)))
        requests.append(
            {
                "type": mtype,
                "mid": mid,
                "token": token.hex(),
                "path": path,
                "payload": payload.hex(),
                "hex": coap.build(mtype, coap.POST, mid, token, options, payload).hex(),
            }
        )
    responses = []
    for mtype, code, mid, token, options, payload in (
        (coap.ACK, coap.CHANGED, 7, b"\x01\x02\x03\x04", [], b""),
        (
            coap.ACK,
            coap.CHANGED,
            8,
            b"tok!",
            [(coap.CONTENT_FORMAT, b"\xff\x52")],
            b"\x81\xa1v\x01",
        ),
        (coap.ACK, coap.SERVICE_UNAVAILABLE, 9, b"t", [(coap.MAX_AGE, b"\x78")], b"engine lag"),
        (coap.CON, coap.CREATED, 65535, b"", [(coap.ETAG, b"e"), (coap.MAX_AGE, b"")], b"x"),
        (coap.NON, coap.CHANGED, 1, b"12345678", [(coap.SIZE1, coap.encode_uint(4096))], b"y"),
    ):
        wire = coap.build(mtype, code, mid, token, options, payload)
        max_age = next((coap.decode_uint(v) for n, v in options if n == coap.MAX_AGE), None)
        responses.append(
            {"hex": wire.hex(), "parsed": [mtype, code, mid, token.hex(), max_age, payload.hex()]}
        )
    busy = coap.build(
        coap.ACK,
        coap.SERVICE_UNAVAILABLE,
        0,
        b"\x00" * 4,
        [(coap.MAX_AGE, coap.encode_uint(120))],
        b"engine lag",
    )
    return {"requests": requests, "responses": responses, "busy": busy.hex()}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_coap_client(interpreter: str, tmp_path: Path) -> None:
    run("mp_coap", coap_inputs(), tmp_path, interpreter=interpreter).check()


def loop_inputs() -> dict[str, Any]:
    delta = Control(interval=600, sample_period=30.0, tx="delta", epsilon=0.5)
    predict = Control(
        tx="predict",
        coeffs=tuple([0.5] + [0.05] * 15),
        epsilon=0.0,
        batch=1024,
        interval=604800,
        sample_period=60.0,
    )
    busy = coap.build(
        coap.ACK, coap.SERVICE_UNAVAILABLE, 0, b"\x00" * 4, [(coap.MAX_AGE, b"\x02\x58")], b"busy"
    )
    return {
        "delta": encode_control_delta(delta, 5, Control()).hex(),
        "full": encode_control_delta(Control(), 1, None).hex(),
        "predict16": encode_control_delta(predict, 2, Control()).hex(),
        "busy": busy.hex(),
    }


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_agent_loop(interpreter: str, tmp_path: Path) -> None:
    from fogrt.ingest.wire import UplinkDecoder

    result = run("mp_loop", loop_inputs(), tmp_path, interpreter=interpreter).check()
    # What the agent sent under this interpreter, decoded by fogrt's own decoder.
    decoder = UplinkDecoder({"f0": "float"})
    ups = [decoder.decode(bytes.fromhex(h)) for h in result.lines("UPLINK")]
    assert [(u.seq, u.control_version, [r[1]["f0"] for r in u.readings]) for u in ups] == [
        (0, 0, [20.0]),
        (1, 5, [21.0]),
        (2, 5, [19.0]),
    ]
    assert all(math.isclose(r[0], 0.0, abs_tol=1.0) for u in ups for r in u.readings)


def reference_decisions(values: list[float], tx: str, e: float, c: list[float]) -> list[bool]:
    """The transmit policies written plainly (float64, one field): the spec the agent and
    the fog's dual-prediction policy must both follow."""
    out: list[bool] = []
    hist: list[float] = []
    last: float | None = None
    coeffs = c or [0.0, 1.0]
    k = len(coeffs) - 1
    for x in values:
        forecast = None
        if tx == "always":
            send = True
        elif tx == "delta":
            send = last is None or abs(x - last) > e
        elif len(hist) < k:
            send = True
        else:
            forecast = coeffs[0] + sum(coeffs[i + 1] * hist[i] for i in range(k))
            send = not abs(x - forecast) <= e
        out.append(send)
        if send:
            last = x
        if tx == "predict":
            hist.insert(0, x if send or forecast is None else forecast)
            del hist[max(k, 1) :]
    return out


def predictor_inputs() -> dict[str, Any]:
    waves = [20 + 2 * math.sin(i / 5) + (0.7 if i % 17 == 0 else 0.0) for i in range(120)]
    ramp = [0.1 * i for i in range(60)]
    cases = []
    for values in (waves, ramp):
        for tx, e, c in (
            ("always", 0.0, []),
            ("delta", 0.3, []),
            ("delta", 0.0, []),
            ("predict", 0.3, []),
            ("predict", 0.05, [0.0, 2.0, -1.0]),
            ("predict", 0.2, [0.5, 0.9, 0.05, 0.02]),
            ("predict", 0.0, [1.0]),
        ):
            cases.append(
                {
                    "values": values,
                    "tx": tx,
                    "e": e,
                    "c": c,
                    "expected": reference_decisions(values, tx, e, c),
                }
            )
    return {"cases": cases}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_predictor(interpreter: str, tmp_path: Path) -> None:
    run("mp_predictor", predictor_inputs(), tmp_path, interpreter=interpreter).check()


def config_inputs() -> dict[str, Any]:
    good = {
        "device": "d",
        "fog": {"host": "h", "source": "room"},
        "wifi": {"ssid": "s"},
        "sensors": [{"field": "t", "type": "mcu_temp"}],
    }
    bad: list[tuple[Any, list[str]]] = [
        ([], ["board.json: expected a JSON object at the top, got array"]),
        (
            {},
            [
                "board.json: device: required",
                "board.json: fog.host: required",
                "board.json: fog.source: required",
                "board.json: wifi.ssid: required",
                "board.json: sensors: required",
            ],
        ),
        ({**good, "devise": "x"}, ["board.json: devise: unknown key"]),
        (
            {**good, "device": "no spaces", "fog": {"host": "h", "source": "1room", "port": 0}},
            [
                "board.json: fog.port: 0 out of range 1..65535",
                "board.json: device: invalid device id (1..64 of A-Z a-z 0-9 _ . : -)",
                "board.json: fog.source: expected an identifier (the topology's source id)",
            ],
        ),
        (
            {**good, "sensors": [{"field": "t", "type": "adc"}, {"field": "t", "type": "dht22"}]},
            [
                "board.json: sensors[0].pin: required for an adc sensor",
                "board.json: sensors[1].type: expected one of mcu_temp|adc|sht3x_temp|sht3x_hum,"
                " got 'dht22'",
            ],
        ),
        (
            {**good, "fields": ["a"], "coap": {"confirmable": 1, "max_retransmit": 2.5}},
            [
                "board.json: coap.max_retransmit: expected int, got number",
                "board.json: coap.confirmable: expected bool, got number",
            ],
        ),
        ({**good, "fields": ["a"]}, ["board.json: sensors[0].field: 't' is not in fields"]),
        (
            {**good, "wifi": {"ssid": "s", "static": {"ip": "10.0.0.300", "gateway": "10.0.0.1"}}},
            ["board.json: wifi.static.ip: expected a dotted IPv4 address, got '10.0.0.300'"],
        ),
        (
            {**good, "store": {"max_per_uplink": 256}},
            [
                "board.json: store.max_per_uplink: at most 190 readings of 1 fields fit a 4096-byte"
                " uplink"
            ],
        ),
    ]
    return {"bad": [(doc, sorted(errors)) for doc, errors in bad]}


@pytest.mark.parametrize("interpreter", INTERPRETERS)
def test_config_validation(interpreter: str, tmp_path: Path) -> None:
    run("mp_config", config_inputs(), tmp_path, interpreter=interpreter).check()


def test_esp32_hal_against_stand_ins(tmp_path: Path) -> None:
    """The real HAL (fogagent/hal.py), MicroPython only: it uses MicroPython's time API."""
    mp = Path(__file__).parent / "edge" / "mp"
    run(
        "mp_hal",
        {},
        tmp_path,
        interpreter="micropython",
        mounts=((mp / "fakes", "/fakes"), (mp / "fakes_wasm", "/fakes_wasm")),
    ).check()
