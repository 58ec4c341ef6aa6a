"""operators.learn.models (the allowlist and spec builder), packed HST, ControlChart."""

from __future__ import annotations

import inspect
import math
import pickle
import random
from typing import Any

import pytest

from fogrt.errors import ParamError
from operators.learn import models
from operators.learn.chart import ControlChart
from operators.learn.hst import HalfSpaceTrees


@pytest.mark.parametrize("name", sorted(models.ESTIMATORS))
def test_every_allowlisted_name_builds_with_its_role(name: str) -> None:
    entry = models.ESTIMATORS[name]
    cls = models.estimator_class(name)
    assert cls.__name__ == name
    assert entry.target.startswith(("river.", "operators.learn."))
    required = {
        "HoltWinters": {"alpha": 0.5},
        "SNARIMAX": {"p": 1, "d": 0, "q": 0},
    }.get(name, {})
    spec: Any = [{name: required}]
    if entry.role == "transformer":
        spec = [{name: {}}, "ControlChart"]
        final: tuple[models.Role, ...] = ("detector",)
    else:
        final = (entry.role,)
    built = models.build_model(spec, seed=3, final=final)
    assert built is not None


@pytest.mark.parametrize(
    ("spec", "final", "path", "message"),
    [
        ("river.anomaly:HalfSpaceTrees", ("detector",), ("model",), "unknown estimator"),
        (["__import__"], ("classifier",), ("model", 0), "unknown estimator '__import__'"),
        (["HalfSpaceTrees"], ("classifier",), ("model", 0), "unknown estimator"),
        (["StandardScaler"], ("classifier",), ("model", 0), "the last step must be a classifier"),
        (["GaussianNB", "StandardScaler"], ("classifier",), ("model", 0), "must be the last step"),
        (
            [{"HoeffdingAdaptiveTreeClassifier": {"split_criterion": 5}}],
            ("classifier",),
            ("model", 0, "HoeffdingAdaptiveTreeClassifier", "split_criterion"),
            "expected a string",
        ),
        (
            [{"HoeffdingAdaptiveTreeClassifier": {"split_criterion": "gini_"}}],
            ("classifier",),
            ("model", 0, "HoeffdingAdaptiveTreeClassifier", "split_criterion"),
            "unknown value 'gini_' (did you mean 'gini'?)",
        ),
        (
            [{"ARFClassifier": {"metric": "accuracy"}}],
            ("classifier",),
            ("model", 0, "ARFClassifier", "metric"),
            "cannot be set in a topology",
        ),
        (
            [{"LinearRegression": {"l2": float("inf")}}],
            ("regressor",),
            ("model", 0, "LinearRegression", "l2"),
            "finite",
        ),
        (
            [{"KMeans": {"n_cluster": 3}}],
            ("clusterer",),
            ("model", 0, "KMeans", "n_cluster"),
            "did you mean 'n_clusters'",
        ),
        ([{"SNARIMAX": {"p": 1}}], ("forecaster",), ("model", 0, "SNARIMAX"), "cannot build"),
        ({"GaussianNB": {}}, ("classifier",), ("model",), "a pipeline is a list of steps"),
        ([{"GaussianNB": {}, "KMeans": {}}], ("classifier",), ("model", 0), "{Estimator"),
    ],
)
def test_bad_specs(spec: Any, final: tuple[Any, ...], path: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ParamError) as info:
        models.build_model(spec, seed=1, final=final)
    assert info.value.path == path
    assert message in info.value.message


def test_scalers_are_refused_where_only_one_estimator_fits() -> None:
    with pytest.raises(ParamError, match="unknown estimator 'StandardScaler'"):
        models.build_model("StandardScaler | HoltWinters", 1, ("forecaster",), alone=True)


def test_seed_is_injected_unless_given() -> None:
    forest = models.build_model("ARFClassifier", seed=5, final=("classifier",))
    assert forest.seed == 5
    forest = models.build_model([{"ARFClassifier": {"seed": 9}}], seed=5, final=("classifier",))
    assert forest.seed == 9
    spec = [{"StandardScaler": {}}, {"KMeans": {"n_clusters": 2}}]
    pipeline = models.build_model(spec, seed=5, final=("clusterer",))
    assert models.final_step(pipeline).seed == 5
    assert spec == [{"StandardScaler": {}}, {"KMeans": {"n_clusters": 2}}]  # not mutated


def test_list_parameters_are_accepted() -> None:
    tree = models.build_model(
        [{"HoeffdingTreeClassifier": {"nominal_attributes": ["door"]}}], 1, ("classifier",)
    )
    assert tree.nominal_attributes == ["door"]


