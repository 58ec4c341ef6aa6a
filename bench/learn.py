"""Benchmark: the learning operators against bare loops, and memory per device.

Speed. Each ``learn.*`` operator processes the same events (6 float features, an int label
and a numeric target, one device) as a bare loop that calls the same River model directly:
builds the feature dict, predicts or scores, learns, updates the same progressive metrics
or threshold, and builds the output fields. The figure of merit is ``operator events/s /
bare events/s`` (goal >= 0.85). Both sides get fresh models each repetition, alternating;
the best of ``--repeat`` is kept. Times are CPU time of this process (``process_time``),
which other jobs on the machine disturb less than wall time. For HalfSpaceTrees the bare
loop runs fogrt's packed HST (the model the operator runs) and, for reference, River's own,
whose scores are identical. Last, the fixed cost of the contract itself: an operator with no
model that copies the fields, adds one and returns a new ``Event``, against a bare loop that
builds the same dict; for models that cost well under a microsecond (ADWIN) it bounds the
ratio.

Memory. ``--devices N`` devices each get their own ``learn.anomaly`` instance through the
real engine (``Dataflow``, per-device keying), with the default model (MinMaxScaler |
HalfSpaceTrees, 10 trees of height 8); the resident set size grown per device is measured
in a fresh process, next to River's HalfSpaceTrees kept per device by hand and to one
shared model (``shared: true``, ``key: global``). Quality: on a synthetic fleet with
injected faults, F1 of a model per device vs a shared model with per-device scalers.

    python bench/learn.py                     # speed, 20,000 events, best of 3
    python bench/learn.py --memory --devices 10000
"""

from __future__ import annotations

# Not bench/operators.py: a script's folder comes first on sys.path, and a file of that name
# would shadow the operator library for every script in bench/.
import argparse
import gc
import json
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from fogrt.event import Event
from fogrt.operator import Operator, build
from fogrt.registry import operator_class

FEATURES = [f"x{i}" for i in range(6)]
SEED = 7


def make_events(n: int, seed: int = 1, key: str = "dev") -> list[Event]:
    """Readings with 6 correlated features, a class that depends on them, a target."""
    rng = random.Random(seed)
    events = []
    level = 0.0
    for i in range(n):
        level += rng.gauss(0, 0.05)
        xs = [level + rng.gauss(0, 1) for _ in FEATURES]
        if rng.random() < 0.01:
            xs[0] += 6.0
        fields: dict[str, Any] = dict(zip(FEATURES, xs, strict=True))
        fields["label"] = int(xs[1] + xs[2] > 2 * level)
        fields["target"] = xs[0] + 0.5 * xs[1]
        events.append(Event(key, i, float(i), fields))
    return events


# -- bare loops: the same River model, called by hand ------------------------------------------


def bare_anomaly(model: Any, quantile: float) -> Callable[[list[Event]], None]:
    from river import stats

    def loop(events: list[Event]) -> None:
        q = stats.Quantile(quantile)
        ready = getattr(model, "steps", {"m": model})
        detector = list(ready.values())[-1]
        for n, e in enumerate(events, 1):
            values = e.fields
            x = {k: values[k] for k in FEATURES}
            score = float(model.score_one(x))
            model.learn_one(x)
            limit = q.get()
            out = dict(values)
            out["score"] = score
            out["is_anomaly"] = n > 50 and limit is not None and score > limit
            if getattr(detector, "ready", True):
                q.update(score)

    return loop


def bare_classify(model: Any) -> Callable[[list[Event]], None]:
    from river import metrics

    def loop(events: list[Event]) -> None:
        acc, f1, auc = metrics.Accuracy(), metrics.F1(), metrics.ROCAUC()
        macro = metrics.MacroF1()
        for e in events:
            values = e.fields
            x = {k: values[k] for k in FEATURES}
            y = values["label"]
            probas = model.predict_proba_one(x)
            out = dict(values)
            if probas:
                best = max(probas, key=probas.__getitem__)
                out["prediction"], out["proba"] = best, probas[best]
                for m in (acc, f1, macro):
                    m.update(y, best)
                auc.update(y, probas.get(1, 0.0))
            model.learn_one(x, y)

    return loop


