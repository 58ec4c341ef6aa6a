"""A small, fast RFC 7252 (CoAP over UDP) message codec.

``parse`` and ``build`` are the complete codec: every message the endpoint sees can be decoded
into a :class:`Message` and every message it sends is produced by ``build`` (or, on the hot
path, by hand from the same rules). ``peek_uplink`` is the hot path's filter: it reads just
enough of a datagram to tell whether it is a plain ``POST`` that the lean path can serve, and
returns ``None`` for anything else (block-wise, OSCORE, Observe, queries, unknown options,
malformed input), which the endpoint then hands to a full CoAP implementation.

Wire format (RFC 7252 §3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    |Ver| T |  TKL  |      Code     |          Message ID           |
    |   Token (if any, TKL bytes) ...
    |   Options (if any) ...
    |1 1 1 1 1 1 1 1|    Payload (if any) ...

>>> wire = build(CON, "0.02", 0x1234, b"\\x01", [(URI_PATH, b"r"), (URI_PATH, b"t1")], b"21.5")
>>> parse(wire).path
('r', 't1')
>>> peek_uplink(wire)
(0, 4660, b'\\x01', ('r', 't1'), None, b'21.5')
>>> code_to_str(68), code_from_str("4.04")
('2.04', 132)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from fogrt.errors import FogError

__all__ = [
    "ACK",
    "CON",
    "KNOWN_OPTIONS",
    "NON",
    "RST",
    "CoapFormatError",
    "Message",
    "build",
    "code_from_str",
    "code_to_str",
    "decode_uint",
    "encode_uint",
    "is_critical",
    "parse",
    "peek_uplink",
]


class CoapFormatError(FogError, ValueError):
    """A datagram is not a well-formed CoAP message (RFC 7252 §3, §4.1)."""


# -- message types ---------------------------------------------------------------------------

CON: Final = 0
NON: Final = 1
ACK: Final = 2
RST: Final = 3
TYPE_NAMES: Final = ("CON", "NON", "ACK", "RST")

# -- codes (class << 5 | detail) -------------------------------------------------------------

EMPTY: Final = 0x00
GET: Final = 0x01
POST: Final = 0x02
PUT: Final = 0x03
DELETE: Final = 0x04
FETCH: Final = 0x05
PATCH: Final = 0x06
IPATCH: Final = 0x07

CREATED: Final = 0x41  # 2.01
DELETED: Final = 0x42  # 2.02
VALID: Final = 0x43  # 2.03
CHANGED: Final = 0x44  # 2.04
CONTENT: Final = 0x45  # 2.05
CONTINUE: Final = 0x5F  # 2.31
BAD_REQUEST: Final = 0x80  # 4.00
BAD_OPTION: Final = 0x82  # 4.02
NOT_FOUND: Final = 0x84  # 4.04
METHOD_NOT_ALLOWED: Final = 0x85  # 4.05
REQUEST_ENTITY_INCOMPLETE: Final = 0x88  # 4.08
REQUEST_ENTITY_TOO_LARGE: Final = 0x8D  # 4.13
UNSUPPORTED_CONTENT_FORMAT: Final = 0x8F  # 4.15
INTERNAL_SERVER_ERROR: Final = 0xA0  # 5.00
SERVICE_UNAVAILABLE: Final = 0xA3  # 5.03

# -- option numbers --------------------------------------------------------------------------

IF_MATCH: Final = 1
URI_HOST: Final = 3
ETAG: Final = 4
IF_NONE_MATCH: Final = 5
OBSERVE: Final = 6
URI_PORT: Final = 7
LOCATION_PATH: Final = 8
OSCORE: Final = 9  # formerly Object-Security
URI_PATH: Final = 11
CONTENT_FORMAT: Final = 12
MAX_AGE: Final = 14
URI_QUERY: Final = 15
HOP_LIMIT: Final = 16
ACCEPT: Final = 17
Q_BLOCK1: Final = 19
LOCATION_QUERY: Final = 20
EDHOC: Final = 21
BLOCK2: Final = 23
BLOCK1: Final = 27
SIZE2: Final = 28
Q_BLOCK2: Final = 31
PROXY_URI: Final = 35
PROXY_SCHEME: Final = 39
SIZE1: Final = 60
ECHO: Final = 252
NO_RESPONSE: Final = 258
REQUEST_TAG: Final = 292

#: Option numbers registered with IANA that this runtime (the lean path or the full aiocoap
#: server behind it) understands. A critical option outside this set is "unrecognised".
KNOWN_OPTIONS: Final[frozenset[int]] = frozenset(
    {
        IF_MATCH,
        URI_HOST,
        ETAG,
        IF_NONE_MATCH,
        OBSERVE,
        URI_PORT,
        LOCATION_PATH,
        OSCORE,
        URI_PATH,
        CONTENT_FORMAT,
        MAX_AGE,
        URI_QUERY,
        HOP_LIMIT,
        ACCEPT,
        Q_BLOCK1,
        LOCATION_QUERY,
        EDHOC,
        BLOCK2,
        BLOCK1,
        SIZE2,
        Q_BLOCK2,
        PROXY_URI,
        PROXY_SCHEME,
        SIZE1,
        ECHO,
        NO_RESPONSE,
        REQUEST_TAG,
    }
)

#: The options ``peek_uplink`` accepts: everything else sends a request to the full server.
UPLINK_OPTIONS: Final[frozenset[int]] = frozenset({URI_HOST, URI_PORT, URI_PATH, CONTENT_FORMAT})

PAYLOAD_MARKER: Final = 0xFF
MAX_OPTION_NUMBER: Final = 0xFFFF
MAX_OPTION_LENGTH: Final = 0xFFFF + 269


def is_critical(number: int) -> bool:
    """Critical options have odd numbers (RFC 7252 §5.4.6)."""
    return bool(number & 1)


def is_unsafe(number: int) -> bool:
    """Options that a proxy must understand to forward the message (RFC 7252 §5.4.6)."""
    return bool(number & 2)


def is_no_cache_key(number: int) -> bool:
    """Options that are not part of the cache key (RFC 7252 §5.4.6)."""
    return (number & 0x1E) == 0x1C


# -- code helpers ----------------------------------------------------------------------------


def code_to_str(code: int) -> str:
    """``68`` -> ``"2.04"``."""
    if not 0 <= code <= 0xFF:
        raise ValueError(f"CoAP code out of range: {code}")
    return f"{code >> 5}.{code & 0x1F:02d}"


_CODE_CACHE: dict[str, int] = {}


def code_from_str(text: str) -> int:
    """``"2.04"`` -> ``68``; raises ``ValueError`` for anything that is not ``c.dd``."""
    code = _CODE_CACHE.get(text)
    if code is not None:
        return code
    cls, sep, detail = text.partition(".")
    if (
        not sep
        or len(cls) != 1
        or len(detail) != 2
        or not cls.isdigit()
        or not detail.isdigit()
        or not cls.isascii()
        or not detail.isascii()
    ):
        raise ValueError(f"not a CoAP code (expected c.dd, e.g. '2.04'): {text!r}")
    c, d = int(cls), int(detail)
    if c > 7 or d > 31:
        raise ValueError(f"CoAP code out of range: {text!r}")
    code = c << 5 | d
    if len(_CODE_CACHE) < 256:
        _CODE_CACHE[text] = code
    return code


def _code(code: int | str) -> int:
    return code_from_str(code) if isinstance(code, str) else code


def is_request(code: int) -> bool:
    return 0 < code < 0x20


def is_response(code: int) -> bool:
    return 0x40 <= code < 0xC0


# -- option values ---------------------------------------------------------------------------


def encode_uint(value: int) -> bytes:
    """The minimal big-endian form of an ``uint`` option value (0 is the empty string)."""
    if value < 0:
        raise ValueError(f"uint option values are non-negative: {value}")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def decode_uint(value: bytes) -> int:
    return int.from_bytes(value, "big")


# -- messages --------------------------------------------------------------------------------


class Message(NamedTuple):
    """One decoded CoAP message. ``options`` keeps wire order (sorted by number)."""

    version: int
    type: int
    code: int
    mid: int
    token: bytes
    options: list[tuple[int, bytes]]
    payload: bytes

    @property
    def is_empty(self) -> bool:
        return self.code == EMPTY

    def option(self, number: int) -> bytes | None:
        """The first value of option ``number``, or ``None``."""
        for n, v in self.options:
            if n == number:
                return v
        return None

    def option_values(self, number: int) -> list[bytes]:
        return [v for n, v in self.options if n == number]

    @property
    def path(self) -> tuple[str, ...]:
        """The Uri-Path segments (UTF-8; raises ``CoapFormatError`` on invalid UTF-8)."""
        try:
            return tuple(v.decode() for v in self.option_values(URI_PATH))
        except UnicodeDecodeError as exc:
            raise CoapFormatError("Uri-Path is not valid UTF-8") from exc

    @property
    def content_format(self) -> int | None:
        value = self.option(CONTENT_FORMAT)
        return None if value is None else decode_uint(value)

    def __str__(self) -> str:
        opts = ", ".join(f"{n}={v!r}" for n, v in self.options)
        return (
            f"<{TYPE_NAMES[self.type]} {code_to_str(self.code)} mid={self.mid} "
            f"token={self.token.hex()} [{opts}] {len(self.payload)}B>"
        )


def parse(datagram: bytes) -> Message:
    """Decode one datagram; raises :class:`CoapFormatError` on anything malformed."""
    n = len(datagram)
    if n < 4:
        raise CoapFormatError(f"datagram of {n} bytes is shorter than the 4-byte header")
    b0 = datagram[0]
    version = b0 >> 6
    if version != 1:
        raise CoapFormatError(f"unknown CoAP version {version}")
    tkl = b0 & 0x0F
    if tkl > 8:
        raise CoapFormatError(f"reserved token length {tkl}")
    code = datagram[1]
    mid = datagram[2] << 8 | datagram[3]
    if code == EMPTY and n != 4:
        raise CoapFormatError("an Empty message (code 0.00) has bytes after the message ID")
    i = 4 + tkl
    if i > n:
        raise CoapFormatError("datagram ends inside the token")
    token = datagram[4:i]
    options: list[tuple[int, bytes]] = []
    number = 0
    payload = b""
    while i < n:
        b = datagram[i]
        i += 1
        if b == PAYLOAD_MARKER:
            if i == n:
                raise CoapFormatError("payload marker followed by an empty payload")
            payload = datagram[i:]
            break
        delta = b >> 4
        length = b & 0x0F
        if delta == 15 or length == 15:
            raise CoapFormatError("option nibble 15 outside a payload marker")
        if delta == 13:
            if i >= n:
                raise CoapFormatError("datagram ends inside an option delta")
            delta = datagram[i] + 13
            i += 1
        elif delta == 14:
            if i + 2 > n:
                raise CoapFormatError("datagram ends inside an option delta")
            delta = (datagram[i] << 8 | datagram[i + 1]) + 269
            i += 2
        if length == 13:
            if i >= n:
                raise CoapFormatError("datagram ends inside an option length")
            length = datagram[i] + 13
            i += 1
        elif length == 14:
            if i + 2 > n:
                raise CoapFormatError("datagram ends inside an option length")
            length = (datagram[i] << 8 | datagram[i + 1]) + 269
            i += 2
        number += delta
        if number > MAX_OPTION_NUMBER:
            raise CoapFormatError(f"option number {number} exceeds 65535")
        end = i + length
        if end > n:
            raise CoapFormatError(f"option {number} value runs past the end of the datagram")
        options.append((number, datagram[i:end]))
        i = end
    return Message(1, (b0 >> 4) & 3, code, mid, token, options, payload)


def _ext(value: int) -> tuple[int, bytes]:
    """The 4-bit nibble and extension bytes for an option delta or length."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    value -= 269
    return 14, bytes((value >> 8, value & 0xFF))


