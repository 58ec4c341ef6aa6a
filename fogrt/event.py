"""The event: one reading (or one derived record) flowing through a topology."""

from __future__ import annotations

from dataclasses import dataclass, field

from fogrt.types import Fields, Key, Timestamp

IMPUTED = 1
"""Flag: the values were filled in by the fog node, not measured."""
LATE = 2
"""Flag: the event arrived after its window had closed."""
FLAG_NAMES = {IMPUTED: "imputed", LATE: "late"}


@dataclass(slots=True)
class Event:
    """A small, cheap record: who, which one, when it happened, when it arrived, what, flags.

    >>> e = Event("pump-1", 7, 1700000000.0, {"temp": 21.5})
    >>> e.replace(fields={"temp": 22.0}).fields, e.fields
    ({'temp': 22.0}, {'temp': 21.5})
    """

    key: Key
    """Device id (the partition key)."""
    seq: int
    """Sequence number given by the device (or by the operator that derived the event)."""
    time: Timestamp
    """Event time, seconds since the epoch."""
    fields: Fields = field(default_factory=dict)
    """Flat mapping of field name to value."""
    arrival: Timestamp = 0.0
    """When the fog node received it (0.0 when unknown, e.g. replayed files)."""
    flags: int = 0
    """Bit set of IMPUTED, LATE."""

    def replace(
        self,
        *,
        fields: Fields | None = None,
        time: Timestamp | None = None,
        seq: int | None = None,
        flags: int | None = None,
    ) -> Event:
        """A copy with some attributes replaced (events are never mutated once emitted)."""
        return Event(
            self.key,
            self.seq if seq is None else seq,
            self.time if time is None else time,
            self.fields if fields is None else fields,
            self.arrival,
            self.flags if flags is None else flags,
        )

    def flag_names(self) -> list[str]:
        """The names of the flags set, in a stable order."""
        return [name for bit, name in FLAG_NAMES.items() if self.flags & bit]
