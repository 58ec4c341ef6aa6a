"""Window operators: turn a stream of readings into a stream of per-window summaries.

- ``window.tumbling`` (:class:`Tumbling`): fixed, non-overlapping windows;
- ``window.sliding`` (:class:`Sliding`): windows of ``size`` every ``slide``;
- ``window.session`` (:class:`Session`): activity separated by ``gap`` of silence.

They share one feature set (:mod:`operators.window.features`), the lateness rules and the
late-event policy (:mod:`operators.window.base`).
"""

from operators.window.session import Session
from operators.window.sliding import Sliding
from operators.window.tumbling import Tumbling

__all__ = ["Session", "Sliding", "Tumbling"]
