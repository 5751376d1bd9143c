"""Turns any implementation of the trainable contract into a Ray Tune function trainable.

The epoch loop lives here once for every framework: restore from a checkpoint, train and evaluate
an epoch, stop a diverged trial, report metrics and checkpoint through :mod:`trainables.reporting`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.augment import ImageAugment
from pipelines.data import SweepData, quiet_ray_data
from trainables import reporting
from trainables.registry import TrainableInfo

CHECKPOINT_META = "tunepipe.json"


def pick_device(gpus: float) -> str:
    """Return "cuda" when the trial was given a GPU and CUDA is usable, else "cpu"."""
    if gpus <= 0:
        return "cpu"
    try:
        import torch
    except ModuleNotFoundError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def first_non_finite(metrics: dict[str, float]) -> str | None:
    """Return the name of the first NaN/inf metric, or None when all are finite."""
    for name, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            return name
    return None


def make_trial_function(
    info: TrainableInfo, checkpoint_every: int
) -> Callable[[dict[str, Any], SweepData], None]:
    """Return the function Tune runs for each trial.

    Tune passes the trial's hyperparameters as the first argument; the sweep's data is bound with
    ``tune.with_parameters`` so it travels through the object store once, not per trial. The
    registry entry travels with the function, so the framework is imported only in the trial.
    """

    def run_trial(hparams: dict[str, Any], data: SweepData) -> None:
        _run_trial(hparams, info, data, checkpoint_every)

    return run_trial


def _run_trial(
    hparams: dict[str, Any], info: TrainableInfo, data: SweepData, checkpoint_every: int
) -> None:
    quiet_ray_data()
    cpus, gpus = reporting.trial_resources()
    implementation = info.load_class()
    if hasattr(implementation, "set_cpu_threads"):
        implementation.set_cpu_threads(cpus)
    trainable = implementation()
    trainable.setup(hparams, data.spec, pick_device(gpus))

    last_epoch = 0
    with reporting.latest_checkpoint() as checkpoint:
        if checkpoint is not None:
            trainable.load(checkpoint)
            last_epoch = json.loads((checkpoint / CHECKPOINT_META).read_text())["epoch"]

    epochs = int(hparams["epochs"])
    seed = int(hparams.get("seed", 0))
    augment = ImageAugment.from_hparams(hparams)
    for epoch in range(last_epoch + 1, epochs + 1):
        batches = data.train_batches(
            batch_size=int(hparams["batch_size"]),
            epoch=epoch,
            seed=seed,
            augment=augment,
            cpus=cpus,
        )
        metrics: dict[str, Any] = {**trainable.train_epoch(batches)}
        metrics.update(trainable.evaluate(data.val_batches()))
        metrics["epoch"] = epoch
        bad = first_non_finite(metrics)
        if bad is not None:
            # A diverged trial ends now and is flagged; it is never chosen as best.
            reporting.report({**metrics, "diverged": 1, "diverged_metric": bad})
            return
        metrics["diverged"] = 0
        due = epoch % checkpoint_every == 0 or epoch == epochs
        reporting.report(metrics, save=_saver(trainable, epoch, hparams) if due else None)


def _saver(trainable: Any, epoch: int, hparams: dict[str, Any]) -> Callable[[Path], None]:
    def save(directory: Path) -> None:
        trainable.save(directory)
        meta = {"epoch": epoch, "hparams": hparams}
        (directory / CHECKPOINT_META).write_text(json.dumps(meta, default=str))

    return save
