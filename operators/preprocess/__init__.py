"""Pre-processing operators: clean readings before anything learns from them.

- ``preprocess.range_check`` (:class:`RangeCheck`): physically impossible values;
- ``preprocess.dedup`` (:class:`Dedup`): repeated events, by time or by value;
- ``preprocess.impute`` (:class:`Impute`): fill missing values;
- ``preprocess.smooth`` (:class:`Smooth`): EWMA, rolling median, Hampel, Kalman;
- ``preprocess.resample`` (:class:`Resample`): one event per fixed slot of event time;
- ``preprocess.align`` (:class:`Align`): fuse several sources or devices on event time.
"""

from operators.preprocess.align import Align
from operators.preprocess.dedup import Dedup
from operators.preprocess.impute import Impute
from operators.preprocess.range_check import RangeCheck
from operators.preprocess.resample import Resample
from operators.preprocess.smooth import Smooth

__all__ = ["Align", "Dedup", "Impute", "RangeCheck", "Resample", "Smooth"]
