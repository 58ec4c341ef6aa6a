"""What survives deep sleep: the agent's state, serialised into RTC memory.

RTC slow memory (``machine.RTC().memory()``) keeps up to 2048 bytes across deep sleep on
the ESP32 but not across a power loss. The state is one msgpack array (no keys: every byte
counts), led by a magic number that also versions the layout, and by a signature of the
configuration it was made for: a state that does not decode, or that belongs to another
configuration (the board was re-flashed with other fields), is a cold boot.

Losing the state is always safe: a cold boot takes a new boot epoch, so the sequence
numbers start again without ever naming different readings with the same (boot, seq).

Floats are kept as float64 so that an agent under CPython (the simulator) loses nothing
across a simulated deep sleep; ``dump`` raises if the result exceeds ``RTC_SIZE`` — the
agent spills readings to flash before that can happen.
"""

from fogagent import mpack, wire

MAGIC = 0xF0A1
RTC_SIZE = 2048
_CONTROL = ("v",) + wire.CONTROL_KEYS


def signature(text):
    """A 16-bit FNV-1a hash of ``text``: the same under CPython and MicroPython."""
    h = 0x811C9DC5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return (h ^ (h >> 16)) & 0xFFFF


class State:
    """Everything the agent carries from one wake to the next."""

    def __init__(self, nfields, sig=0):
        self.sig = sig
        self.boot = 0
        self.seq = 0  # the next uplink's sequence number
        self.mid = 0  # the next CoAP message id
        self.control = wire.default_control()
        self.last_up = None  # clock (ms) of the last uplink attempt: the report interval
        self.retry_at = 0  # clock (ms) before which no new attempt is made (back-off)
        self.fails = 0  # consecutive failed attempts
        self.dropped = 0  # readings dropped in this boot epoch (reported as "x")
        self.need_reg = False  # POST /reg at the next chance
        self.hist = [[] for _ in range(nfields)]  # predictor history per field
        self.last = [None] * nfields  # last value sent per field
        self.batch = []  # [[taken_ms, values]]: to transmit, not yet given a seq
        self.queue = []  # [[seq, readings]]: sealed uplinks not yet acknowledged
        self.wifi = None  # [bssid, channel] of the last good association

    def dump(self):
        c = self.control
        out = bytearray()
        mpack.pack(
            [
                MAGIC,
                self.sig,
                self.boot,
                self.seq,
                self.mid,
                [c[k] for k in _CONTROL],
                self.last_up,
                self.retry_at,
                self.fails,
                self.dropped,
                self.need_reg,
                self.hist,
                self.last,
                self.batch,
                self.queue,
                self.wifi,
            ],
            out,
            True,
        )
        if len(out) > RTC_SIZE:
            raise ValueError("state: %d bytes > RTC memory (%d)" % (len(out), RTC_SIZE))
        return bytes(out)

    @classmethod
    def load(cls, blob, nfields, sig):
        """The state in ``blob``, or None when there is none for this configuration."""
        if not blob:
            return None
        try:
            a = mpack.unpackb(blob)
            if not isinstance(a, list) or len(a) != 16 or a[0] != MAGIC or a[1] != sig:
                return None
            if len(a[11]) != nfields or len(a[12]) != nfields or len(a[5]) != len(_CONTROL):
                return None
        except (ValueError, TypeError):  # garbage: RTC memory after a power-on
            return None
        s = cls(nfields, sig)
        (s.boot, s.seq, s.mid) = a[2:5]
        for k, v in zip(_CONTROL, a[5]):
            s.control[k] = v
        (s.last_up, s.retry_at, s.fails, s.dropped, s.need_reg) = a[6:11]
        (s.hist, s.last, s.batch, s.queue, s.wifi) = a[11:16]
        return s
