"""The CoAP wire format: reference encoder and decoder, with limits. Pure: bytes in, bytes out.

Devices ``POST /r/<source>`` an *uplink* (a msgpack map with one-letter keys: who, which
boot, which sequence number, a batch of readings) and get their *control delta* back in the
2.04 response; they ``POST /reg`` a *registration* once. The byte-level description, with
annotated hex dumps, is ``docs/wire-format.md``; this module is the reference the ingest
server, the simulator, the benchmarks and the tests use, and that the MicroPython agent
mirrors.

Every problem with a body is a :class:`WireError` carrying a CoAP response code and a short
ASCII diagnostic (the payload of the error response). Nothing else escapes the decoders,
whatever the bytes, and no decoder allocates more than the limits allow.

>>> dec = UplinkDecoder({"temp": "float", "door": "bool"})
>>> body = encode_uplink("n1", 3, 42, [(0.0, {"temp": 21.5, "door": False})],
...                      positional_fields=["temp", "door"])
>>> up = dec.decode(body)
>>> up.device, up.boot, up.seq, up.readings
('n1', 3, 42, [(0.0, {'temp': 21.5, 'door': False})])
>>> ev = up.events(arrival=1700000000.0)[0]
>>> ev.key, split_event_seq(ev.seq), ev.time, ev.fields
('n1', (3, 42, 0), 1700000000.0, {'temp': 21.5, 'door': False})
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

import msgpack

from fogrt.errors import IngestError
from fogrt.event import Event
from fogrt.types import FieldType, Schema, Value

__all__ = [
    "BAD_REQUEST",
    "CONTENT_FORMAT",
    "CONTROL_KEYS",
    "DEFAULT_LIMITS",
    "NOT_FOUND",
    "TOO_LARGE",
    "UNAUTHORIZED",
    "UNSUPPORTED_FORMAT",
    "Control",
    "Limits",
    "Registration",
    "Uplink",
    "UplinkDecoder",
    "WireError",
    "apply_delta",
    "check_content_format",
    "decode_control",
    "decode_registration",
    "decode_uplink",
    "encode_control_delta",
    "encode_registration",
    "encode_uplink",
    "event_seq",
    "split_event_seq",
]

# -- constants ----------------------------------------------------------------------------

CONTENT_FORMAT: Final = 65362
"""CoAP Content-Format of every body: "application/x-msgpack", experimental range 65000-65535.

CoAP has no registered msgpack format. A request may also carry no Content-Format at all.
"""

BAD_REQUEST: Final = "4.00"
"""The body is not msgpack, or not a valid uplink / registration."""
UNAUTHORIZED: Final = "4.01"
"""Raised by the server (never by this module): the device may not post (not registered...)."""
NOT_FOUND: Final = "4.04"
"""Raised by the server (never by this module): no source listens on the request path."""
TOO_LARGE: Final = "4.13"
"""The body is longer than ``Limits.max_payload`` (the error carries ``size1``)."""
UNSUPPORTED_FORMAT: Final = "4.15"
"""The request's Content-Format is neither absent nor :data:`CONTENT_FORMAT`."""

BOOT_BITS: Final = 21
SEQ_BITS: Final = 32
INDEX_BITS: Final = 10
MAX_BOOT: Final = (1 << BOOT_BITS) - 1
"""Largest boot epoch (2 097 151): the boot counter must fit the event sequence number."""
MAX_SEQ: Final = (1 << SEQ_BITS) - 1
"""Largest uplink sequence number (a device's uint32 counter)."""
MAX_READINGS: Final = 1 << INDEX_BITS
"""Hard ceiling of readings per uplink (1024); ``Limits.max_readings`` is at most this."""
MAX_AGE_MS: Final = (1 << 32) - 1
"""Largest reading age, in milliseconds (about 49.7 days)."""
MAX_VERSION: Final = (1 << 32) - 1
"""Largest control version."""
MAX_CLOCK: Final = 1e10
"""Largest device clock accepted, epoch seconds (year 2286)."""
MAX_DIAGNOSTIC: Final = 100
"""Longest diagnostic, in bytes (it is sent as the payload of the CoAP error response)."""

_DEVICE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
_SENSOR = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_FIRMWARE = re.compile(r"[ -~]{1,64}")
_MISSING: Final[Any] = object()


def event_seq(boot: int, seq: int, index: int) -> int:
    """The engine's ``Event.seq`` of reading ``index`` of uplink ``seq`` sent in ``boot``.

    ``boot << 42 | seq << 10 | index``: unique per device and increasing in
    (boot, seq, index) order, and below 2**63 so it fits every sink's int64.

    >>> event_seq(0, 0, 0), event_seq(0, 1, 0), event_seq(1, 0, 0) > event_seq(0, MAX_SEQ, 1023)
    (0, 1024, True)
    """
    return (boot << (SEQ_BITS + INDEX_BITS)) | (seq << INDEX_BITS) | index


