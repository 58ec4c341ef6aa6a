"""Which readings to transmit: the device half of the fog's transmit policies.

The control's ``tx`` says (docs/wire-format.md, "Control"):

- ``always``: every reading.
- ``delta`` (send-on-delta): when a field moved more than ``e`` from the last value sent.
- ``predict`` (dual prediction): both sides run the same linear predictor
  ``x^[t] = c0 + c1*x[t-1] + c2*x[t-2] + ...`` over the values the *fog* knows; the
  device transmits only when a reading is more than ``e`` off the forecast. When it does
  not transmit, the fog assumes the forecast, so the device feeds the forecast (not the
  reading) into its own history: both histories stay identical and the fog's
  reconstruction is never more than ``e`` off. The fog learns which sample times were
  suppressed from the gaps in event time (one per sample period ``sp``). Without
  coefficients (``c == []``) the forecast is the previous value (``c = [0, 1]``).

The forecast is added up in this order: ``c0``, then ``+ c1*x[t-1]``, ``+ c2*x[t-2]``, ...;
a fog that adds in the same order (in the same precision) keeps a bit-identical history.
On the ESP32 MicroPython computes in float32, the fog in float64: their histories then
differ by float32 rounding, far below any useful epsilon.

Per field: numeric fields (int, float) compare against ``e``; bool and str fields trigger
on any change; a missing value (None) never triggers. A reading goes out whole when any
field triggers, and until a field has ``len(c) - 1`` values of history it always triggers.
``check`` decides without side effects, ``commit`` records what was decided (the agent may
transmit anyway: heartbeat, burst). The history lists live in the RTC state.
"""

NAIVE = (0.0, 1.0)


def _numeric(x):
    return isinstance(x, (int, float)) and x is not True and x is not False


class Predictor:
    """``hist[j]``: field j's values as the fog knows them, most recent first;
    ``last[j]``: the last value of field j that was sent."""

    def __init__(self, hist, last):
        self.hist = hist
        self.last = last
        self._pred = [None] * len(hist)  # forecasts of the last check (reused: no allocation)

    def check(self, values, control):
        """True when the reading should be transmitted under the control's policy."""
        tx = control["tx"]
        if tx == "always":
            return True
        e = control["e"]
        last = self.last
        want = False
        if tx == "delta":
            for j in range(len(values)):
                x = values[j]
                if x is None:
                    continue
                ref = last[j]
                if ref is None or (abs(x - ref) > e if _numeric(x) and _numeric(ref) else x != ref):
                    want = True
            return want
        c = control["c"] or NAIVE
        k = len(c) - 1
        pred = self._pred
        for j in range(len(values)):
            x = values[j]
            p = None
            if _numeric(x):
                h = self.hist[j]
                if len(h) < k:
                    want = True  # not enough history on either side: no forecast yet
                else:
                    p = c[0]
                    for i in range(k):
                        p += c[i + 1] * h[i]
                    if not abs(x - p) <= e:  # also true when the forecast overflowed to nan
                        want = True
            elif x is not None and x != last[j]:
                want = True
            pred[j] = p
        return want

    def commit(self, values, sent, control):
        """Record the decision for ``values`` (after ``check`` with the same control)."""
        predict = control["tx"] == "predict"
        depth = max(len(control["c"]) - 1, 1) if predict else 0
        for j in range(len(values)):
            x = values[j]
            if sent and x is not None:
                self.last[j] = x
            h = self.hist[j]
            if not depth:
                if h:
                    del h[:]
                continue
            v = x if sent and _numeric(x) else self._pred[j] if predict else None
            if v is not None:
                h.insert(0, float(v))
                del h[depth:]

    def reset(self):
        for j in range(len(self.hist)):
            del self.hist[j][:]
            self.last[j] = None