def bare_regress(model: Any, lags: int) -> Callable[[list[Event]], None]:
    from river import metrics

    def loop(events: list[Event]) -> None:
        mae, rmse = metrics.MAE(), metrics.RMSE()
        history: list[float] = []
        for e in events:
            values = e.fields
            y = values["target"]
            out = dict(values)
            if len(history) >= lags:
                x = {f"target_lag{i + 1}": history[-1 - i] for i in range(lags)}
                p = model.predict_one(x)
                out["prediction"], out["error"] = p, y - p
                mae.update(y, p)
                rmse.update(y, p)
                model.learn_one(x, y)
            history.append(y)

    return loop


def bare_cluster(model: Any) -> Callable[[list[Event]], None]:
    def loop(events: list[Event]) -> None:
        for e in events:
            values = e.fields
            x = {k: values[k] for k in FEATURES}
            out = dict(values)
            out["cluster"] = model.predict_one(x)
            model.learn_one(x)

    return loop


def bare_forecast(model: Any, horizon: int) -> Callable[[list[Event]], None]:
    from river import metrics

    def loop(events: list[Event]) -> None:
        mae, rmse = metrics.MAE(), metrics.RMSE()
        made: list[float | None] = []
        for e in events:
            y = e.fields["target"]
            out = dict(e.fields)
            due = made[-horizon] if len(made) >= horizon else None
            if due is not None:
                out["error"] = y - due
                mae.update(y, due)
                rmse.update(y, due)
            model.learn_one(y)
            made.append(model.forecast(horizon)[-1] if model._initialized else None)

    return loop


def bare_drift(detector: Any) -> Callable[[list[Event]], None]:
    def loop(events: list[Event]) -> None:
        for e in events:
            detector.update(e.fields["x0"])
            out = dict(e.fields)
            out["drift"] = detector.drift_detected

    return loop


# -- cases -------------------------------------------------------------------------------------


def _river(name: str, **params: Any) -> Any:
    from operators.learn.models import estimator_class

    return estimator_class(name)(**params)


def _pipeline(*steps: Any) -> Any:
    from river import compose

    return compose.Pipeline(*steps)


def _river_hst() -> Any:
    from river import anomaly, preprocessing

    return _pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=SEED))


Case = tuple[str, str, dict[str, Any], Callable[[], Callable[[list[Event]], None]]]

CASES: list[Case] = [
    (
        "anomaly MinMaxScaler, HST",
        "learn.anomaly",
        {"fields": FEATURES, "seed": SEED},
        lambda: bare_anomaly(
            _pipeline(_river("MinMaxScaler"), _river("HalfSpaceTrees", seed=SEED)), 0.99
        ),
    ),
    (
        "anomaly StandardScaler, OneClassSVM",
        "learn.anomaly",
        {"fields": FEATURES, "model": "StandardScaler | OneClassSVM"},
        lambda: bare_anomaly(_pipeline(_river("StandardScaler"), _river("OneClassSVM")), 0.99),
    ),
    (
        "regress StandardScaler, LinearRegression",
        "learn.regress",
        {"target": "target", "lags": 3},
        lambda: bare_regress(
            _pipeline(_river("StandardScaler"), _river("LinearRegression", intercept_lr=0.1)), 3
        ),
    ),
    (
        "cluster KMeans(5)",
        "learn.cluster",
        {"fields": FEATURES, "model": "KMeans"},
        lambda: bare_cluster(_river("KMeans", seed=SEED)),
    ),
    (
        "classify HoeffdingAdaptiveTree",
        "learn.classify",
        {"fields": FEATURES, "seed": SEED},
        lambda: bare_classify(_river("HoeffdingAdaptiveTreeClassifier", seed=SEED)),
    ),
    (
        "classify ARF(10)",
        "learn.classify",
        {"fields": FEATURES, "model": "ARFClassifier", "seed": SEED},
        lambda: bare_classify(_river("ARFClassifier", seed=SEED)),
    ),
    (
        "forecast HoltWinters",
        "learn.forecast",
        {"target": "target"},
        lambda: bare_forecast(_river("HoltWinters", alpha=0.5, beta=0.1), 1),
    ),
    ("drift ADWIN", "learn.drift", {"field": "x0"}, lambda: bare_drift(_river("ADWIN"))),
]


class _Floor(Operator):
    """No model: copy the fields, add one, return a new event. The contract's fixed cost."""

    def process(self, event: Event) -> tuple[Event, ...]:
        out = event.fields.copy()
        out["flag"] = False
        return (Event(event.key, event.seq, event.time, out, event.arrival, event.flags),)