def split_event_seq(value: int) -> tuple[int, int, int]:
    """``(boot, seq, index)`` back from an :func:`event_seq` value."""
    return (
        value >> (SEQ_BITS + INDEX_BITS),
        (value >> INDEX_BITS) & MAX_SEQ,
        value & (MAX_READINGS - 1),
    )


# -- errors -------------------------------------------------------------------------------


def _ascii(text: str, limit: int = MAX_DIAGNOSTIC) -> str:
    """Printable ASCII only (anything else becomes ``?``), at most ``limit`` characters."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text)
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _name(key: object) -> str:
    """A device-supplied name (a map key: str, or bin) fit for a diagnostic: ASCII, <= 24."""
    return _ascii(key if type(key) is str else repr(key), 24)


class WireError(IngestError):
    """A body (or its Content-Format) is refused: a CoAP error ``code`` and a ``diagnostic``.

    ``diagnostic`` is printable ASCII of at most 100 bytes, ``path: problem`` where the path
    uses the wire keys (``r[3].values.temp: expected float, got str``). ``size1`` is set on
    4.13 errors: the largest body accepted (for the CoAP Size1 option).
    """

    def __init__(self, code: str, diagnostic: str, *, size1: int | None = None) -> None:
        self.code = code
        self.diagnostic = _ascii(diagnostic)
        self.size1 = size1
        super().__init__(f"{code} {self.diagnostic}")


def _bad(diagnostic: str) -> WireError:
    return WireError(BAD_REQUEST, diagnostic)


_TYPE_NAMES: dict[type, str] = {
    type(None): "nil",
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    bytes: "bin",
    tuple: "array",
    list: "array",
    dict: "map",
    msgpack.ExtType: "ext",
}


def _tname(value: object) -> str:
    """The msgpack name of a decoded value's type (nil, bool, int, float, str, bin, ...)."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _expected(path: str, what: str, value: object) -> WireError:
    return _bad(f"{path}: expected {what}, got {_tname(value)}")


_LIMIT = re.compile(r"(\d+) exceeds max_(str|bin|array|map|ext)_len\((\d+)\)")
_LIMIT_UNIT = {"str": "bytes", "bin": "bytes", "ext": "bytes", "array": "items", "map": "entries"}


def _unpack_error(exc: Exception) -> WireError:
    """A stable diagnostic for whatever msgpack raised (its messages vary by version)."""
    if isinstance(exc, msgpack.ExtraData):
        return _bad("msgpack: trailing bytes after the body")
    if isinstance(exc, msgpack.StackError):
        return _bad("msgpack: nested too deep")
    if isinstance(exc, msgpack.FormatError):
        return _bad("msgpack: invalid type byte")
    if isinstance(exc, UnicodeDecodeError):
        return _bad("msgpack: str is not valid UTF-8")
    text = str(exc)
    if m := _LIMIT.search(text):
        n, kind, limit = m.groups()
        if kind in ("bin", "ext") and limit == "0":
            return _bad(f"msgpack: {kind} not allowed")
        return _bad(f"msgpack: {kind} of {n} {_LIMIT_UNIT[kind]} > max_{kind}_len {limit}")
    if "map key" in text:
        return _bad("msgpack: map keys must be str")
    if "incomplete" in text or isinstance(exc, msgpack.OutOfData):
        return _bad("msgpack: truncated")
    return _bad("msgpack: malformed")


def check_content_format(content_format: int | None) -> None:
    """Refuse (4.15) a request whose Content-Format is neither absent nor 65362.

    >>> check_content_format(None), check_content_format(CONTENT_FORMAT)
    (None, None)
    >>> check_content_format(60)
    Traceback (most recent call last):
    fogrt.ingest.wire.WireError: 4.15 content-format 60 not accepted (use 65362 or none)
    """
    if content_format is not None and content_format != CONTENT_FORMAT:
        raise WireError(
            UNSUPPORTED_FORMAT,
            f"content-format {content_format} not accepted (use {CONTENT_FORMAT} or none)",
        )