def encode_options(options: Iterable[tuple[int, bytes]]) -> bytes:
    """Encode options in number order (stable: repeated options keep their relative order)."""
    out = bytearray()
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        if not 0 <= number <= MAX_OPTION_NUMBER:
            raise ValueError(f"option number out of range: {number}")
        if len(value) > MAX_OPTION_LENGTH:
            raise ValueError(f"option {number} value is too long ({len(value)} bytes)")
        dn, dx = _ext(number - last)
        ln, lx = _ext(len(value))
        out.append(dn << 4 | ln)
        out += dx
        out += lx
        out += value
        last = number
    return bytes(out)


def build(
    type: int,
    code: int | str,
    mid: int,
    token: bytes = b"",
    options: Iterable[tuple[int, bytes]] = (),
    payload: bytes = b"",
) -> bytes:
    """Encode one message; ``code`` is an int or ``"c.dd"``. Raises ``ValueError`` on bad
    arguments (an out-of-range field, a token over 8 bytes, content in an Empty message)."""
    c = _code(code)
    if not 0 <= type <= 3:
        raise ValueError(f"message type out of range: {type}")
    if not 0 <= c <= 0xFF:
        raise ValueError(f"code out of range: {c}")
    if not 0 <= mid <= 0xFFFF:
        raise ValueError(f"message id out of range: {mid}")
    if len(token) > 8:
        raise ValueError(f"token longer than 8 bytes: {len(token)}")
    opts = encode_options(options)
    if c == EMPTY and (token or opts or payload):
        raise ValueError("an Empty message carries no token, options or payload")
    head = bytes((0x40 | type << 4 | len(token), c, mid >> 8, mid & 0xFF))
    if payload:
        return head + token + opts + b"\xff" + payload
    return head + token + opts


