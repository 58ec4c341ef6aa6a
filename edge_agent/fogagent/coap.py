"""A minimal CoAP (RFC 7252) client over one UDP socket: just what an uplink needs.

``build``/``parse`` handle the message format: header, token, Uri-Path, Content-Format and
Max-Age options, payload. ``Client.request`` sends one POST and waits for its response:

- CON (default): retransmitted with exponential back-off, RFC 7252 §4.2 — the first
  timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR], doubled after each
  of at most MAX_RETRANSMIT retransmissions; an empty ACK stops the retransmissions and the
  separate response that follows is acknowledged; a RST ends the exchange.
- NON: sent once; the response is awaited for ACK_TIMEOUT * ACK_RANDOM_FACTOR.

Every wait also stops at the caller's ``deadline`` (a ``ticks_ms`` value): a node must
never stay awake past its bound because a fog node is silent. Datagrams that do not belong
to the exchange (another message id or token, garbage) are ignored. The socket and the
clock come from the HAL, so the same code runs on the ESP32, under CPython and in tests
with a simulated clock.
"""

CON, NON, ACK, RST = 0, 1, 2, 3
POST = 0x02
URI_PATH, CONTENT_FORMAT, MAX_AGE = 11, 12, 14


def code_str(code):
    """``0x44`` -> ``"2.04"`` (for logs)."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def _option(out, delta, value):
    n = len(value)
    dn = delta if delta < 13 else 13 if delta < 269 else 14
    ln = n if n < 13 else 13 if n < 269 else 14
    out.append(dn << 4 | ln)
    for nib, x in ((dn, delta), (ln, n)):
        if nib == 13:
            out.append(x - 13)
        elif nib == 14:
            out.append((x - 269) >> 8)
            out.append((x - 269) & 0xFF)
    out.extend(value)


def _uint(v):
    """The minimal big-endian bytes of an uint option value (0 is empty)."""
    n = 0
    while v >> (8 * n):
        n += 1
    return v.to_bytes(n, "big")


def build(mtype, code, mid, token=b"", path=None, content_format=None, payload=b""):
    """One CoAP message as a bytearray; ``path`` like ``"r/room"`` (no query)."""
    out = bytearray(4)
    out[0] = 0x40 | mtype << 4 | len(token)
    out[1] = code
    out[2] = mid >> 8 & 0xFF
    out[3] = mid & 0xFF
    out.extend(token)
    last = 0
    if path:
        for seg in path.split("/"):
            if seg:
                _option(out, URI_PATH - last, seg.encode())
                last = URI_PATH
    if content_format is not None:
        _option(out, CONTENT_FORMAT - last, _uint(content_format))
    if payload:
        out.append(0xFF)
        out.extend(payload)
    return out


def parse(d):
    """``(type, code, mid, token, max_age, payload)``, or None for a malformed datagram.

    ``max_age`` is None when the option is absent; other options are skipped.
    """
    n = len(d)
    if n < 4 or d[0] >> 6 != 1 or d[0] & 0x0F > 8:
        return None
    i = 4 + (d[0] & 0x0F)
    if i > n:
        return None
    token = bytes(d[4:i])
    number = 0
    max_age = None
    payload = b""
    while i < n:
        b = d[i]
        i += 1
        if b == 0xFF:
            if i == n:
                return None
            payload = bytes(d[i:])
            break
        delta, length = b >> 4, b & 0x0F
        if delta == 15 or length == 15:
            return None
        vals = [delta, length]
        for j in (0, 1):
            if vals[j] == 13:
                if i >= n:
                    return None
                vals[j] = d[i] + 13
                i += 1
            elif vals[j] == 14:
                if i + 2 > n:
                    return None
                vals[j] = (d[i] << 8 | d[i + 1]) + 269
                i += 2
        number += vals[0]
        end = i + vals[1]
        if end > n:
            return None
        if number == MAX_AGE:
            max_age = int.from_bytes(bytes(d[i:end]), "big")
        i = end
    return (d[0] >> 4) & 3, d[1], d[2] << 8 | d[3], token, max_age, payload


class Client:
    """Requests to one fog node over ``sock``; ``hal`` gives the clock and randomness.

    ``mid`` is the next message id: the agent keeps it across deep sleeps, because a fog
    node remembers message ids for a while and would answer a reused one from its cache.
    """

    def __init__(
        self,
        hal,
        sock,
        addr,
        mid,
        ack_timeout_ms=2000,
        random_factor=1.5,
        max_retransmit=4,
        log=None,
    ):
        self.hal = hal
        self.sock = sock
        self.addr = addr
        self.mid = mid & 0xFFFF
        self.ack_timeout_ms = ack_timeout_ms
        self.random_factor = random_factor
        self.max_retransmit = max_retransmit
        self.log = log
        self.transmissions = 0

    def request(self, path, payload, deadline, confirmable=True):
        """POST ``payload`` (Content-Format 65362) to ``path``.

        ``(code, payload, max_age)`` of the response, or None when none came before the
        retransmissions ran out or ``deadline`` passed, or the socket failed.
        """
        hal = self.hal
        mid = self.mid
        self.mid = (mid + 1) & 0xFFFF
        token = hal.rand(32).to_bytes(4, "big")
        msg = build(CON if confirmable else NON, POST, mid, token, path, 65362, payload)
        span = self.ack_timeout_ms * (self.random_factor - 1.0)
        timeout = self.ack_timeout_ms + int(span * hal.rand(16) / 65536)
        tries = self.max_retransmit + 1 if confirmable else 1
        acked = False  # an empty ACK came: wait for the separate response, do not resend
        while True:
            if not acked:
                if tries == 0:
                    return None
                tries -= 1
                try:
                    self.sock.sendto(msg, self.addr)
                except OSError as e:  # no route (Wi-Fi dropped): waiting cannot help
                    self._log("coap_send_failed", e)
                    return None
                self.transmissions += 1
            until = hal.ticks_add(hal.ticks_ms(), timeout)
            if hal.ticks_diff(until, deadline) > 0 or acked:
                until = deadline
            got = self._wait(mid, token, until)
            if got is not None:
                if got == "ack":
                    acked = True
                    continue
                return got
            if hal.ticks_diff(deadline, hal.ticks_ms()) <= 0 or acked:
                return None
            timeout *= 2

    def _wait(self, mid, token, until):
        """The response (or ``"ack"`` for an empty ACK) received before ``until``, or None."""
        hal = self.hal
        while True:
            left = hal.ticks_diff(until, hal.ticks_ms())
            if left <= 0:
                return None
            try:
                self.sock.settimeout(left / 1000)
                data = self.sock.recvfrom(1280)[0]
            except OSError:  # the timeout (or an ICMP error): this wait is over
                return None
            m = parse(data)
            if m is None:
                continue
            mtype, code, rmid, rtoken = m[0], m[1], m[2], m[3]
            if mtype == RST and rmid == mid:
                self._log("coap_reset", mid)
                return (0, b"", None)  # code 0: refused by the peer
            if mtype == ACK and rmid == mid and code == 0:
                return "ack"
            if rtoken != token or code < 0x40:
                continue  # not ours (a late answer to an earlier request, or a request)
            if mtype == ACK and rmid != mid:
                continue
            if mtype == CON:  # a separate response: acknowledge it (empty ACK)
                try:
                    self.sock.sendto(build(ACK, 0, rmid), self.addr)
                except OSError:
                    pass
            return code, m[5], m[4]

    def _log(self, event, detail):
        if self.log:
            self.log.warn(event, detail=detail)
