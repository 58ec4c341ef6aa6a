"""Application-level deduplication of uplinks by (device, boot epoch, sequence number).

CoAP's own deduplication is per message id and in memory: it cannot recognise a device
that resends the same readings with a new message id after a timeout, a deep sleep or a
reboot. Each device numbers its uplinks ``seq = 0, 1, 2, ...`` within a *boot epoch* that
it increments on every cold boot, so ``(device, boot, seq)`` names an uplink for good.

Per device and boot the tracker keeps a high-water mark and a bitmap of the ``window``
sequence numbers below it, so uplinks that arrive out of order (store-and-forward
flushes, retransmissions racing new readings) are accepted once. A few recent boots are
kept per device, because a rebooted node may still flush readings of its previous boot.
Anything older than what is tracked — a sequence number ``window`` or more below the mark,
or a boot older than the ``boots`` most recent ones — is treated as already seen: it is
acknowledged but not applied, and counted as ``stale``. The tracker is rebuilt from the
ingest log on start (and saved with checkpoints), so resends across restarts are
recognised too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["new", "duplicate", "stale"]


@dataclass(slots=True)
class _Boot:
    boot: int
    hwm: int = -1
    bits: int = 0
    """Bit i set: sequence number ``hwm - i`` has been seen (bit 0 is the mark itself)."""


@dataclass(slots=True)
class _Device:
    boots: list[_Boot] = field(default_factory=list)
    """Most recent boot first."""


class Deduplicator:
    """Remembers which ``(device, boot, seq)`` uplinks were accepted."""

    def __init__(self, window: int = 1024, boots: int = 4) -> None:
        if window < 1 or boots < 1:
            raise ValueError("window and boots must be at least 1")
        self.window = window
        self.max_boots = boots
        self._devices: dict[str, _Device] = {}

    def __len__(self) -> int:
        """Devices tracked."""
        return len(self._devices)

    def __contains__(self, device: object) -> bool:
        return device in self._devices

    def check(self, device: str, boot: int, seq: int) -> Verdict:
        """What ``mark`` would say, without changing anything."""
        entry = self._devices.get(device)
        if entry is None:
            return "new"
        for b in entry.boots:
            if b.boot == boot:
                return _in_boot(b, seq, self.window)
        if entry.boots and len(entry.boots) >= self.max_boots and boot < entry.boots[-1].boot:
            return "stale"  # older than every boot still tracked
        return "new"

    def mark(self, device: str, boot: int, seq: int) -> Verdict:
        """Record an uplink; ``new`` means it had not been seen and must be applied."""
        entry = self._devices.get(device)
        if entry is not None and entry.boots:
            last = entry.boots[0]
            if last.boot == boot and seq > last.hwm:  # the common case: the boot's next uplink
                shift = seq - last.hwm
                window = self.window
                last.bits = (
                    ((last.bits << shift) | 1) & ((1 << window) - 1) if shift < window else 1
                )
                last.hwm = seq
                return "new"
        verdict = self.check(device, boot, seq)
        if verdict != "new":
            return verdict
        entry = self._devices.get(device)
        if entry is None:
            entry = self._devices[device] = _Device()
        b = next((x for x in entry.boots if x.boot == boot), None)
        if b is None:
            b = _Boot(boot)
            entry.boots.append(b)
            entry.boots.sort(key=lambda x: x.boot, reverse=True)
            del entry.boots[self.max_boots :]
        if seq > b.hwm:
            shift = seq - b.hwm
            b.bits = (
                ((b.bits << shift) | 1) & ((1 << self.window) - 1) if shift < self.window else 1
            )
            b.hwm = seq
        else:
            b.bits |= 1 << (b.hwm - seq)
        return "new"

    def state(self) -> dict[str, list[tuple[int, int, bytes]]]:
        """Everything, as plain data (for checkpoints; bitmaps as little-endian bytes)."""
        return {
            d: [
                (b.boot, b.hwm, b.bits.to_bytes((b.bits.bit_length() + 7) // 8, "little"))
                for b in e.boots
            ]
            for d, e in self._devices.items()
        }

    def load(self, state: dict[str, list[tuple[int, int, bytes]]]) -> None:
        """Replace everything with a ``state()`` taken earlier."""
        self._devices = {
            d: _Device(
                [_Boot(boot, hwm, int.from_bytes(bits, "little")) for boot, hwm, bits in boots]
            )
            for d, boots in state.items()
        }


def _in_boot(b: _Boot, seq: int, window: int) -> Verdict:
    if seq > b.hwm:
        return "new"
    age = b.hwm - seq
    if age >= window:
        return "stale"
    return "duplicate" if b.bits >> age & 1 else "new"
