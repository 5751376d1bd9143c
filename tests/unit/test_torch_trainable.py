"""Unit tests for the PyTorch trainable, on real (small) scikit-learn datasets."""

from __future__ import annotations

import math
import pickle
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.trainables import Split, batches, diabetes_split, digits_split, fit, make
from trainables.errors import HyperparameterError
from trainables.protocol import DataSpec
from trainables.torch_models import build_torch_model
from trainables.torch_trainable import TorchTrainable, load_torch_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split()  # (1, 8, 8) images


@pytest.fixture(scope="module")
def diabetes() -> Split:
    return diabetes_split(target_units=False)  # errors stay standardised: rmse ~1 is the mean


class Exploit:
    """Pickles to a call that flips a flag: proof of code execution if ever unpickled."""

    triggered = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (_trigger, ())


def _trigger() -> None:
    Exploit.triggered = True


@pytest.mark.parametrize(
    ("model", "extra"),
    [("mlp", {"hidden_units": 64}), ("cnn", {"channels": 8})],
)
def test_models_learn_digits(digits: Split, model: str, extra: dict[str, Any]) -> None:
    trainable = make("torch", {"model": model, "optimizer": "adam", "lr": 1e-2, **extra}, digits)
    history = fit(trainable, digits, epochs=4)
    assert history[-1]["val_accuracy"] > 0.85
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    accuracy = np.mean(trainable.predict(digits.x_val) == digits.y_val)
    assert accuracy == pytest.approx(history[-1]["val_accuracy"])


def test_train_loss_decreases_every_epoch(digits: Split) -> None:
    trainable = make("torch", {"model": "mlp", "optimizer": "adam", "lr": 1e-3}, digits)
    losses = [m["train_loss"] for m in fit(trainable, digits, epochs=3)]
    assert losses[0] > losses[1] > losses[2]
    # Ten balanced classes: an untrained model starts near ln(10).
    assert losses[0] < math.log(10) + 0.5


def test_train_loss_is_sample_weighted_mean(digits: Split) -> None:
    trainable = make("torch", {"model": "mlp", "lr": 0.0}, digits)
    # With lr=0 the weights never move, so the epoch mean must equal the loss over all rows.
    uneven = [
        {"x": digits.x_val[:7], "y": digits.y_val[:7]},
        {"x": digits.x_val[7:], "y": digits.y_val[7:]},
    ]
    train_loss = trainable.train_epoch(uneven)["train_loss"]
    val_loss = trainable.evaluate([{"x": digits.x_val, "y": digits.y_val}])["val_loss"]
    assert train_loss == pytest.approx(val_loss, rel=1e-5)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_dropout_active_in_train_and_off_in_eval(digits: Split, model: str) -> None:
    trainable = make("torch", {"model": model, "dropout": 0.5}, digits)
    x = torch.from_numpy(digits.x_val[:32])
    trainable.model.train()
    with torch.no_grad():
        assert not torch.equal(trainable.model(x), trainable.model(x))
    trainable.model.eval()
    with torch.no_grad():
        assert torch.equal(trainable.model(x), trainable.model(x))

    # evaluate() itself must switch dropout off, whatever mode it finds the model in.
    val = digits.val()
    trainable.model.train()
    first = trainable.evaluate(val)
    trainable.model.train()
    assert trainable.evaluate(val) == first
    with torch.no_grad():  # evaluate() left the model in eval mode: the reference predictions.
        expected = trainable.model(torch.from_numpy(digits.x_val)).argmax(dim=1).numpy()
    trainable.model.train()
    np.testing.assert_array_equal(trainable.predict(digits.x_val), expected)
    assert trainable.model.training is False
    trainable.train_epoch(batches(digits.x_train[:64], digits.y_train[:64]))
    assert trainable.model.training is True


