"""Torch and Keras mean the same thing by the same key.

Each test runs the same hyperparameters through both trainables (parametrised, not duplicated)
on the same real data, and where it matters from the same initial weights, so that a semantic
difference (a decay applied to biases, an lr schedule off by one epoch, a penalty counted twice)
shows up as a numeric one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from tests.support.datasets import digits_images
from tests.support.trainables import batches, make
from trainables import keras_losses, torch_losses
from trainables.early_stopping import early_stopping_from_hparams
from trainables.keras_runtime import keras, tf
from trainables.keras_trainable import KerasTrainable
from trainables.loss_settings import CLASSIFICATION_LOSSES, REGRESSION_LOSSES
from trainables.lr_schedules import SCHEDULES, schedule_from_hparams
from trainables.protocol import DataSpec
from trainables.torch_trainable import TorchTrainable

FRAMEWORKS = ("torch", "tensorflow")
DIGITS = DataSpec((1, 8, 8), 10, "classification", 1437, 360)
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits() -> list[dict[str, np.ndarray]]:
    """The digits in their shipped order as 64-row batches: slices of it feed both frameworks."""
    return batches(*digits_images())


def torch_weights(trainable: TorchTrainable) -> list[np.ndarray]:
    """Parameters in Keras's layout: Linear weights (out, in) become kernels (in, out)."""
    assert trainable.model is not None
    arrays = [p.detach().numpy().copy() for p in trainable.model.parameters()]
    return [a.T if a.ndim == 2 else a for a in arrays]


def twins(hparams: dict[str, Any]) -> tuple[TorchTrainable, KerasTrainable]:
    """A torch and a Keras MLP with the same weights."""
    torch_side, keras_side = make("torch", hparams, DIGITS), make("tensorflow", hparams, DIGITS)
    keras_side.model.set_weights(torch_weights(torch_side))
    return torch_side, keras_side


MLP = {"model": "mlp", "hidden_layers": 1, "hidden_units": 32, "dropout": 0.0}

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1},
    "sgd_momentum": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9},
    "sgd_nesterov": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True},
    "adagrad": {"optimizer": "adagrad", "lr": 0.05, "initial_accumulator_value": 0.2},
    "rmsprop": {"optimizer": "rmsprop", "lr": 1e-3, "rho": 0.8},
    "rmsprop_momentum": {"optimizer": "rmsprop", "lr": 1e-3, "momentum": 0.5},
    "adam": {"optimizer": "adam", "lr": 1e-3, "beta1": 0.8, "beta2": 0.99},
    "adamw": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.5},
    "adam_decoupled_decay": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.5},
    "sgd_decoupled_decay": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.5},
    "sgd_l1": {"optimizer": "sgd", "lr": 0.1, "l1": 1e-3},
    "sgd_l2": {"optimizer": "sgd", "lr": 0.1, "l2": 1e-2},
    "adam_l2": {"optimizer": "adam", "lr": 1e-3, "l2": 1e-2},
    "sgd_hypergradient": {"optimizer": "sgd", "lr": 0.01, "hypergradient": True},
    "adam_hypergradient": {
        "optimizer": "adam",
        "lr": 1e-3,
        "hypergradient": True,
        "hyper_lr": 1e-5,
    },
}


@pytest.mark.parametrize("case", list(OPTIMIZERS))
def test_optimizers_and_penalties_take_the_same_steps(
    case: str, digits: list[dict[str, np.ndarray]]
) -> None:
    hparams = {**MLP, **OPTIMIZERS[case]}
    torch_side, keras_side = twins(hparams)
    start = torch_weights(torch_side)
    for epoch in range(3):
        data = digits[4 * epoch : 4 * epoch + 4]
        torch_metrics = torch_side.train_epoch(data)
        keras_metrics = keras_side.train_epoch(data)
        assert keras_metrics["train_loss"] == pytest.approx(torch_metrics["train_loss"], rel=1e-4)
        assert keras_metrics["lr"] == pytest.approx(torch_metrics["lr"], rel=1e-4)

    moved = 0.0
    for first, t, k in zip(
        start, torch_weights(torch_side), keras_side.model.get_weights(), strict=True
    ):
        moved = max(moved, float(np.abs(t - first).max()))
        np.testing.assert_allclose(k, t, rtol=1e-3, atol=1e-5)
    assert moved > 1e-3  # the steps were real, so agreement means something
    torch_val = torch_side.evaluate(digits[20:25])
    keras_val = keras_side.evaluate(digits[20:25])
    assert keras_val["val_loss"] == pytest.approx(torch_val["val_loss"], rel=1e-4)


