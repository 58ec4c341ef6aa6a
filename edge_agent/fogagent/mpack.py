"""The msgpack subset of the fogrt wire format: nil, bool, int, float, str, bin, array, map.

MicroPython has no msgpack. ``pack`` writes what msgpack-python writes for the same values
(smallest int encoding, fixstr/str8/16/32, fixarray/array16/32, fixmap/map16/32), so that
an uplink built here is byte-identical to ``fogrt.ingest.wire.encode_uplink(...,
float32=True)``. Floats go as float32 unless ``f64`` is set (the RTC state keeps float64
so that CPython runs of the agent lose nothing across a simulated deep sleep).

Maps are written in the dict's iteration order, which MicroPython does not keep: code that
needs a fixed key order (the uplink, whose bytes are compared with fogrt's) writes the map
header with ``map_header`` and the pairs itself.

``unpack_from`` decodes float32 and float64, refuses ext and the reserved byte ``c1``, and
bounds nesting (``MAX_DEPTH``) and every length by the bytes actually left, so a header
claiming 2**32 items fails before anything is allocated. Errors are ``ValueError``.
"""

try:
    import ustruct as struct
except ImportError:
    import struct

MAX_DEPTH = 8


def _hdr(out, n, fix, fixmax, c8, c16, c32):
    """A length header: fix | n, or the 8/16/32-bit form (c8 = 0 when there is none)."""
    if n < fixmax:
        out.append(fix | n)
    elif c8 and n < 0x100:
        out.append(c8)
        out.append(n)
    elif n < 0x10000:
        out.extend(struct.pack(">BH", c16, n))
    else:
        out.extend(struct.pack(">BI", c32, n))


def map_header(out, n):
    _hdr(out, n, 0x80, 16, 0, 0xDE, 0xDF)


def array_header(out, n):
    _hdr(out, n, 0x90, 16, 0, 0xDC, 0xDD)


def pack_int(out, v):
    if 0 <= v < 0x80 or -32 <= v < 0:
        out.append(v & 0xFF)
    elif v >= 0:
        if v <= 0xFF:
            out.extend(struct.pack(">BB", 0xCC, v))
        elif v <= 0xFFFF:
            out.extend(struct.pack(">BH", 0xCD, v))
        elif v <= 0xFFFFFFFF:
            out.extend(struct.pack(">BI", 0xCE, v))
        else:
            out.extend(struct.pack(">BQ", 0xCF, v))
    elif v >= -0x80:
        out.extend(struct.pack(">Bb", 0xD0, v))
    elif v >= -0x8000:
        out.extend(struct.pack(">Bh", 0xD1, v))
    elif v >= -0x80000000:
        out.extend(struct.pack(">Bi", 0xD2, v))
    else:
        out.extend(struct.pack(">Bq", 0xD3, v))


def pack_float(out, v, f64=False):
    if f64:
        out.extend(struct.pack(">Bd", 0xCB, v))
        return
    try:
        out.extend(struct.pack(">Bf", 0xCA, v))
    except OverflowError:
        # CPython refuses a finite value that rounds beyond float32's range (MicroPython
        # casts it to inf). A reading is not worth an exception: send +-inf, which the fog
        # counts as a non-finite value and stores as missing.
        out.extend(b"\xca\x7f\x80\x00\x00" if v > 0 else b"\xca\xff\x80\x00\x00")


def pack(obj, out, f64=False):
    """Append the msgpack encoding of ``obj`` to the bytearray ``out``."""
    # bool before int: under CPython True is an int (not under MicroPython).
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, int):
        pack_int(out, obj)
    elif isinstance(obj, float):
        pack_float(out, obj, f64)
    elif isinstance(obj, str):
        b = obj.encode()
        _hdr(out, len(b), 0xA0, 32, 0xD9, 0xDA, 0xDB)
        out.extend(b)
    elif isinstance(obj, (bytes, bytearray)):
        _hdr(out, len(obj), 0, 0, 0xC4, 0xC5, 0xC6)
        out.extend(obj)
    elif isinstance(obj, (list, tuple)):
        array_header(out, len(obj))
        for x in obj:
            pack(x, out, f64)
    elif isinstance(obj, dict):
        map_header(out, len(obj))
        for k in obj:
            pack(k, out, f64)
            pack(obj[k], out, f64)
    else:
        raise TypeError("cannot pack " + str(type(obj)))


def packb(obj, f64=False):
    out = bytearray()
    pack(obj, out, f64)
    return bytes(out)


def _need(buf, off, n):
    if off + n > len(buf):
        raise ValueError("msgpack: truncated")


def _len(buf, off, size):
    _need(buf, off, size)
    if size == 1:
        return buf[off], off + 1
    if size == 2:
        return struct.unpack_from(">H", buf, off)[0], off + 2
    return struct.unpack_from(">I", buf, off)[0], off + 4


_FIXED = {
    0xCA: (">f", 4),
    0xCB: (">d", 8),
    0xCC: (">B", 1),
    0xCD: (">H", 2),
    0xCE: (">I", 4),
    0xCF: (">Q", 8),
    0xD0: (">b", 1),
    0xD1: (">h", 2),
    0xD2: (">i", 4),
    0xD3: (">q", 8),
}
_SIZES = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4, 0xDC: 2, 0xDD: 4, 0xDE: 2, 0xDF: 4}


def unpack_from(buf, off=0, depth=0):
    """``(object, next offset)``: one msgpack object decoded from ``buf`` at ``off``."""
    if depth > MAX_DEPTH:
        raise ValueError("msgpack: nested too deep")
    _need(buf, off, 1)
    t = buf[off]
    off += 1
    if t < 0x80:
        return t, off
    if t >= 0xE0:
        return t - 0x100, off
    if t == 0xC0:
        return None, off
    if t == 0xC2:
        return False, off
    if t == 0xC3:
        return True, off
    fixed = _FIXED.get(t)
    if fixed:
        _need(buf, off, fixed[1])
        return struct.unpack_from(fixed[0], buf, off)[0], off + fixed[1]
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        kind = 0xA0
    elif 0x90 <= t <= 0x9F:
        n = t & 0x0F
        kind = 0x90
    elif 0x80 <= t <= 0x8F:
        n = t & 0x0F
        kind = 0x80
    else:
        size = _SIZES.get(t)
        if size is None:
            raise ValueError("msgpack: ext not allowed" if t >= 0xC7 else "msgpack: bad type byte")
        n, off = _len(buf, off, size)
        kind = (
            0xA0 if t >= 0xD9 and t <= 0xDB else 0xC4 if t <= 0xC6 else 0x90 if t <= 0xDD else 0x80
        )
    if kind == 0xA0 or kind == 0xC4:
        _need(buf, off, n)
        raw = bytes(buf[off : off + n])
        return (raw.decode() if kind == 0xA0 else raw), off + n
    # Every item takes at least one byte: a count beyond what is left is a lie, refused
    # before the container is allocated.
    _need(buf, off, n if kind == 0x90 else 2 * n)
    if kind == 0x90:
        items = []
        for _ in range(n):
            x, off = unpack_from(buf, off, depth + 1)
            items.append(x)
        return items, off
    d = {}
    for _ in range(n):
        k, off = unpack_from(buf, off, depth + 1)
        if isinstance(k, (list, dict)):
            raise ValueError("msgpack: map key is a container")
        v, off = unpack_from(buf, off, depth + 1)
        d[k] = v
    return d, off


def unpackb(buf):
    """The one object in ``buf``; trailing bytes are an error."""
    obj, off = unpack_from(buf, 0)
    if off != len(buf):
        raise ValueError("msgpack: trailing bytes")
    return obj
