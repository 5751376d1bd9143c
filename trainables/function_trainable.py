"""The user's training function: ``train(hp, ctx) -> None`` runs its own loop, reporting via ctx.

For anything tunepipe's epoch loops do not train (XGBoost, a scikit-learn pipeline, a Hugging Face
loop, JAX), the user writes the loop and tunepipe does the rest: schedulers act on what
``ctx.report`` sends, every report becomes a step of the trial's MLflow run, checkpoints go
through Tune (a retried trial resumes from ``ctx.checkpoint()``), and a model handed to
``ctx.log_model`` is registered when its trial is the sweep's best.

A report whose sweep metric is NaN or infinite ends the trial as diverged, as in the built-in
loops.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainables import reporting
from trainables.errors import UserCodeError
from trainables.metrics import ExtraMetrics
from trainables.protocol import Batch, DataSpec, TrialBatches
from trainables.results import DIVERGED, DIVERGED_METRIC, EPOCH, is_non_finite
from trainables.user_code import TARGET_KEY, code_name

#: The checkpoint's own record: which report it belongs to and the trial's hyperparameters.
CHECKPOINT_META = "tunepipe.json"
#: Sub-folder of a checkpoint that holds a model handed to ``ctx.log_model``.
MODEL_FOLDER = "mlflow_model"

#: Saves a model in an MLflow flavour's format: ``(model, flavor, folder, options)``. Provided
#: by the pipeline (tracking owns MLflow's formats), so trainables never import MLflow.
SaveModel = Callable[[Any, "str | None", Path, Mapping[str, Any]], None]


class StopTrial(Exception):
    """Raised from ``ctx.report`` to end the user's loop (a diverged metric, a dry run)."""


