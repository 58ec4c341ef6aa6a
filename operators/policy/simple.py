"""The two reference policies: fixed-rate reporting and send-on-delta.

``policy.fixed``: the device samples every ``sample_period`` and sends every reading.

.. code-block:: yaml

    control:
      policy: {use: policy.fixed, with: {interval: 30s}}

``policy.send_on_delta``: the device samples every ``sample_period`` and sends a reading
when it moved more than ``epsilon`` from the last one it sent (or ``interval`` passed
without an uplink). The fog imputes the unsent samples with the last value sent, which is
within ``epsilon`` of each of them.

.. code-block:: yaml

    control:
      policy: {use: policy.send_on_delta, with: {epsilon: 0.1, sample_period: 30s}}

>>> p = SendOnDelta(epsilon=0.1, sample_period=30.0)
>>> c = p.initial(); c.tx, c.epsilon, c.sample_period
('delta', 0.1, 30.0)
>>> _ = p.observe(Reading(0.0, 20.0, c))
>>> p.observe(Reading(90.0, 20.2, c)).imputed        # two samples held at 20.0
((30.0, 20.0), (60.0, 20.0))
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from fogrt.errors import ParamError
from fogrt.ingest.wire import Control
from fogrt.types import Duration
from operators.policy.base import Decision, Mirror, Policy, Reading

__all__ = ["Fixed", "SendOnDelta", "check_period", "interval_seconds"]

MAX_PERIOD = 86400.0
"""Largest sample period the wire accepts (``sp``), s."""
MAX_INTERVAL = 7 * 86400
"""Largest report interval the wire accepts (``i``), s."""


def check_period(name: str, value: float) -> float:
    """A sample period in (0, 86400] s, else ``ParamError`` at ``name``."""
    if not 0.0 < value <= MAX_PERIOD:
        raise ParamError(name, f"expected a period in (0s, 1d], got {value!r}")
    return float(value)


def interval_seconds(name: str, value: float) -> int:
    """A report interval as the wire's whole seconds in 1..7 days."""
    if not 1.0 <= value <= MAX_INTERVAL:
        raise ParamError(name, f"expected an interval between 1s and 7d, got {value!r}")
    return math.ceil(value)


class Fixed(Policy):
    """Sample every ``sample_period`` (default: ``interval``) and send every reading."""

    kind = "policy.fixed"
    watches_values = False  # any source will do, numeric fields or not

    def __init__(
        self,
        interval: Duration = 60.0,
        sample_period: Duration | None = None,
        field: str | None = None,
    ) -> None:
        self.interval = interval
        self.sample_period = sample_period
        self.field = field
        sp = check_period("sample_period", interval if sample_period is None else sample_period)
        self._control = Control(
            interval=interval_seconds("interval", interval), sample_period=sp, tx="always"
        )
        self._mirror = Mirror()

    def initial(self) -> Control:
        return self._control

    def observe(self, reading: Reading) -> Decision:
        imputed, _ = self._mirror.receive(reading)  # always: gaps are losses, nothing imputed
        return Decision(self._control, tuple(imputed))

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"interval": 30.0}


class SendOnDelta(Policy):
    """Send when the reading moved more than ``epsilon`` since the last one sent."""

    kind = "policy.send_on_delta"

    def __init__(
        self,
        epsilon: float,
        sample_period: Duration = 60.0,
        interval: Duration = 3600.0,
        field: str | None = None,
    ) -> None:
        self.epsilon = epsilon
        self.sample_period = sample_period
        self.interval = interval
        self.field = field
        if not 0.0 <= epsilon < math.inf:
            raise ParamError("epsilon", f"expected a finite threshold >= 0, got {epsilon!r}")
        self._control = Control(
            interval=interval_seconds("interval", interval),
            sample_period=check_period("sample_period", sample_period),
            tx="delta",
            epsilon=float(epsilon),
        )
        self._mirror = Mirror()

    def initial(self) -> Control:
        return self._control

    def observe(self, reading: Reading) -> Decision:
        imputed, _ = self._mirror.receive(reading)
        return Decision(self._control, tuple(imputed))

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"epsilon": 0.5, "sample_period": 10.0}
