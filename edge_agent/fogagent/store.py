"""Flash: the store-and-forward outbox and the boot epoch.

The outbox holds sealed uplinks (boot, seq, readings) that the fog has not acknowledged
and that no longer fit RTC memory, oldest first, in one file: each entry is a 4-byte
header (body length, reading count; big-endian uint16 each) and the msgpack array
``[boot, seq, [[taken_ms, values], ...]]``. Entries are appended; sending removes them
from the front by copying the rest to a new file (in small chunks: the file is never read
into RAM whole) and renaming it over the old one. The file is bounded by bytes and by
readings: when an append would pass a bound, the OLDEST entries are dropped and their
readings counted, and the agent reports that count in its uplinks (``x``).

An entry keeps the (boot, seq) it was sealed with for good: a resend after a lost ACK must
carry the same pair so that the fog's deduplication recognises it.

The boot epoch (``fog_boot``, a decimal number) is incremented on every cold boot. Never
delete it: a device that starts again at an epoch the fog has already seen would have its
readings taken for duplicates.
"""

import os

try:
    import ustruct as struct
except ImportError:
    import struct

from fogagent import mpack

_CHUNK = 256
MAX_BOOT = (1 << 21) - 1


def join(folder, name):
    return folder.rstrip("/") + "/" + name if folder else name


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _ensure_dir(folder):
    if folder and not _exists(folder):
        os.mkdir(folder.rstrip("/"))


def _replace(tmp, path):
    """Rename ``tmp`` over ``path`` (FAT refuses to rename onto an existing file)."""
    try:
        os.rename(tmp, path)
    except OSError:
        os.remove(path)
        os.rename(tmp, path)


def next_boot(folder):
    """Increment and persist the boot epoch; the new value (0 on the very first boot)."""
    _ensure_dir(folder)
    path = join(folder, "fog_boot")
    try:
        with open(path) as f:
            boot = int(f.read().strip()) + 1
    except (OSError, ValueError):
        boot = 0
    if boot > MAX_BOOT:
        boot = 0
    with open(path + ".tmp", "w") as f:
        f.write(str(boot))
    _replace(path + ".tmp", path)
    return boot


class Outbox:
    """Sealed uplinks waiting for an acknowledgement, bounded by bytes and readings."""

    def __init__(self, folder, max_bytes=16384, max_readings=1024):
        _ensure_dir(folder)
        self.path = join(folder, "fog_outbox")
        self.max_bytes = max_bytes
        self.max_readings = max_readings
        if not _exists(self.path) and _exists(self.path + ".tmp"):
            os.rename(self.path + ".tmp", self.path)  # a crash between remove and rename
        self._repair()

    def _repair(self):
        """Cut a torn last entry (power lost while appending): appends go after it."""
        good = 0
        try:
            f = open(self.path, "rb")
        except OSError:
            return
        with f:
            size = f.seek(0, 2)
            f.seek(0)
            while True:
                head = f.read(4)
                if len(head) < 4:
                    break
                end = good + 4 + struct.unpack(">HH", head)[0]
                if end > size:
                    break
                f.seek(end)
                good = end
        if good == size:
            return
        tmp = self.path + ".tmp"
        with open(self.path, "rb") as src, open(tmp, "wb") as dst:
            while good > 0:
                chunk = src.read(min(_CHUNK, good))
                dst.write(chunk)
                good -= len(chunk)
        _replace(tmp, self.path)

    def stats(self):
        """``(entries, readings, bytes)`` in the file (a scan of the headers only)."""
        entries = readings = size = 0
        try:
            f = open(self.path, "rb")
        except OSError:
            return 0, 0, 0
        with f:
            while True:
                head = f.read(4)
                if len(head) < 4:
                    break
                n, r = struct.unpack(">HH", head)
                f.seek(n, 1)
                entries += 1
                readings += r
                size += 4 + n
        return entries, readings, size

    def append(self, entries):
        """Append ``[[boot, seq, readings], ...]``; the readings dropped to stay in bounds."""
        with open(self.path, "ab") as f:
            for e in entries:
                body = mpack.packb(e)
                f.write(struct.pack(">HH", len(body), len(e[2])))
                f.write(body)
        _, readings, size = self.stats()
        if size <= self.max_bytes and readings <= self.max_readings:
            return 0
        # Drop from the front until the rest fits.
        dropped = offset = 0
        with open(self.path, "rb") as f:
            while size > self.max_bytes or readings > self.max_readings:
                n, r = struct.unpack(">HH", f.read(4))
                f.seek(n, 1)
                offset += 4 + n
                size -= 4 + n
                readings -= r
                dropped += r
        self.discard(offset)
        return dropped

    def pending(self):
        """True when the outbox holds anything (a stat, no read)."""
        return _exists(self.path)

    def read(self, offset):
        """``(next_offset, [boot, seq, readings])`` of the entry at ``offset``, or None at
        the end. The file is opened per call: nothing stays open while ``discard`` runs."""
        try:
            f = open(self.path, "rb")
        except OSError:
            return None
        with f:
            f.seek(offset)
            while True:
                head = f.read(4)
                if len(head) < 4:
                    return None
                n = struct.unpack(">HH", head)[0]
                body = f.read(n)
                if len(body) < n:
                    return None
                offset += 4 + n
                try:
                    return offset, mpack.unpackb(body)
                except ValueError:  # a corrupt entry: skip it rather than block the rest
                    continue

    def discard(self, offset):
        """Remove every byte before ``offset`` (the entries sent or dropped)."""
        if offset <= 0:
            return
        tmp = self.path + ".tmp"
        kept = 0
        with open(self.path, "rb") as src:
            src.seek(offset)
            with open(tmp, "wb") as dst:
                while True:
                    chunk = src.read(_CHUNK)
                    if not chunk:
                        break
                    dst.write(chunk)
                    kept += len(chunk)
        if kept:
            _replace(tmp, self.path)
        else:
            os.remove(tmp)
            os.remove(self.path)