# -- limits -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """What a body may contain. Bodies beyond ``max_payload`` are refused with 4.13, the
    rest with 4.00. The ``max_*_len`` limits are given to msgpack itself, so no header
    claiming a huge length ever allocates (a decoder raises them to fit its schema)."""

    max_payload: int = 4096
    """Bytes of a body."""
    max_str_len: int = 256
    """Bytes of any msgpack str (keys and values)."""
    max_bin_len: int = 0
    """Bytes of any msgpack bin; 0: bin is not allowed."""
    max_array_len: int = 256
    """Items of any msgpack array (at least ``max_readings`` and the field count)."""
    max_map_len: int = 64
    """Entries of any msgpack map (at least the field count)."""
    max_depth: int = 4
    """Containers nested in one another, the top map counting as 1 (an uplink needs 4)."""
    max_readings: int = 256
    """Readings per uplink, 1..1024."""
    max_unknown_keys: int = 8
    """Unknown top-level keys ignored (forward compatibility); more are refused."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if type(value) is not int or value < 0:
                raise ValueError(f"Limits.{f.name}: expected an int >= 0, got {value!r}")
        if not 1 <= self.max_readings <= MAX_READINGS:
            raise ValueError(f"Limits.max_readings: must be 1..{MAX_READINGS}")
        if self.max_payload < 1 or self.max_depth < 1:
            raise ValueError("Limits.max_payload and Limits.max_depth must be >= 1")

    def unpacker(self, *, arrays: int = 0, maps: int = 0) -> Callable[[bytes], Any]:
        """``msgpack.unpackb`` bound to these limits (raised to ``arrays``/``maps``)."""
        return partial(
            msgpack.unpackb,
            raw=False,
            use_list=False,
            strict_map_key=True,
            max_str_len=self.max_str_len,
            max_bin_len=self.max_bin_len,
            max_array_len=max(self.max_array_len, arrays),
            max_map_len=max(self.max_map_len, maps),
            max_ext_len=0,
        )


DEFAULT_LIMITS: Final = Limits()


def _unpack(body: bytes, unpack: Callable[[bytes], Any], limits: Limits) -> dict[str, Any]:
    """The top-level map of a body, or a WireError (4.13 when too long, else 4.00)."""
    if len(body) > limits.max_payload:
        raise WireError(
            TOO_LARGE,
            f"payload of {len(body)} bytes > {limits.max_payload}",
            size1=limits.max_payload,
        )
    if not body:
        raise _bad("empty payload")
    try:
        doc = unpack(body)
    except Exception as exc:  # msgpack raises ValueError subclasses and more; all are 4.00
        raise _unpack_error(exc) from None
    if type(doc) is not dict:
        raise _expected("body", "map", doc)
    return doc


def _depth(value: object) -> int:
    """Nesting depth of a decoded value (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if type(item) is tuple:
            depth += 1
            stack.extend((x, depth) for x in item)
        elif type(item) is dict:
            depth += 1
            stack.extend((x, depth) for x in item.values())
        deepest = max(deepest, depth)
    return deepest


def _check_unknown(doc: dict[str, Any], known: Iterable[str], limits: Limits) -> None:
    """Unknown top-level keys are ignored, but at most ``max_unknown_keys`` and not deep."""
    unknown = sorted(doc.keys() - set(known), key=repr)  # keys may be str or bin
    if len(unknown) > limits.max_unknown_keys:
        raise _bad(f"body: {len(unknown)} unknown keys > {limits.max_unknown_keys}")
    for key in unknown:
        if _depth(doc[key]) >= limits.max_depth:
            raise _bad(f"{_name(key)}: nested deeper than {limits.max_depth}")


def _int(path: str, value: object, low: int, high: int) -> int:
    """An int (not a bool) in ``low..high``; ``_MISSING`` means the key is absent."""
    if type(value) is not int:
        raise _bad(f"{path}: required") if value is _MISSING else _expected(path, "int", value)
    if not low <= value <= high:
        raise _bad(f"{path}: {value} out of range {low}..{high}")
    return value


def _finite(path: str, value: object, low: float, high: float) -> float:
    """A finite float (an int is accepted) in ``low..high``."""
    if type(value) is int:
        value = float(value)
    elif type(value) is not float:
        raise _expected(path, "float", value)
    if not low <= value <= high:  # NaN fails this too
        raise _bad(f"{path}: {value!r} out of range {low:g}..{high:g}")
    return value


def _device(value: object, path: str = "d") -> str:
    if value is _MISSING:
        raise _bad(f"{path}: required")
    if type(value) is not str:
        raise _expected(path, "str", value)
    if not _DEVICE.fullmatch(value):
        raise _bad(f"{path}: invalid device id (1..64 of A-Z a-z 0-9 _ . : -)")
    return value


# -- uplink -------------------------------------------------------------------------------

Reading = tuple[float, dict[str, Value]]
"""``(age_s, values)``: how long before the send it was taken, and every field's value."""


