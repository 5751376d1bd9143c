"""``precision`` and ``compile``: the same keys and meaning in the torch and Keras trainables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.trainables import Split, digits_split, fit, make
from trainables.errors import HyperparameterError
from trainables.precision_settings import PrecisionSettings, check_device, precision_settings

pytestmark = pytest.mark.usefixtures("single_thread")

MLP = {"model": "mlp", "hidden_units": 64, "optimizer": "adam", "lr": 1e-2, "seed": 3}


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split()


@pytest.mark.parametrize(
    ("hparams", "key"),
    [
        ({"precision": "fp8"}, "precision"),
        ({"precision": 16}, "precision"),
        ({"compile": "yes"}, "compile"),
    ],
)
def test_bad_values_are_refused_with_their_key(hparams: dict[str, object], key: str) -> None:
    with pytest.raises(HyperparameterError) as caught:
        precision_settings(hparams)
    assert caught.value.key == key


def test_devices_refuse_what_they_cannot_run() -> None:
    with pytest.raises(HyperparameterError, match="fp16 needs a CUDA GPU"):
        check_device(PrecisionSettings("fp16"), "cpu", bf16_ok=True)
    with pytest.raises(HyperparameterError, match="bfloat16 units"):
        check_device(PrecisionSettings("bf16"), "cuda:0", bf16_ok=False)
    check_device(PrecisionSettings("bf16"), "cpu", bf16_ok=True)
    check_device(PrecisionSettings("fp16"), "cuda", bf16_ok=False)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_fp16_on_the_cpu_is_refused_before_training(framework: str, digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="fp16 needs a CUDA GPU"):
        make(framework, {**MLP, "precision": "fp16"}, digits)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_bf16_learns_as_well_as_fp32_and_keeps_float32_weights(
    framework: str, digits: Split, tmp_path: Path
) -> None:
    full = fit(make(framework, MLP, digits), digits, epochs=3)[-1]["val_accuracy"]
    half_trainable = make(framework, {**MLP, "precision": "bf16"}, digits)
    half = fit(half_trainable, digits, epochs=3)[-1]["val_accuracy"]
    assert half > 0.85
    assert abs(half - full) < 0.05  # bf16's 8-bit mantissa costs little on this task
    half_trainable.save(tmp_path)
    if framework == "torch":
        state = torch.load(tmp_path / "model.pt", weights_only=True)
        assert all(t.dtype == torch.float32 for t in state.values())
    else:
        assert all(v.dtype == "float32" for v in half_trainable.model.weights)
    scores = half_trainable.scores(digits.x_val[:5])
    assert scores.dtype == np.float32


def test_keras_fp16_scales_the_loss_and_still_learns(digits: Split) -> None:
    # fp16 is refused on the CPU; a trial given a GPU by Ray reaches setup with "cuda", and this
    # CPU build of TensorFlow then computes fp16 on the CPU: the loss-scaling path runs for real.
    trainable = make("tensorflow", {**MLP, "precision": "fp16"}, digits, device="cuda")
    history = fit(trainable, digits, epochs=3)
    assert history[-1]["val_accuracy"] > 0.8
    assert trainable._loss_scale is not None
    assert 1.0 <= float(trainable._loss_scale.scale.numpy()) <= 2.0**16


def test_a_reused_keras_process_goes_back_to_float32(digits: Split) -> None:
    import keras

    make("tensorflow", {**MLP, "precision": "bf16"}, digits)
    assert keras.config.dtype_policy().name == "mixed_bfloat16"
    make("tensorflow", MLP, digits)
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.slow
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_compiled_models_train_to_the_same_accuracy(framework: str, digits: Split) -> None:
    eager = fit(make(framework, MLP, digits), digits, epochs=2)[-1]
    compiled_trainable = make(framework, {**MLP, "compile": True}, digits)
    compiled = fit(compiled_trainable, digits, epochs=2)[-1]
    if framework == "torch":
        assert type(compiled_trainable._forward).__name__ == "OptimizedModule"
    assert compiled["val_accuracy"] == pytest.approx(eager["val_accuracy"], abs=0.03)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_mixed_precision_on_cuda(digits: Split, precision: str) -> None:
    trainable = make("torch", {**MLP, "model": "cnn", "precision": precision}, digits, "cuda")
    history = fit(trainable, digits, epochs=3)
    assert history[-1]["val_accuracy"] > 0.85
    assert all(p.dtype == torch.float32 for p in trainable.model.parameters())
