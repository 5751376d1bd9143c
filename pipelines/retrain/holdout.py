"""Scoring a recorded model on the holdout split, the same way for challenger and champion.

Both models are read back from the checkpoint their sweep logged on its parent run
(``best_checkpoint/``, which carries the trial's hyperparameters in ``tunepipe.json``) and scored
through the trainable contract's own ``evaluate``: the holdout metric means exactly what the
sweep's validation metric meant, for torch, Keras and scikit-learn alike.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipelines.tracking import queries, schema
from trainables.adapter import CHECKPOINT_META
from trainables.protocol import Batch, DataSpec
from trainables.registry import get_trainable_info


def holdout_batches(x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> Iterator[Batch]:
    """Yield the holdout split in order, as the trainable's ``evaluate`` reads batches."""
    for start in range(0, len(y), batch_size):
        yield {"x": x[start : start + batch_size], "y": y[start : start + batch_size]}


def score_sweep_model(
    tracking_uri: str,
    run_id: str,
    framework: str,
    spec: DataSpec,
    x: np.ndarray,
    y: np.ndarray,
) -> dict[str, float]:
    """Return the metrics of sweep ``run_id``'s best model on ``(x, y)``.

    Raises:
        RunNotFound: When the run has no best checkpoint.
        ValueError, RuntimeError: When the model does not fit this data (another input shape or
            class count), as the framework reports it.

    """
    with tempfile.TemporaryDirectory(prefix="tunepipe-holdout-") as folder:
        local = queries.download(tracking_uri, run_id, schema.BEST_CHECKPOINT, Path(folder))
        hparams = json.loads((local / CHECKPOINT_META).read_text())["hparams"]
        trainable = get_trainable_info(framework).load_class()()
        trainable.setup(hparams, spec, "cpu")
        trainable.load(local)
        metrics: dict[str, float] = trainable.evaluate(holdout_batches(x, y))
    return metrics
