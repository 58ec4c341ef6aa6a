"""Signed state blobs: nothing is unpickled unless fogrt wrote it with this node's key.

Layout::

    8 bytes   magic b"FOGSTAT1"
    u32       length of the header (little-endian)
    header    JSON: format, fogrt and River versions, topology name and digest, offset,
              creation time
    payload   the checkpoint contents (msgpack; operator snapshots inside are pickles)
    32 bytes  HMAC-SHA256 over everything before it

:func:`open_sealed` checks the magic, then the HMAC (constant-time), and only then reads
the header and returns the payload; a blob signed with another key, truncated or altered in
any byte is refused with :class:`~fogrt.errors.StateError` before anything is parsed.

The key comes from ``FOGRT_STATE_KEY`` (hex or text) or, for the file backend, from a
random key created once in the state directory (``state.key``, mode 0600).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import struct
from pathlib import Path
from typing import Any

from fogrt.errors import StateError

MAGIC = b"FOGSTAT1"
FORMAT = 1
_LEN = struct.Struct("<I")
_MAC = 32
KEY_ENV = "FOGRT_STATE_KEY"


def seal(header: dict[str, Any], payload: bytes, key: bytes) -> bytes:
    head = json.dumps({"format": FORMAT, **header}, sort_keys=True).encode()
    body = MAGIC + _LEN.pack(len(head)) + head + payload
    return body + hmac.new(key, body, hashlib.sha256).digest()


def open_sealed(
    blob: bytes, key: bytes, *, what: str = "state blob"
) -> tuple[dict[str, Any], bytes]:
    """``(header, payload)`` of a blob written by :func:`seal` with ``key``; else StateError."""
    if len(blob) < len(MAGIC) + _LEN.size + _MAC or not blob.startswith(MAGIC):
        raise StateError(f"{what} is not a fogrt state blob (bad magic or truncated)")
    body, mac = blob[:-_MAC], blob[-_MAC:]
    if not hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), mac):
        raise StateError(
            f"{what} failed its HMAC check: it was altered, truncated, or "
            "written with another state key; refusing to load it"
        )
    (n,) = _LEN.unpack_from(body, len(MAGIC))
    start = len(MAGIC) + _LEN.size
    try:
        header = json.loads(body[start : start + n])
    except ValueError as exc:  # signed but unreadable: a bug, not an attack
        raise StateError(f"{what} has an unreadable header: {exc}") from None
    if header.get("format") != FORMAT:
        raise StateError(
            f"{what} has format {header.get('format')!r}; this fogrt reads format {FORMAT}"
        )
    return header, body[start + n :]


def load_key(state_dir: Path | None, *, create: bool = True) -> bytes:
    """The HMAC key: ``$FOGRT_STATE_KEY``, else ``state_dir/state.key`` (created if asked)."""
    env = os.environ.get(KEY_ENV)
    if env:
        try:
            return bytes.fromhex(env) if len(env) >= 32 and len(env) % 2 == 0 else env.encode()
        except ValueError:
            return env.encode()
    if state_dir is None:
        raise StateError(
            f"no state key: set {KEY_ENV} (a shared backend needs an explicit "
            "key, the same on every node that reads the state)"
        )
    path = state_dir / "state.key"
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    if not create:
        raise StateError(f"no state key at {path} and {KEY_ENV} is not set")
    state_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return key
