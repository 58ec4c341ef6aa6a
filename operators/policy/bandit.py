"""A per-device bandit over sampling, batching and power-save choices: ``policy.bandit``.

Transmission is dual prediction (:class:`~operators.policy.dual.DualPrediction`: same
predictor, same imputation); what the bandit chooses is the *arm*, a combination of a
sample period, a batch size (``bt``: readings per uplink) and a Wi-Fi power-save mode
(``pm``). An arm is held for an epoch (``epoch`` seconds of device time, counted on the
readings taken under it, since the device applies a change only after its next uplink);
then its reward is fed to a River bandit (``river.bandit.UCB`` or ``EpsilonGreedy``) and the
next arm is pulled. The reward trades energy against reconstruction error and delay::

    reward = - energy / energy_fixed
             - weight_error   * (sum of squared residuals of missed forecasts) / (samples * eps^2)
             - weight_latency * mean(arrival - event time) / interval

``energy`` is ``samples * wake_cost + uplinks * uplink_cost`` per second of the epoch and
``energy_fixed`` the same for a device sending every reading at ``sample_period``; the
default costs are those of :class:`fogrt.sim.energy.Board` (42.4 mAs per sample wake, 99.1
mAs per uplink). A missed forecast's residual is what the fog would have got wrong had the
reading not been sent: with a long sample period the signal travels further between two
samples and the residuals grow, which is what the error term charges for.

.. code-block:: yaml

    control:
      policy:
        use: policy.bandit
        with: {epsilon: 0.1, sample_period: 30s, batches: [1, 4], epoch: 1h}

>>> p = Bandit(epsilon=0.2, sample_period=30.0, sample_periods=[30.0, 120.0], batches=[1])
>>> sorted(p.arms)
['120s/bt1/none', '30s/bt1/none']
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from river import bandit as river_bandit

from fogrt.errors import ParamError
from fogrt.ingest.wire import MAX_READINGS, POWER_MODES
from fogrt.types import Duration
from operators.policy.base import Decision, Reading
from operators.policy.dual import MAX_LAGS, DualPrediction, Predictor
from operators.policy.simple import check_period

__all__ = ["Arm", "Bandit"]

WAKE_COST = 42.4
"""mAs of one sample wake: ``fogrt.sim.energy.Board().wake_mas()`` (a test keeps them equal)."""
UPLINK_COST = 99.1
"""mAs of one uplink: ``Board().uplink_mas(60, 20)`` (a test keeps them equal)."""


@dataclass(frozen=True, slots=True)
class Arm:
    """One choice of the bandit."""

    sample_period: float
    batch: int
    power_mode: str

    @property
    def id(self) -> str:
        return f"{self.sample_period:g}s/bt{self.batch}/{self.power_mode}"


@dataclass(slots=True)
class _Epoch:
    """What was observed under one arm since it was applied."""

    start: float | None = None
    end: float = 0.0
    samples: int = 0
    uplinks: int = 0
    last_arrival: float | None = None
    missed_sq: float = 0.0
    delay: float = 0.0
    readings: int = 0


class Bandit(DualPrediction):
    """Dual prediction whose sample period, batch size and power mode a bandit chooses."""

    kind = "policy.bandit"

    def __init__(
        self,
        epsilon: float,
        sample_period: Duration = 60.0,
        sample_periods: Sequence[Duration] | None = None,
        batches: Sequence[int] = (1, 4),
        power_modes: Sequence[str] = ("none",),
        interval: Duration = 3600.0,
        epoch: Duration = 3600.0,
        weight_error: float = 1.0,
        weight_latency: float = 0.1,
        algorithm: Literal["ucb", "epsilon_greedy"] = "ucb",
        exploration: float = 0.2,
        seed: int = 0,
        wake_cost: float = WAKE_COST,
        uplink_cost: float = UPLINK_COST,
        predictor: Predictor = "holt",
        lags: int = MAX_LAGS,
        trend: float = 0.15,
        damping: float = 0.7,
        fit: bool = True,
        field: str | None = None,
    ) -> None:
        periods = (
            [sample_period * m for m in (1, 2, 4, 8, 10)]
            if sample_periods is None
            else list(sample_periods)
        )
        for j, sp in enumerate(periods):
            check_period(f"sample_periods.{j}", sp)
        super().__init__(
            epsilon,
            sample_period=min(periods),
            interval=interval,
            predictor=predictor,
            lags=lags,
            trend=trend,
            damping=damping,
            fit=fit,
            field=field,
        )
        self.sample_period = sample_period
        self.sample_periods = sample_periods
        self.batches = batches
        self.power_modes = power_modes
        self.epoch = epoch
        self.weight_error = weight_error
        self.weight_latency = weight_latency
        self.algorithm = algorithm
        self.exploration = exploration
        self.seed = seed
        self.wake_cost = wake_cost
        self.uplink_cost = uplink_cost
        for j, b in enumerate(batches):
            if not 1 <= b <= MAX_READINGS:
                raise ParamError(("batches", j), f"expected 1..{MAX_READINGS}, got {b!r}")
        for j, pm in enumerate(power_modes):
            if pm not in POWER_MODES:
                raise ParamError(("power_modes", j), "expected one of none, min, max")
        if not (periods and batches and power_modes):
            raise ParamError("sample_periods", "every choice needs at least one value")
        if epoch <= 0.0:
            raise ParamError("epoch", f"expected a duration > 0, got {epoch!r}")
        if algorithm == "ucb":
            self._bandit: Any = river_bandit.UCB(delta=exploration, seed=seed)
        elif algorithm == "epsilon_greedy":
            self._bandit = river_bandit.EpsilonGreedy(epsilon=exploration, seed=seed)
        else:
            raise ParamError("algorithm", "expected ucb or epsilon_greedy")
        self.arms: dict[str, Arm] = {}
        for sp in sorted(set(periods)):
            for b in sorted(set(batches)):
                for pm in dict.fromkeys(power_modes):
                    arm = Arm(float(sp), int(b), pm)
                    self.arms[arm.id] = arm
        self._reference = sample_period
        self._arm = self.arms[self._bandit.pull(list(self.arms))]
        self._set(self._arm)
        self._epoch = _Epoch()
        self.pulls: list[str] = [self._arm.id]

    def _set(self, arm: Arm) -> None:
        self._sp = arm.sample_period
        self._batch = arm.batch
        self._power_mode = arm.power_mode

    def observe(self, reading: Reading) -> Decision:
        imputed, residual = self._ingest(reading)
        applied = reading.applied
        if (applied.sample_period, applied.batch, applied.power_mode) == (
            self._arm.sample_period,
            self._arm.batch,
            self._arm.power_mode,
        ):
            self._account(reading, len(imputed), residual)
            ep = self._epoch
            if ep.start is not None and ep.end - ep.start >= self.epoch:
                self._bandit.update(self._arm.id, self._reward(ep))
                self._arm = self.arms[self._bandit.pull(list(self.arms))]
                self._set(self._arm)
                self._epoch = _Epoch()
                self.pulls.append(self._arm.id)
        return Decision(self._control(), tuple(imputed))

    def _account(self, reading: Reading, suppressed: int, residual: float | None) -> None:
        ep = self._epoch
        if ep.start is None:  # the arm's first reading opens the epoch: count from there
            ep.start = reading.time
            ep.end = reading.time
            ep.last_arrival = reading.arrival
            return
        ep.end = reading.time
        ep.samples += suppressed + 1
        ep.readings += 1
        if reading.arrival is None or reading.arrival != ep.last_arrival:
            ep.uplinks += 1
        ep.last_arrival = reading.arrival
        if reading.arrival is not None:
            ep.delay += max(0.0, reading.arrival - reading.time)
        if residual is not None and abs(residual) > self.epsilon:
            ep.missed_sq += residual * residual

    def _reward(self, ep: _Epoch) -> float:
        duration = max(ep.end - (ep.start or ep.end), 1e-9)
        energy = (ep.samples * self.wake_cost + ep.uplinks * self.uplink_cost) / duration
        fixed = (self.wake_cost + self.uplink_cost) / self._reference
        error = ep.missed_sq / (max(ep.samples, 1) * self.epsilon**2)
        latency = ep.delay / max(ep.readings, 1) / self._interval
        reward = -energy / fixed - self.weight_error * error - self.weight_latency * latency
        return reward if math.isfinite(reward) else -1e6

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"epsilon": 0.2, "sample_period": 10.0, "epoch": 60.0}
