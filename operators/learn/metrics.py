"""Progressive-validation metrics: every prediction is scored before the model learns.

Each learning operator keeps one of these and merges ``values()`` into its ``metrics()``,
so the replay summary, Prometheus and the dashboard show them. Values are River's metrics
(``river.metrics``), created on first use so that importing ``operators.learn`` does not
import River.
"""

from __future__ import annotations

from typing import Any

from fogrt.types import Value


class Classification:
    """Accuracy and macro F1; F1 and ROC AUC of class 1 while every label is 0/1 (or bool).

    A prediction of ``None`` (a model that has not learned anything yet) is not scored.
    """

    def __init__(self) -> None:
        from river import metrics

        self.accuracy: Any = metrics.Accuracy()  # type: ignore[no-untyped-call]
        self.macro_f1: Any = metrics.MacroF1()  # type: ignore[no-untyped-call]
        self.f1: Any = metrics.F1(pos_val=1)  # type: ignore[no-untyped-call]
        self.roc_auc: Any = metrics.ROCAUC(pos_val=1)  # type: ignore[no-untyped-call]
        self.binary = True
        self.scored = 0

    def update(self, y_true: Value, y_pred: Value, p_one: float | None) -> None:
        """``p_one``: the model's probability of class 1 (binary problems), if it has one."""
        if y_pred is None:
            return
        self.scored += 1
        self.accuracy.update(y_true, y_pred)
        self.macro_f1.update(y_true, y_pred)
        if self.binary and y_true not in (0, 1):  # True == 1, False == 0
            self.binary = False
        if self.binary:
            self.f1.update(y_true, y_pred)
            if p_one is not None:
                self.roc_auc.update(y_true, p_one)

    def values(self) -> dict[str, float]:
        if not self.scored:
            return {}
        out = {"accuracy": float(self.accuracy.get()), "macro_f1": float(self.macro_f1.get())}
        if self.binary:
            out["f1"] = float(self.f1.get())
            out["roc_auc"] = float(self.roc_auc.get())
        return out


class Regression:
    """Mean absolute error and root mean squared error of the predictions scored so far."""

    def __init__(self) -> None:
        from river import metrics

        self.mae: Any = metrics.MAE()  # type: ignore[no-untyped-call]
        self.rmse: Any = metrics.RMSE()  # type: ignore[no-untyped-call]
        self.scored = 0

    def update(self, y_true: float, y_pred: float) -> None:
        self.scored += 1
        self.mae.update(y_true, y_pred)
        self.rmse.update(y_true, y_pred)

    def values(self) -> dict[str, float]:
        if not self.scored:
            return {}
        return {"mae": float(self.mae.get()), "rmse": float(self.rmse.get())}
