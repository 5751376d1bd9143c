"""The trainable contract, checked on both neural frameworks (torch and Keras) with one suite.

Real scikit-learn data; every test is parametrised over the framework, so a behaviour the
torch trainable has and the Keras one lacks (or the reverse) fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import REPO
from tests.datasets import diabetes_standardised, digits_images
from trainables.keras_trainable import load_keras_model
from trainables.protocol import DataSpec, TrialTrainable
from trainables.registry import get_trainable_info

FRAMEWORKS = ("torch", "tensorflow")
BATCH = 64
pytestmark = pytest.mark.usefixtures("single_thread")


class Split:
    """A fixed train/validation split of real data plus its DataSpec."""

    def __init__(self, x: np.ndarray, y: np.ndarray, spec: dict[str, Any]) -> None:
        order = np.random.default_rng(0).permutation(len(x))
        val, train = order[: len(x) // 5], order[len(x) // 5 :]
        self.x_train, self.y_train, self.x_val, self.y_val = x[train], y[train], x[val], y[val]
        self.spec = DataSpec(
            input_shape=x.shape[1:], num_train=len(train), num_val=len(val), **spec
        )

    def train(self, seed: int, flatten: bool = False) -> list[dict[str, np.ndarray]]:
        order = np.random.default_rng(seed).permutation(len(self.x_train))
        x = self.x_train.reshape(len(self.x_train), -1) if flatten else self.x_train
        return [
            {"x": x[order[i : i + BATCH]], "y": self.y_train[order[i : i + BATCH]]}
            for i in range(0, len(order), BATCH)
        ]

    def val(self, flatten: bool = False) -> list[dict[str, np.ndarray]]:
        x = self.x_val.reshape(len(self.x_val), -1) if flatten else self.x_val
        return [{"x": x[i : i + 256], "y": self.y_val[i : i + 256]} for i in range(0, len(x), 256)]


@pytest.fixture(scope="module")
def digits() -> Split:
    return Split(*digits_images(), {"num_classes": 10, "task": "classification"})


@pytest.fixture(scope="module")
def diabetes() -> Split:
    x, y, std = diabetes_standardised()
    return Split(x, y, {"num_classes": 0, "task": "regression", "target_std": std})


def make(framework: str, hparams: dict[str, Any], data: Split) -> Any:
    trainable = get_trainable_info(framework).load_class()()
    trainable.setup(hparams, data.spec, "cpu")
    return trainable


def fit(trainable: Any, data: Split, epochs: int, first_seed: int = 0) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for epoch in range(epochs):
        metrics = trainable.train_epoch(data.train(seed=first_seed + epoch))
        metrics.update(trainable.evaluate(data.val()))
    return metrics


def weights(framework: str, trainable: Any) -> list[np.ndarray]:
    if framework == "torch":
        return [p.detach().numpy().copy() for p in trainable.model.parameters()]
    return [np.asarray(w) for w in trainable.model.get_weights()]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_satisfies_the_protocol(framework: str) -> None:
    assert isinstance(get_trainable_info(framework).load_class()(), TrialTrainable)


@pytest.mark.parametrize(
    ("model", "extra"), [("mlp", {"hidden_units": 64}), ("cnn", {"channels": 8})]
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_models_learn_digits(
    framework: str, digits: Split, model: str, extra: dict[str, Any]
) -> None:
    trainable = make(framework, {"model": model, "optimizer": "adam", "lr": 1e-2, **extra}, digits)
    first = fit(trainable, digits, epochs=1)
    last = fit(trainable, digits, epochs=3, first_seed=1)
    assert last["val_accuracy"] > 0.85
    assert last["train_loss"] < first["train_loss"] and last["val_loss"] < first["val_loss"]
    predicted = trainable.predict(digits.x_val)
    assert predicted.dtype == np.int64 and predicted.shape == (len(digits.x_val),)
    assert np.mean(predicted == digits.y_val) == pytest.approx(last["val_accuracy"])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_regression_reports_errors_in_target_units(framework: str, diabetes: Split) -> None:
    trainable = make(framework, {"model": "mlp", "hidden_units": 32, "lr": 5e-3}, diabetes)
    metrics = fit(trainable, diabetes, epochs=8)
    predicted = trainable.predict(diabetes.x_val)
    assert predicted.dtype == np.float32
    errors = (predicted - diabetes.y_val) * diabetes.spec.target_std
    assert metrics["val_rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))), rel=1e-4)
    assert metrics["val_mae"] == pytest.approx(float(np.mean(np.abs(errors))), rel=1e-4)
    assert metrics["val_rmse"] < 0.9 * diabetes.spec.target_std  # better than the mean


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_flattened_and_shaped_inputs_agree(framework: str, digits: Split, model: str) -> None:
    trainable = make(framework, {"model": model, "channels": 4}, digits)
    shaped, flat = trainable.evaluate(digits.val()), trainable.evaluate(digits.val(flatten=True))
    assert flat == pytest.approx(shaped, rel=1e-6)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_seed_controls_initialisation(framework: str, digits: Split) -> None:
    a, b, c = (make(framework, {"model": "mlp", "seed": s}, digits) for s in (3, 3, 4))
    for x, y in zip(weights(framework, a), weights(framework, b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(weights(framework, a)[0], weights(framework, c)[0])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_checkpoint_resumes_model_and_optimizer_state(
    framework: str, digits: Split, tmp_path: Path
) -> None:
    hparams = {"model": "cnn", "optimizer": "adam", "lr": 5e-3, "channels": 4, "seed": 7}
    original = make(framework, hparams, digits)
    fit(original, digits, epochs=2)
    original.save(tmp_path / "checkpoint")
    restored = make(framework, hparams, digits)
    restored.load(tmp_path / "checkpoint")
    assert restored.evaluate(digits.val()) == original.evaluate(digits.val())
    # The same next epoch on both: Adam's moments and step count were restored too.
    assert restored.train_epoch(digits.train(99)) == original.train_epoch(digits.train(99))

    weights_only = make(framework, hparams, digits)  # guard: without optimiser state, it differs
    weights_only.load(tmp_path / "checkpoint")
    fresh = make(framework, hparams, digits)
    if framework == "torch":
        fresh.model.load_state_dict(weights_only.model.state_dict())
    else:
        fresh.model.set_weights(weights_only.model.get_weights())
    assert fresh.train_epoch(digits.train(99)) != weights_only.train_epoch(digits.train(99))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loading_another_trials_checkpoint_keeps_this_trials_hparams(
    framework: str, digits: Split, tmp_path: Path
) -> None:
    """Population-based training: weights and moments travel, hyperparameters do not."""
    source = make(
        framework, {"model": "mlp", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, digits
    )
    fit(source, digits, epochs=1)
    source.save(tmp_path)
    mutated = make(
        framework, {"model": "mlp", "optimizer": "sgd", "lr": 0.01, "momentum": 0.5}, digits
    )
    mutated.load(tmp_path)
    assert mutated.current_lr == 0.01
    assert mutated.train_epoch(digits.train(1))["lr"] == 0.01


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_hypergradient_rate_survives_a_checkpoint(
    framework: str, diabetes: Split, tmp_path: Path
) -> None:
    hparams = {"model": "mlp", "hidden_layers": 0, "optimizer": "sgd", "lr": 1e-5}
    hparams["hypergradient"] = True
    source = make(framework, hparams, diabetes)
    adapted = fit(source, diabetes, epochs=2)["lr"]
    assert adapted > 10 * 1e-5  # raised a too-small rate on a convex problem
    source.save(tmp_path)
    resumed = make(framework, hparams, diabetes)
    resumed.load(tmp_path)
    assert resumed.current_lr == pytest.approx(adapted)
    assert resumed.train_epoch(diabetes.train(9)) == pytest.approx(
        source.train_epoch(diabetes.train(9)), rel=1e-6
    )
    mutated = make(framework, {**hparams, "lr": 3e-3}, diabetes)  # PBT changed lr: start there
    mutated.load(tmp_path)
    assert mutated.current_lr == pytest.approx(3e-3)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_values_name_their_key(framework: str, digits: Split) -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        make(framework, {"model": "resnet"}, digits)
    with pytest.raises(ValueError, match="optimizer"):
        make(framework, {"model": "mlp", "optimizer": "lion"}, digits)
    with pytest.raises(ValueError, match="nesterov"):
        make(framework, {"model": "mlp", "optimizer": "sgd", "nesterov": True}, digits)
    with pytest.raises(ValueError, match="loss"):
        make(framework, {"model": "mlp", "loss": "mse"}, digits)
    with pytest.raises(ValueError, match="received no rows"):
        make(framework, {"model": "mlp"}, digits).train_epoch([])


def test_keras_checkpoint_holds_no_pickles(digits: Split, tmp_path: Path) -> None:
    trainable = make("tensorflow", {"model": "mlp", "optimizer": "adam"}, digits)
    fit(trainable, digits, epochs=1)
    folder = tmp_path / "checkpoint"
    trainable.save(folder)
    assert {p.name for p in folder.iterdir()} == {"model.weights.h5", "optimizer.npz"}
    model = load_keras_model({"model": "mlp", "optimizer": "adam"}, digits.spec, folder)
    np.testing.assert_array_equal(
        np.argmax(model.predict(digits.x_val, verbose=0), axis=1), trainable.predict(digits.x_val)
    )
    np.savez(folder / "optimizer.npz", **{"optimizer/0": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        trainable.load(folder)


def test_keras_respects_the_trials_cpus_and_stays_quiet() -> None:
    """A fresh process: thread pools sized to the trial, no TensorFlow start-up noise."""
    script = textwrap.dedent(
        """
        from trainables.keras_trainable import KerasTrainable
        from trainables.protocol import DataSpec
        import numpy as np, tensorflow as tf
        KerasTrainable.set_cpu_threads(2)
        t = KerasTrainable()
        t.setup({"model": "cnn"}, DataSpec((1, 8, 8), 10, "classification", 8, 8), "cpu")
        t.train_epoch([{"x": np.zeros((8, 64), np.float32), "y": np.zeros(8, np.int64)}])
        print(tf.config.threading.get_intra_op_parallelism_threads(),
              tf.config.threading.get_inter_op_parallelism_threads())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["2", "1"]
    assert done.stderr.strip() == "", done.stderr[-3000:]
