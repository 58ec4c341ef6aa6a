"""learn.cluster: assign every event to a cluster, then learn from it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fogrt.event import Event
from fogrt.operator import Operator, numeric_fields
from fogrt.types import FieldType, Schema
from operators.learn import models
from operators.learn.features import check_features, check_names, numeric_x

DEFAULT_MODEL = "StandardScaler | KMeans"


class Cluster(Operator):
    """Online clustering: the cluster of each event, before the model learns it.

    Parameters
    ----------
    model
        A River pipeline: optional scalers, then ``KMeans`` (a fixed number of clusters,
        ``n_clusters`` 5 by default; its centres move with the data at rate ``halflife``)
        or ``DBSTREAM`` (density-based: clusters appear and fade with the data;
        ``clustering_threshold`` sets their radius in the units of the scaled features).
        Default: ``StandardScaler | KMeans``.
    fields
        The numeric fields to cluster on. Default: every numeric field of the input.
    seed
        Given to every estimator that takes a ``seed`` (KMeans) unless set in the spec.

    Output: the input fields plus ``cluster`` (``int``; None for an event without any
    usable feature, which is not learned either).

    Metrics: ``events``, ``learned`` and, for DBSTREAM, ``clusters`` (how many exist now).

    Examples
    --------
    In a topology::

        - id: regimes
          use: learn.cluster
          from: per-minute
          with: {fields: [current_mean, vibration_std], model: [{StandardScaler: {}},
                 {KMeans: {n_clusters: 3, halflife: 0.1}}]}

    >>> from fogrt.event import Event
    >>> op = Cluster(fields=["load"], model=[{"KMeans": {"n_clusters": 2, "halflife": 0.3}}])
    >>> out = [op.process(Event("pump-1", i, float(i), {"load": (i % 2) * 10.0}))[0]
    ...        for i in range(200)]
    >>> len({e.fields["cluster"] for e in out[-10:]})
    2
    """

    kind = "learn.cluster"

    def __init__(
        self,
        model: models.ModelSpec = DEFAULT_MODEL,
        fields: list[str] | None = None,
        seed: int = 42,
    ) -> None:
        self.model = model
        self.fields = fields
        self.seed = seed
        check_names(fields)
        self._model: Any = models.build_model(model, seed, ("clusterer",))
        self._fields: tuple[str, ...] | None = None if fields is None else tuple(fields)
        self._dbstream = models.step_name(model) == "DBSTREAM"
        self._events = 0
        self._learned = 0

    def bind(self, upstream: Schema) -> None:
        """Without ``fields``, cluster on every numeric field of the compiled input."""
        if self.fields is None and self._events == 0:
            self._fields = tuple(numeric_fields(upstream))

    def process(self, event: Event) -> tuple[Event, ...]:
        self._events += 1
        x = numeric_x(event.fields, self._fields)
        cluster = None
        if x:
            cluster = int(self._model.predict_one(x))
            self._model.learn_one(x)
            self._learned += 1
        out = dict(event.fields)
        out["cluster"] = cluster
        return (event.replace(fields=out),)

    def schema(self, upstream: Schema) -> dict[str, FieldType]:
        check_features(upstream, self.fields, (), numeric=True)
        out = dict(upstream)
        out["cluster"] = "int"
        return out

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {"events": self._events, "learned": self._learned}
        if self._dbstream:
            out["clusters"] = models.final_step(self._model).n_clusters
        return out

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"fields": ["x", "y", "z"]}
        yield {"model": [{"KMeans": {"n_clusters": 3, "halflife": 0.2}}], "fields": ["x", "z"]}
        yield {"model": [{"StandardScaler": {}}, {"DBSTREAM": {"clustering_threshold": 1.5}}]}
