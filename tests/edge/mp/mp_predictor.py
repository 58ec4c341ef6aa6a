"""The transmit policies against decisions computed by an independent reference (in the
pytest process) for the same sequences."""

from fogagent import wire
from fogagent.predictor import Predictor


def _run(values, tx, e, c, nfields=1):
    ctl = wire.default_control()
    ctl["tx"], ctl["e"], ctl["c"] = tx, e, c
    p = Predictor([[] for _ in range(nfields)], [None] * nfields)
    out = []
    for v in values:
        row = v if isinstance(v, list) else [v]
        send = p.check(row, ctl)
        p.commit(row, send, ctl)
        out.append(send)
    return out, p


def test_decisions_match_the_reference(inputs):
    for case in inputs["cases"]:
        got, _ = _run(case["values"], case["tx"], case["e"], case["c"])
        assert got == case["expected"], (case["tx"], case["e"], case["c"], got, case["expected"])


def test_history_holds_the_fogs_view(inputs):
    # c = [0, 1]: forecast = previous value as the fog knows it
    got, p = _run([10.0, 10.2, 10.4, 10.6], "predict", 0.5, [0.0, 1.0])
    assert got == [True, False, False, True]
    assert p.hist[0] == [10.6]  # sent: the reading itself; suppressed: the forecast (10.0)


def test_any_field_triggers_and_non_numeric_fields_trigger_on_change(inputs):
    rows = [
        [1.0, True, "a"],
        [1.1, True, "a"],
        [1.1, False, "a"],
        [1.1, False, "b"],
        [None, False, "b"],
        [3.0, None, "b"],
    ]
    got, _ = _run(rows, "delta", 0.5, [], 3)
    assert got == [True, False, True, True, False, True], got


def test_missing_history_always_transmits(inputs):
    got, _ = _run([1.0, 1.0, 1.0, 1.0], "predict", 100.0, [0.0, 0.5, 0.5])
    assert got == [True, True, False, False], got  # two values needed before a forecast
