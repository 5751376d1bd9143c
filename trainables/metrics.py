"""Metrics on the validation split beyond the built-in ones: a small library, and the user's own.

A sweep may optimise, or merely report, any of these each epoch:

- a library metric by name (:data:`LIBRARY`): ``val_f1_macro``, ``val_precision``,
  ``val_recall``, ``val_balanced_accuracy``, ``val_roc_auc`` (classification), ``val_r2``
  (regression);
- the user's own function ``(y_true, y_pred_or_scores) -> float``, named ``module:function`` in
  the config and reported as ``val_<function>``.

They are computed from the trainable's ``scores(x)`` on the validation rows: class
probabilities ``(n, classes)`` for classification, predictions ``(n,)`` for regression (in the
target's units, centred on the training mean).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainables.errors import UserCodeError
from trainables.user_code import TARGET_KEY, code_name

MetricFn = Callable[[np.ndarray, np.ndarray], float]


def _labels(scores: np.ndarray) -> np.ndarray:
    labels: np.ndarray = np.asarray(scores).argmax(axis=1)
    return labels


def _f1(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y, _labels(scores), average="macro", zero_division=0))


def _precision(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import precision_score

    return float(precision_score(y, _labels(scores), average="macro", zero_division=0))


def _recall(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import recall_score

    return float(recall_score(y, _labels(scores), average="macro", zero_division=0))


def _balanced_accuracy(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y, _labels(scores)))


def _roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return math.nan  # undefined on a split with one class
    if scores.shape[1] == 2:
        return float(roc_auc_score(y, scores[:, 1]))
    return float(
        roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=range(scores.shape[1]))
    )


def _r2(y: np.ndarray, predictions: np.ndarray) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(y, predictions))


@dataclass(frozen=True)
class LibraryMetric:
    """A metric of the library: the task it applies to and how it is computed."""

    task: str
    compute: MetricFn
    meaning: str


#: The library's metrics by the name they are reported under.
LIBRARY: dict[str, LibraryMetric] = {
    "val_f1_macro": LibraryMetric("classification", _f1, "F1 averaged over classes"),
    "val_precision": LibraryMetric("classification", _precision, "macro precision"),
    "val_recall": LibraryMetric("classification", _recall, "macro recall"),
    "val_balanced_accuracy": LibraryMetric(
        "classification", _balanced_accuracy, "accuracy averaged over classes"
    ),
    "val_roc_auc": LibraryMetric("classification", _roc_auc, "ROC AUC (one-vs-rest, macro)"),
    "val_r2": LibraryMetric("regression", _r2, "coefficient of determination"),
}


def library_names(task: str) -> tuple[str, ...]:
    """Return the library metrics that apply to ``task``."""
    return tuple(name for name, metric in LIBRARY.items() if metric.task == task)


def is_function_reference(name: str) -> bool:
    """Return whether a metric is the user's ``module:function``."""
    return ":" in name


def reported_name(reference: str) -> str:
    """Return the name a metric is reported under (``module:fn`` -> ``val_fn``)."""
    if not is_function_reference(reference):
        return reference
    return f"val_{reference.rpartition(':')[2]}"