def test_sgd_optimizer_hparams(digits: Split) -> None:
    hparams = {"model": "mlp", "optimizer": "sgd", "lr": 0.05, "momentum": 0.9}
    trainable = make("torch", {**hparams, "weight_decay": 1e-4}, digits)
    assert type(trainable.optimizer) is torch.optim.SGD
    groups = trainable.optimizer.param_groups
    assert all(g["lr"] == 0.05 and g["momentum"] == 0.9 for g in groups)
    # weight_decay is decoupled (applied by the trainable), so torch's coupled L2 stays off.
    assert all(g["weight_decay"] == 0.0 for g in groups)
    # Weights and biases sit in separate groups so decay can skip the biases.
    assert [len(g["params"]) for g in groups] == [3, 3]
    assert all(p.dim() == 2 for p in groups[0]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(trainable.model.parameters()))


def test_adam_optimizer_hparams_ignore_momentum(digits: Split) -> None:
    hparams = {"model": "mlp", "optimizer": "adam", "lr": 3e-3, "momentum": 0.9}
    trainable = make("torch", {**hparams, "weight_decay": 1e-5}, digits)
    assert type(trainable.optimizer) is torch.optim.Adam
    group = trainable.optimizer.param_groups[0]
    assert group["lr"] == 3e-3
    assert group["weight_decay"] == 0.0
    assert "momentum" not in group


