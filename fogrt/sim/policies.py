"""``--policy``: which control the fog gives the simulated devices, and who computes it.

A policy is written ``NAME`` or ``NAME:key=value,key=value`` with the parameters of the
topology's ``control.policy.with``: ``send_on_delta:epsilon=0.5,sample_period=30s``.
The policy is run on the simulator's side of the fog node, per device, exactly as the
node's control loop would run it: ``initial()`` is set as the device's control record before
it starts (``node.controls.set``), and every uplink the fog acknowledges is fed to
``observe()``, whose control goes into the ACK of the device's next uplink.

Where a policy comes from, in this order:

1. the policy registry (``fogrt.registry.POLICIES``, or the ``fogrt.policies`` entry-point
   group): the real policies of ``operators/policy`` — fitted predictors, adaptive sample
   periods, the bandit. fogrt looks them up by name like operators; it never imports
   ``operators`` itself.
2. otherwise, for ``fixed``, ``send_on_delta`` and ``dual_prediction``, a fixed
   :class:`~fogrt.ingest.wire.Control` (:data:`STATIC`): same ``tx``, ``epsilon`` and
   periods, without learning (dual prediction uses a fixed damped-trend predictor).
3. ``fog``: the simulator sets nothing; the node's own control loop decides (the
   topology's ``control:`` section, :mod:`fogrt.control.loop`). The only choice against a
   remote node (``--fog``). With any other policy the simulator takes its devices out of
   the node's loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fogrt.errors import InputError
from fogrt.ingest.wire import Control
from fogrt.types import Value, parse_duration

__all__ = [
    "DEFAULT_POLICIES",
    "STATIC",
    "Driver",
    "PolicySpec",
    "make_driver",
    "parse_policy",
]

DEFAULT_POLICIES = ("fixed", "send_on_delta:epsilon=0.3", "dual_prediction:epsilon=0.3")
"""What ``fogrt simulate`` compares when no ``--policy`` is given (in-process node)."""

DEFAULT_EPSILON = 0.3
DEFAULT_SAMPLE_PERIOD = 60.0
DEFAULT_INTERVAL = 3600.0
MAX_LAGS = 14
"""Differences a trend can weigh within the wire's 16 coefficients."""


def damped_trend(
    predictor: str, lags: int = MAX_LAGS, trend: float = 0.15, damping: float = 0.7
) -> tuple[float, ...]:
    """Coefficients of ``x[t-1] + sum_j a_j (x[t-j] - x[t-j-1])`` (the predictors of
    operators/policy's dual prediction, without its online fit): ``holt`` weighs ``lags``
    differences ``a_j ~ trend (1 - trend)^(j-1)`` summing to ``damping``; ``linear`` one
    difference (``a_1 = damping``); ``naive`` none (the previous value).

    >>> damped_trend("linear"), damped_trend("naive")
    ((0.0, 1.7, -0.7), (0.0, 1.0))
    >>> c = damped_trend("holt"); len(c), round(sum(c), 12)
    (16, 1.0)
    """
    if predictor == "naive":
        return (0.0, 1.0)
    if predictor == "linear":
        lags = 1
    elif predictor != "holt":
        raise InputError(f"--policy: predictor: expected holt, linear or naive, got {predictor!r}")
    if not 1 <= lags <= MAX_LAGS or not 0.0 < trend <= 1.0 or not 0.0 <= damping < 1.0:
        raise InputError(
            f"--policy: expected lags in 1..{MAX_LAGS}, trend in (0, 1], damping in [0, 1)"
        )
    raw = [trend * (1.0 - trend) ** j for j in range(lags)]
    weights = [damping * w / sum(raw) for w in raw]
    c = [0.0, 1.0] + [0.0] * lags
    for j, a in enumerate(weights, start=1):
        c[j] += a
        c[j + 1] -= a
    return tuple(c)


