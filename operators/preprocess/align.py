"""preprocess.align: fuse events of several partners (sources, devices) close in event time.

Each partner has a buffer, in event-time order. The oldest buffered event (the *pivot*)
forms a group with the oldest event of every other partner that is at most ``tolerance``
after it, so the members of a group are all within ``tolerance`` of each other. A group
with every partner is emitted at once. One that lacks a partner is decided as soon as
that partner has moved past it (it has a buffered event beyond the group) or the watermark
is ``timeout`` past its pivot: it is then emitted with the missing partners' fields
``None``, or dropped. Groups are decided in pivot order, so output times never go back.
"""

from __future__ import annotations

import bisect
import math
import re
from collections import deque
from collections.abc import Iterator
from typing import Any, Literal

from fogrt.errors import FieldError, ParamError
from fogrt.event import LATE, Event
from fogrt.operator import Operator, require_fields, unknown_name_message
from fogrt.types import Duration, Fields, FieldType, Key, Schema, Timestamp

OnMissing = Literal["emit", "drop"]
PartnerSpec = list[str] | dict[str, str | list[str]]

_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INF = math.inf

# A buffered event: (time, arrival order, fields, flags, key).
_Entry = tuple[Timestamp, int, Fields, int, Key]


class _Group:
    """A decided group that still lacks partners, kept for ``lateness`` to be completed."""

    __slots__ = ("members", "seq", "time")

    def __init__(self, seq: int, time: Timestamp, members: dict[str, _Entry]) -> None:
        self.seq = seq
        self.time = time
        self.members = members