@dataclass(slots=True)
class Uplink:
    """A decoded, validated uplink. ``readings`` hold every field of the source, in schema
    order (``None`` = missing); ``nonfinite`` counts the NaN/inf values that became ``None``.

    Read-only by convention: not ``frozen`` because that would double the decode time of a
    one-reading uplink (a frozen dataclass sets each attribute through ``object.__setattr__``).
    """

    device: str
    boot: int
    seq: int
    control_version: int = 0
    battery_mv: int | None = None
    battery_pct: int | None = None
    clock: float | None = None
    readings: list[Reading] = dataclasses.field(default_factory=list)
    nonfinite: int = 0

    def events(self, arrival: float) -> list[Event]:
        """The engine events: key = device, seq = :func:`event_seq` (boot, seq, index), time =
        (``clock`` if the device sent one, else ``arrival``) - age. Events share the
        readings' dicts (events are never mutated)."""
        base = arrival if self.clock is None else self.clock
        seq0 = event_seq(self.boot, self.seq, 0)
        key = self.device
        return [
            Event(key, seq0 | i, base - age, fields, arrival)
            for i, (age, fields) in enumerate(self.readings)
        ]


_UPLINK_KEYS: Final = ("d", "b", "s", "v", "p", "q", "t", "r")
_PY_TYPES: Final[dict[str, type]] = {"float": float, "int": int, "bool": bool, "str": str}
_DEVICE_CACHE: Final = 1 << 15
"""Valid device ids remembered per decoder (about 2 MiB when full)."""


class UplinkDecoder:
    """Decodes the uplinks of one source: built once per schema, ``decode`` is the hot path.

    Field names and types come from the source's schema; the compact (positional) form
    follows the schema's declared order.
    """

    def __init__(self, schema: Schema, limits: Limits = DEFAULT_LIMITS) -> None:
        if not schema:
            raise ValueError("a source needs at least one field")
        unknown = {t for t in schema.values() if t not in _PY_TYPES}
        if unknown:
            raise ValueError(f"unknown field types {sorted(unknown)}")
        self.schema: dict[str, FieldType] = dict(schema)
        self.limits = limits
        self._names: tuple[str, ...] = tuple(schema)
        self._types: tuple[type, ...] = tuple(_PY_TYPES[t] for t in schema.values())
        self._want: dict[str, type] = dict(zip(self._names, self._types, strict=True))
        self._nfields = len(self._names)
        self._template: dict[str, Value] = dict.fromkeys(self._names)
        self._float_row = _float_row(self._names) if set(self._types) == {float} else None
        self._devices: set[str] = set()
        self._unpack = limits.unpacker(
            arrays=max(limits.max_readings, self._nfields),
            maps=max(self._nfields, len(_UPLINK_KEYS) + limits.max_unknown_keys),
        )

    def _remember(self, device: str) -> None:
        """Cache a valid device id (the regex costs more than the rest of the header)."""
        if len(self._devices) >= _DEVICE_CACHE:
            self._devices.pop()  # an arbitrary one: a fleet larger than the cache still hits
        self._devices.add(device)

    def decode(self, body: bytes) -> Uplink:
        """Validate ``body`` against the format, the limits and the schema; raise WireError."""
        limits = self.limits
        doc = _unpack(body, self._unpack, limits)
        get = doc.get
        # Fast checks inline; the helpers are only called to build the error.
        device = get("d", _MISSING)
        if type(device) is not str or device not in self._devices:
            self._remember(_device(device))
        boot = get("b", _MISSING)
        if type(boot) is not int or not 0 <= boot <= MAX_BOOT:
            _int("b", boot, 0, MAX_BOOT)
        seq = get("s", _MISSING)
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            _int("s", seq, 0, MAX_SEQ)
        known = 4  # d b s r, then the optional keys present (absent and nil are the same)
        version = get("v")
        if version is None:
            version = 0
        else:
            known += 1
            if type(version) is not int or not 0 <= version <= MAX_VERSION:
                _int("v", version, 0, MAX_VERSION)
        battery_mv = get("p")
        if battery_mv is not None:
            known += 1
            if type(battery_mv) is not int or not 0 <= battery_mv <= 10000:
                _int("p", battery_mv, 0, 10000)
        battery_pct = get("q")
        if battery_pct is not None:
            known += 1
            if type(battery_pct) is not int or not 0 <= battery_pct <= 100:
                _int("q", battery_pct, 0, 100)
        clock = get("t")
        if clock is not None:
            known += 1
            clock = _finite("t", clock, 0.0, MAX_CLOCK)
        rs = get("r", _MISSING)
        if len(doc) > known:  # unknown keys, or nil optional ones: look closer
            _check_unknown(doc, _UPLINK_KEYS, limits)
        if type(rs) is not tuple:
            raise _bad("r: required") if rs is _MISSING else _expected("r", "array", rs)
        if not rs:
            raise _bad("r: no readings")
        if len(rs) > limits.max_readings:
            raise _bad(f"r: {len(rs)} readings > {limits.max_readings}")

        names, types, want, nfields = self._names, self._types, self._want, self._nfields
        template = self._template
        float_row = self._float_row
        readings: list[Reading] = []
        append = readings.append
        nonfinite = 0
        for i, reading in enumerate(rs):
            if type(reading) is not tuple or len(reading) != 2:
                raise _bad(f"r[{i}]: expected [age_ms, values], got {_shape(reading)}")
            age, values = reading
            if type(age) is not int:
                raise _expected(f"r[{i}].age", "int", age)
            if not 0 <= age <= MAX_AGE_MS:
                raise _bad(f"r[{i}].age: {age} out of range 0..{MAX_AGE_MS}")
            if float_row is not None and type(values) is tuple and len(values) == nfields:
                # The common uplink: every field a float, every value a finite float.
                row = float_row(values)
                if row is not None:
                    append((age / 1000, row))
                    continue
            out = template.copy()
            # The two forms share the checks, written out twice to keep the hot loop flat:
            # exact type, or nil, or int for float; NaN/inf floats become None (counted).
            if type(values) is tuple:
                if len(values) > nfields:
                    raise _bad(f"r[{i}].values: {len(values)} values > {nfields} fields")
                for name, kind, v in zip(names, types, values, strict=False):
                    t = type(v)
                    if t is kind:
                        if t is float and v - v != 0.0:
                            v = None
                            nonfinite += 1
                    elif v is None:
                        pass
                    elif kind is float and t is int:
                        v = float(v)
                    else:
                        raise _expected(f"r[{i}].values.{name}", kind.__name__, v)
                    out[name] = v
            elif type(values) is dict:
                for name, v in values.items():
                    wanted = want.get(name)
                    if wanted is None:
                        raise _bad(f"r[{i}].values.{_name(name)}: unknown field")
                    t = type(v)
                    if t is wanted:
                        if t is float and v - v != 0.0:
                            v = None
                            nonfinite += 1
                    elif v is None:
                        pass
                    elif wanted is float and t is int:
                        v = float(v)
                    else:
                        raise _expected(f"r[{i}].values.{name}", wanted.__name__, v)
                    out[name] = v
            else:
                raise _expected(f"r[{i}].values", "map or array", values)
            append((age / 1000, out))
        return Uplink(
            device, boot, seq, version, battery_mv, battery_pct, clock, readings, nonfinite
        )


