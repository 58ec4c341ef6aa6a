"""The agent's CoAP client: message bytes against fogrt's codec, and the exchange rules
(retransmission and back-off, deadlines, ignoring strangers, separate responses, RST, NON)
on a simulated clock, so no test waits."""

from binascii import hexlify, unhexlify

from fogagent import coap
from fogagent.fakehal import FakeHal


def _hex(b):
    return hexlify(bytes(b)).decode()


def test_requests_are_byte_identical_to_fogrt(inputs):
    for case in inputs["requests"]:
        got = coap.build(
            case["type"],
            coap.POST,
            case["mid"],
            unhexlify(case["token"]),
            case["path"],
            65362,
            unhexlify(case["payload"]),
        )
        assert _hex(got) == case["hex"], (case, _hex(got))


def test_responses_from_fogrt_parse(inputs):
    for case in inputs["responses"]:
        m = coap.parse(unhexlify(case["hex"]))
        assert m is not None, case
        got = [m[0], m[1], m[2], _hex(m[3]), m[4], _hex(m[5])]
        assert got == case["parsed"], (got, case["parsed"])


def test_malformed_datagrams_parse_to_none(inputs):
    for h in (
        "",
        "40",
        "4f000000",
        "80000000",
        "41000000",
        "400000 00ff".replace(" ", ""),
        "400000 00 f0".replace(" ", ""),
        "400000 00 0d".replace(" ", ""),
    ):
        assert coap.parse(unhexlify(h)) is None, h


class Peer:
    """A scripted fog node: ``script(n, request)`` -> replies to the n-th datagram."""

    def __init__(self, script):
        self.script = script
        self.requests = []

    def __call__(self, data):
        self.requests.append(coap.parse(data))
        return self.script(len(self.requests), self.requests[-1])


def _client(peer, **kw):
    hal = FakeHal({}, None, peer)
    sock, addr = hal.udp_socket("fog", 5683)
    return hal, coap.Client(hal, sock, addr, 0x1234, **kw)


def _ack(req, code=0x44, payload=b"", mid=None, token=None):
    return coap.build(
        coap.ACK,
        code,
        req[2] if mid is None else mid,
        req[3] if token is None else token,
        None,
        None,
        payload,
    )


def test_silent_peer_gets_max_retransmit_resends_with_doubling_timeouts(inputs):
    hal, c = _client(Peer(lambda n, req: None))
    t0 = hal.clock
    assert c.request("r/room", b"\x80", t0 + 10**9) is None
    assert c.transmissions == 5  # 1 + MAX_RETRANSMIT
    elapsed = hal.clock - t0
    # 31 * the initial timeout, which is random in [2 s, 3 s] (RFC 7252 §4.8.2: 62..93 s)
    assert 62000 <= elapsed <= 93000, elapsed
    assert len({coap.parse(d)[2] for d in hal.sent}) == 1  # one message id throughout


def test_deadline_bounds_the_exchange(inputs):
    hal, c = _client(Peer(lambda n, req: None), random_factor=1.0)
    t0 = hal.clock
    assert c.request("r/room", b"\x80", t0 + 7000) is None
    # sent at 0, 2 s and 6 s (timeouts 2 s, 4 s); the wait for the third stops at 7 s
    assert hal.clock - t0 == 7000 and c.transmissions == 3


def test_lost_reply_is_retransmitted_with_the_same_mid(inputs):
    hal, c = _client(Peer(lambda n, req: [_ack(req, payload=b"\x81")] if n == 2 else None))
    got = c.request("r/room", b"\x80", hal.clock + 10**6)
    assert got == (0x44, b"\x81", None), got
    mids = [coap.parse(d)[2] for d in hal.sent]
    assert mids == [0x1234, 0x1234] and c.mid == 0x1235


def test_unrelated_datagrams_are_ignored(inputs):
    def script(n, req):
        return [
            b"\x00garbage",
            _ack(req, mid=req[2] ^ 1),  # another exchange's ACK
            _ack(req, token=b"nope"),  # our mid, a stranger's token
            coap.build(coap.CON, coap.POST, 7, b"", "x", None, b""),  # a request
            _ack(req, payload=b"\x90"),
        ]

    hal, c = _client(Peer(script))
    assert c.request("r/room", b"\x80", hal.clock + 10**6) == (0x44, b"\x90", None)
    assert c.transmissions == 1


def test_empty_ack_then_separate_response_is_acknowledged(inputs):
    def script(n, req):
        if n == 1:
            return [
                coap.build(coap.ACK, 0, req[2]),
                coap.build(coap.CON, 0x41, 0x7777, req[3], None, None, b"\x80"),
            ]
        return None

    hal, c = _client(Peer(script))
    assert c.request("reg", b"\x80", hal.clock + 10**6) == (0x41, b"\x80", None)
    last = coap.parse(hal.sent[-1])
    assert last[0] == coap.ACK and last[1] == 0 and last[2] == 0x7777 and c.transmissions == 1


def test_rst_ends_the_exchange(inputs):
    hal, c = _client(Peer(lambda n, req: [coap.build(coap.RST, 0, req[2])]))
    assert c.request("r/room", b"\x80", hal.clock + 10**6) == (0, b"", None)


def test_service_unavailable_carries_max_age(inputs):
    tmpl = unhexlify(inputs["busy"])

    def script(n, req):
        return [tmpl[:2] + bytes([req[2] >> 8, req[2] & 0xFF]) + req[3] + tmpl[8:]]

    hal, c = _client(Peer(script))
    code, payload, max_age = c.request("r/room", b"\x80", hal.clock + 10**6)
    assert (code, max_age) == (0xA3, 120) and payload == b"engine lag", (code, max_age, payload)


def test_non_is_sent_once(inputs):
    hal, c = _client(Peer(lambda n, req: None), ack_timeout_ms=1000, random_factor=1.0)
    t0 = hal.clock
    assert c.request("r/room", b"\x80", t0 + 10**6, False) is None
    assert c.transmissions == 1 and hal.clock - t0 == 1000
    assert coap.parse(hal.sent[0])[0] == coap.NON


def test_send_error_fails_fast(inputs):
    hal, c = _client(Peer(lambda n, req: None))
    hal.net_up = False
    t0 = hal.clock
    assert c.request("r/room", b"\x80", t0 + 10**6) is None and hal.clock == t0