def test_check_value_kinds() -> None:
    def param(annotation: Any, default: Any) -> inspect.Parameter:
        return inspect.Parameter(
            "p", inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
        )

    assert models.check_value(param("int | None", None), 3) is None
    assert models.check_value(param("int | None", None), None) is None
    assert models.check_value(param("float", 0.1), 2) is None  # an int is a number
    assert "true or false" in str(models.check_value(param(inspect.Parameter.empty, True), 1))
    assert models.check_value(param(inspect.Parameter.empty, inspect.Parameter.empty), [1]) is None
    assert "mapping" in str(
        models.check_value(param("dict[str, tuple[float, float]] | None", None), 3)
    )


# -- packed Half-Space Trees -----------------------------------------------------------------


def _stream(n: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = {f"f{j}": rng.random() for j in range(5)}
        if rng.random() < 0.1:
            del x[f"f{rng.randrange(5)}"]  # missing features take the busier branch
        if rng.random() < 0.02:
            x["f0"] = 2.0
        out.append(x)
    return out


@pytest.mark.parametrize(
    "params",
    [
        {"seed": 1},
        {"n_trees": 4, "height": 5, "window_size": 30, "seed": 7},
        {"n_trees": 3, "height": 3, "window_size": 7, "limits": {"f0": (0.0, 2.0)}, "seed": 2},
    ],
)
def test_packed_hst_scores_like_river(params: dict[str, Any]) -> None:
    from river import anomaly

    river_hst = anomaly.HalfSpaceTrees(**params)
    packed = HalfSpaceTrees(**params)
    for x in _stream(700, seed=params["seed"]):
        assert packed.score_one(x) == river_hst.score_one(x)
        river_hst.learn_one(x)
        packed.learn_one(x)
    assert packed.ready
    assert len(pickle.dumps(packed)) < len(pickle.dumps(river_hst))


def test_packed_hst_is_much_smaller_and_clones() -> None:
    from river import anomaly

    river_hst, packed = anomaly.HalfSpaceTrees(seed=3), HalfSpaceTrees(seed=3)
    for x in _stream(300, seed=3):
        river_hst.learn_one(x)
        packed.learn_one(x)
    assert len(pickle.dumps(packed)) * 3 < len(pickle.dumps(river_hst))
    twin = packed.clone()
    assert isinstance(twin, HalfSpaceTrees) and not twin.ready
    restored = pickle.loads(pickle.dumps(packed))
    x = {"f0": 0.5, "f1": 0.5, "f2": 0.5, "f3": 0.5, "f4": 0.5}
    assert restored.score_one(x) == packed.score_one(x)


# -- ControlChart ----------------------------------------------------------------------------


def test_control_chart_scores_in_sigmas_of_its_average() -> None:
    rng = random.Random(0)
    chart = ControlChart(alpha=1.0)  # Shewhart: each reading on its own
    for _ in range(2000):
        chart.learn_one({"v": rng.gauss(10.0, 2.0)})
    assert chart.score_one({"v": 10.0}) < 0.2
    assert chart.score_one({"v": 16.0}) == pytest.approx(3.0, rel=0.1)
    smooth = ControlChart(alpha=0.1)
    for _ in range(2000):
        smooth.learn_one({"v": rng.gauss(10.0, 2.0)})
    scores = [smooth.score_one({"v": 12.0}) for _ in range(60)]  # a sustained 1-sigma shift
    # The average's own spread is sqrt(alpha / (2 - alpha)) = 0.23 sigma of the readings: a
    # shift that no single reading shows grows to 1 / 0.23 = 4.4 of its sigmas.
    assert scores[0] < 2.0
    assert scores[-1] == pytest.approx(4.4, rel=0.15)


def test_control_chart_grace_missing_features_and_clone() -> None:
    chart = ControlChart(alpha=0.5, grace_period=5)
    for v in range(4):
        chart.learn_one({"a": float(v), "b": 1.0})
    assert chart.score_one({"a": 100.0}) == 0.0  # still in its grace period
    chart.learn_one({"a": 1.0, "b": 1.0})
    assert chart.score_one({"b": 1.0}) == 0.0  # a missing feature is not scored
    assert chart.score_one({"b": 2.0}) > 1e6  # b never varied: any change is far out
    assert chart.clone().score_one({"a": 1.0}) == 0.0
    with pytest.raises(ValueError, match="alpha"):
        ControlChart(alpha=0.0)
    with pytest.raises(ValueError, match="grace_period"):
        ControlChart(grace_period=1)


def _chart_reference(
    alpha: float, grace: int, stream: list[tuple[str, dict[str, float]]]
) -> list[float]:
    """The documented chart, written plainly: the scores of the ``score`` steps (each
    ``learn`` step learns the event the step before scored: the average does not move)."""
    ewma: dict[str, float] = {}
    stats: dict[str, list[float]] = {}
    scores = []
    for op, x in stream:
        for name, value in x.items() if op == "score" else ():
            ewma[name] = value if name not in ewma else ewma[name] + alpha * (value - ewma[name])
        if op == "score":
            worst = 0.0
            for name, (n, mean, m2) in stats.items():
                if n >= grace and name in x:
                    scale = max(math.sqrt(m2 / n), 1e-9 * (1.0 + abs(mean)))
                    worst = max(worst, abs(ewma[name] - mean) / scale)
            scores.append(worst)
            continue
        for name in x:
            s = stats.setdefault(name, [0.0, 0.0, 0.0])
            s[0] += 1.0
            d = ewma[name] - s[1]
            s[1] += d / s[0]
            s[2] += d * (ewma[name] - s[1])
    return scores


def test_control_chart_scores_exactly_as_documented() -> None:
    """Scores equal the plain formula to the last bit: learned and unlearned events mixed,
    features missing now and then, a rare feature slow to reach the grace period."""
    rng = random.Random(5)
    stream: list[tuple[str, dict[str, float]]] = []
    for i in range(600):
        x = {"a": rng.gauss(10.0, 2.0), "b": rng.gauss(-3.0, 0.1) + (5.0 if i > 500 else 0.0)}
        if rng.random() < 0.2:
            del x["a"]
        if i % 97 == 0:
            x["rare"] = rng.random()
        stream.append(("score", x))
        if i < 300 or rng.random() < 0.3:
            stream.append(("learn", x))
    chart = ControlChart(alpha=0.3, grace_period=7)
    scores = []
    for op, x in stream:
        if op == "score":
            scores.append(chart.score_one(x))
        else:
            chart.learn_one(x)
    assert scores == _chart_reference(0.3, 7, stream)
    assert sum(score > 0.0 for score in scores) > 500 and max(scores) > 10.0


def test_control_chart_restores_from_a_state_without_its_scale_cache() -> None:
    """A chart pickled before it kept ``_scales`` (older snapshots) scores the same."""
    rng = random.Random(6)
    chart = ControlChart(alpha=0.2)
    for _ in range(50):
        chart.learn_one({"v": rng.gauss(0.0, 1.0), "w": rng.gauss(5.0, 1.0)})
    old = pickle.loads(pickle.dumps(chart))
    del old.__dict__["_scales"]
    old = pickle.loads(pickle.dumps(old))
    assert "_scales" not in vars(old)
    for i in range(30):
        x = {"v": rng.gauss(0.5, 1.0), "w": rng.gauss(5.0, 1.0)}
        assert old.score_one(x) == chart.score_one(x)
        if i % 3 == 0:
            old.learn_one(x)
            chart.learn_one(x)


def test_nested_estimator_specs() -> None:
    """Parameters that take an estimator accept an allowlisted spec of that role."""
    spec = [
        {
            "SNARIMAX": {
                "p": 2,
                "d": 1,
                "q": 0,
                "regressor": [{"StandardScaler": {}}, {"LinearRegression": {"l2": 0.1}}],
            }
        }
    ]
    model = models.build_model(spec, 1, ("forecaster",), alone=True)
    assert [type(s).__name__ for s in model.regressor.steps.values()] == [
        "StandardScaler",
        "LinearRegression",
    ]
    forest = models.build_model(
        [{"ARFClassifier": {"n_models": 2, "drift_detector": [{"ADWIN": {"delta": 0.01}}]}}],
        1,
        ("classifier",),
    )
    assert forest.drift_detector.delta == 0.01
    with pytest.raises(ParamError) as info:
        models.build_model(
            [
                {
                    "SNARIMAX": {
                        "p": 1,
                        "d": 0,
                        "q": 0,
                        "regressor": [{"LinearRegression": {"l3": 1}}],
                    }
                }
            ],
            1,
            ("forecaster",),
            alone=True,
        )
    assert info.value.path == ("model", 0, "SNARIMAX", "regressor", 0, "LinearRegression", "l3")
    with pytest.raises(ParamError) as info:
        models.build_model(
            [{"HoeffdingTreeClassifier": {"splitter": "Gaussian"}}], 1, ("classifier",)
        )
    assert "cannot be set in a topology" in info.value.message
