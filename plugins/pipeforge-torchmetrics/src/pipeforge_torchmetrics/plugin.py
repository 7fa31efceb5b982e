"""Registration of the `tm.*` metrics: their params (pure pydantic) and lazy builders, so
`list-plugins` and `validate` import neither torchmetrics nor torch.

The confusion matrix's table is written by the lifecycle hooks at the bottom; they do nothing
unless a run built a `tm.confusion_matrix` (its module is imported only then).
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar, Literal

from pydantic import Field

from pipeforge import Component, Params, hookimpl

KEY = r"^[A-Za-z][A-Za-z0-9_]*$"
BUILD = "pipeforge_torchmetrics.metrics"


class MetricParams(Params):
    key: str | None = Field(None, min_length=1, max_length=100, pattern=KEY,
                            description="The metrics.jsonl key suffix (val_<key>); default: the metric's own name.")

    default_key: ClassVar[str] = ""

    @property
    def metric_name(self) -> str:
        """The key suffix the metric reports under (checked against trainer.best_metric at validate)."""
        return self.key or self.default_key


class ClassificationParams(MetricParams):
    average: Literal["macro", "micro", "weighted"] = Field(
        "macro", description='"macro": the mean over classes; "micro": over samples; "weighted": by class support.')
    top_k: int = Field(1, ge=1, le=100_000, description="A prediction counts as the top k logits (at most the classes).")
    ignore_index: int | None = Field(None, ge=-1_000_000, le=1_000_000, description="A target value that is left out.")


class F1Params(ClassificationParams):
    default_key: ClassVar[str] = "f1"


class PrecisionParams(ClassificationParams):
    default_key: ClassVar[str] = "precision"


class RecallParams(ClassificationParams):
    default_key: ClassVar[str] = "recall"


class AUROCParams(MetricParams):
    default_key: ClassVar[str] = "auroc"
    average: Literal["macro", "weighted"] = Field("macro", description="One-vs-rest AUROC averaged over classes.")
    thresholds: int | None = Field(None, ge=2, le=100_000, description=(
        "None: exact, from every score (keeps the scores of the split); N: N binned thresholds (constant memory)."))


class TopKParams(MetricParams):
    top_k: int = Field(5, ge=1, le=100_000, description="A hit when the target is among the top k logits (at most the classes).")

    @property
    def metric_name(self) -> str:
        return self.key or f"top{self.top_k}_accuracy"


class ConfusionMatrixParams(MetricParams):
    default_key: ClassVar[str] = "balanced_accuracy"
    normalize: Literal["none", "true", "pred", "all"] = Field(
        "none", description='The table\'s cells: counts ("none"), or fractions of each true class, predicted class or all.')


class RegressionParams(MetricParams):
    pass


class MAEParams(RegressionParams):
    default_key: ClassVar[str] = "mae"


class MSEParams(RegressionParams):
    default_key: ClassVar[str] = "mse"
    squared: bool = Field(True, description="false: the root mean squared error.")


class R2Params(RegressionParams):
    default_key: ClassVar[str] = "r2"
    adjusted: int = Field(0, ge=0, le=1_000_000, description="Independent variables for the adjusted R2 (0: plain R2).")


def _metric(name: str, params: type, builder: str, summary: str) -> Component:
    return Component("metric", f"tm.{name}", params, f"{BUILD}:{builder}", summary)


@hookimpl
def register_components() -> list[Component]:
    return [
        _metric("f1", F1Params, "build_f1", "F1 score of class logits (torchmetrics MulticlassF1Score)."),
        _metric("precision", PrecisionParams, "build_precision", "Precision of class logits (MulticlassPrecision)."),
        _metric("recall", RecallParams, "build_recall", "Recall of class logits (MulticlassRecall)."),
        _metric("auroc", AUROCParams, "build_auroc", "One-vs-rest area under the ROC curve (MulticlassAUROC)."),
        _metric("top_k_accuracy", TopKParams, "build_top_k_accuracy",
                "Share of samples whose target is among the top k logits (MulticlassAccuracy, top_k)."),
        _metric("confusion_matrix", ConfusionMatrixParams, "build_confusion_matrix",
                "The confusion matrix of each evaluated split, as a table in <run dir>/confusion_matrix.jsonl; "
                "records the balanced accuracy (MulticlassConfusionMatrix)."),
        _metric("mae", MAEParams, "build_mae", "Mean absolute error of a regression output (MeanAbsoluteError)."),
        _metric("mse", MSEParams, "build_mse", "Mean squared error of a regression output (MeanSquaredError)."),
        _metric("r2", R2Params, "build_r2", "Coefficient of determination of a regression output (R2Score)."),
    ]


# The confusion matrix table. These hooks run in every process of every run while the plugin is
# installed, so each only looks for the module a built confusion matrix imported.
def _tables() -> Any:
    return sys.modules.get(BUILD)


@hookimpl
def on_fit_start(state: Any) -> None:
    if _tables() is not None:
        _tables().tables_fit_start(state)


@hookimpl
def on_validation_end(state: Any, split: str) -> None:
    if _tables() is not None:
        _tables().tables_validation_end(state, split)


@hookimpl
def on_epoch_end(state: Any, epoch: int) -> None:
    if _tables() is not None:
        _tables().tables_epoch_end(state, epoch)
