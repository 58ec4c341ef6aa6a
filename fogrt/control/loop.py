"""The fog node's control loop: a policy per device, fed in log order, deciding its control.

The log consumer hands every uplink to :meth:`ControlLoop.observe` before its events go to
the engine. For each reading, the device's policy (built on first sight from the topology's
``control:`` rules) gets a :class:`~fogrt.control.policy.Reading` — event time, the watched
field, and the control of the version the uplink reports, which is what the device applied
when it sampled — and answers a :class:`~fogrt.control.policy.Decision`:

- the samples the device took but did not transmit, regenerated with the device's own
  arithmetic: they become events flagged ``IMPUTED`` ahead of the reading (the watched field
  set, the other fields ``None``; the reading's ``seq``), so downstream operators see a
  regular stream;
- the control to apply next, stored in the :class:`~fogrt.control.ControlStore`: the
  device gets it as a delta in the ACK of its next uplink. (The battery level a policy sees
  is the uplink's percentage, else a linear estimate from the cell voltage the edge agent
  reports.)

Because the loop runs on the log (not at ingest), it is replayed after a restart from the
checkpoint's offset with the policies' checkpointed state, and decides the same controls.
Anomalies (``control.alerts``) reach a device's policy through :meth:`alert_one` as the engine
emits them. A policy that raises is logged and counted; the device keeps its control and
its readings still go through.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import structlog

from fogrt.control import ControlStore
from fogrt.control.policy import Reading
from fogrt.event import IMPUTED, Event
from fogrt.ingest.wire import Control, Uplink
from fogrt.sim.energy import state_of_charge
from fogrt.topology.control import CompiledControl, ControlRule

__all__ = ["ControlLoop"]

log = structlog.get_logger("fogrt.control")

_LOGGED_ERRORS = 10
"""Policy failures logged in full; after that one in every 1000 (all counted)."""


class _Device:
    __slots__ = ("field", "imputed", "policy", "rule", "source")

    def __init__(self, rule: ControlRule, source: str, policy: Any) -> None:
        self.rule = rule
        self.source = source
        self.field = rule.fields[source]
        self.policy = policy
        self.imputed = 0


class ControlLoop:
    """One policy per device, from the topology's rules; see the module docstring."""

    def __init__(
        self,
        control: CompiledControl,
        store: ControlStore,
        schemas: dict[str, dict[str, Any]],
    ) -> None:
        self.control = control
        self.store = store
        self._templates = {sid: dict.fromkeys(schema) for sid, schema in schemas.items()}
        self._devices: dict[str, _Device] = {}
        self._initial: dict[str, Control] = {}
        self._prototypes: dict[int, Any] = {}
        self.imputed = 0
        self.decisions = 0
        self.errors = 0
        self.alerts = 0
        self.unknown_versions = 0
        self.external: set[str] = set()
        """Devices whose control something else sets (a simulator running its own policy):
        the loop leaves them alone."""
        store.initial = self.initial

    # -- what a device applies before the fog has heard from it ----------------------------

    def initial(self, device: str) -> Control:
        """The initial control of a device the store has no record of: its policy's
        ``initial()`` by the rules that match on the device id alone."""
        control = self._initial.get(device)
        if control is None:
            rule = self.control.rule_for(device, None)
            control = Control() if rule is None else self._prototype(rule).initial()
            if len(self._initial) < 1_000_000:
                self._initial[device] = control
        return control

    def _prototype(self, rule: ControlRule) -> Any:
        proto = self._prototypes.get(id(rule))
        if proto is None:
            proto = self._prototypes[id(rule)] = rule.build()
        return proto

    def policy_name(self, device: str) -> str:
        """The ``use:`` name of the policy that decides the device's control ("none")."""
        entry = self._devices.get(device)
        if entry is not None:
            return entry.rule.use
        rule = self.control.rule_for(device, None)
        return "none" if rule is None else rule.use

    # -- readings ---------------------------------------------------------------------------

    def _device(self, device: str, source: str) -> _Device | None:
        entry = self._devices.get(device)
        if entry is not None and entry.source == source:
            return entry
        rule = self.control.rule_for(device, source)
        if rule is None:
            return None
        entry = self._devices[device] = _Device(rule, source, rule.build())
        if device not in self.store:
            # A source-specific policy the device's first ACKs could not know about.
            initial = entry.policy.initial()
            if initial != self.store.get(device)[1]:
                self.store.set(device, initial)
        return entry

    def observe(self, source: str, uplink: Uplink, events: list[Event]) -> list[Event]:
        """Run the device's policy over one uplink's events (``uplink.events()``); returns
        them with the imputed samples inserted, and stores the control it decides."""
        if not events or uplink.device in self.external:
            return events
        entry = self._device(uplink.device, source)
        if entry is None:
            return events
        applied = self.store.control_at(uplink.device, uplink.control_version)
        if applied is None:
            # Older than the versions the store remembers: its current control is the best
            # guess of what the device applies (imputation may be off for this uplink).
            self.unknown_versions += 1
            applied = self.store.get(uplink.device)[1]
        battery = state_of_charge(uplink.battery_pct, uplink.battery_mv)
        field = entry.field
        template = self._templates[source]
        observe = entry.policy.observe
        out: list[Event] = []
        control: Control | None = None
        try:
            for event in events:
                value = event.fields.get(field)
                number = float(value) if isinstance(value, int | float) else None
                decision = observe(Reading(event.time, number, applied, battery, event.arrival))
                for t, v in decision.imputed if field else ():
                    fields = dict(template)
                    fields[field] = v
                    out.append(Event(event.key, event.seq, t, fields, event.arrival, IMPUTED))
                out.append(event)
                control = decision.control
        except Exception as exc:  # a policy bug must not stop the node or lose readings
            self._failed(uplink.device, entry, exc)
            return events
        self.decisions += len(events)
        self.imputed += len(out) - len(events)
        entry.imputed += len(out) - len(events)
        if control is not None:
            self.store.set(uplink.device, control)
        return out

    def alert_one(self, event: Event) -> None:
        """An event of an ``alerts.from`` node: if its ``alerts.field`` is true, the
        device's policy hears of it (``Policy.alert``)."""
        if not event.fields.get(self.control.alert_field):
            return
        device = str(event.key)
        entry = self._devices.get(device)
        if entry is None:
            return
        self.alerts += 1
        try:
            control = entry.policy.alert(event.time)
        except Exception as exc:
            self._failed(device, entry, exc)
            return
        if control is not None:
            self.store.set(device, control)

    def _failed(self, device: str, entry: _Device, exc: Exception) -> None:
        self.errors += 1
        if self.errors <= _LOGGED_ERRORS or self.errors % 1000 == 0:
            log.error(
                "policy_failed",
                device=device,
                policy=entry.rule.use,
                error=f"{type(exc).__name__}: {exc}",
                count=self.errors,
            )

    # -- state ------------------------------------------------------------------------------

    def state(self) -> dict[str, list[Any]]:
        """Every device's policy: ``[rule signature, source, snapshot]`` (for checkpoints)."""
        return dict(self.state_items())

    def state_items(self) -> Iterator[tuple[str, list[Any]]]:
        """:meth:`state` one device at a time (a checkpoint yields to the event loop between
        them)."""
        for d, e in list(self._devices.items()):
            yield d, [e.rule.signature, e.source, e.policy.snapshot()]

    def load(self, state: dict[str, list[Any]]) -> int:
        """Restore policies from ``state()``; a device whose rule changed since (another
        policy or other parameters) starts afresh. Returns the number restored."""
        self._devices = {}
        restored = dropped = 0
        for device, (signature, source, blob) in state.items():
            rule = self.control.rule_for(device, source)
            if rule is None or rule.signature != signature or source not in rule.fields:
                dropped += 1
                continue
            policy = rule.build()
            policy.restore(blob)
            self._devices[device] = _Device(rule, source, policy)
            restored += 1
        if dropped:
            log.warning("policies_reset", devices=dropped, reason="the control rules changed")
        return restored

    def saved(self, device: str) -> int:
        """Samples imputed for the device since this process started: readings it took and
        did not have to send."""
        entry = self._devices.get(device)
        return 0 if entry is None else entry.imputed

    def counters(self) -> dict[str, int]:
        return {
            "devices": len(self._devices),
            "decisions": self.decisions,
            "imputed": self.imputed,
            "alerts": self.alerts,
            "errors": self.errors,
            "unknown_versions": self.unknown_versions,
        }
