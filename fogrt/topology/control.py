"""The topology's ``control:`` section, checked and resolved for the node's control loop.

.. code-block:: yaml

    control:
      policy:                          # every device no group below selects
        use: policy.dual_prediction
        with: {epsilon: 0.1, sample_period: 30s, max_sample_period: 10m}
      groups:                          # first match wins
        - devices: [pump-*, fan-?]     # globs on the device id
          policy: {use: policy.fixed, with: {interval: 10s}}
        - sources: vibration           # every device posting to /r/vibration
          policy: {use: policy.send_on_delta, with: {epsilon: 0.05}}
      alerts:                          # anomalies these operators flag reach the policies
        from: detect
        field: is_anomaly

Each policy is looked up in the policy registry (``fogrt.policies`` entry points), its
parameters are validated against the constructor like an operator's, and it is built once
so that its own checks run before anything starts. The field a policy watches is its
``field`` parameter (a wrapper's: its inner policy's), else the source's first numeric field;
it must be a number in every source the policy can apply to.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fogrt.errors import ParamError
from fogrt.operator import numeric_fields, unknown_name_message, validate_params
from fogrt.registry import POLICIES, UnknownNameError
from fogrt.topology.model import Policy, Topology
from fogrt.topology.source import Path as FieldPath
from fogrt.types import FieldType

__all__ = ["CompiledControl", "ControlRule", "check_alerts", "compile_control"]

Schemas = Mapping[str, Mapping[str, FieldType]]
ErrorFn = Callable[..., None]


@dataclass(frozen=True)
class ControlRule:
    """One policy and the devices it applies to (empty ``devices``/``sources``: any)."""

    devices: tuple[str, ...]
    sources: tuple[str, ...]
    use: str
    cls: type[Any]
    params: Mapping[str, Any]
    fields: Mapping[str, str]
    """Source id -> the field the policy watches for that source's devices ("": none, for
    a policy whose class says ``watches_values = False``)."""
    signature: str
    """``use`` and parameters: a checkpointed policy state is restored only into a policy
    with the same signature."""

    def matches(self, device: str, source: str | None) -> bool:
        """Whether the rule selects the device (``source`` None: match on the id alone, for
        the control a device gets before the fog knows where it posts)."""
        if self.devices and not any(fnmatch.fnmatchcase(device, g) for g in self.devices):
            return False
        if self.sources:
            return source is not None and source in self.sources
        return True

    def build(self) -> Any:
        """A fresh policy for one device."""
        return self.cls(**self.params)


@dataclass(frozen=True)
class CompiledControl:
    rules: tuple[ControlRule, ...]
    """Groups in order, then the section's ``policy`` (matching every device), if any."""
    alerts: tuple[str, ...] = ()
    """Ids of the nodes whose events can flag an anomaly."""
    alert_field: str = "is_anomaly"

    def rule_for(self, device: str, source: str | None) -> ControlRule | None:
        for rule in self.rules:
            if rule.matches(device, source):
                return rule
        return None


def compile_control(spec: Topology, schemas: Schemas, error: ErrorFn) -> CompiledControl | None:
    """Check ``spec.control`` (reporting through ``error(path, message, key=...)``) and
    resolve it; None when the topology has no policy at all."""
    control = spec.control
    if control is None:
        return None
    rules: list[ControlRule] = []
    for i, group in enumerate(control.groups):
        path: FieldPath = ("control", "groups", i)
        for j, sid in enumerate(group.sources or ()):
            if sid not in schemas:
                message = unknown_name_message("source", sid, list(schemas))
                error((*path, "sources", j), message)
        sources = tuple(s for s in group.sources or () if s in schemas)
        devices = tuple(group.devices or ())
        rule = _rule((*path, "policy"), group.policy, devices, sources, schemas, error)
        if rule is not None:
            rules.append(rule)
    if control.policy is not None:
        rule = _rule(("control", "policy"), control.policy, (), (), schemas, error)
        if rule is not None:
            rules.append(rule)
    if control.alerts is not None and not (control.policy or control.groups):
        error(("control", "alerts"), "alerts need a policy (control.policy or control.groups)")
    if not rules:
        return None
    alerts: tuple[str, ...] = ()
    field = "is_anomaly"
    if control.alerts is not None:
        alerts, field = tuple(control.alerts.from_), control.alerts.field
    return CompiledControl(tuple(rules), alerts, field)


def check_alerts(
    control: CompiledControl, outputs: Mapping[str, Mapping[str, FieldType]], error: ErrorFn
) -> None:
    """``alerts.from`` names operators whose events carry ``alerts.field``."""
    for j, nid in enumerate(control.alerts):
        path: FieldPath = ("control", "alerts", "from", j)
        if nid not in outputs:
            error(path, unknown_name_message("operator", nid, list(outputs)))
            continue
        if control.alert_field not in outputs[nid]:
            error(
                ("control", "alerts", "field"),
                f"{nid!r} emits no field {control.alert_field!r}; "
                + unknown_name_message("field", control.alert_field, list(outputs[nid])),
            )


def _rule(
    path: FieldPath,
    policy: Policy,
    devices: tuple[str, ...],
    sources: tuple[str, ...],
    schemas: Schemas,
    error: ErrorFn,
) -> ControlRule | None:
    try:
        cls = POLICIES.get(policy.use)
    except UnknownNameError as exc:
        error((*path, "use"), str(exc))
        return None
    try:
        params = validate_params(cls, policy.with_)
        cls(**params)  # the constructor's own checks (ranges, inner policies)
    except ParamError as exc:
        at = (*path, "with", *exc.path)
        unknown = (
            len(exc.path) == 1
            and exc.path[0] in policy.with_
            and ("unknown parameter" in exc.message)
        )
        error(at, exc.message, key=unknown)
        return None
    declared = _declared_field(policy.with_)
    fields: dict[str, str] = {}
    for sid in sources or tuple(schemas):
        schema = schemas[sid]
        numeric = numeric_fields(schema)
        if declared is None:
            if numeric:
                fields[sid] = numeric[0]
            elif getattr(cls, "watches_values", True):
                error((*path, "use"), f"source {sid!r} has no numeric field to watch")
                return None
            else:
                fields[sid] = ""  # a policy that never looks at values (policy.fixed)
        elif declared in numeric:
            fields[sid] = declared
        else:
            problem = (
                f"field {declared!r} of source {sid!r} is {schema[declared]}, expected a number"
                if declared in schema
                else f"source {sid!r}: " + unknown_name_message("field", declared, numeric)
            )
            error((*path, "with", *_field_path(policy.with_)), problem)
            return None
    text = json.dumps({"use": policy.use, "with": params}, sort_keys=True, default=repr)
    return ControlRule(devices, sources, policy.use, cls, params, fields, text)


def _declared_field(params: Mapping[str, Any]) -> str | None:
    """``field``, or the inner policy's (wrappers such as policy.burst)."""
    field = params.get("field")
    if isinstance(field, str):
        return field
    inner = params.get("inner")
    if isinstance(inner, Mapping) and isinstance(inner.get("with"), Mapping):
        return _declared_field(inner["with"])
    return None


def _field_path(params: Mapping[str, Any]) -> tuple[str, ...]:
    if isinstance(params.get("field"), str):
        return ("field",)
    return ("inner", "with", *_field_path(params["inner"]["with"]))
