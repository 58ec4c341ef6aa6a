"""Online learning operators: River models that learn from one event at a time.

One module per concept:

- :mod:`~operators.learn.models`: the allowlist of estimators a topology may name and the
  builder that turns a pipeline spec into River objects (parameters checked first);
- :mod:`~operators.learn.anomaly` (``learn.anomaly``), :mod:`~operators.learn.classify`
  (``learn.classify``), :mod:`~operators.learn.regress` (``learn.regress``,
  ``learn.forecast``), :mod:`~operators.learn.cluster` (``learn.cluster``),
  :mod:`~operators.learn.drift` (``learn.drift``): the operators;
- :mod:`~operators.learn.thresholds`, :mod:`~operators.learn.metrics`,
  :mod:`~operators.learn.features`, :mod:`~operators.learn.labels`: what they share;
- :mod:`~operators.learn.hst`, :mod:`~operators.learn.chart`: two estimators of fogrt's own
  (packed Half-Space Trees, EWMA control chart), imported only through the allowlist.

Every operator predicts (or scores) an event *before* learning from it, so its outputs and
its progressive metrics never reflect the event itself. Importing this package does not
import River; building an operator does.
"""

from operators.learn.anomaly import Anomaly
from operators.learn.classify import Classify
from operators.learn.cluster import Cluster
from operators.learn.drift import Drift
from operators.learn.regress import Forecast, Regress

__all__ = ["Anomaly", "Classify", "Cluster", "Drift", "Forecast", "Regress"]