def test_defaults_and_unknown_keys_ignored(digits: Split) -> None:
    extras = {"batch_size": 32, "epochs": 3, "aug_hflip": True}
    trainable = make("torch", {"model": "mlp", **extras}, digits)
    assert type(trainable.optimizer) is torch.optim.Adam
    group = trainable.optimizer.param_groups[0]
    assert group["lr"] == 1e-3
    assert group["weight_decay"] == 0.0
    linears = [m for m in trainable.model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [128, 128, 10]
    assert linears[0].in_features == 64
    dropouts = [m for m in trainable.model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(m.p == 0.0 for m in dropouts)


def test_cnn_architecture(digits: Split) -> None:
    model = build_torch_model({"model": "cnn", "channels": 4}, digits.spec)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 4), (4, 8)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    # 8x8 -> pool -> 4x4 -> pool -> 2x2 with 8 channels.
    assert [(m.in_features, m.out_features) for m in linears] == [(32, 128), (128, 10)]


def test_cnn_handles_mnist_shape() -> None:
    spec = DataSpec((1, 28, 28), num_classes=10, task="classification", num_train=1, num_val=1)
    model = build_torch_model({"model": "cnn"}, spec)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 32 * 7 * 7
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_cnn_rejects_vector_input(diabetes: Split) -> None:
    with pytest.raises(HyperparameterError, match=r"\(C, H, W\)"):
        make("torch", {"model": "cnn"}, diabetes)


def test_unknown_model_names_valid_ones(digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="resnet") as info:
        make("torch", {"model": "resnet"}, digits)
    assert "mlp" in str(info.value) and "cnn" in str(info.value)
    with pytest.raises(HyperparameterError, match="mlp, cnn"):
        make("torch", {}, digits)


def test_unknown_optimizer_names_valid_ones(digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="lamb") as info:
        make("torch", {"model": "mlp", "optimizer": "lamb"}, digits)
    assert "sgd, adagrad, rmsprop, adam, adamw" in str(info.value)


def test_unknown_task_rejected(digits: Split) -> None:
    spec = DataSpec(digits.input_shape, 10, "ranking", 1, 1)
    with pytest.raises(ValueError, match="classification"):
        TorchTrainable().setup({"model": "mlp"}, spec, "cpu")


def test_empty_epoch_rejected(digits: Split) -> None:
    trainable = make("torch", {"model": "mlp"}, digits)
    with pytest.raises(ValueError, match="no rows"):
        trainable.train_epoch([])
    with pytest.raises(ValueError, match="no rows"):
        trainable.evaluate([])


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_flattened_and_unflattened_inputs_agree(digits: Split, model: str) -> None:
    trainable = make("torch", {"model": model}, digits)
    shaped = trainable.evaluate(digits.val())
    flat = trainable.evaluate(digits.val(flatten=True))
    assert flat == shaped
    flat_x = digits.x_val.reshape(len(digits.x_val), -1)
    np.testing.assert_array_equal(trainable.predict(flat_x), trainable.predict(digits.x_val))
    # Training on flattened batches must run through the same reshape.
    loss = trainable.train_epoch(batches(digits.x_train, digits.y_train, flatten=True))
    assert math.isfinite(loss["train_loss"])


def test_predict_chunks_and_dtypes(digits: Split) -> None:
    trainable = make("torch", {"model": "mlp"}, digits)
    x = np.concatenate([digits.x_train, digits.x_val])  # 1797 rows: two chunks of <= 1024
    predictions = trainable.predict(x)
    assert predictions.shape == (len(x),)
    assert predictions.dtype == np.int64
    with torch.no_grad():
        expected = trainable.model(torch.from_numpy(x)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(predictions, expected)


def test_load_refuses_pickled_objects(digits: Split, tmp_path: Path) -> None:
    trainable = make("torch", {"model": "mlp"}, digits)
    trainable.save(tmp_path)
    torch.save({"x": Exploit()}, tmp_path / "model.pt")
    Exploit.triggered = False
    with pytest.raises(pickle.UnpicklingError, match=r"[Ww]eights only"):
        trainable.load(tmp_path)
    with pytest.raises(pickle.UnpicklingError):
        load_torch_model({"model": "mlp"}, digits.spec, tmp_path)
    assert Exploit.triggered is False


def test_load_torch_model_restores_weights(digits: Split, tmp_path: Path) -> None:
    hparams = {"model": "mlp", "lr": 1e-2, "hidden_units": 32, "dropout": 0.3}
    trainable = make("torch", hparams, digits)
    fit(trainable, digits, epochs=1)
    trainable.save(tmp_path)
    model = load_torch_model(hparams, digits.spec, tmp_path)
    assert model.training is False
    x = torch.from_numpy(digits.x_val)
    with torch.no_grad():
        predictions = model(x).argmax(dim=1).numpy()
    np.testing.assert_array_equal(predictions, trainable.predict(digits.x_val))


def test_regression_on_diabetes(diabetes: Split) -> None:
    trainable = make("torch", {"model": "mlp", "lr": 3e-3, "hidden_units": 32}, diabetes)
    assert trainable.model(torch.zeros(2, 10)).shape == (2, 1)
    untrained = trainable.evaluate(diabetes.val())["val_rmse"]
    history = fit(trainable, diabetes, epochs=4)
    rmses = [untrained] + [m["val_rmse"] for m in history]
    assert all(math.isfinite(r) for r in rmses)
    assert all(later < earlier for earlier, later in pairwise(rmses))
    # Targets are standardised, so predicting the mean scores about 1.0.
    assert rmses[-1] < 0.8
    assert history[-1]["val_rmse"] == pytest.approx(math.sqrt(history[-1]["val_loss"]))
    assert "val_accuracy" not in history[-1]
    predictions = trainable.predict(diabetes.x_val)
    assert predictions.shape == (len(diabetes.x_val),)
    assert predictions.dtype == np.float32
    rmse = float(np.sqrt(np.mean((predictions - diabetes.y_val) ** 2)))
    assert rmse == pytest.approx(history[-1]["val_rmse"], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_cuda(digits: Split) -> None:
    trainable = make("torch", {"model": "cnn", "lr": 1e-2}, digits, "cuda")
    assert all(p.is_cuda for p in trainable.model.parameters())
    metrics = trainable.train_epoch(digits.train(0))
    metrics.update(trainable.evaluate(digits.val()))
    assert math.isfinite(metrics["train_loss"])
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert all(p.is_cuda for p in trainable.model.parameters())
    state = trainable.optimizer.state_dict()["state"]
    assert state and all(s["exp_avg"].is_cuda for s in state.values())