def _float_row(names: tuple[str, ...]) -> Callable[[tuple[Any, ...]], dict[str, Value] | None]:
    """For a source whose fields are all floats: a function of a compact reading with one value
    per field that returns its values as a dict when every one is a finite float, else None
    (the general checks then decide). Generated once per schema, as ``dataclasses`` generates
    methods: unrolled, it takes about 0.5 µs for 3 fields where the loop takes 1.1 µs. Only
    ``repr`` of the field names reaches the source text.
    """
    vs = [f"v{i}" for i in range(len(names))]
    is_float = " and ".join(f"type({v}) is float" for v in vs)
    finite = " and ".join(f"{v} - {v} == 0.0" for v in vs)  # NaN and inf give NaN
    row = ", ".join(f"{name!r}: {v}" for name, v in zip(names, vs, strict=True))
    source = (
        f"def float_row(values):\n"
        f"    {', '.join(vs)}, = values\n"
        f"    if {is_float} and {finite}:\n"
        f"        return {{{row}}}\n"
        f"    return None\n"
    )
    namespace: dict[str, Any] = {"type": type, "float": float}
    exec(source, namespace)  # the source holds repr() of the names, nothing else
    function: Callable[[tuple[Any, ...]], dict[str, Value] | None] = namespace["float_row"]
    return function


def _shape(value: object) -> str:
    if type(value) is tuple:
        return f"array of {len(value)}"
    return _tname(value)


def decode_uplink(body: bytes, schema: Schema, limits: Limits = DEFAULT_LIMITS) -> Uplink:
    """One-off decode (builds an :class:`UplinkDecoder`; keep one per source instead)."""
    return UplinkDecoder(schema, limits).decode(body)