def build_empty(type: int, mid: int) -> bytes:
    """An Empty ACK or RST (or a CON ping)."""
    return bytes((0x40 | type << 4, 0, mid >> 8 & 0xFF, mid & 0xFF))


# -- the hot path's filter ------------------------------------------------------------------

Uplink = tuple[int, int, bytes, tuple[str, ...], int | None, bytes]

_SEEN_MAX = 64
_seen: dict[bytes, tuple[tuple[str, ...], int | None]] = {}
"""Option blocks (the payload marker included) that ``peek_uplink`` accepted, with what they
hold: a device sends the same options with every uplink, and so does a whole fleet."""
_seen_sizes: tuple[int, ...] = ()


def peek_uplink(d: bytes) -> Uplink | None:
    """``(type, mid, token, path_segments, content_format, payload)`` for a plain uplink.

    Only a CON or NON ``POST`` whose options are Uri-Path, at most one Content-Format, and
    optionally Uri-Host / Uri-Port qualifies: anything else (Block1, OSCORE, Observe, queries,
    unknown options, malformed or non-UTF-8 input) returns ``None``. Never raises.
    """
    # Version 1 and type CON (0) or NON (1): the top three bits are 010; code 0.02 is POST.
    n = len(d)
    if n < 4 or d[0] & 0xE0 != 0x40 or d[1] != 2:
        return None
    tkl = d[0] & 0x0F
    i = 4 + tkl
    if tkl > 8 or i > n:
        return None
    # Options already seen, byte for byte, up to their payload marker: parsing is a function
    # of the bytes read, so they mean what they meant then (a non-empty payload must follow).
    for size in _seen_sizes:
        end = i + size
        if end < n:
            known = _seen.get(d[i:end])
            if known is not None:
                return ((d[0] >> 4) & 3, d[2] << 8 | d[3], d[4:i], known[0], known[1], d[end:])
    start = i
    marker = False
    path: list[str] = []
    cf: int | None = None
    number = 0
    try:
        while i < n:
            b = d[i]
            i += 1
            if b == 0xFF:
                if i == n:
                    return None
                marker = True
                break
            # Every accepted option number is below 13, and they come sorted, so an extended
            # delta (nibble 13/14) or a reserved nibble 15 means "not for the lean path".
            if b > 0xCF:
                return None
            number += b >> 4
            length = b & 0x0F
            if length > 12:
                if length == 13:
                    length = d[i] + 13
                    i += 1
                elif length == 14:
                    length = (d[i] << 8 | d[i + 1]) + 269
                    i += 2
                else:
                    return None
            if number == 11:
                path.append(d[i : i + length].decode())
            elif number == 12:
                if cf is not None or length > 2:
                    return None
                cf = int.from_bytes(d[i : i + length], "big")
            elif number != 3 and number != 7:
                return None
            i += length
        else:
            if i > n:  # the last option ran past the end of the datagram
                return None
    except (IndexError, UnicodeDecodeError):
        return None
    segments = tuple(path)
    if marker:  # the options end with the payload marker: remember them
        _remember(d[start:i], segments, cf)
    return ((d[0] >> 4) & 3, d[2] << 8 | d[3], d[4 : 4 + tkl], segments, cf, d[i:])


def _remember(block: bytes, path: tuple[str, ...], cf: int | None) -> None:
    global _seen_sizes
    if len(_seen) >= _SEEN_MAX:
        _seen.clear()
    _seen[block] = (path, cf)
    _seen_sizes = tuple(sorted({len(b) for b in _seen}))