class TrialContext:
    """What a training function gets besides its hyperparameters.

    Attributes:
        hp: The trial's hyperparameters (a copy of the ``hp`` argument).
        spec: The prepared data's description (shapes, classes, task, modality).
        seed: The trial's seed (``hp["seed"]``, 0 by default).
        device: ``"cuda"`` when the trial was given a GPU and one is usable, else ``"cpu"``.
        trial_index: The trial's number in its sweep.

    """

    def __init__(
        self,
        hp: Mapping[str, Any],
        data: TrialBatches,
        spec: DataSpec,
        *,
        metric: str,
        device: str = "cpu",
        trial_index: int = 0,
        save_model: SaveModel | None = None,
        extra_metrics: ExtraMetrics | None = None,
        report: Callable[..., None] = reporting.report,
        stop_after: int | None = None,
    ) -> None:
        """Bind one trial's data and reporting (``stop_after``: end after that many reports)."""
        self.hp = dict(hp)
        self.spec = spec
        self.seed = int(hp.get("seed", 0))
        self.device = device
        self.trial_index = trial_index
        self.reports: list[dict[str, Any]] = []
        self._data = data
        self._metric = metric
        self._save_model = save_model
        self._extra_metrics = extra_metrics
        self._report = report
        self._stop_after = stop_after
        self._epochs_done = 0
        self._model: tuple[Any, str | None, dict[str, Any]] | None = None
        self._restored: Path | None = None

    def train_batches(self, epoch: int, batch_size: int | None = None) -> Iterable[Batch]:
        """Return one epoch of shuffled (and, with ``aug_*`` hyperparameters, augmented) batches.

        ``batch_size`` defaults to ``hp["batch_size"]`` (else 256).
        """
        size = batch_size or int(self.hp.get("batch_size", 256))
        return self._data.train_batches(epoch, size)

    def val_batches(self) -> Iterable[Batch]:
        """Return the validation split in order, never augmented."""
        return self._data.val_batches()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(x_train, y_train, x_val, y_val)`` whole, in order, without augmentation."""
        return self._data.arrays()

    def validation_metrics(self, y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
        """Return the sweep's library and own metrics for validation targets and model scores.

        The metrics are those the config names (``metric``, ``trainable.metrics``); ``scores``
        are class probabilities ``(n, classes)``, or predictions ``(n,)`` for regression.
        Empty when the config names none.
        """
        if self._extra_metrics is None:
            return {}
        return self._extra_metrics.compute(np.asarray(y_true), np.asarray(scores))

    def checkpoint(self) -> Path | None:
        """Return the folder a retried trial resumes from (what it reported last), or None."""
        if self._restored is not None:
            return self._restored
        with reporting.latest_checkpoint() as checkpoint:
            if checkpoint is None:
                return None
            # Tune's folder is only valid inside this block: the trial keeps a copy.
            self._restored = Path(tempfile.mkdtemp(prefix=reporting.temporary_prefix("resume")))
            shutil.copytree(checkpoint, self._restored, dirs_exist_ok=True)
        meta = self._restored / CHECKPOINT_META
        if meta.is_file():
            self._epochs_done = int(json.loads(meta.read_text()).get("epoch", 0))
        return self._restored

    def close(self) -> None:
        """Remove the trial's copy of its restored checkpoint (the trial has ended)."""
        if self._restored is not None:
            shutil.rmtree(self._restored, ignore_errors=True)
            self._restored = None

    def log_model(self, model: Any, flavor: str | None = None, **options: Any) -> None:
        """Hand MLflow the trained model, saved with the next report's checkpoint.

        Args:
            model: The model object (a scikit-learn pipeline, an XGBoost booster, ...).
            flavor: The MLflow flavour that saves it (``"sklearn"``, ``"xgboost"``,
                ``"pytorch"``...); None: MLflow's pyfunc, for a model with ``predict``.
            **options: Extra arguments for the flavour's ``save_model``.

        """
        self._model = (model, flavor, dict(options))

    def report(self, metrics: Mapping[str, Any], checkpoint: str | Path | None = None) -> None:
        """Report one step's metrics (one epoch), with a checkpoint folder to keep if given.

        Raises:
            StopTrial: When the sweep's metric is not finite (the trial is flagged diverged), or
                a dry run has what it needs.

        """
        self._epochs_done += 1
        values = {EPOCH: self._epochs_done, **dict(metrics)}
        value = values.get(self._metric)
        diverged = is_non_finite(value)
        if diverged:
            values.update({DIVERGED: 1, DIVERGED_METRIC: self._metric})
        else:
            values.setdefault(DIVERGED, 0)
        save = self._saver(Path(checkpoint) if checkpoint is not None else None, values)
        self.reports.append(values)
        self._report(values, save=save)
        if diverged or (self._stop_after is not None and len(self.reports) >= self._stop_after):
            raise StopTrial

    def _saver(
        self, folder: Path | None, values: Mapping[str, Any]
    ) -> Callable[[Path], None] | None:
        model = self._model
        if folder is None and model is None:
            return None
        self._model = None  # saved once, with this report

        def save(directory: Path) -> None:
            if folder is not None:
                shutil.copytree(folder, directory, dirs_exist_ok=True)
            if model is not None and self._save_model is not None:
                self._save_model(model[0], model[1], directory / MODEL_FOLDER, model[2])
            meta = {"epoch": values[EPOCH], "hparams": self.hp}
            (directory / CHECKPOINT_META).write_text(json.dumps(meta, default=str))

        return save


def run_training_function(
    train: Callable[..., Any],
    hp: Mapping[str, Any],
    ctx: TrialContext,
) -> None:
    """Call ``train(hp, ctx)`` until it returns or a report ends the trial."""
    try:
        train(dict(hp), ctx)
    except StopTrial:
        return
    finally:
        ctx.close()
    if not ctx.reports:
        raise UserCodeError(
            f"the training function {code_name(train)} returned without reporting",
            key=TARGET_KEY,
            fix="call ctx.report({...}) at least once, with the sweep's metric",
        )
