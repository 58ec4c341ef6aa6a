"""Downlink control: what each device is told to do, versioned, delivered in its next ACK.

Sleepy devices cannot be pushed to, so every uplink is answered with the device's current
control as a delta against the version the device says it applies. An unchanged control
costs an empty payload.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fogrt.ingest.wire import Control, apply_delta, encode_control_delta

HISTORY = 8
"""Versions remembered per device to answer with a delta (older: the whole record)."""

_V0 = Control()


@dataclass
class _DeviceControl:
    version: int
    control: Control
    history: OrderedDict[int, Control] = field(default_factory=OrderedDict)


class ControlStore:
    """Per-device control records with versions; an initial control applies until one is set.

    Version 0 is ``Control()`` on both sides (a device that never heard from the fog applies
    the defaults), so a device's initial control gets version 1 when it differs. The initial
    control is what ``initial(device)`` says (the control loop's policies), else ``Control()``.
    """

    def __init__(self, initial: Callable[[str], Control] | None = None) -> None:
        self.initial = initial
        self._devices: dict[str, _DeviceControl] = {}

    def get(self, device: str) -> tuple[int, Control]:
        """The device's current ``(version, control)``."""
        entry = self._devices.get(device)
        if entry is not None:
            return entry.version, entry.control
        if self.initial is None:
            return 0, _V0
        control = self.initial(device)
        return (0 if control == _V0 else 1), control

    def control_at(self, device: str, version: int) -> Control | None:
        """The control the device had at ``version`` (what it applies when its uplink says
        ``v``), or None if that version is unknown or too old to be remembered."""
        if version == 0:
            return _V0
        entry = self._devices.get(device)
        if entry is None:
            current, control = self.get(device)
            return control if version == current else None
        if version == entry.version:
            return entry.control
        return entry.history.get(version)

    def set(self, device: str, control: Control) -> int:
        """Give the device a new control; returns its version (unchanged if equal)."""
        version, current = self.get(device)
        if control == current:
            return version
        entry = self._devices.get(device)
        if entry is None:
            entry = self._devices[device] = _DeviceControl(version, current)
        entry.history[entry.version] = entry.control
        while len(entry.history) > HISTORY:
            entry.history.popitem(last=False)
        entry.version += 1
        entry.control = control
        return entry.version

    def delta_for(self, device: str, applied_version: int) -> bytes:
        """The response body for a device that says it applies ``applied_version``."""
        version, control = self.get(device)
        if applied_version == version:
            return b""
        return encode_control_delta(control, version, self.control_at(device, applied_version))

    def pending(self, device: str, applied_version: int) -> bool:
        """Whether the device has not yet applied its current control."""
        return self.get(device)[0] != applied_version

    def __contains__(self, device: object) -> bool:
        """Whether the device has a record of its own (not only its initial control)."""
        return device in self._devices

    def devices(self) -> list[str]:
        return list(self._devices)

    def state(self, only: Callable[[str], bool] | None = None) -> dict[str, dict[str, Any]]:
        """Every device's record and history (``only``: of the devices it accepts), as plain
        data (for checkpoints)."""
        return {
            d: {
                "version": e.version,
                "control": e.control.wire(),
                "history": [[v, c.wire()] for v, c in e.history.items()],
            }
            for d, e in self._devices.items()
            if only is None or only(d)
        }

    def load(self, state: dict[str, dict[str, Any]]) -> None:
        """Replace every record with a ``state()`` taken earlier."""
        base = _V0
        self._devices = {
            d: _DeviceControl(
                s["version"],
                apply_delta(base, s["control"]),
                OrderedDict((v, apply_delta(base, c)) for v, c in s["history"]),
            )
            for d, s in state.items()
        }