@pytest.mark.parametrize("name", SCHEDULES)
def test_scheduled_rate_is_the_rate_both_frameworks_step_with(
    name: str, digits: list[dict[str, np.ndarray]]
) -> None:
    hparams = {
        **MLP,
        "optimizer": "sgd",
        "lr": 0.2,
        "lr_schedule": name,
        "lr_decay": 0.5,
        "lr_step_size": 2,
        "lr_warmup_epochs": 1,
        "lr_patience": 1,
        "epochs": 5,
    }
    torch_side, keras_side = twins(hparams)
    schedule = schedule_from_hparams(hparams)
    flat_then_worse = [1.0, 1.0, 1.2, 1.2, 1.2]  # plateau cuts the rate twice
    used: dict[str, list[float]] = {"torch": [], "tensorflow": []}
    for epoch, metric in enumerate(flat_then_worse):
        lr = schedule.lr_for_epoch(epoch)
        for framework, side in (("torch", torch_side), ("tensorflow", keras_side)):
            side.set_lr(lr)
            used[framework].append(side.train_epoch(digits[2 * epoch : 2 * epoch + 2])["lr"])
        schedule.observe(metric)
        # The weights agree only if both stepped with this epoch's rate.
        keras_now = keras_side.model.get_weights()
        for t, k in zip(torch_weights(torch_side), keras_now, strict=True):
            np.testing.assert_allclose(k, t, rtol=1e-3, atol=1e-5)

    expected = [schedule_from_hparams(hparams).lr_for_epoch(e) for e in range(5)]
    if name == "plateau":
        expected = [0.2, 0.2, 0.1, 0.05, 0.025]
    assert used["torch"] == pytest.approx(expected, rel=1e-6)
    assert used["tensorflow"] == pytest.approx(expected, rel=1e-6)
    if name != "constant":
        assert len(set(expected)) > 1


@pytest.mark.parametrize(("l1", "l2"), [(0.01, 0.0), (0.0, 0.02), (0.003, 0.05)])
def test_l1_l2_penalties_on_the_same_weights_agree(l1: float, l2: float) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(64, 32)).astype(np.float32), rng.normal(size=(32, 10))]
    arrays = [a.astype(np.float32) for a in arrays]
    torch_value = torch_losses.weight_penalty([torch.from_numpy(a) for a in arrays], l1, l2)
    keras_value = keras_losses.weight_penalty([tf.constant(a) for a in arrays], l1, l2)
    assert torch_value is not None and keras_value is not None
    expected = sum(l1 * np.abs(a).sum() + l2 * np.square(a).sum() for a in arrays)
    assert float(torch_value) == pytest.approx(expected, rel=1e-5)
    assert float(keras_value) == pytest.approx(expected, rel=1e-5)
    assert torch_losses.weight_penalty([], l1, l2) is None
    assert keras_losses.weight_penalty([tf.constant(arrays[0])], 0.0, 0.0) is None


LOSS_CASES = [
    *[(name, {}) for name in CLASSIFICATION_LOSSES],
    *[(name, {}) for name in REGRESSION_LOSSES],
    ("huber", {"huber_delta": 0.3}),
]


@pytest.mark.parametrize(("loss", "extra"), LOSS_CASES)
def test_losses_on_the_same_batch_agree(loss: str, extra: dict[str, Any]) -> None:
    rng = np.random.default_rng(1)
    hparams = {"loss": loss, **extra}
    if loss in REGRESSION_LOSSES:
        spec = DataSpec((5,), 0, "regression", 10, 10)
        outputs = rng.normal(size=(16, 1)).astype(np.float32)
        targets = rng.normal(size=16).astype(np.float32)
    else:
        classes = 2 if loss == "binary_cross_entropy" else 10
        spec = DataSpec((5,), classes, "classification", 10, 10)
        width = 1 if loss == "binary_cross_entropy" else classes
        outputs = 3 * rng.normal(size=(16, width)).astype(np.float32)
        targets = rng.integers(0, classes, size=16)
    torch_loss = torch_losses.build_loss(hparams, spec)(
        torch.from_numpy(outputs), torch.from_numpy(targets)
    )
    keras_loss = keras_losses.build_loss(hparams, spec)(tf.constant(outputs), tf.constant(targets))
    assert float(keras_loss) == pytest.approx(float(torch_loss), rel=1e-5)


