"""The bodies the agent exchanges with a fog node (docs/wire-format.md; mirrors
``fogrt.ingest.wire``).

- ``uplink``: the body of ``POST /r/<source>``, keys in the reference encoder's order and
  readings in the compact form (values in the source's declared field order, trailing
  missing values dropped, floats as float32), so that its bytes equal
  ``encode_uplink(..., positional_fields=fields, float32=True)``. One extension: ``x``,
  the readings this device dropped since its boot epoch began (outbox full, or refused by
  the fog); decoders ignore unknown top-level keys and ``x`` is the vendor prefix.
- ``registration``: the body of ``POST /reg``.
- ``decode_control``: a 2.04 body -> the validated delta (``{}`` for "no change"); a
  delta with any bad value is refused whole, so the device never reports a version it did
  not fully apply.
"""

from fogagent import mpack

CONTENT_FORMAT = 65362
MAX_AGE_MS = 0xFFFFFFFF
MAX_VERSION = 0xFFFFFFFF
TX_POLICIES = ("always", "delta", "predict")
POWER_MODES = ("none", "min", "max")
CONTROL_KEYS = ("i", "sp", "tx", "e", "c", "pm", "bu", "bt")
MAX_COEFFS = 16


def default_control():
    """Version 0: the defaults both sides know (``fogrt.ingest.wire.Control()``)."""
    return {
        "v": 0,
        "i": 60,
        "sp": 60.0,
        "tx": "always",
        "e": 0.0,
        "c": [],
        "pm": "none",
        "bu": 0,
        "bt": 1,
    }


def _key(out, k):
    out.append(0xA0 | len(k))  # every key is a fixstr of 1 or 2 ASCII letters
    out.extend(k.encode())


def uplink(
    out, device, boot, seq, readings, now_ms, version=0, battery_mv=None, dropped=0, clock=None
):
    """Append an uplink body to ``out``. ``readings``: ``[[taken_ms, values], ...]``, with
    ``taken_ms`` on the same clock as ``now_ms`` (the age sent is the difference).
    ``clock``: whole epoch seconds at ``now_ms`` (``t``), when the device knows the time."""
    n = 4 + (version != 0) + (battery_mv is not None) + (dropped > 0) + (clock is not None)
    mpack.map_header(out, n)
    _key(out, "d")
    mpack.pack(device, out)
    _key(out, "b")
    mpack.pack_int(out, boot)
    _key(out, "s")
    mpack.pack_int(out, seq)
    if version:
        _key(out, "v")
        mpack.pack_int(out, version)
    if battery_mv is not None:
        _key(out, "p")
        mpack.pack_int(out, battery_mv)
    if dropped > 0:
        _key(out, "x")
        mpack.pack_int(out, dropped)
    if clock is not None:
        _key(out, "t")
        mpack.pack_int(out, clock)
    _key(out, "r")
    mpack.array_header(out, len(readings))
    for taken, values in readings:
        out.append(0x92)
        age = now_ms - taken
        # A reading from before a power loss is on another clock: its age is unknowable,
        # so it is clamped into the range the wire allows rather than refused.
        mpack.pack_int(out, 0 if age < 0 else MAX_AGE_MS if age > MAX_AGE_MS else age)
        m = len(values)
        while m and values[m - 1] is None:
            m -= 1
        mpack.array_header(out, m)
        for j in range(m):
            mpack.pack(values[j], out)
    return out


def registration(device, firmware, sensors, capacity_mah=None, power_modes=POWER_MODES):
    """The body of ``POST /reg`` (keys in ``fogrt.ingest.wire.encode_registration`` order)."""
    out = bytearray()
    mpack.map_header(out, 5 if capacity_mah is not None else 4)
    _key(out, "d")
    mpack.pack(device, out)
    _key(out, "fw")
    mpack.pack(firmware, out)
    _key(out, "s")
    mpack.pack(list(sensors), out)
    if capacity_mah is not None:
        _key(out, "cap")
        mpack.pack_int(out, capacity_mah)
    _key(out, "pm")
    mpack.pack(list(power_modes), out)
    return bytes(out)


def _int(v, lo, hi):
    return isinstance(v, int) and v is not True and v is not False and lo <= v <= hi


def _num(v, lo, hi, open_lo=False):
    if v is True or v is False or not isinstance(v, (int, float)):
        return None
    v = float(v)
    if v != v or v < lo or v > hi or (open_lo and v == lo):
        return None
    return v


def _check(k, v):
    """The value to store for control key ``k``, or None when ``v`` is not acceptable."""
    if k == "i":
        return v if _int(v, 1, 604800) else None
    if k == "sp":
        return _num(v, 0.0, 86400.0, True)
    if k == "tx":
        return v if v in TX_POLICIES else None
    if k == "e":
        return _num(v, 0.0, 1e300)
    if k == "c":
        if not isinstance(v, list) or len(v) > MAX_COEFFS:
            return None
        out = []
        for x in v:
            x = _num(x, -1e300, 1e300)
            if x is None:
                return None
            out.append(x)
        return out
    if k == "pm":
        return v if v in POWER_MODES else None
    if k == "bu":
        return v if _int(v, 0, 0xFFFFFFFF) else None
    if k == "bt":
        return v if _int(v, 1, 1024) else None
    return None


def decode_control(body):
    """A 2.04 body as ``{"v": version, <changed keys>}``; ``{}`` when the body is empty.

    Raises ValueError (naming the key) for anything that is not a valid control delta.
    Unknown keys are ignored, as the wire format asks of devices.
    """
    if not body:
        return {}
    doc = mpack.unpackb(body)
    if not isinstance(doc, dict):
        raise ValueError("control: expected a map")
    v = doc.get("v")
    if not _int(v, 0, MAX_VERSION):
        raise ValueError("control: v: expected an int")
    out = {"v": v}
    for k in CONTROL_KEYS:
        if k in doc:
            value = _check(k, doc[k])
            if value is None:
                raise ValueError("control: " + k + ": bad value " + repr(doc[k]))
            out[k] = value
    return out


def apply_control(control, delta):
    """Apply a decoded delta to the control dict in place; the keys that changed."""
    changed = []
    for k in delta:
        if control.get(k) != delta[k]:
            control[k] = delta[k]
            if k != "v":
                changed.append(k)
    return changed
