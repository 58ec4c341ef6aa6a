"""Duty-cycle and power-save control policies: how often each battery-powered node samples,
transmits and sleeps.

The contract (:mod:`operators.policy.base`): one :class:`Policy` per device, fed in order
with every reading the fog received from it (:class:`Reading`: time, value of the watched
field, the control the device applied, battery level); it answers a :class:`Decision`: the
samples the device skipped, regenerated with the device's own arithmetic and to be emitted
flagged ``IMPUTED``, and the :class:`~fogrt.ingest.wire.Control` the device should apply
from its next ACK. ``alert(time)`` tells it an operator flagged an anomaly. Policies are
pure and deterministic, and snapshot/restore like operators.

The device half is :mod:`operators.policy.protocol` (``predict``, ``should_transmit``,
``remember``): the reference the MicroPython agent mirrors.

===========================  ========================================================
``use:``                     what it does
===========================  ========================================================
``policy.fixed``             sample every period, send every reading
``policy.send_on_delta``     send when the value moved more than ``epsilon``
``policy.dual_prediction``   fog-fitted predictor pushed to the device, which sends
                             only surprises; with ``max_sample_period``, adaptive
                             sampling (the sample period stretches while predictable)
``policy.bandit``            River bandit over sample period / batch / power mode,
                             rewarded for energy against reconstruction error
``policy.battery_aware``     wraps a policy; stretches its periods as the battery falls
``policy.burst``             wraps a policy; samples fast for a while after an anomaly
===========================  ========================================================

:func:`build` makes a policy from a topology spec (``{use: ..., with: {...}}``);
:data:`BUILTINS` is the ``name -> "module:Class"`` table for a registry.
:func:`operators.policy.replay.replay` runs a policy against a recorded trace (device and
fog side, with an energy meter), which is how ``bench/energy.py`` measures them.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, Final

from fogrt.errors import ParamError
from fogrt.operator import unknown_name_message, validate_params
from operators.policy.base import Decision, Mirror, Policy, Reading
from operators.policy.dual import DualPrediction
from operators.policy.simple import Fixed, SendOnDelta
from operators.policy.wrappers import BatteryAware, Burst

__all__ = [
    "BUILTINS",
    "BatteryAware",
    "Burst",
    "Decision",
    "DualPrediction",
    "Fixed",
    "Mirror",
    "Policy",
    "Reading",
    "SendOnDelta",
    "build",
]

BUILTINS: Final[dict[str, str]] = {
    "policy.fixed": "operators.policy.simple:Fixed",
    "policy.send_on_delta": "operators.policy.simple:SendOnDelta",
    "policy.dual_prediction": "operators.policy.dual:DualPrediction",
    "policy.bandit": "operators.policy.bandit:Bandit",  # imports River (~0.7 s): on use only
    "policy.battery_aware": "operators.policy.wrappers:BatteryAware",
    "policy.burst": "operators.policy.wrappers:Burst",
}
"""Policy names used in YAML and the classes they name (imported on first use)."""


def policy_class(name: str) -> type[Policy]:
    """The class registered under ``name`` (``ParamError`` at ``use`` if unknown)."""
    target = BUILTINS.get(name)
    if target is None:
        raise ParamError("use", unknown_name_message("policy", name, list(BUILTINS)))
    module, _, attr = target.partition(":")
    cls: type[Policy] = getattr(importlib.import_module(module), attr)
    return cls


def build(spec: Mapping[str, Any]) -> Policy:
    """A policy from ``{"use": name, "with": {params}}``; parameters are validated against
    the constructor (durations such as ``5m`` are parsed), errors are ``ParamError`` with
    the path of the offending key.

    >>> build({"use": "policy.send_on_delta", "with": {"epsilon": 0.2, "sample_period": "1m"}})
    SendOnDelta(epsilon=0.2, sample_period=60.0, interval=3600.0, field=None)
    """
    name = spec.get("use")
    if not isinstance(name, str):
        raise ParamError("use", "expected a policy name such as policy.dual_prediction")
    cls = policy_class(name)
    params = spec.get("with") or {}
    try:
        checked = validate_params(cls, params)
    except ParamError as exc:
        raise ParamError(("with", *exc.path), exc.message) from None
    try:
        return cls(**checked)
    except ParamError as exc:
        raise ParamError(("with", *exc.path), exc.message) from None
