"""Unit tests for the torch trainable's toolbox: optimisers, regularisation, losses, lr control.

Real (small) scikit-learn datasets where training matters, hand-computed values where a formula
is checked.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from tests.support.trainables import Split, diabetes_split, digits_split, fit, make
from trainables.errors import HyperparameterError
from trainables.protocol import DataSpec
from trainables.torch_losses import build_loss, weight_penalty
from trainables.torch_optim import HypergradientLR, TrainingOptimizer
from trainables.torch_trainable import TORCH_HPARAMS, TorchTrainable

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split(shape=(64,))  # flat 64-pixel rows


@pytest.fixture(scope="module")
def diabetes() -> Split:
    return diabetes_split(target_units=False)  # the scaled-spec test multiplies by its own std


def mlp(hparams: dict[str, Any], data: Split | Any) -> TorchTrainable:
    """A torch MLP (unless ``hparams`` names another model) for a split or a spec."""
    trainable: TorchTrainable = make("torch", {"model": "mlp", **hparams}, data)
    return trainable


def params(trainable: TorchTrainable) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainable.model.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 0.0) -> bool:
    return all(torch.allclose(x, y, rtol=0, atol=atol) for x, y in zip(a, b, strict=True))


def matrix(*values: float) -> nn.Parameter:
    """A 1xN weight matrix (dim 2, so decay and penalties apply to it)."""
    return nn.Parameter(torch.tensor([values], dtype=torch.float32))


# --- optimisers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hparams", "cls", "expected"),
    [
        (
            {"optimizer": "sgd", "momentum": 0.8, "nesterov": True},
            torch.optim.SGD,
            {"momentum": 0.8, "nesterov": True},
        ),
        (
            {"optimizer": "rmsprop", "rho": 0.7, "momentum": 0.3, "eps": 1e-6},
            torch.optim.RMSprop,
            {"alpha": 0.7, "momentum": 0.3, "eps": 1e-6},
        ),
        ({"optimizer": "rmsprop"}, torch.optim.RMSprop, {"alpha": 0.9, "eps": 1e-7}),
        (
            {"optimizer": "adagrad", "eps": 1e-5, "initial_accumulator_value": 0.2},
            torch.optim.Adagrad,
            {"eps": 1e-5, "initial_accumulator_value": 0.2},
        ),
        (
            {"optimizer": "adam", "beta1": 0.8, "beta2": 0.99, "eps": 1e-6},
            torch.optim.Adam,
            {"betas": (0.8, 0.99), "eps": 1e-6},
        ),
        ({}, torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-7}),
        (
            {"optimizer": "adamw", "beta1": 0.5, "weight_decay": 0.01},
            torch.optim.AdamW,
            {"betas": (0.5, 0.999), "eps": 1e-7},
        ),
    ],
)
def test_optimizer_class_and_group_options(
    digits: Split, hparams: dict[str, Any], cls: type, expected: dict[str, Any]
) -> None:
    trainable = mlp({"lr": 0.02, **hparams}, digits)
    assert type(trainable.optimizer) is cls
    weights, others = trainable.optimizer.param_groups
    for group in (weights, others):
        assert group["lr"] == 0.02
        assert {key: group[key] for key in expected} == expected
    # Decay is AdamW's own in its weights group; everywhere else torch's coupled decay is off.
    assert weights["weight_decay"] == hparams.get("weight_decay", 0.0)
    assert others["weight_decay"] == 0.0
    assert all(p.dim() > 1 for p in weights["params"])
    assert all(p.dim() == 1 for p in others["params"])


def test_adagrad_accumulator_starts_at_initial_value(digits: Split) -> None:
    trainable = mlp({"optimizer": "adagrad", "initial_accumulator_value": 0.3}, digits)
    sums = [state["sum"] for state in trainable.optimizer.state.values()]
    assert sums and all(torch.all(s == 0.3) for s in sums)


@pytest.mark.parametrize(
    ("hparams", "key"),
    [
        ({"optimizer": "sgd", "nesterov": True}, "nesterov"),
        ({"optimizer": "sgd", "momentum": 0.9, "nesterov": "yes"}, "nesterov"),
        ({"optimizer": "sgd", "momentum": 1.5}, "momentum"),
        ({"optimizer": "rmsprop", "rho": -0.1}, "rho"),
        ({"optimizer": "adam", "beta2": 1.0}, "beta2"),
        ({"optimizer": "adam", "eps": 0.0}, "eps"),
        ({"lr": -1e-3}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"l1": -1.0}, "l1"),
        ({"l2": float("nan")}, "l2"),
        ({"hypergradient": True, "hyper_lr": 0.0}, "hyper_lr"),
        ({"hypergradient": "false"}, "hypergradient"),
    ],
)
def test_invalid_hparams_name_the_key(digits: Split, hparams: dict[str, Any], key: str) -> None:
    with pytest.raises(HyperparameterError, match=key) as raised:
        mlp(hparams, digits)
    assert raised.value.key == key


def test_nesterov_with_momentum_accepted(digits: Split) -> None:
    trainable = mlp({"optimizer": "sgd", "momentum": 0.5, "nesterov": True}, digits)
    assert trainable.optimizer.param_groups[0]["nesterov"] is True


def test_torch_hparams_lists_every_key() -> None:
    expected = {
        *("model", "optimizer", "lr", "momentum", "nesterov", "rho", "eps"),
        *("initial_accumulator_value", "beta1", "beta2", "weight_decay", "l1", "l2"),
        *("dropout", "loss", "huber_delta", "hypergradient", "hyper_lr"),
        *("hidden_layers", "hidden_units", "channels", "seed", "precision", "compile"),
    }
    assert expected == TORCH_HPARAMS


# --- regularisation --------------------------------------------------------------------------


def test_l1_drives_weights_to_zero(digits: Split) -> None:
    def near_zero(l1: float) -> int:
        trainable = mlp({"hidden_layers": 0, "optimizer": "sgd", "lr": 0.5, "l1": l1}, digits)
        fit(trainable, digits, epochs=10)
        return int((trainable.model[1].weight.abs() < 1e-3).sum())

    # Without a penalty about 1 weight in 300 is that small by chance; L1 zeroes the weights of
    # the always-blank border pixels and of pixels that do not help.
    plain, lasso = near_zero(0.0), near_zero(1e-3)
    assert plain < 10
    assert lasso > 100


def test_penalties_stay_out_of_reported_loss(digits: Split) -> None:
    # lr 0 keeps the weights fixed, so the epoch mean must equal the plain loss on the same rows.
    trainable = mlp({"lr": 0.0, "l1": 1.0, "l2": 1.0}, digits)
    rows = [{"x": digits.x_val, "y": digits.y_val}]
    train_loss = trainable.train_epoch(rows)["train_loss"]
    assert train_loss == pytest.approx(trainable.evaluate(rows)["val_loss"], rel=1e-5)


def test_weight_penalty_value() -> None:
    w = [matrix(1.0, -2.0), matrix(3.0)]
    assert weight_penalty(w, 0.0, 0.0) is None
    assert weight_penalty(w, 0.5, 0.0).item() == pytest.approx(0.5 * 6)
    assert weight_penalty(w, 0.0, 0.1).item() == pytest.approx(0.1 * 14)
    assert weight_penalty(w, 0.5, 0.1).item() == pytest.approx(3 + 1.4)


def test_decoupled_decay_shrinks_by_exactly_one_minus_lr_wd() -> None:
    # Zero data gradient: Adam's own step is 0/(0 + eps) = 0, so only the decay acts.
    w, bias = matrix(0.01, -1.0, 10.0), nn.Parameter(torch.tensor([5.0]))
    start = w.detach().clone()
    optimizer = TrainingOptimizer(
        {"optimizer": "adam", "lr": 0.1, "weight_decay": 0.5}, [w], [bias]
    )
    for _ in range(3):
        w.grad, bias.grad = torch.zeros_like(w), torch.zeros_like(bias)
        optimizer.step()
    torch.testing.assert_close(w.detach(), start * (1 - 0.1 * 0.5) ** 3)
    assert bias.item() == 5.0  # biases are never decayed


def test_l2_penalty_under_adam_is_normalised() -> None:
    # The penalty's gradient 2*l2*w is divided by its own magnitude: every weight moves by ~lr,
    # whatever its size; decoupled decay above moved each in proportion to its size.
    w = matrix(0.01, -1.0, 10.0)
    start = w.detach().clone()
    optimizer = TrainingOptimizer({"optimizer": "adam", "lr": 0.1}, [w])
    weight_penalty([w], 0.0, 0.5).backward()
    optimizer.step()
    torch.testing.assert_close(start - w.detach(), 0.1 * torch.sign(start), rtol=0, atol=1e-4)


def test_l2_and_weight_decay_differ_under_adam_but_not_plain_sgd(digits: Split) -> None:
    def fitted(hparams: dict[str, Any]) -> list[torch.Tensor]:
        trainable = mlp({"hidden_units": 32, "lr": 0.01, **hparams}, digits)
        fit(trainable, digits, epochs=2)
        return params(trainable)

    plain = fitted({"optimizer": "adam"})
    l2 = fitted({"optimizer": "adam", "l2": 0.05})
    decay = fitted({"optimizer": "adam", "weight_decay": 0.1})
    assert not same(l2, decay, atol=1e-3)
    assert not same(plain, decay, atol=1e-3)
    # Decoupled decay on Adam is AdamW, whose decay is the same formula.
    assert same(decay, fitted({"optimizer": "adamw", "weight_decay": 0.1}), atol=1e-6)
    # Plain SGD: the penalty l2*|w|^2 has gradient 2*l2*w, the same step as weight_decay 2*l2.
    sgd_l2 = fitted({"optimizer": "sgd", "l2": 0.05})
    assert same(sgd_l2, fitted({"optimizer": "sgd", "weight_decay": 0.1}), atol=1e-5)
    assert not same(sgd_l2, fitted({"optimizer": "sgd"}), atol=1e-5)


# --- losses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hparams", "expected"),
    [
        ({}, 10 / 3),  # mse: (1 + 0 + 9) / 3
        ({"loss": "mse"}, 10 / 3),
        ({"loss": "mae"}, 4 / 3),  # (1 + 0 + 3) / 3
        ({"loss": "huber"}, (0.5 + 0 + 2.5) / 3),  # 0.5*1^2; 1*(3 - 0.5)
        ({"loss": "huber", "huber_delta": 2.0}, (0.5 + 0 + 4) / 3),  # 0.5*1^2; 2*(3 - 1)
    ],
)
def test_regression_loss_values(diabetes: Split, hparams: dict[str, Any], expected: float) -> None:
    loss = build_loss(hparams, diabetes.spec)
    outputs = torch.tensor([[0.0], [2.0], [5.0]])  # the model's (n, 1) shape
    assert float(loss(outputs, torch.tensor([1.0, 2.0, 2.0]))) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("task", "num_classes", "loss", "match"),
    [
        ("regression", 0, "cross_entropy", "regression"),
        ("regression", 0, "binary_cross_entropy", "regression"),
        ("classification", 10, "mse", "classification"),
        ("classification", 10, "binary_cross_entropy", "2 classes"),
        ("classification", 10, "hinge", "cross_entropy, binary_cross_entropy"),
        ("regression", 0, "hinge", "mse, mae, huber"),
    ],
)
def test_loss_must_fit_task(task: str, num_classes: int, loss: str, match: str) -> None:
    spec = DataSpec((4,), num_classes, task, num_train=1, num_val=1)
    with pytest.raises(HyperparameterError, match=match):
        TorchTrainable().setup({"model": "mlp", "loss": loss}, spec, "cpu")


def test_binary_cross_entropy_on_two_digits() -> None:
    bunch = load_digits(n_class=2)
    data = Split((bunch.data / 16.0).astype(np.float32), bunch.target, 2, "classification")
    trainable = mlp({"loss": "binary_cross_entropy", "hidden_units": 16, "lr": 1e-2}, data)
    assert trainable.model[-1].out_features == 1
    val = data.val()
    # One logit near 0 at initialisation: the loss starts near ln 2.
    assert trainable.evaluate(val)["val_loss"] == pytest.approx(math.log(2), abs=0.1)
    fit(trainable, data, epochs=3)
    metrics = trainable.evaluate(val)
    assert metrics["val_accuracy"] > 0.9
    assert metrics["val_loss"] < 0.3
    predictions = trainable.predict(data.x_val)
    assert predictions.dtype == np.int64
    assert set(np.unique(predictions)) <= {0, 1}
    assert np.mean(predictions == data.y_val) == pytest.approx(metrics["val_accuracy"])


def test_regression_metrics_in_target_units(diabetes: Split) -> None:
    # A stand-in with the DataSpec attributes plus target_std, whether or not DataSpec has it.
    fields = {f.name: getattr(diabetes.spec, f.name) for f in dataclasses.fields(DataSpec)}
    scaled_spec = SimpleNamespace(**{**fields, "target_std": 50.0})
    hparams = {"hidden_units": 16, "lr": 1e-2, "loss": "mae"}
    unit, scaled = mlp(hparams, diabetes), mlp(hparams, scaled_spec)
    fit(unit, diabetes, epochs=2)
    fit(scaled, diabetes, epochs=2)
    val = diabetes.val()
    plain, metrics = unit.evaluate(val), scaled.evaluate(val)
    assert metrics["val_loss"] == pytest.approx(plain["val_loss"])  # the loss stays standardised
    assert metrics["val_rmse"] == pytest.approx(50 * plain["val_rmse"])
    assert metrics["val_mae"] == pytest.approx(50 * plain["val_mae"])
    errors = scaled.predict(diabetes.x_val) - diabetes.y_val
    assert metrics["val_mae"] == pytest.approx(50 * np.abs(errors).mean(), rel=1e-5)
    assert metrics["val_rmse"] == pytest.approx(50 * np.sqrt((errors**2).mean()), rel=1e-5)
    assert plain["val_loss"] == pytest.approx(plain["val_mae"])  # loss "mae" is the MAE


# --- learning-rate control -------------------------------------------------------------------


def test_set_lr_is_used_and_reported(digits: Split) -> None:
    hparams = {"optimizer": "adam", "hidden_units": 32}
    changed = mlp({**hparams, "lr": 1e-3}, digits)
    changed.set_lr(0.05)
    assert changed.current_lr == 0.05
    assert all(g["lr"] == 0.05 for g in changed.optimizer.param_groups)
    built = mlp({**hparams, "lr": 0.05}, digits)
    assert fit(changed, digits, epochs=1)[-1]["lr"] == 0.05
    fit(built, digits, epochs=1)
    assert same(params(changed), params(built))

    changed.set_lr(0.0)
    before = params(changed)
    assert fit(changed, digits, epochs=1)[-1]["lr"] == 0.0
    assert same(params(changed), before)
    with pytest.raises(ValueError, match="lr"):
        changed.set_lr(-1.0)


def test_pbt_load_applies_current_hparams(digits: Split, tmp_path: Path) -> None:
    source = mlp({"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, digits)
    fit(source, digits, epochs=1)
    source.save(tmp_path / "ckpt")
    saved = torch.load(tmp_path / "ckpt" / "optimizer.pt", weights_only=True)
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.05  # what a plain load restores

    mutated = mlp({"optimizer": "sgd", "lr": 0.01, "momentum": 0.5}, digits)
    mutated.load(tmp_path / "ckpt")
    assert mutated.current_lr == 0.01
    for group in mutated.optimizer.param_groups:
        assert (group["lr"], group["momentum"]) == (0.01, 0.5)
    # The momentum buffers (state, not hyperparameters) do come from the checkpoint.
    source_state, mutated_state = source.optimizer.state_dict(), mutated.optimizer.state_dict()
    for key, state in source_state["state"].items():
        assert torch.equal(
            state["momentum_buffer"], mutated_state["state"][key]["momentum_buffer"]
        )
    assert fit(mutated, digits, epochs=1)[-1]["lr"] == 0.01


def test_pbt_load_applies_adam_hparams(digits: Split, tmp_path: Path) -> None:
    source = mlp({"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.1}, digits)
    fit(source, digits, epochs=1)
    source.save(tmp_path)
    hparams = {"lr": 2e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.3}
    mutated = mlp({"optimizer": "adamw", **hparams}, digits)
    mutated.load(tmp_path)
    weights, others = mutated.optimizer.param_groups
    for group in (weights, others):
        assert (group["lr"], group["betas"], group["eps"]) == (2e-3, (0.8, 0.99), 1e-6)
    assert (weights["weight_decay"], others["weight_decay"]) == (0.3, 0.0)


# --- hypergradient descent -------------------------------------------------------------------


@pytest.mark.parametrize(("lr", "grows"), [(0.1, True), (1.5, False)])
def test_hypergradient_sgd_formula(lr: float, grows: bool) -> None:
    # f(w) = |w|^2 / 2, so g = w. Step 1 leaves lr alone (no previous step); step 2 must use
    # lr_1 = lr_0 + beta * g_1 . g_0. lr 1.5 overshoots the minimum: g_1 opposes g_0.
    w = matrix(1.0, -2.0)
    beta = 0.01
    optimizer = TrainingOptimizer(
        {"optimizer": "sgd", "lr": lr, "hypergradient": True, "hyper_lr": beta}, [w]
    )
    grads = []
    for _ in range(2):
        w.grad = w.detach().clone()
        grads.append(w.grad.clone())
        before = w.detach().clone()
        optimizer.step()
    expected_lr = lr + beta * float((grads[1] * grads[0]).sum())
    assert optimizer.lr == pytest.approx(expected_lr, rel=1e-6)
    torch.testing.assert_close(w.detach(), before - expected_lr * grads[1])
    assert (optimizer.lr > lr) is grows


def test_hypergradient_lr_clamps_at_zero_and_recovers() -> None:
    w = matrix(1.0)
    hyper = HypergradientLR([w], lr=0.01, hyper_lr=10.0)

    def sgd_step(grad: float) -> None:
        w.grad = torch.full_like(w, grad)
        hyper.step(lambda: w.sub_(w.grad))  # plain SGD at unit rate

    sgd_step(1.0)
    sgd_step(-1.0)  # opposes the previous step: lr - 10 * 1 would be negative
    assert float(hyper.lr) == 0.0
    frozen = w.detach().clone()
    sgd_step(1.0)  # agrees with nothing: d = +1 from the last unit step, g . d = 1
    assert float(hyper.lr) == 0.0
    assert torch.equal(w.detach(), frozen)  # lr 0 moves nothing
    # The direction was still measured (at unit rate), so the rate can grow back.
    sgd_step(1.0)
    assert float(hyper.lr) == pytest.approx(10.0)


@pytest.mark.parametrize(("optimizer", "hyper_lr"), [("sgd", None), ("adam", 1e-4)])
def test_hypergradient_raises_too_small_lr(
    diabetes: Split, optimizer: str, hyper_lr: float | None
) -> None:
    # Linear regression (no hidden layer) is convex: a too-small rate should grow.
    hparams = {"hidden_layers": 0, "optimizer": optimizer, "lr": 1e-5}
    adaptive = mlp({**hparams, "hypergradient": True, "hyper_lr": hyper_lr}, diabetes)
    fixed = mlp(hparams, diabetes)
    adapted = fit(adaptive, diabetes, epochs=3)[-1]
    plain = fit(fixed, diabetes, epochs=3)[-1]
    assert adapted["lr"] > 100 * 1e-5
    assert adapted["lr"] == adaptive.current_lr
    assert plain["lr"] == 1e-5
    assert adapted["train_loss"] < plain["train_loss"] - 0.2


def test_hypergradient_checkpoint(diabetes: Split, tmp_path: Path) -> None:
    hparams = {"hidden_layers": 0, "optimizer": "sgd", "lr": 1e-5, "hypergradient": True}
    source = mlp(hparams, diabetes)
    adapted = fit(source, diabetes, epochs=2)[-1]["lr"]
    source.save(tmp_path)

    resumed = mlp(hparams, diabetes)  # plain resume: same lr hyperparameter, adapted rate kept
    resumed.load(tmp_path)
    assert resumed.current_lr == pytest.approx(adapted)
    next_epoch = diabetes.train(9)
    assert resumed.train_epoch(next_epoch) == source.train_epoch(next_epoch)

    mutated = mlp({**hparams, "lr": 3e-3}, diabetes)  # PBT mutated lr: start from it
    mutated.load(tmp_path)
    assert mutated.current_lr == 3e-3
    mutated.set_lr(1e-2)
    assert mutated.current_lr == 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_toolbox_on_cuda(digits: Split) -> None:
    hparams = {"model": "mlp", "optimizer": "adam", "lr": 1e-3, "hypergradient": True}
    hparams = {**hparams, "hyper_lr": 1e-6, "weight_decay": 0.01, "l1": 1e-4}
    trainable = make("torch", hparams, digits, "cuda")
    metrics = trainable.train_epoch(digits.train(0))
    assert math.isfinite(metrics["train_loss"]) and metrics["lr"] > 0
    assert trainable.evaluate(digits.val())["val_accuracy"] > 0.5
