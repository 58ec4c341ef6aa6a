"""Which devices may send, and what they told us about themselves.

Modes:

- ``open`` (default): any well-formed device id is accepted; ``POST /reg`` records metadata;
- ``registered``: a device must ``POST /reg`` before its uplinks are accepted (4.01 until);
- ``allowlist``: only the ids listed in a file (one per line, ``#`` comments) may send or
  register; anything else gets 4.01.

The registry also bounds how many distinct devices the node tracks (``max_devices``), so
a flood of made-up device ids cannot grow memory without end: past it, new devices get
5.03 and the rejection is counted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fogrt.errors import InputError
from fogrt.ingest.wire import Registration, decode_registration, encode_registration

Mode = Literal["open", "registered", "allowlist"]


@dataclass(slots=True)
class DeviceInfo:
    first_seen: float
    last_seen: float = 0.0
    registration: Registration | None = None
    battery_mv: int | None = None
    battery_pct: int | None = None
    uplinks: int = 0
    readings: int = 0
    control_version: int = 0
    """The control version the device said it applies in its last uplink."""


class DeviceRegistry:
    def __init__(
        self, mode: Mode = "open", allowed: set[str] | None = None, max_devices: int = 100_000
    ) -> None:
        if mode == "allowlist" and not allowed:
            raise ValueError("allowlist mode needs at least one allowed device id")
        self.mode = mode
        self.allowed = allowed or set()
        self.max_devices = max_devices
        self.devices: dict[str, DeviceInfo] = {}

    @classmethod
    def from_allowlist(cls, path: Path, max_devices: int = 100_000) -> DeviceRegistry:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"{path}: cannot read the device allow-list: {exc.strerror}") from None
        ids = {line.split("#", 1)[0].strip() for line in lines} - {""}
        if not ids:
            raise InputError(f"{path}: the device allow-list is empty")
        return cls("allowlist", ids, max_devices)

    def admit(self, device: str) -> str | None:
        """None if ``device`` may send now, else why not (``unknown`` or ``full``)."""
        if device in self.devices:
            info = self.devices[device]
            if self.mode == "registered" and info.registration is None:
                return "unregistered"
            return None
        if self.mode == "allowlist" and device not in self.allowed:
            return "unknown"
        if self.mode == "registered":
            return "unregistered"
        if len(self.devices) >= self.max_devices:
            return "full"
        self.devices[device] = DeviceInfo(time.time())
        return None

    def register(self, reg: Registration) -> str | None:
        """Record a registration; None if accepted, else why not."""
        if self.mode == "allowlist" and reg.device not in self.allowed:
            return "unknown"
        info = self.devices.get(reg.device)
        if info is None:
            if len(self.devices) >= self.max_devices:
                return "full"
            info = self.devices[reg.device] = DeviceInfo(time.time())
        info.registration = reg
        return None

    def state(self) -> dict[str, dict[str, Any]]:
        """Everything, as plain data (for checkpoints)."""
        out = {}
        for device, info in self.devices.items():
            reg = info.registration
            out[device] = {
                "first_seen": info.first_seen,
                "last_seen": info.last_seen,
                "battery_mv": info.battery_mv,
                "battery_pct": info.battery_pct,
                "uplinks": info.uplinks,
                "readings": info.readings,
                "control_version": info.control_version,
                "registration": None if reg is None else encode_registration(reg),
            }
        return out

    def load(self, state: dict[str, dict[str, Any]]) -> None:
        """Replace the known devices with a ``state()`` taken earlier (mode is kept)."""
        self.devices = {}
        for device, s in state.items():
            reg = s.get("registration")
            self.devices[device] = DeviceInfo(
                s["first_seen"],
                s["last_seen"],
                None if reg is None else decode_registration(reg),
                s["battery_mv"],
                s["battery_pct"],
                s["uplinks"],
                s["readings"],
                s.get("control_version", 0),
            )

    def seen(
        self,
        device: str,
        readings: int,
        battery_mv: int | None,
        battery_pct: int | None,
        now: float,
        control_version: int | None = None,
    ) -> None:
        info = self.devices.get(device)
        if info is None:
            return
        info.last_seen = now
        if control_version is not None:
            info.control_version = control_version
        info.uplinks += 1
        info.readings += readings
        if battery_mv is not None:
            info.battery_mv = battery_mv
        if battery_pct is not None:
            info.battery_pct = battery_pct
