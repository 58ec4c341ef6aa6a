"""Policies that wrap another one: ``policy.battery_aware`` and ``policy.burst``.

``inner`` is the wrapped policy's spec, ``{use: ..., with: {...}}``, built per device with
:func:`operators.policy.build`. A wrapper forwards every reading to it (so the inner policy
keeps imputing and learning) and adjusts the control it returns. Imputation stays exact
because it always uses the control the device actually applied (:attr:`Reading.applied`).

``policy.battery_aware`` stretches the sample period and the report interval as the battery
falls: below each ``(level, factor)`` threshold both are multiplied by ``factor`` (the
largest factor whose level is above the reported state of charge), the sample period up to
``max_sample_period``. A stretched period changes what one predictor step spans, so the
first forecasts after a change are rougher (more uplinks) until the history refills.

.. code-block:: yaml

    control:
      policy:
        use: policy.battery_aware
        with:
          thresholds: [[0.5, 2], [0.25, 4], [0.1, 8]]
          inner: {use: policy.dual_prediction, with: {epsilon: 0.1, max_sample_period: 5m}}

``policy.burst`` samples fast after an anomaly: when an operator upstream flags one at time
``t`` (:meth:`Policy.alert`), the next control sets ``burst_until = t + duration`` (the
device then sends every reading at once) and a sample period of at most
``sample_period``, with a report interval that short so that the device checks in as soon as
the burst is over and gets the inner policy's control back.

.. code-block:: yaml

    control:
      policy:
        use: policy.burst
        with:
          duration: 10m
          sample_period: 5s
          inner: {use: policy.send_on_delta, with: {epsilon: 0.2}}
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fogrt.errors import ParamError
from fogrt.ingest.wire import Control
from fogrt.types import Duration
from operators.policy.base import Decision, Policy, Reading
from operators.policy.simple import MAX_INTERVAL, MAX_PERIOD, check_period

__all__ = ["BatteryAware", "Burst"]

_DEFAULT_INNER: Mapping[str, Any] = {"use": "policy.send_on_delta", "with": {"epsilon": 0.5}}


def _build_inner(spec: Mapping[str, Any]) -> Policy:
    from operators.policy import build  # the registry table lives in the package

    try:
        return build(spec)
    except ParamError as exc:
        raise ParamError(("inner", *exc.path), exc.message) from None


class BatteryAware(Policy):
    """Stretch the inner policy's sample period and interval as the battery falls."""

    kind = "policy.battery_aware"

    def __init__(
        self,
        inner: Mapping[str, Any] = _DEFAULT_INNER,
        thresholds: Sequence[tuple[float, float]] = ((0.5, 2.0), (0.25, 4.0), (0.1, 8.0)),
        max_sample_period: Duration = 3600.0,
    ) -> None:
        self.inner = inner
        self.thresholds = thresholds
        self.max_sample_period = max_sample_period
        for j, pair in enumerate(thresholds):
            level, factor = pair
            if not 0.0 < level <= 1.0 or not factor >= 1.0:
                raise ParamError(
                    ("thresholds", j), "expected [level in (0, 1], stretch factor >= 1]"
                )
        self._max = check_period("max_sample_period", max_sample_period)
        self._inner = _build_inner(inner)
        self._battery: float | None = None

    def factor(self, battery: float | None) -> float:
        """The stretch factor at a state of charge (1 when unknown or above every level)."""
        if battery is None:
            return 1.0
        return max((f for level, f in self.thresholds if battery < level), default=1.0)

    def _stretch(self, control: Control) -> Control:
        f = self.factor(self._battery)
        if f == 1.0:
            return control
        sp = min(control.sample_period * f, max(self._max, control.sample_period), MAX_PERIOD)
        return dataclasses.replace(
            control,
            sample_period=sp,
            interval=min(math.ceil(control.interval * f), MAX_INTERVAL),
        )

    def initial(self) -> Control:
        return self._stretch(self._inner.initial())

    def observe(self, reading: Reading) -> Decision:
        if reading.battery is not None:
            self._battery = reading.battery
        d = self._inner.observe(reading)
        return Decision(self._stretch(d.control), d.imputed)

    def alert(self, time: float) -> Control | None:
        c = self._inner.alert(time)
        return None if c is None else self._stretch(c)

    def peek(self, until: float, applied: Control) -> tuple[tuple[float, float], ...]:
        return self._inner.peek(until, applied)

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {}


class Burst(Policy):
    """After an anomaly upstream, sample every ``sample_period`` and send at once until
    ``duration`` has passed."""

    kind = "policy.burst"

    def __init__(
        self,
        inner: Mapping[str, Any] = _DEFAULT_INNER,
        duration: Duration = 600.0,
        sample_period: Duration = 5.0,
    ) -> None:
        self.inner = inner
        self.duration = duration
        self.sample_period = sample_period
        if not 0.0 < duration <= MAX_INTERVAL:
            raise ParamError("duration", f"expected a duration in (0s, 7d], got {duration!r}")
        self._sp = check_period("sample_period", sample_period)
        self._inner = _build_inner(inner)
        self._until = 0
        self._last: Control = self._inner.initial()

    def _burst(self, control: Control) -> Control:
        if not self._until:
            return control
        # A short report interval makes the device check in right after the burst, to get
        # its normal control back instead of sampling fast until its next uplink.
        return dataclasses.replace(
            control,
            sample_period=min(control.sample_period, self._sp),
            burst_until=self._until,
            interval=max(1, min(control.interval, math.ceil(self._sp))),
        )

    def initial(self) -> Control:
        return self._inner.initial()

    def observe(self, reading: Reading) -> Decision:
        d = self._inner.observe(reading)
        self._last = d.control
        if self._until and reading.time + reading.applied.sample_period >= self._until:
            self._until = 0  # the next sample is past the burst: back to the inner control
        return Decision(self._burst(d.control), d.imputed)

    def alert(self, time: float) -> Control:
        until = math.ceil(time + self.duration)
        self._until = max(self._until, until)
        return self._burst(self._last)

    def peek(self, until: float, applied: Control) -> tuple[tuple[float, float], ...]:
        return self._inner.peek(until, applied)

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"duration": 60.0, "sample_period": 1.0}
