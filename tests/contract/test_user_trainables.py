"""The trainable contract, run over trainables the user defines (``trainable.target``).

The examples' torch and Keras model builders and a user's trainable class (no framework) go
through the same checks as the bundled trainables, resolved the way a sweep resolves them; a
user's training function is checked through its context, outside Tune. No Ray here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.augment.policy import AugmentPolicy
from pipelines.config import DataConfig
from pipelines.data import prepare_arrays
from pipelines.data.local import LocalBatches
from pipelines.tracking.saved_models import predict_saved_model, save_model
from tests.support.trainables import Split, digits_split, fit
from tests.support.user_trainables import EXAMPLES, NearestCentroid, train_centroids
from trainables import reporting
from trainables.function_trainable import MODEL_FOLDER, TrialContext, run_training_function
from trainables.metrics import ExtraMetrics, collect_scores
from trainables.protocol import TrialTrainable
from trainables.registry import TRAINABLES, TrainableInfo
from trainables.targets import resolve_target

pytestmark = pytest.mark.usefixtures("single_thread", "frozen_imports")

#: (target, framework, folder, hyperparameters) of each user-defined loop trainable.
USER: dict[str, tuple[Any, str | None, Path | None, dict[str, Any]]] = {
    "torch-builder": ("cnn:build", "torch", EXAMPLES / "torch_cnn", {"filters": 4}),
    "keras-builder": ("keras_cnn:build", "tensorflow", EXAMPLES / "keras_model", {"filters": 4}),
    "class": (NearestCentroid, None, None, {"rate": 0.5}),
}
NEURAL = {"optimizer": "adam", "lr": 1e-2, "epochs": 3, "batch_size": 64}


def kinds() -> list[Any]:
    params = []
    for name, (_, framework, _, _) in USER.items():
        missing = TRAINABLES[framework].missing_modules() if framework else []
        skip = pytest.mark.skipif(bool(missing), reason=f"{framework} is not installed")
        params.append(pytest.param(name, id=name, marks=skip))
    return params


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split()


def info_of(kind: str) -> TrainableInfo:
    target, framework, folder, _ = USER[kind]
    if framework is not None:
        TRAINABLES[framework].load_class()  # the framework's runtime settings first
    return resolve_target(target, framework, [folder] if folder else [])


def make(kind: str, data: Split, **extra: Any) -> Any:
    hparams = {**NEURAL, **USER[kind][3], **extra}
    trainable = info_of(kind).instantiate()
    trainable.setup(hparams, data.spec, "cpu")
    return trainable


@pytest.mark.parametrize("kind", kinds())
def test_satisfies_the_protocol_and_learns(kind: str, digits: Split) -> None:
    trainable = make(kind, digits)
    assert isinstance(trainable, TrialTrainable)
    history = fit(trainable, digits, epochs=3)
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(history[-1])
    assert all(np.isfinite(v) for v in history[-1].values())
    assert history[-1]["val_accuracy"] > 0.6, history


@pytest.mark.parametrize("kind", kinds())
def test_the_same_seed_gives_the_same_metrics(kind: str, digits: Split) -> None:
    first = fit(make(kind, digits, seed=3), digits, epochs=2)
    assert fit(make(kind, digits, seed=3), digits, epochs=2) == first


@pytest.mark.parametrize("kind", kinds())
def test_a_checkpoint_loads_and_resumes_exactly(kind: str, digits: Split, tmp_path: Path) -> None:
    trainable = make(kind, digits)
    fit(trainable, digits, epochs=2)
    trainable.save(tmp_path)
    restored = make(kind, digits)
    restored.load(tmp_path)
    assert restored.evaluate(digits.val()) == trainable.evaluate(digits.val())
    # One more epoch on each: the same state trains to the same metrics.
    assert fit(restored, digits, 1, first_seed=2) == fit(trainable, digits, 1, first_seed=2)


@pytest.mark.parametrize("kind", kinds())
def test_the_metric_library_reads_its_scores(kind: str, digits: Split) -> None:
    trainable = make(kind, digits)
    fit(trainable, digits, epochs=2)
    extra = ExtraMetrics(
        ("val_f1_macro", "val_roc_auc", "tests.support.metrics:kappa"), "classification"
    )
    metrics = extra.compute(*collect_scores(trainable.scores, digits.val()))
    assert set(metrics) == {"val_f1_macro", "val_roc_auc", "val_kappa"}
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics


@pytest.mark.parametrize("kind", kinds())
def test_empty_batches_are_refused(kind: str, digits: Split) -> None:
    with pytest.raises(ValueError, match="no rows"):
        make(kind, digits).train_epoch([])


def test_a_training_function_reports_resumes_and_hands_over_a_loadable_model(
    tmp_path: Path,
) -> None:
    """Through its context, outside Tune: reports per epoch, a checkpoint it resumes from, and
    the model it logged, saved in MLflow's format and predicting at its reported accuracy."""
    prepared, _ = prepare_arrays(DataConfig(dataset="digits"))
    batches = LocalBatches(prepared, AugmentPolicy("image"), rows=len(prepared.y_train))
    saved: list[Path] = []

    def keep(values: dict[str, Any], save: Any = None) -> None:
        folder = tmp_path / f"checkpoint-{len(saved)}"
        folder.mkdir()
        save(folder)
        saved.append(folder)

    hp = {"rate": 0.5, "epochs": 3}
    ctx = TrialContext(hp, batches, prepared.spec(), metric="val_accuracy", report=keep,
                       save_model=save_model)  # fmt: skip
    with reporting.offline(cpus=1, trial_index=0):
        run_training_function(train_centroids, hp, ctx)
    assert [r["epoch"] for r in ctx.reports] == [1, 2, 3]
    last = saved[-1]
    scores = predict_saved_model(last / MODEL_FOLDER, prepared.x_val)
    assert float((scores == prepared.y_val).mean()) == pytest.approx(
        ctx.reports[-1]["val_accuracy"]
    )

    # A retried trial: the context hands back the last checkpoint, and the loop goes on from it.
    resumed = TrialContext(hp, batches, prepared.spec(), metric="val_accuracy", report=keep)
    resumed._restored = last  # what Tune's restore gives a retried trial (see ctx.checkpoint)
    resumed._epochs_done = 3
    with reporting.offline(cpus=1, trial_index=0):
        run_training_function(train_centroids, {**hp, "epochs": 4}, resumed)
    assert [r["epoch"] for r in resumed.reports] == [4]
