"""Scoring a recorded model on the holdout split, the same way for challenger and champion.

Both models are read back from the checkpoint their sweep logged on its parent run
(``best_checkpoint/``, which carries the trial's hyperparameters in ``tunepipe.json``) and scored
through the trainable contract's own ``evaluate``: the holdout metric means exactly what the
sweep's validation metric meant, for torch, Keras and scikit-learn alike.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pipelines.sweep.plan import SweepPlan
from pipelines.tracking import queries, schema
from pipelines.tracking.saved_models import predict_saved_model
from trainables.adapter import CHECKPOINT_META
from trainables.function_trainable import MODEL_FOLDER
from trainables.metrics import from_predictions, prediction_metric, trainable_metrics
from trainables.protocol import Batch, DataSpec

#: The holdout split, read afresh (in order) at each call: a model is scored in one or two passes.
HoldoutBatches = Callable[[], Iterator[Batch]]


def holdout_batches(x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> Iterator[Batch]:
    """Yield the holdout split in order, as the trainable's ``evaluate`` reads batches."""
    for start in range(0, len(y), batch_size):
        yield {"x": x[start : start + batch_size], "y": y[start : start + batch_size]}


def score_sweep_model(
    tracking_uri: str,
    run_id: str,
    plan: SweepPlan,
    spec: DataSpec,
    holdout: HoldoutBatches,
) -> dict[str, float]:
    """Return the metrics of sweep ``run_id``'s best model on the ``holdout`` batches.

    Raises:
        RunNotFound: When the run has no best checkpoint, or MLflow could not be read.
        ValueError, RuntimeError: When the model does not fit this data (another input shape or
            class count), as the framework reports it.

    """
    with downloaded_checkpoint(tracking_uri, run_id) as local:
        return score_checkpoint(local, plan, spec, holdout)


@contextmanager
def downloaded_checkpoint(tracking_uri: str, run_id: str) -> Iterator[Path]:
    """Download sweep ``run_id``'s best checkpoint into a temporary folder, for the block.

    Raises:
        RunNotFound: When the run has no best checkpoint, or MLflow could not be read.

    """
    with tempfile.TemporaryDirectory(prefix="tunepipe-holdout-") as folder:
        yield queries.download(tracking_uri, run_id, schema.BEST_CHECKPOINT, Path(folder))


def score_checkpoint(
    local: Path, plan: SweepPlan, spec: DataSpec, holdout: HoldoutBatches
) -> dict[str, float]:
    """Return the metrics of the best checkpoint in folder ``local`` on the ``holdout`` batches.

    Nothing here reaches MLflow or the network: the files are already on this machine.
    """
    info, metric = plan.info, plan.config.metric
    if info.own_loop:
        # A training function's model is the one it handed to ctx.log_model; only its scores
        # and the labels are gathered, batch by batch, never the inputs.
        model = local / MODEL_FOLDER
        pairs = [(predict_saved_model(model, b["x"]), b["y"]) for b in holdout()]
        scores = np.concatenate([np.asarray(p) for p, _ in pairs])
        y = np.concatenate([np.asarray(t) for _, t in pairs])
        name = prediction_metric(metric, plan.extra_metrics) or metric
        return {metric: from_predictions(name, y, scores, spec.task, spec.target_std)}
    hparams = json.loads((local / CHECKPOINT_META).read_text())["hparams"]
    trainable = info.instantiate()
    trainable.setup(hparams, spec, "cpu")
    trainable.load(local)
    metrics: dict[str, float] = dict(trainable.evaluate(holdout()))
    if plan.extra_metrics is not None:
        extra = dataclasses.replace(plan.extra_metrics, target_std=spec.target_std)
        metrics.update(trainable_metrics(trainable, extra, holdout()))
    return metrics