class Align(Operator):
    """Align several partners on event time into one multi-sensor event (sensor fusion).

    Events of all partners come in as one stream (the engine merges a ``from:`` list).
    ``by`` tells them apart: ``device`` (the event's key; use ``key: global`` on the node
    so that one instance sees every device), the name of a ``str``/``int`` field whose
    value names the partner, or ``fields``: a partner is recognised by the fields it
    carries (an event with a non-missing value of any of them).

    The fused event has, for each partner in order and each of its fields,
    ``<prefix>_<field>``; its ``time`` is the oldest member's, its ``seq`` a group number,
    and it carries the ``IMPUTED`` flag of any member. Its key is ``output_key``, or the
    partners joined with ``+`` for ``by: device``, or the first member's key.

    Missing partners: a group lacking a partner waits until that partner shows an event
    beyond the group (it skipped a reading), or until the watermark (the newest event time,
    or ``on_tick(now)``; ``math.inf`` decides everything) is ``timeout`` past the group's
    oldest event (the partner is silent); then ``on_missing: emit`` emits it with that
    partner's fields ``None``, ``drop`` drops it. Late partners: an event that arrives after
    its group was decided without it, while the watermark is at most ``timeout +
    lateness`` past that group, completes it: the group is emitted again, with the same
    ``seq`` and ``time``, flagged ``LATE`` (with ``drop``, only once complete). Any other
    event that belongs to a decided group, or is older than it, is late: dropped and
    counted.

    Parameters
    ----------
    partners
        For ``by: device`` or a field: the partner ids, ``[m1, m2]`` (each also the prefix
        of its fields, so an identifier) or ``{mote-1: m1, mote-2: m2}`` (id: prefix). For
        ``by: fields``: ``{prefix: [fields]}``. At least two.
    by
        ``device`` (default), ``fields``, or a field name.
    fields
        For ``by: device`` or a field: the fields taken from each partner. Default: every
        field of the input but ``by``.
    tolerance
        Most event-time distance between the members of a group.
    timeout
        How long (in watermark time) a group waits for missing partners; at least
        ``tolerance``.
    lateness
        How long after ``timeout`` a decided group can still be completed by a late partner.
    on_missing
        ``emit`` (default) or ``drop``.
    output_key
        The key of fused events (see above).

    Metrics: ``fused`` (complete groups), ``partial`` (emitted with missing partners),
    ``dropped`` (groups), ``corrections`` (late completions emitted), ``late`` and
    ``ignored`` (events of no partner), ``buffered``.

    Examples
    --------
    In a topology, fusing the motes of a room (one instance sees them all)::

        - id: room
          use: preprocess.align
          from: [motes]
          key: global
          with:
            by: device
            partners: {mote-1: m1, mote-2: m2}
            fields: [temperature]
            tolerance: 2s
            timeout: 30s

    >>> from fogrt.event import Event
    >>> op = Align(partners=["m1", "m2"], fields=["t"], tolerance=1, timeout=5)
    >>> op.process(Event("m1", 1, 100.0, {"t": 20.0}))
    ()
    >>> [(e.key, e.time, e.fields) for e in op.process(Event("m2", 1, 100.4, {"t": 21.0}))]
    [('m1+m2', 100.0, {'m1_t': 20.0, 'm2_t': 21.0})]
    >>> op.process(Event("m1", 2, 110.0, {"t": 20.5}))
    ()
    >>> [(e.time, e.fields) for e in op.on_tick(115.0)]  # m2 is 5 s overdue
    [(110.0, {'m1_t': 20.5, 'm2_t': None})]
    """

    kind = "preprocess.align"

    def __init__(
        self,
        partners: PartnerSpec,
        by: str = "device",
        fields: list[str] | None = None,
        tolerance: Duration = 1.0,
        timeout: Duration = 10.0,
        lateness: Duration = 0.0,
        on_missing: OnMissing = "emit",
        output_key: str | None = None,
    ) -> None:
        self.partners = partners
        self.by = by
        self.fields = fields
        self.tolerance = tolerance
        self.timeout = timeout
        self.lateness = lateness
        self.on_missing = on_missing
        self.output_key = output_key
        self._check_params()
        # partner id -> (prefix, fields or None for "the default fields")
        self._specs: dict[str, tuple[str, list[str] | None]] = _partner_specs(partners, by)
        self._ids = list(self._specs)
        self._names: list[str] | None = fields  # the default fields, once known
        if output_key is not None:
            self._key: Key | None = output_key
        else:
            self._key = "+".join(self._ids) if by == "device" else None
        self._buffers: dict[str, list[_Entry]] = {pid: [] for pid in self._ids}
        self._kept: deque[_Group] = deque()
        self._order = 0
        self._seq = 0
        self._watermark = -_INF
        self._decided_until = -_INF  # pivot time of the last decided group
        self._decided_members: set[str] = set()  # and its partners
        self._counts = dict.fromkeys(
            ("fused", "partial", "dropped", "corrections", "late", "ignored"), 0
        )

    def _check_params(self) -> None:
        for name in ("tolerance", "timeout", "lateness"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ParamError(name, f"must be zero or a positive duration, got {value!r}")
        if self.timeout < self.tolerance:
            raise ParamError("timeout", f"must be at least the tolerance ({self.tolerance:g}s)")
        if self.on_missing not in ("emit", "drop"):
            raise ParamError("on_missing", f"expected emit or drop, got {self.on_missing!r}")
        if not self.by:
            raise ParamError("by", "expected device, fields or a field name")
        if self.fields is not None:
            if self.by == "fields":
                raise ParamError("fields", "with by: fields, list each partner's fields instead")
            if not self.fields:
                raise ParamError("fields", "empty; leave it out to take every field")
            if self.by in self.fields:
                raise ParamError(("fields", self.fields.index(self.by)), "is the by field")
        if self.output_key is not None and not self.output_key:
            raise ParamError("output_key", "cannot be empty")

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, take every field of the input but ``by``."""
        if self._names is None and self.by != "fields":
            self._names = [name for name in upstream if name != self.by]

    # -- per event ---------------------------------------------------------------------------

    def process(self, event: Event) -> tuple[Event, ...]:
        pids = self._partners_of(event)
        if not pids:
            self._counts["ignored"] += 1
            return ()
        out: list[Event] = []
        for pid in pids:
            self._arrive(pid, event, out)
        if event.time > self._watermark:
            self._watermark = event.time
        self._drain(out)
        return tuple(out)

    def on_tick(self, now: Timestamp) -> tuple[Event, ...]:
        if now <= self._watermark:
            return ()
        self._watermark = now
        out: list[Event] = []
        self._drain(out)
        return tuple(out)

    def _partners_of(self, event: Event) -> list[str]:
        by = self.by
        if by == "device":
            return [event.key] if event.key in self._specs else []
        values = event.fields
        if by == "fields":
            return [
                pid
                for pid, (_, names) in self._specs.items()
                if any(values.get(n) is not None for n in names or ())
            ]
        v = values.get(by)
        pid = None if v is None else str(v)
        return [pid] if pid in self._specs else []

    def _arrive(self, pid: str, event: Event, out: list[Event]) -> None:
        t = event.time
        self._order += 1
        entry: _Entry = (t, self._order, event.fields, event.flags, event.key)
        tol = self.tolerance
        for group in reversed(self._kept):  # a late partner completes a decided group
            if pid in group.members:
                continue
            times = [m[0] for m in group.members.values()]
            if max(*times, t) - min(*times, t) <= tol:
                group.members[pid] = entry
                complete = len(group.members) == len(self._ids)
                if complete or self.on_missing == "emit":
                    self._counts["corrections"] += 1
                    out.append(self._fused(group.seq, group.time, group.members, LATE))
                if complete:
                    self._kept.remove(group)
                return
        last = self._decided_until
        if t < last or (t <= last + tol and pid not in self._decided_members):
            self._counts["late"] += 1  # its group is decided
            return
        bisect.insort(self._buffers[pid], entry)

    # -- groups ------------------------------------------------------------------------------

    def _drain(self, out: list[Event]) -> None:
        """Decide every group that is complete, or has waited ``timeout``, oldest first."""
        buffers = self._buffers
        while True:
            heads = [(buf[0], pid) for pid, buf in buffers.items() if buf]
            if not heads:
                break
            pivot, _ = min(heads)
            members = {pid: head for head, pid in heads if head[0] <= pivot[0] + self.tolerance}
            complete = len(members) == len(self._ids)
            moved_on = len(heads) == len(self._ids)  # the missing ones are beyond the group
            if not (complete or moved_on or self._watermark >= pivot[0] + self.timeout):
                break
            for pid in members:
                buffers[pid].pop(0)
            self._decide(pivot[0], members, complete, out)
        horizon = self._watermark - self.timeout - self.lateness
        while self._kept and self._kept[0].time <= horizon:
            self._kept.popleft()

    def _decide(
        self, time: Timestamp, members: dict[str, _Entry], complete: bool, out: list[Event]
    ) -> None:
        seq = self._seq
        self._seq += 1
        self._decided_until = time
        self._decided_members = set(members)
        if complete:
            self._counts["fused"] += 1
            out.append(self._fused(seq, time, members, 0))
            return
        if self.on_missing == "emit":
            self._counts["partial"] += 1
            out.append(self._fused(seq, time, members, 0))
        else:
            self._counts["dropped"] += 1
        if self.lateness > 0 and self._watermark < _INF:
            self._kept.append(_Group(seq, time, dict(members)))

    def _fused(self, seq: int, time: Timestamp, members: dict[str, _Entry], flags: int) -> Event:
        fields: Fields = {}
        key = self._key
        for pid in self._ids:
            prefix, names = self._specs[pid]
            entry = members.get(pid)
            if entry is not None:
                flags |= entry[3]
                if key is None:
                    key = entry[4]
            values = entry[2] if entry is not None else {}
            for name in self._fields_of(names, values):
                fields[f"{prefix}_{name}"] = values.get(name)
        return Event(key or "", seq, time, fields, 0.0, flags)

    def _fields_of(self, names: list[str] | None, values: Fields) -> list[str]:
        if names is not None:
            return names
        if self._names is None:  # never bound, no fields: learn them from the events
            self._names = [name for name in values if name != self.by]
        return self._names

    # -- contract ----------------------------------------------------------------------------

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        by = self.by
        if by not in ("device", "fields"):
            if by not in upstream:
                raise FieldError("by", unknown_name_message("field", by, list(upstream)))
            if upstream[by] not in ("str", "int", "bool"):
                raise FieldError("by", f"field {by!r} is {upstream[by]}; expected str or int")
        if self.fields is not None:
            require_fields(upstream, self.fields, "fields")
        default = self.fields or [name for name in upstream if name != by]
        out: dict[str, FieldType] = {}
        for pid, (prefix, names) in self._specs.items():
            if names is not None:
                require_fields(upstream, names, ("partners", pid))
            for name in names if names is not None else default:
                out[f"{prefix}_{name}"] = upstream[name]
        return out

    def metrics(self) -> dict[str, float]:
        buffered = sum(len(buf) for buf in self._buffers.values())
        return {**self._counts, "buffered": buffered}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {
            "partners": {"0": "calm", "1": "busy"},
            "by": "label",
            "fields": ["x", "z"],
            "tolerance": "1s",
            "timeout": "3s",
            "lateness": "2s",
        }
        yield {
            "partners": {"acc": ["x", "z"], "env": ["y"]},
            "by": "fields",
            "tolerance": 0.5,
            "timeout": 2,
            "on_missing": "drop",
            "lateness": 4,
        }
        yield {"partners": ["a", "b"], "tolerance": "1s", "timeout": "3s", "output_key": "ab"}


def _partner_specs(partners: PartnerSpec, by: str) -> dict[str, tuple[str, list[str] | None]]:
    """Partner id -> (field prefix, its own fields or None), checked."""
    if len(partners) < 2:
        raise ParamError("partners", "give at least two partners to align")
    specs: dict[str, tuple[str, list[str] | None]] = {}
    if isinstance(partners, list):
        if by == "fields":
            raise ParamError("partners", "with by: fields, map each prefix to its fields")
        for i, pid in enumerate(partners):
            _check_prefix(pid, ("partners", i), mapping_hint=True)
            if pid in specs:
                raise ParamError(("partners", i), f"{pid!r} is listed twice")
            specs[pid] = (pid, None)
        return specs
    prefixes: set[str] = set()
    for pid, value in partners.items():
        path = ("partners", pid)
        if by == "fields":
            if not isinstance(value, list) or not value:
                raise ParamError(path, "expected the list of fields of this partner")
            _check_prefix(pid, path)
            specs[pid] = (pid, list(value))
            continue
        if not isinstance(value, str):
            raise ParamError(path, f"expected the prefix of this partner's fields, got {value!r}")
        _check_prefix(value, path)
        if value in prefixes:
            raise ParamError(path, f"prefix {value!r} is used twice")
        prefixes.add(value)
        specs[pid] = (value, None)
    return specs


def _check_prefix(prefix: str, path: tuple[str | int, ...], mapping_hint: bool = False) -> None:
    if not _PREFIX.fullmatch(prefix):
        hint = f"; map it to one: {{{prefix}: p1}}" if mapping_hint else ""
        raise ParamError(path, f"{prefix!r} cannot prefix field names (letters, digits, _){hint}")