@pytest.mark.parametrize(
    ("hparams", "expected"),
    [
        ({"loss": "mse"}, 10 / 3),  # (1 + 0 + 9) / 3
        ({"loss": "mae"}, 4 / 3),  # (1 + 0 + 3) / 3
        ({"loss": "huber"}, (0.5 + 0 + 2.5) / 3),  # 0.5*1^2; 1*(3 - 0.5)
        ({"loss": "huber", "huber_delta": 2.0}, (0.5 + 0 + 4) / 3),  # 0.5*1^2; 2*(3 - 1)
    ],
)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_regression_losses_give_their_known_values(
    framework: str, hparams: dict[str, Any], expected: float
) -> None:
    spec = DataSpec((5,), 0, "regression", 10, 10)
    outputs = np.array([[0.0], [2.0], [5.0]], dtype=np.float32)  # the model's (n, 1) shape
    targets = np.array([1.0, 2.0, 2.0], dtype=np.float32)
    if framework == "torch":
        value = torch_losses.build_loss(hparams, spec)(
            torch.from_numpy(outputs), torch.from_numpy(targets)
        )
    else:
        value = keras_losses.build_loss(hparams, spec)(tf.constant(outputs), tf.constant(targets))
    assert float(value) == pytest.approx(expected, rel=1e-6)


def forward(framework: str, trainable: Any, x: np.ndarray, training: bool) -> np.ndarray:
    if framework == "torch":
        trainable.model.train(training)
        with torch.no_grad():
            return trainable.model(torch.from_numpy(x)).numpy()  # type: ignore[no-any-return]
    return trainable.model(tf.constant(x), training=training).numpy()  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dropout_is_active_in_training_and_off_in_evaluation(
    framework: str, model: str, digits: list[dict[str, np.ndarray]]
) -> None:
    x = digits[0]["x"][:32]
    dropped = make(framework, {"model": model, "dropout": 0.5}, DIGITS)
    plain = make(framework, {"model": model, "dropout": 0.0}, DIGITS)
    if framework == "torch":
        plain.model.load_state_dict(dropped.model.state_dict())
    else:
        plain.model.set_weights(dropped.model.get_weights())

    train_a, train_b = (forward(framework, dropped, x, training=True) for _ in range(2))
    assert not np.allclose(train_a, train_b)  # a fresh mask per forward pass
    evaluation = forward(framework, dropped, x, training=False)
    np.testing.assert_allclose(evaluation, forward(framework, plain, x, False), rtol=1e-5)
    np.testing.assert_array_equal(dropped.predict(x), plain.predict(x))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_early_stopping_triggers_at_the_same_epoch_on_the_same_metric_sequence(
    framework: str, digits: list[dict[str, np.ndarray]]
) -> None:
    """The epoch loop's stopper, fed by each framework's own evaluate(), on the same model.

    With lr 0 (frozen weights) both frameworks evaluate the same model every epoch, so the
    monitored sequence is flat and identical: patience 3 must end both at epoch 4.
    """
    hparams = {**MLP, "optimizer": "sgd", "lr": 0.0, "early_stopping_patience": 3}
    torch_side, keras_side = twins(hparams)
    side = torch_side if framework == "torch" else keras_side
    stopper = early_stopping_from_hparams(hparams, "min")
    assert stopper is not None
    stopped_at, losses = None, []
    for epoch in range(1, 11):
        side.train_epoch(digits[:2])
        losses.append(side.evaluate(digits[20:25])["val_loss"])
        stopper.update(losses[-1], epoch)
        if stopper.should_stop:
            stopped_at = epoch
            break
    assert stopped_at == 4
    reference = torch_side.evaluate(digits[20:25])["val_loss"]
    assert losses == pytest.approx([reference] * 4, rel=1e-5)


def test_keras_runs_on_the_tensorflow_backend() -> None:
    assert keras.backend.backend() == "tensorflow"