def _static_fixed(p: Mapping[str, Any]) -> Control:
    interval = _seconds(p, "interval", DEFAULT_SAMPLE_PERIOD)
    sp = _seconds(p, "sample_period", interval)
    return Control(interval=max(1, math.ceil(interval)), sample_period=sp, tx="always")


def _static_delta(p: Mapping[str, Any]) -> Control:
    return Control(
        interval=max(1, math.ceil(_seconds(p, "interval", DEFAULT_INTERVAL))),
        sample_period=_seconds(p, "sample_period", DEFAULT_SAMPLE_PERIOD),
        tx="delta",
        epsilon=_number(p, "epsilon", DEFAULT_EPSILON),
    )


def _static_predict(p: Mapping[str, Any]) -> Control:
    return Control(
        interval=max(1, math.ceil(_seconds(p, "interval", DEFAULT_INTERVAL))),
        sample_period=_seconds(p, "sample_period", DEFAULT_SAMPLE_PERIOD),
        tx="predict",
        epsilon=_number(p, "epsilon", DEFAULT_EPSILON),
        coeffs=damped_trend(
            str(p.get("predictor", "holt")),
            int(_number(p, "lags", MAX_LAGS)),
            _number(p, "trend", 0.15),
            _number(p, "damping", 0.7),
        ),
    )


STATIC: dict[str, tuple[Callable[[Mapping[str, Any]], Control], tuple[str, ...]]] = {
    "fixed": (_static_fixed, ("interval", "sample_period")),
    "send_on_delta": (_static_delta, ("epsilon", "sample_period", "interval")),
    "dual_prediction": (
        _static_predict,
        ("epsilon", "sample_period", "interval", "predictor", "lags", "trend", "damping"),
    ),
}
"""Policies available without the registry: name -> (control from params, param names)."""


def _seconds(p: Mapping[str, Any], key: str, default: float) -> float:
    try:
        return parse_duration(p.get(key, default))
    except ValueError as exc:
        raise InputError(f"--policy: {key}: {exc}") from None


