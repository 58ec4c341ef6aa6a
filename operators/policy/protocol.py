"""The transmit protocol both sides run: the device decides, the fog mirrors the decision.

This is the reference of ``edge_agent/fogagent/predictor.py`` (``Predictor.check`` and
``Predictor.commit``) for one numeric field, written with the same arithmetic in the same
order so that it ports to MicroPython line by line. The fog uses it to regenerate what a
device assumed for the samples it did not send (:func:`impute`), so downstream operators
see a regular stream and the device and the fog keep identical predictor histories.

The rules, for a control ``C`` (``fogrt.ingest.wire.Control``) and one field:

- ``C.tx == "always"``: every reading is sent.
- ``C.tx == "delta"``: sent when ``last_sent is None or |x - last_sent| > C.epsilon``.
- ``C.tx == "predict"``: with ``c = C.coeffs or (0.0, 1.0)`` and ``k = len(c) - 1``, the
  forecast is ``p = c[0] + c[1]*h[0] + c[2]*h[1] + ... + c[k]*h[k-1]``, accumulated left to
  right, where ``h[0]`` is the value of the previous sample *as the fog knows it* (the
  reading if it was sent, else the forecast made for it), ``h[1]`` the one before, and so
  on. Sent when ``len(h) < k`` (no forecast yet) or ``not |x - p| <= C.epsilon`` (so also
  when ``p`` overflowed to NaN).
- Whatever ``tx`` says, the agent also sends a reading when ``C.interval`` seconds passed
  since its last uplink (:func:`heartbeat_due`) and while ``epoch < C.burst_until``
  (:func:`in_burst`).
- After the decision (:func:`remember`): with ``tx == "predict"`` the device pushes the
  reading (if sent) or the forecast (if not) in front of ``h`` and keeps the newest
  ``max(k, 1)`` values; with any other ``tx`` it empties ``h``. ``last_sent`` becomes the
  reading when it was sent.

A sample the device does not send is therefore known to the fog to within ``C.epsilon``:
the forecast (``predict``) or the last sent value (``delta``).

>>> c = Control(tx="predict", epsilon=0.5, coeffs=(0.0, 2.0, -1.0))
>>> h = [11.0, 10.0]                      # newest first
>>> predict(c.coeffs, h)                  # 0 + 2*11 - 1*10
12.0
>>> should_transmit(c, 12.3, 11.0, h), should_transmit(c, 12.6, 11.0, h)
(False, True)
>>> remember(c, h, 12.3, sent=False); h   # the fog's value (12.0), not the reading, goes in
[12.0, 11.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from fogrt.ingest.wire import Control

__all__ = [
    "MAX_SUPPRESSED_INTERVALS",
    "NAIVE",
    "depth",
    "heartbeat_due",
    "impute",
    "in_burst",
    "predict",
    "remember",
    "should_transmit",
    "suppressed_times",
]

NAIVE: Final = (0.0, 1.0)
"""The forecast without coefficients: the previous value."""


def predict(coeffs: Sequence[float], history: Sequence[float]) -> float | None:
    """``c0 + c1*h[0] + c2*h[1] + ...`` (``h`` newest first), or ``None`` without enough history.

    Empty ``coeffs`` mean :data:`NAIVE`. The sum is accumulated left to right, exactly as the
    agent does, so that both sides compute the same float.

    >>> predict((), [3.0]), predict((1.0, 0.5, 0.5), [4.0, 2.0]), predict((0.0, 2.0, -1.0), [1.0])
    (3.0, 4.0, None)
    """
    c = coeffs or NAIVE
    k = len(c) - 1
    if len(history) < k:
        return None
    p = c[0]
    for i in range(k):
        p += c[i + 1] * history[i]
    return p


def depth(control: Control) -> int:
    """How many values of history the device keeps under ``control`` (0: none)."""
    if control.tx != "predict":
        return 0
    return max(len(control.coeffs or NAIVE) - 1, 1)


def should_transmit(
    control: Control, value: float | None, last_sent: float | None, history: Sequence[float]
) -> bool:
    """Whether the transmit policy of ``control`` wants this reading (heartbeat and burst,
    which the agent checks separately, aside). A missing value (``None``) never triggers.

    >>> should_transmit(Control(tx="delta", epsilon=0.1), 20.05, 20.0, [])
    False
    >>> should_transmit(Control(tx="delta", epsilon=0.1), 20.15, 20.0, [])
    True
    """
    if control.tx == "always":
        return True
    if value is None:
        return False
    if control.tx == "delta":
        return last_sent is None or abs(value - last_sent) > control.epsilon
    p = predict(control.coeffs, history)
    return p is None or not abs(value - p) <= control.epsilon


def remember(control: Control, history: list[float], value: float | None, *, sent: bool) -> None:
    """Record a decision in ``history`` (newest first, changed in place), as the device does.

    Call it once per sample, after :func:`should_transmit` with the same control and
    history. ``value`` is the reading; when it was not sent under ``predict``, the forecast
    is recorded instead (the value the fog assumes). A missing reading (``None``) changes
    nothing, as in the agent.
    """
    keep = depth(control)
    if not keep:
        history.clear()
        return
    if value is None:  # a missing reading leaves the history alone (the agent's check gave
        return  # it no forecast either)
    v = float(value) if sent else predict(control.coeffs, history)
    if v is not None:
        history.insert(0, v)
        del history[keep:]


def heartbeat_due(control: Control, now: float, last_uplink: float | None) -> bool:
    """The agent sends whatever it has once ``interval`` seconds passed since its last uplink."""
    return last_uplink is None or now - last_uplink >= control.interval


def in_burst(control: Control, epoch: float) -> bool:
    """While ``epoch < burst_until`` the agent sends every reading at once."""
    return bool(control.burst_until) and epoch < control.burst_until


MAX_SUPPRESSED_INTERVALS = 10
"""A device reports at least once per report interval (its heartbeat), retrying through
outages; a gap of more than this many intervals between two received readings is a loss
(dropped readings, a clock that jumped), not a run of suppressed samples: nothing is imputed."""


def suppressed_times(
    previous: float, current: float, sample_period: float, interval: float | None = None
) -> list[float]:
    """The sample times between two received readings that the device did not send.

    The device wakes every ``sample_period`` seconds, so ``round(gap / sample_period) - 1``
    samples were skipped; they are placed evenly in the gap (the wake period drifts by the
    boot time of each wake, which the even placement absorbs). With the report ``interval``,
    a gap longer than :data:`MAX_SUPPRESSED_INTERVALS` intervals gives none.

    >>> suppressed_times(0.0, 300.0, 100.0), suppressed_times(0.0, 130.0, 100.0)
    ([100.0, 200.0], [])
    >>> len(suppressed_times(0.0, 1e9, 30.0, interval=3600.0))  # a clock jump, not 3e7 samples
    0
    """
    gap = current - previous
    if not sample_period > 0.0 or not math.isfinite(gap) or gap <= 0.0:
        return []
    if interval is not None and gap > MAX_SUPPRESSED_INTERVALS * max(interval, sample_period):
        return []
    n = round(gap / sample_period) - 1
    if n <= 0:
        return []
    step = gap / (n + 1)
    return [previous + step * (j + 1) for j in range(n)]


def impute(
    control: Control, history: list[float], last_sent: float | None, count: int
) -> list[float]:
    """The values the fog assumes for ``count`` consecutive unsent samples taken under
    ``control``, updating ``history`` exactly as the device did (in place).

    ``predict``: the forecasts, each fed back as the next sample's history (identical to
    the device's :func:`remember`). ``delta``: the last value sent. ``always``: unsent
    samples are lost, not suppressed: nothing is returned.

    >>> h = [12.0, 11.0]
    >>> impute(Control(tx="predict", epsilon=1.0, coeffs=(0.0, 2.0, -1.0)), h, 12.0, 2), h
    ([13.0, 14.0], [14.0, 13.0])
    """
    if control.tx == "always" or count <= 0:
        return []
    if control.tx == "delta":
        history.clear()
        return [] if last_sent is None else [last_sent] * count
    keep = depth(control)
    out: list[float] = []
    for _ in range(count):
        p = predict(control.coeffs, history)
        if p is None:  # the device always sends without a forecast: nothing was suppressed
            break
        out.append(p)
        history.insert(0, p)  # what remember(control, history, reading, sent=False) does
        del history[keep:]
    return out