def floor(events: list[Event], repeat: int) -> tuple[float, float]:
    """Seconds per event of ``_Floor.process`` and of a bare loop building the same dict."""

    def bare(events: list[Event]) -> None:
        for e in events:
            out = dict(e.fields)
            out["flag"] = False

    ours, by_hand = [], []
    for _ in range(repeat):
        process = _Floor().process
        start = time.process_time()
        for e in events:
            process(e)
        ours.append(time.process_time() - start)
        by_hand.append(run_bare(lambda: bare, events))
    return min(ours) / len(events), min(by_hand) / len(events)


def run_operator(kind: str, params: dict[str, Any], events: list[Event]) -> float:
    op: Operator = build(operator_class(kind), params)
    op.bind({**dict.fromkeys(FEATURES, "float"), "label": "int", "target": "float"})
    process = op.process
    start = time.process_time()
    for e in events:
        process(e)
    return time.process_time() - start


def run_bare(factory: Callable[[], Callable[[list[Event]], None]], events: list[Event]) -> float:
    loop = factory()
    start = time.process_time()
    loop(events)
    return time.process_time() - start


def speed(n: int, repeat: int, only: list[str] | None) -> None:
    events = make_events(n)
    arf_events = events[: max(1, n // 10)]  # ARF is ~40x slower: fewer events, same ratio
    print("| operator | events | bare loop ev/s | operator ev/s | ratio (goal >= 0.85) |")
    print("|---|---|---|---|---|")
    for name, kind, params, factory in CASES:
        if only and not any(word in name for word in only):
            continue
        evs = arf_events if "ARF" in name else events
        bare, ours = [], []
        for _ in range(repeat):
            gc.collect()
            bare.append(run_bare(factory, evs))
            gc.collect()
            ours.append(run_operator(kind, params, evs))
        b, o = len(evs) / min(bare), len(evs) / min(ours)
        print(f"| {name} | {len(evs):,} | {b:,.0f} | {o:,.0f} | {o / b:.3f} |", flush=True)
        if "HST" in name:
            river_best = min(
                run_bare(lambda: bare_anomaly(_river_hst(), 0.99), evs) for _ in range(repeat)
            )
            print(
                f"| (River's own HalfSpaceTrees, bare) | {len(evs):,} | "
                f"{len(evs) / river_best:,.0f} | | |",
                flush=True,
            )
    ours, by_hand = floor(events, repeat)
    print(
        f"\nFixed cost of the operator contract (a process() call, the output Event, its tuple)"
        f": {(ours - by_hand) * 1e6:.2f} us/event over a bare loop building the same output "
        f"dict ({ours * 1e6:.2f} vs {by_hand * 1e6:.2f} us/event, no model)."
    )


# -- memory ----------------------------------------------------------------------------------

_MEMORY_TOPOLOGY = """\
apiVersion: fogrt/v1
kind: Topology
metadata: {{name: bench-memory}}
sources:
  fleet: {{fields: {{{fields}}}}}
operators:
  - id: detect
    use: learn.anomaly
    from: fleet
    key: {key}
    with: {{fields: [{names}], shared: {shared}, warmup: 10, model: {model}}}
sinks:
  - {{id: out, use: jsonl, from: detect, with: {{path: unused.jsonl}}}}
"""


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(mode: str, devices: int, per_device: int) -> dict[str, float]:
    """Runs in a fresh process: RSS grown per device for one way of keeping models."""
    import pickle

    import river  # noqa: F401 - paid before the baseline

    from fogrt.engine.dataflow import Dataflow
    from fogrt.topology.compile import compile_topology

    events = make_events(per_device, seed=3)
    text = _MEMORY_TOPOLOGY.format(
        fields=", ".join(f"{f}: float" for f in FEATURES),
        names=", ".join(FEATURES),
        key="global" if mode == "shared" else "device",
        shared="true" if mode == "shared" else "false",
        model=json.dumps(
            "StandardScaler | ControlChart" if mode == "chart" else "MinMaxScaler | HalfSpaceTrees"
        ),
    )
    flow = Dataflow(compile_topology(text))
    gc.collect()
    before = _rss()
    started = time.perf_counter()
    if mode == "river":
        models: dict[str, Any] = {}
        for d in range(devices):
            model = models[str(d)] = _river_hst()
            for e in events:
                x = {k: e.fields[k] for k in FEATURES}
                model.score_one(x)
                model.learn_one(x)
        blob = len(pickle.dumps(models["0"]))
    else:
        for d in range(devices):
            flow.push("fleet", [Event(f"dev-{d}", e.seq, e.time, e.fields) for e in events])
            flow.take_sink_batches()
        ops = flow.instances("detect")
        blob = sum(len(op.snapshot()) for op in ops.values()) / devices
    seconds = time.perf_counter() - started
    gc.collect()
    grown = _rss() - before
    return {"per_device": grown / devices, "rss": _rss(), "snapshot": blob, "seconds": seconds}


def memory(devices: int, per_device: int) -> None:
    print(
        f"\n| {devices:,} devices, {per_device} readings each | RSS grown per device | "
        f"process RSS | state per device (pickled) |"
    )
    print("|---|---|---|---|")
    for mode, label in (
        ("device", "learn.anomaly, a model per device (packed HST, default params)"),
        ("shared", "learn.anomaly, `shared: true` under `key: global` (HST)"),
        ("chart", "learn.anomaly, a StandardScaler, ControlChart per device"),
        ("river", "River's HalfSpaceTrees per device, by hand (reference)"),
    ):
        n = devices if mode != "river" else min(devices, 2000)
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", mode, str(n), str(per_device)],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        note = "" if n == devices else f" (measured on {n:,}; x{devices / n:g} for the total)"
        total = r["rss"] if n == devices else r["rss"] + r["per_device"] * (devices - n)
        print(
            f"| {label}{note} | {r['per_device'] / 1024:,.1f} KiB | "
            f"{total / 2**20:,.0f} MiB | {r['snapshot'] / 1024:,.1f} KiB |",
            flush=True,
        )


def fleet(devices: int, n: int, seed: int = 5) -> tuple[list[Event], set[tuple[str, int]]]:
    """Devices that differ in scale (0.1-100) and offset, with rare faults on every field."""
    rng = random.Random(seed)
    streams, faults = [], set()
    for d in range(devices):
        scale, offset, key = rng.uniform(0.1, 100), rng.uniform(-50, 50), f"dev-{d}"
        events = []
        for i in range(n):
            shift = 5.0 if i > 300 and rng.random() < 0.005 else 0.0
            if shift:
                faults.add((key, i))
            fields = {f: offset + scale * (rng.gauss(0, 1) + shift) for f in FEATURES}
            events.append(Event(key, i, float(i), fields))
        streams.append(events)
    return [e for group in zip(*streams, strict=True) for e in group], faults


def quality(devices: int = 30, n: int = 1200) -> None:
    """F1 of a model per device vs one shared model with per-device scalers."""
    from operators.learn import Anomaly

    events, faults = fleet(devices, n)
    print(
        f"\nQuality on {devices} devices x {n} readings (scale 0.1-100, {len(faults)} "
        "injected faults; the first 300 readings of each device are warm-up):\n"
    )
    print("| detector | precision | recall | F1 |")
    print("|---|---|---|---|")
    hst_q = {"threshold": {"quantile": 0.995}}
    chart = {
        "model": [{"StandardScaler": {}}, {"ControlChart": {"alpha": 1.0}}],
        "threshold": {"fixed": 4.0},
    }
    for label, params in (
        ("MinMaxScaler, HalfSpaceTrees: a model per device", {**hst_q}),
        ("MinMaxScaler, HalfSpaceTrees: shared, per-device scaler", {**hst_q, "shared": True}),
        ("StandardScaler, ControlChart: a model per device", chart),
        ("StandardScaler, ControlChart: shared, per-device scaler", {**chart, "shared": True}),
    ):
        shared = bool(params.get("shared"))
        ops: dict[str, Anomaly] = {}
        tp = fp = fn = 0
        for e in events:
            key = "*" if shared else e.key
            op = ops.get(key)
            if op is None:
                op = ops[key] = Anomaly(**{"fields": FEATURES, "warmup": 300, **params})
            (out,) = op.process(e)
            if e.seq > 300:
                flag, fault = out.fields["is_anomaly"], (e.key, e.seq) in faults
                tp += flag and fault
                fp += flag and not fault
                fn += fault and not flag
        p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * p * r / max(1e-9, p + r)
        print(f"| {label} | {p:.2f} | {r:.2f} | {f1:.2f} |", flush=True)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-child":
        print(json.dumps(memory_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--only", nargs="*", help="cases whose name contains one of these words")
    p.add_argument("--memory", action="store_true", help="also measure memory per device")
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--readings", type=int, default=30, help="readings per device (memory)")
    args = p.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )
    print("command: python bench/learn.py " + " ".join(sys.argv[1:]) + "\n")
    speed(args.events, args.repeat, args.only)
    if args.memory:
        memory(args.devices, args.readings)
        quality()


if __name__ == "__main__":
    main()
