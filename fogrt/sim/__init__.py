"""Simulation of battery-powered nodes: the energy model (:mod:`fogrt.sim.energy`).

The fleet simulator (``fogrt simulate``) runs the real ``edge_agent`` under CPython with a
simulated clock and sensors; it and the trace replay of the control policies
(:func:`operators.policy.replay.replay`) meter every wake, sample, connect, transmission
and sleep with :class:`fogrt.sim.energy.EnergyMeter`, so what they say about battery life
comes from one model with cited figures.
"""

from __future__ import annotations

from fogrt.sim.energy import Board, EnergyMeter, battery_life_days, daily_charge_mah

__all__ = ["Board", "EnergyMeter", "battery_life_days", "daily_charge_mah"]
