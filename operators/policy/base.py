"""The control-policy contract: what the fog node's control loop drives, per device.

A policy is a small, synchronous, deterministic object, one per device (like a keyed
operator), built from the topology's ``control:`` section. The node feeds it every reading
it *received* from the device, in order, and stores the :class:`~fogrt.ingest.wire.Control`
it returns; the device gets that control in the ACK of its next uplink (sleepy devices pull
their control). Nothing here does I/O or reads a clock: time is the readings' event time.

Per received reading (:meth:`Policy.observe`):

1. the policy regenerates the samples the device took but did not send since the previous
   reading, with the same arithmetic as the device (:mod:`operators.policy.protocol`), and
   returns them in :attr:`Decision.imputed`: the node emits them as events flagged
   ``IMPUTED`` before the reading, so downstream operators see a regular stream;
2. it updates what it learns (predictor, sampling rate, bandit) and returns the control the
   device should apply next in :attr:`Decision.control` (often the same one).

Conventions shared with operators (``fogrt.operator``): every constructor argument is kept
under the same attribute name; learned state lives in other attributes; ``snapshot()`` /
``restore()`` carry the whole learned state (checkpointed with the operators), ``clone()``
gives a fresh policy with the same parameters.
"""

from __future__ import annotations

import abc
import pickle
from collections.abc import Iterator
from typing import Any, ClassVar, Self

from fogrt.control.policy import Decision, Reading
from fogrt.ingest.wire import Control
from fogrt.operator import signature
from operators.policy.protocol import (
    MAX_SUPPRESSED_INTERVALS,
    impute,
    predict,
    remember,
    suppressed_times,
)

__all__ = ["Decision", "Mirror", "Policy", "Reading"]


class Mirror:
    """The fog's copy of one device's transmit state (predictor history, last value sent).

    Fed with every received reading in order, it stays identical to the device's state, so
    the samples it regenerates are exactly those the device assumed.
    """

    def __init__(self) -> None:
        self.history: list[float] = []
        self.last_sent: float | None = None
        self.last_time: float | None = None

    def receive(self, reading: Reading) -> tuple[list[tuple[float, float]], float | None]:
        """Impute the samples suppressed since the previous reading, then record this one.

        Returns the imputed ``(time, value)`` pairs and the device's reference for this
        reading (its forecast under ``predict``, the last sent value under ``delta``, else
        ``None``), from which the policy reads the residual.
        """
        applied = reading.applied
        imputed: list[tuple[float, float]] = []
        if self.last_time is not None:
            times = suppressed_times(
                self.last_time, reading.time, applied.sample_period, applied.interval
            )
            values = impute(applied, self.history, self.last_sent, len(times))
            imputed = list(zip(times, values, strict=False))
        reference: float | None = None
        if applied.tx == "predict":
            reference = predict(applied.coeffs, self.history)
        elif applied.tx == "delta":
            reference = self.last_sent
        remember(applied, self.history, reading.value, sent=True)
        if reading.value is not None:
            self.last_sent = reading.value
        self.last_time = reading.time
        return imputed, reference

    def peek(self, until: float, applied: Control) -> list[tuple[float, float]]:
        """What the fog may assume for samples after the last reading up to ``until`` under
        ``applied`` (the control the device got in its last ACK). Changes nothing."""
        if self.last_time is None:
            return []
        step = applied.sample_period
        n = int((until - self.last_time) / step) if step > 0.0 else 0
        n = min(n, int(MAX_SUPPRESSED_INTERVALS * max(applied.interval, step) / step))
        times = [self.last_time + step * (j + 1) for j in range(max(n, 0))]
        values = impute(applied, list(self.history), self.last_sent, len(times))
        return list(zip(times, values, strict=False))


class Policy(abc.ABC):
    """Base class of every control policy. Subclasses set ``kind`` to the name used in YAML."""

    kind: ClassVar[str] = ""

    @abc.abstractmethod
    def initial(self) -> Control:
        """The control of a device the policy has not heard from yet (its registration)."""

    @abc.abstractmethod
    def observe(self, reading: Reading) -> Decision:
        """Consume one received reading; return the imputed gap and the next control."""

    def alert(self, time: float) -> Control | None:
        """An operator upstream flagged an anomaly for this device at event time ``time``.

        Returns the control to apply next, or ``None`` when the policy ignores anomalies.
        """
        return None

    def peek(self, until: float, applied: Control) -> tuple[tuple[float, float], ...]:
        """The samples the fog may already impute after the last reading, up to ``until``,
        if the device sent nothing since (``applied``: the control of its last ACK).

        No state changes: the next :meth:`observe` imputes them for good (or not, if the
        readings were only batched). Useful for live views and at the end of a replay.
        """
        mirror: Mirror | None = getattr(self, "_mirror", None)
        return () if mirror is None else tuple(mirror.peek(until, applied))

    # -- parameters and state (the operator conventions) ----------------------------------

    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names, in order."""
        return list(signature(cls).parameters)

    def params(self) -> dict[str, Any]:
        """The constructor arguments this policy was built with."""
        return {name: getattr(self, name) for name in self.param_names()}

    def clone(self) -> Self:
        """A fresh policy with the same parameters and nothing learned."""
        return type(self)(**self.params())

    def snapshot(self) -> bytes:
        """The whole learned state, pickled (only ever loaded from fogrt's signed store)."""
        names = set(self.param_names())
        state = {k: v for k, v in vars(self).items() if k not in names}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore(self, blob: bytes) -> None:
        """Replace the learned state with a snapshot of a policy with the same parameters."""
        state = pickle.loads(blob)
        if not isinstance(state, dict):
            raise TypeError("snapshot is not a policy state mapping")
        vars(self).update(state)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        """Parameter sets the tests build this policy with."""
        yield {}