def encode_uplink(
    device: str,
    boot: int,
    seq: int,
    readings: Iterable[tuple[float, Mapping[str, Value]]],
    *,
    control_version: int = 0,
    battery_mv: int | None = None,
    battery_pct: int | None = None,
    clock: float | None = None,
    positional_fields: Sequence[str] | None = None,
    float32: bool = False,
) -> bytes:
    """The body of an uplink. ``readings`` are ``(age_s, {field: value})``; ages are sent in
    whole milliseconds. With ``positional_fields`` (the source's field order) values go as
    arrays (the compact form, trailing missing values dropped); otherwise as maps (missing
    values dropped). ``float32`` packs floats in 4 bytes, as small devices do.

    Raises ValueError for arguments the decoder would refuse (except field names and types,
    which need the schema, and non-finite floats, which are sent as they are).
    """
    if type(device) is not str or not _DEVICE.fullmatch(device):
        raise ValueError(f"device: invalid device id {device!r} (1..64 of A-Z a-z 0-9 _ . : -)")
    for what, value, high in (
        ("boot", boot, MAX_BOOT),
        ("seq", seq, MAX_SEQ),
        ("control_version", control_version, MAX_VERSION),
        ("battery_mv", 0 if battery_mv is None else battery_mv, 10000),
        ("battery_pct", 0 if battery_pct is None else battery_pct, 100),
    ):
        if type(value) is not int or not 0 <= value <= high:
            raise ValueError(f"{what}: expected an int in 0..{high}, got {value!r}")
    if clock is not None and not 0 <= clock <= MAX_CLOCK:
        raise ValueError(f"clock: expected epoch seconds in 0..{MAX_CLOCK:g}, got {clock!r}")
    doc: dict[str, Any] = {"d": device, "b": boot, "s": seq}
    if control_version:
        doc["v"] = control_version
    if battery_mv is not None:
        doc["p"] = battery_mv
    if battery_pct is not None:
        doc["q"] = battery_pct
    if clock is not None:
        doc["t"] = clock
    rs: list[list[Any]] = []
    order = None if positional_fields is None else list(positional_fields)
    for age_s, values in readings:
        if not 0 <= age_s <= MAX_AGE_MS / 1000:  # NaN fails too
            raise ValueError(f"reading {len(rs)}: age {age_s!r} s out of range")
        age_ms = round(age_s * 1000)
        if order is None:
            rs.append([age_ms, {k: v for k, v in values.items() if v is not None}])
            continue
        extra = [k for k in values if k not in order]
        if extra:
            raise ValueError(f"reading {len(rs)}: {extra[0]!r} is not in positional_fields")
        row = [values.get(name) for name in order]
        while row and row[-1] is None:
            row.pop()
        rs.append([age_ms, row])
    if not 1 <= len(rs) <= MAX_READINGS:
        raise ValueError(f"expected 1..{MAX_READINGS} readings, got {len(rs)}")
    doc["r"] = rs
    body: bytes = msgpack.packb(doc, use_bin_type=True, use_single_float=float32)
    return body


# -- control (fog -> device) --------------------------------------------------------------

TX_POLICIES: Final = ("always", "delta", "predict")
POWER_MODES: Final = ("none", "min", "max")
MAX_COEFFS: Final = 16


class _Invalid(Exception):
    """A control or registration value does not fit (message without the path)."""