def load_metric_function(reference: str, search_path: str | None = None) -> MetricFn:
    """Import the user's metric function ``module:function``.

    Raises:
        UserCodeError: If it does not import or is not callable.

    """
    module_name, _, attribute = reference.partition(":")
    if search_path is not None and search_path not in sys.path:
        sys.path.insert(0, search_path)
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise UserCodeError(
            f"cannot load metric function {reference}: {exc}",
            key="metric",
            fix="name an importable function (y_true, y_pred_or_scores) -> float",
        ) from None
    if not callable(function):
        raise UserCodeError(f"{reference} is not a function", key="metric", fix="name a function")
    return function  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ExtraMetrics:
    """The metrics a sweep computes on the validation rows beyond the trainable's own.

    Attributes:
        names: Library names and ``module:function`` references, in order.
        task: The data's task.
        target_std: Scale of standardised regression targets (predictions are reported in the
            target's units).
        search_path: Where the user's metric modules are imported from (None: installed).

    """

    names: tuple[str, ...]
    task: str
    target_std: float = 1.0
    search_path: str | None = None

    def reported_names(self) -> tuple[str, ...]:
        """Return the names the metrics are reported under."""
        return tuple(reported_name(name) for name in self.names)

    def compute(self, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """Return every metric on ``(y_true, scores)``, NaN where a metric is undefined."""
        if self.task == "regression":
            y_true = np.asarray(y_true, dtype=np.float64) * self.target_std
            scores = np.asarray(scores, dtype=np.float64).reshape(-1) * self.target_std
        metrics: dict[str, float] = {}
        for name in self.names:
            if name in LIBRARY:
                metrics[name] = LIBRARY[name].compute(y_true, scores)
            else:
                function = load_metric_function(name, self.search_path)
                metrics[reported_name(name)] = _user_value(name, function(y_true, scores))
        return metrics


def _user_value(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserCodeError(
            f"metric function {name} returned {type(value).__name__}, not a number",
            key="metric",
            fix="return a float from (y_true, y_pred_or_scores)",
        ) from None


def trainable_metrics(
    trainable: Any, extra: ExtraMetrics, batches: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, float]:
    """Return ``extra``'s metrics of a trainable on ``batches``, read from its ``scores(x)``.

    Raises:
        UserCodeError: If the trainable has no ``scores`` method (a user's class).

    """
    scores = getattr(trainable, "scores", None)
    if scores is None:
        raise UserCodeError(
            f"{code_name(type(trainable))} has no scores(x) method, which the metrics "
            f"{', '.join(extra.names)} are computed from",
            key=TARGET_KEY,
            fix="add scores(x) returning class probabilities (or regression predictions)",
        )
    return extra.compute(*collect_scores(scores, batches))


def collect_scores(
    scores: Callable[[np.ndarray], np.ndarray], batches: Iterable[Mapping[str, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``scores`` over the batches; return ``(y_true, scores)`` for the whole split."""
    ys: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    for batch in batches:
        ys.append(np.asarray(batch["y"]))
        outs.append(np.asarray(scores(np.asarray(batch["x"]))))
    if not ys:
        return np.empty((0,)), np.empty((0,))
    return np.concatenate(ys), np.concatenate(outs)


#: Built-in metrics that predictions alone give (the loss needs the model's own outputs).
_FROM_PREDICTIONS = ("val_accuracy", "val_rmse", "val_mae")


def from_predictions(
    metric: str, y_true: np.ndarray, scores: np.ndarray, task: str, target_std: float = 1.0
) -> float:
    """Return ``metric`` computed from a model's outputs alone (a logged model on a holdout).

    ``scores`` are class probabilities, class labels, or regression predictions; the metric is
    ``val_accuracy``, ``val_rmse`` or ``val_mae``, a library metric, or the user's function
    (its ``module:function`` reference).

    Raises:
        ValueError: For a metric that predictions alone do not give (a loss, say).

    """
    scores = np.asarray(scores)
    if task == "classification" and metric == "val_accuracy":
        labels = scores if scores.ndim == 1 else scores.argmax(axis=1)
        return float((labels.astype(np.int64) == np.asarray(y_true)).mean())
    if task == "regression" and metric in ("val_rmse", "val_mae"):
        error = (scores.reshape(-1).astype(np.float64) - np.asarray(y_true)) * target_std
        return float(
            np.sqrt(np.mean(error**2)) if metric == "val_rmse" else np.mean(np.abs(error))
        )
    if metric in LIBRARY or is_function_reference(metric):
        extra = ExtraMetrics((metric,), task, target_std)
        return extra.compute(np.asarray(y_true), scores)[reported_name(metric)]
    raise ValueError(
        f"{metric!r} cannot be computed from predictions; use one of {_FROM_PREDICTIONS}, a "
        "library metric or a module:function"
    )


def prediction_metric(metric: str, extra: ExtraMetrics | None) -> str | None:
    """Return what computes the sweep's ``metric`` from predictions alone, or None.

    That is the metric itself (``val_accuracy``, ``val_rmse``, ``val_mae`` or a library metric),
    or the user function the config named for it.
    """
    if metric in _FROM_PREDICTIONS or metric in LIBRARY:
        return metric
    names = () if extra is None else extra.names
    return next((name for name in names if reported_name(name) == metric), None)


def unknown_metrics(names: Sequence[str], task: str) -> list[str]:
    """Return the names that are neither library metrics for ``task`` nor function references."""
    return [n for n in names if not is_function_reference(n) and n not in library_names(task)]