def _number(p: Mapping[str, Any], key: str, default: float) -> float:
    value = p.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise InputError(f"--policy: {key}: expected a number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PolicySpec:
    """One ``--policy`` value: ``name`` and its parameters; ``text`` as given."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def label(self) -> str:
        return self.text or self.name


def _split(text: str) -> list[str]:
    """Split on commas outside brackets (``batches=[1,4],epsilon=0.1``)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [x.strip() for x in out if x.strip()]


def parse_policy(text: str) -> PolicySpec:
    """``NAME[:key=value,...]``; values are YAML scalars or flow lists (``[30s, 2m]``).

    >>> parse_policy("send_on_delta:epsilon=0.5,sample_period=30s")
    PolicySpec(name='send_on_delta', params={'epsilon': 0.5, 'sample_period': '30s'}, \
text='send_on_delta:epsilon=0.5,sample_period=30s')
    """
    import yaml

    name, _, rest = text.partition(":")
    name = name.strip().removeprefix("policy.")
    if not name:
        raise InputError(f"--policy {text!r}: expected NAME or NAME:key=value,...")
    params: dict[str, Any] = {}
    for item in _split(rest):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--policy {text!r}: expected key=value, got {item!r}")
        try:
            params[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            raise InputError(f"--policy {text!r}: cannot read the value of {key!r}") from None
    return PolicySpec(name, params, text.strip())


class Driver(Protocol):
    """The fog side of a policy for one simulation run (called on the event loop)."""

    description: str
    """How the control is computed (the table's footnote, the summary JSON)."""

    def initial(self, device: str) -> Control | None:
        """The device's control record before it starts; None: leave it to the fog."""

    def observe(
        self,
        device: str,
        readings: list[tuple[float, Value]],
        applied: Control,
        battery: float | None,
        arrival: float,
    ) -> Control | None:
        """An uplink was acknowledged: ``(event time, watched value)`` of its readings; the
        control to set for the device's next ACK, or None for no change."""


class _Static:
    """The same control for every device (None: leave each device's control to the fog)."""

    def __init__(self, control: Control | None, description: str) -> None:
        self.control = control
        self.description = description

    def initial(self, device: str) -> Control | None:
        return self.control

    def observe(
        self,
        device: str,
        readings: list[tuple[float, Value]],
        applied: Control,
        battery: float | None,
        arrival: float,
    ) -> Control | None:
        return None


class _Learning:
    """One registered policy object per device, fed every acknowledged reading."""

    def __init__(self, cls: type[Any], params: dict[str, Any]) -> None:
        self.cls = cls
        self.params = params
        self.description = f"registered policy {cls.__module__}.{cls.__qualname__}"
        self._per_device: dict[str, Any] = {}

    def _policy(self, device: str) -> Any:
        p = self._per_device.get(device)
        if p is None:
            p = self._per_device[device] = self.cls(**self.params)
        return p

    def initial(self, device: str) -> Control | None:
        control: Control = self._policy(device).initial()
        return control

    def observe(
        self,
        device: str,
        readings: list[tuple[float, Value]],
        applied: Control,
        battery: float | None,
        arrival: float,
    ) -> Control | None:
        from fogrt.control.policy import Reading

        policy = self._policy(device)
        control: Control | None = None
        for t, value in readings:
            v = float(value) if isinstance(value, int | float) else None
            decision = policy.observe(Reading(t, v, applied, battery, arrival))
            control = decision.control
        return control


def _registry() -> Any:
    """The policy registry, if fogrt has one (or the entry-point group is installed)."""
    from fogrt import registry

    found = getattr(registry, "POLICIES", None)
    if found is not None:
        return found
    return registry.Registry("policy", "fogrt.policies")


def make_driver(spec: PolicySpec, *, watched: str, remote: bool) -> Driver:
    """The driver of ``spec`` (see the module docstring); raises InputError for unknown
    names or bad parameters. ``watched``: the field a registered policy watches unless
    its ``field`` parameter says otherwise."""
    if spec.name == "fog":
        if spec.params:
            raise InputError("--policy fog takes no parameters (the fog node decides)")
        return _Static(None, "the fog node's own control (the topology's control: section)")
    if remote:
        raise InputError(
            f"--policy {spec.label}: with --fog the remote node decides the control; "
            "use --policy fog (or no --policy), or drop --fog to run an in-process node"
        )
    reg = _registry()
    full = f"policy.{spec.name}"
    if full in reg:
        from fogrt.errors import ParamError
        from fogrt.operator import signature, validate_params

        cls = reg.get(full)
        params = dict(spec.params)
        if "field" in signature(cls).parameters and "field" not in params:
            params["field"] = watched
        try:
            checked = validate_params(cls, params)
            cls(**checked)  # constructors check what validation cannot (ranges, combos)
        except ParamError as exc:
            raise InputError(f"--policy {spec.label}: {exc}") from None
        return _Learning(cls, checked)
    if spec.name in STATIC:
        make, names = STATIC[spec.name]
        unknown = sorted(set(spec.params) - set(names))
        if unknown:
            raise InputError(
                f"--policy {spec.label}: unknown parameter(s) {', '.join(unknown)}; "
                f"{spec.name} takes {', '.join(names)}"
            )
        control = make(spec.params)
        return _Static(control, f"fixed control {_show(control)} (no policy registry)")
    from fogrt.operator import unknown_name_message

    known = sorted({*STATIC, "fog", *(n.removeprefix("policy.") for n in reg.names())})
    raise InputError(f"--policy: {unknown_name_message('policy', spec.name, known)}")


def _show(c: Control) -> str:
    parts = [f"tx={c.tx}", f"sp={c.sample_period:g}s", f"i={c.interval}s"]
    if c.tx != "always":
        parts.append(f"e={c.epsilon:g}")
    if len(c.coeffs) > 4:
        parts.append(f"c=<{len(c.coeffs)} coefficients>")
    elif c.coeffs:
        parts.append("c=" + "/".join(f"{x:g}" for x in c.coeffs))
    return " ".join(parts)