def _c_int(low: int, high: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if type(value) is not int:
            raise _Invalid(f"expected int, got {_tname(value)}")
        if not low <= value <= high:
            raise _Invalid(f"{value} out of range {low}..{high}")
        return value

    return check


def _c_float(low: float, high: float, *, open_low: bool = False) -> Callable[[object], float]:
    def check(value: object) -> float:
        if type(value) is int:
            value = float(value)
        elif type(value) is not float:
            raise _Invalid(f"expected float, got {_tname(value)}")
        if not low <= value <= high or (open_low and value == low):  # NaN fails too
            raise _Invalid(f"{value!r} out of range {'>' if open_low else ''}{low:g}..{high:g}")
        return value

    return check


def _c_choice(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if type(value) is not str:
            raise _Invalid(f"expected str, got {_tname(value)}")
        if value not in choices:
            raise _Invalid(f"expected one of {'|'.join(choices)}")
        return value

    return check


def _c_coeffs(value: object) -> tuple[float, ...]:
    if type(value) not in (tuple, list):
        raise _Invalid(f"expected array, got {_tname(value)}")
    items: Sequence[object] = value  # type: ignore[assignment]
    if len(items) > MAX_COEFFS:
        raise _Invalid(f"{len(items)} coefficients > {MAX_COEFFS}")
    check = _c_float(-1e300, 1e300)
    out = []
    for j, x in enumerate(items):
        try:
            out.append(check(x))
        except _Invalid as exc:
            raise _Invalid(f"[{j}]: {exc}") from None
    return tuple(out)


CONTROL_KEYS: Final[dict[str, tuple[str, Callable[[object], Any]]]] = {
    "i": ("interval", _c_int(1, 7 * 86400)),
    "sp": ("sample_period", _c_float(0.0, 86400.0, open_low=True)),
    "tx": ("tx", _c_choice(TX_POLICIES)),
    "e": ("epsilon", _c_float(0.0, 1e300)),
    "c": ("coeffs", _c_coeffs),
    "pm": ("power_mode", _c_choice(POWER_MODES)),
    "bu": ("burst_until", _c_int(0, (1 << 32) - 1)),
    "bt": ("batch", _c_int(1, MAX_READINGS)),
}
"""Wire key -> (Control attribute, checker), in the stable order deltas are encoded in."""


@dataclass(frozen=True, slots=True)
class Control:
    """What the fog tells a device to do. Version 0 is these defaults, on both sides.

    >>> Control(interval=30).interval, Control().tx
    (30, 'always')
    """

    interval: int = 60
    """``i``: report interval, s: send buffered readings at least this often."""
    sample_period: float = 60.0
    """``sp``: sample period, s."""
    tx: str = "always"
    """``tx``: always (every reading), delta (when it moved > epsilon since the last sent),
    predict (when it is > epsilon off the predictor's forecast)."""
    epsilon: float = 0.0
    """``e``: the threshold of delta and predict."""
    coeffs: tuple[float, ...] = ()
    """``c``: predictor coefficients ``c0 + c1*x[t-1] + c2*x[t-2] + ...`` (at most 16)."""
    power_mode: str = "none"
    """``pm``: Wi-Fi power save: none, min, max."""
    burst_until: int = 0
    """``bu``: until this epoch second, send every reading at once (0: no burst)."""
    batch: int = 1
    """``bt``: send when this many readings are buffered (1..1024)."""

    def __post_init__(self) -> None:
        for key, (attr, check) in CONTROL_KEYS.items():
            try:
                value = check(getattr(self, attr))
            except _Invalid as exc:
                raise ValueError(f"Control.{attr} ({key}): {exc}") from None
            object.__setattr__(self, attr, value)

    def wire(self) -> dict[str, Any]:
        """Every key of the record, in wire form and key order."""
        return {key: _wire_value(getattr(self, attr)) for key, (attr, _) in CONTROL_KEYS.items()}


def _wire_value(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def encode_control_delta(current: Control, version: int, since: Control | None) -> bytes:
    """The 2.04 response body for a device that applies ``since`` (``None``: unknown).

    - ``since == current``: ``b""`` (an empty payload means "no change"; the device keeps
      its version). The server also answers ``b""`` directly when the reported version is
      the current one.
    - otherwise ``{"v": version, <changed keys>}``; with ``since=None`` every key is sent.
      A device reporting version 0 applies the defaults: pass ``Control()``.
    """
    if type(version) is not int or not 0 <= version <= MAX_VERSION:
        raise ValueError(f"version: expected an int in 0..{MAX_VERSION}, got {version!r}")
    if since is not None and since == current:
        return b""
    delta: dict[str, Any] = {"v": version}
    for key, (attr, _) in CONTROL_KEYS.items():
        value = getattr(current, attr)
        if since is None or getattr(since, attr) != value:
            delta[key] = _wire_value(value)
    body: bytes = msgpack.packb(delta, use_bin_type=True)
    return body


_CONTROL_UNPACK = DEFAULT_LIMITS.unpacker(arrays=MAX_COEFFS, maps=len(CONTROL_KEYS) + 1)


def decode_control(body: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """A control response body as ``{wire key: value}``: ``{}`` for the empty "no change"
    body, else ``v`` and the changed keys (validated; ``c`` as a tuple). Unknown keys are
    ignored, as a device does."""
    if not body:
        return {}
    unpack = (
        _CONTROL_UNPACK
        if limits is DEFAULT_LIMITS
        else limits.unpacker(arrays=MAX_COEFFS, maps=len(CONTROL_KEYS) + 1)
    )
    doc = _unpack(body, unpack, limits)
    out: dict[str, Any] = {"v": _int("v", doc.get("v", _MISSING), 0, MAX_VERSION)}
    for key, (_, check) in CONTROL_KEYS.items():
        value = doc.get(key, _MISSING)
        if value is _MISSING:
            continue
        try:
            out[key] = check(value)
        except _Invalid as exc:
            raise _bad(f"{key}{'' if str(exc).startswith('[') else ': '}{exc}") from None
    if len(doc) > len(out):
        _check_unknown(doc, out, limits)
    return out


def apply_delta(control: Control, delta: Mapping[str, Any]) -> Control:
    """``control`` with a decoded delta applied (``v`` and unknown keys are not part of it).

    >>> c = apply_delta(Control(), decode_control(encode_control_delta(
    ...     Control(interval=30, tx="delta", epsilon=0.5), 7, Control())))
    >>> c.interval, c.tx, c.epsilon, c.batch
    (30, 'delta', 0.5, 1)
    """
    changes = {CONTROL_KEYS[k][0]: v for k, v in delta.items() if k in CONTROL_KEYS}
    return dataclasses.replace(control, **changes) if changes else control


# -- registration -------------------------------------------------------------------------

MAX_SENSORS: Final = 64


@dataclass(frozen=True, slots=True)
class Registration:
    """``POST /reg``: who the device is and what it can do."""

    device: str
    """``d``: device id, as in uplinks."""
    firmware: str
    """``fw``: firmware version, 1..64 printable ASCII characters."""
    sensors: tuple[str, ...] = ()
    """``s``: the sensors (field names) it reads, at most 64."""
    capacity_mah: int | None = None
    """``cap``: battery capacity, mAh (absent: mains powered or unknown)."""
    power_modes: tuple[str, ...] = ("none",)
    """``pm``: the Wi-Fi power-save modes it supports (subset of none, min, max)."""

    def __post_init__(self) -> None:
        if type(self.device) is not str or not _DEVICE.fullmatch(self.device):
            raise ValueError(f"Registration.device (d): invalid device id {self.device!r}")
        for key, attr, check in _REG_CHECKS:
            try:
                value = check(getattr(self, attr))
            except _Invalid as exc:
                raise ValueError(f"Registration.{attr} ({key}): {exc}") from None
            object.__setattr__(self, attr, value)


def _c_firmware(value: object) -> str:
    if type(value) is not str:
        raise _Invalid(f"expected str, got {_tname(value)}")
    if not _FIRMWARE.fullmatch(value):
        raise _Invalid("expected 1..64 printable ASCII characters")
    return value


def _c_names(
    pattern: re.Pattern[str], limit: int, what: str
) -> Callable[[object], tuple[str, ...]]:
    def check(value: object) -> tuple[str, ...]:
        if type(value) not in (tuple, list):
            raise _Invalid(f"expected array, got {_tname(value)}")
        items: Sequence[object] = value  # type: ignore[assignment]
        if len(items) > limit:
            raise _Invalid(f"{len(items)} items > {limit}")
        for j, x in enumerate(items):
            if type(x) is not str:
                raise _Invalid(f"[{j}]: expected str, got {_tname(x)}")
            if not pattern.fullmatch(x):
                raise _Invalid(f"[{j}]: invalid {what}")
        if len(set(items)) != len(items):
            raise _Invalid("duplicate names")
        return tuple(items)  # type: ignore[arg-type]

    return check


def _c_optional(check: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda value: None if value is None else check(value)


_REG_CHECKS: Final = (
    ("fw", "firmware", _c_firmware),
    ("s", "sensors", _c_names(_SENSOR, MAX_SENSORS, "sensor name")),
    ("cap", "capacity_mah", _c_optional(_c_int(0, 1_000_000))),
    ("pm", "power_modes", _c_names(re.compile("none|min|max"), 3, "power mode")),
)
_REG_KEYS: Final = ("d", "fw", "s", "cap", "pm")
_REG_UNPACK = DEFAULT_LIMITS.unpacker(arrays=MAX_SENSORS, maps=len(_REG_KEYS))


def encode_registration(registration: Registration) -> bytes:
    """The body of ``POST /reg`` (``cap`` only when known)."""
    doc: dict[str, Any] = {
        "d": registration.device,
        "fw": registration.firmware,
        "s": list(registration.sensors),
    }
    if registration.capacity_mah is not None:
        doc["cap"] = registration.capacity_mah
    doc["pm"] = list(registration.power_modes)
    body: bytes = msgpack.packb(doc, use_bin_type=True)
    return body


def decode_registration(body: bytes, limits: Limits = DEFAULT_LIMITS) -> Registration:
    """A validated :class:`Registration`; ``d`` and ``fw`` are required."""
    unpack = (
        _REG_UNPACK
        if limits is DEFAULT_LIMITS
        else limits.unpacker(arrays=MAX_SENSORS, maps=len(_REG_KEYS))
    )
    doc = _unpack(body, unpack, limits)
    device = _device(doc.get("d", _MISSING))
    values: dict[str, Any] = {}
    for key, attr, check in _REG_CHECKS:
        value = doc.get(key, _MISSING)
        if value is _MISSING:
            if key == "fw":
                raise _bad("fw: required")
            continue
        try:
            values[attr] = check(value)
        except _Invalid as exc:
            raise _bad(f"{key}{'' if str(exc).startswith('[') else ': '}{exc}") from None
    if len(doc) > len(values) + 1:
        _check_unknown(doc, _REG_KEYS, limits)
    return Registration(device, **values)
