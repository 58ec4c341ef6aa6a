"""A scripted fog node for the agent's loop tests (MicroPython and CPython alike).

It speaks the agent's own CoAP and msgpack: it is a test double for the network, not a
second implementation of fogrt (the CPython tests run the agent against the real one).
It deduplicates on (boot, seq) as fogrt does, answers 2.04 with ``delta`` while the
device reports another version than ``version``, and can be told to stay silent
(``down``), to lose its answers (``lose_replies``) or to answer 5.03 (``busy``).
"""

from binascii import unhexlify

from fogagent import coap, mpack


class FakeFog:
    def __init__(self, version=0, delta_hex=""):
        self.version = version
        self.delta = unhexlify(delta_hex)
        self.seen = {}  # (boot, seq) -> readings
        self.order = []  # (boot, seq) in the order accepted
        self.bodies = []  # every uplink body received
        self.registrations = []
        self.duplicates = 0
        self.down = False
        self.lose_replies = False
        self.busy = None  # a 5.03 template (hex): answer it instead
        self.unauthorized = 0  # answer 4.01 to this many uplinks
        self.refuse = False  # answer 4.00

    def __call__(self, datagram):
        if self.down:
            return None
        m = coap.parse(datagram)
        mid, token, body = m[2], m[3], m[5]
        doc = mpack.unpackb(body)
        if "fw" in doc:
            self.registrations.append(doc)
            return [coap.build(coap.ACK, 0x41, mid, token, None, 65362, self.delta)]
        if self.busy:
            t = unhexlify(self.busy)
            return [t[:2] + bytes([mid >> 8, mid & 0xFF]) + token + t[8:]]
        if self.unauthorized:
            self.unauthorized -= 1
            return [coap.build(coap.ACK, 0x81, mid, token, None, None, b"unregistered")]
        if self.refuse:
            return [coap.build(coap.ACK, 0x80, mid, token, None, None, b"r: bad")]
        self.bodies.append(body)
        key = (doc["b"], doc["s"])
        if key in self.seen:
            self.duplicates += 1
        else:
            self.seen[key] = doc["r"]
            self.order.append(key)
        if self.lose_replies:
            return None
        reply = self.delta if doc.get("v", 0) != self.version else b""
        return [coap.build(coap.ACK, 0x44, mid, token, None, 65362 if reply else None, reply)]

    def values(self, field=0):
        """Every reading's value of ``field``, in (boot, seq, position) order."""
        out = []
        for key in sorted(self.seen):
            for r in self.seen[key]:
                out.append(r[1][field] if len(r[1]) > field else None)
        return out
