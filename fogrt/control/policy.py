"""The contract between the fog node's control loop and a control policy.

fogrt drives policies; it does not define them. A policy is registered in the
``fogrt.policies`` entry-point group (the built-ins are ``operators.policy``) and is any
class with this shape (:class:`ControlPolicy`): built with keyword parameters from the
topology's ``control:`` section, one instance per device, fed in log order with every
:class:`Reading` the fog received from that device, answering a :class:`Decision`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fogrt.ingest.wire import Control

__all__ = ["ControlPolicy", "Decision", "Reading"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading the fog received from a device, as a policy sees it."""

    time: float
    """Event time of the reading (the device's clock), epoch seconds."""
    value: float | None
    """The value of the field the policy watches; ``None`` when missing."""
    applied: Control
    """The control the device applied when it took the reading: the control of the version
    the uplink reports (``v``). Imputation depends on it, not on the newest control."""
    battery: float | None = None
    """State of charge 0..1 reported with the uplink (``q`` / 100), ``None`` if unknown."""
    arrival: float | None = None
    """When the uplink carrying it arrived (readings of one uplink share it), if known."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy answers to one received reading."""

    control: Control
    """The control the device should apply from its next ACK on (store it; unchanged
    controls cost nothing on the wire)."""
    imputed: tuple[tuple[float, float], ...] = ()
    """``(time, value)`` of the samples the device took but did not send before this
    reading, oldest first: emit them flagged ``IMPUTED`` ahead of the reading."""


class ControlPolicy(Protocol):
    """What the control loop calls on a policy (``operators.policy.Policy`` implements it)."""

    def initial(self) -> Control:
        """The control of a device the policy has not heard from yet."""

    def observe(self, reading: Reading) -> Decision:
        """Consume one received reading; return the imputed gap and the next control."""

    def alert(self, time: float) -> Control | None:
        """An anomaly was flagged for the device at event time ``time``; the control to
        apply next, or ``None`` when the policy ignores anomalies."""

    def snapshot(self) -> bytes:
        """The whole learned state (checkpointed with the operators)."""

    def restore(self, blob: bytes) -> None:
        """Replace the learned state with an earlier ``snapshot()``."""
