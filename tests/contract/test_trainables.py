"""The trainable contract, checked on every registered framework with one suite.

Every framework in ``trainables.registry.TRAINABLES`` (torch, Keras, scikit-learn) runs the
generic checks on real scikit-learn data with the real models its registry entry lists, so a
behaviour one trainable has and another lacks fails here. Checks of a neural-network key run on
the frameworks whose registry hyperparameters contain that key. A framework whose modules are
not installed is skipped, with the reason. The module imports no framework at import time:
trainables are built through the registry, as a trial builds them.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.configs import REPO
from tests.support.trainables import Split, diabetes_split, digits_split, fit, make
from trainables.errors import HyperparameterError
from trainables.protocol import ExportedModel, TrialTrainable
from trainables.registry import TRAINABLES

#: The bundled trainables (the user's own are in tests/contract/test_user_trainables.py).
BUNDLED = {name: info for name, info in TRAINABLES.items() if not info.user_code}

pytestmark = pytest.mark.usefixtures("single_thread", "frozen_imports")

#: The ``epochs`` hyperparameter (scikit-learn spreads its trees over it; the others ignore it).
EPOCHS = 4

#: The smallest settings each registered model is built with: checks that need a working model.
TINY: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_units": 16},
    "cnn": {"channels": 4},
    "random_forest": {"n_estimators": 8, "max_depth": 6},
    "gradient_boosting": {"n_estimators": 4, "max_depth": 2},
}
#: Settings with which each registered model learns digits in EPOCHS epochs.
LEARNS: dict[str, dict[str, Any]] = {
    "mlp": {"optimizer": "adam", "lr": 1e-2, "hidden_units": 64},
    "cnn": {"optimizer": "adam", "lr": 1e-2, "channels": 8},
    "random_forest": {"n_estimators": 20},
    "gradient_boosting": {"n_estimators": 20, "max_depth": 3, "lr": 0.3},
}
#: Settings with which each framework's first model (it takes vectors) learns diabetes.
REGRESSES: dict[str, dict[str, Any]] = {
    "mlp": {"hidden_units": 32, "lr": 5e-3},
    "random_forest": {"n_estimators": 16},
}


def frameworks(key: str | None = None, *, models: bool = False) -> list[Any]:
    """Parameters over the registered frameworks, skipped where their modules are missing.

    Args:
        key: Only the frameworks whose registry hyperparameters contain this key.
        models: One parameter ``(framework, model)`` per registered model instead.

    """
    params = []
    for name, info in BUNDLED.items():
        if key is not None and key not in info.hparams:
            continue
        missing = info.missing_modules()
        skip = pytest.mark.skipif(
            bool(missing), reason=f"{name} needs {', '.join(missing)}: {info.install_hint}"
        )
        if models:
            params += [pytest.param(name, m, id=f"{name}-{m}", marks=skip) for m in info.models]
        else:
            params.append(pytest.param(name, id=name, marks=skip))
    return params


def settings(model: str, table: dict[str, dict[str, Any]] = TINY, **extra: Any) -> dict[str, Any]:
    """Hyperparameters of ``model`` from ``table``, with ``extra`` on top."""
    return {"model": model, "epochs": EPOCHS, **table[model], **extra}


@pytest.fixture(scope="module")
def digits() -> Split:
    return digits_split()


@pytest.fixture(scope="module")
def diabetes() -> Split:
    return diabetes_split()


def weights(trainable: Any) -> list[np.ndarray]:
    """A neural model's weights as arrays (Keras: get_weights; torch: parameters)."""
    if hasattr(trainable.model, "get_weights"):
        return [np.asarray(w) for w in trainable.model.get_weights()]
    return [p.detach().cpu().numpy().copy() for p in trainable.model.parameters()]


def copy_weights(source: Any, target: Any) -> None:
    """Give ``target``'s neural model the weights of ``source``'s (nothing else)."""
    if hasattr(target.model, "set_weights"):
        target.model.set_weights(source.model.get_weights())
    else:
        target.model.load_state_dict(source.model.state_dict())


def predict_exported(flavor: str, model: Any, x: np.ndarray, task: str) -> np.ndarray:
    """Predict with an exported model the way its MLflow flavour serves it.

    Returns class indices for classification and values for regression, like ``predict``.
    """
    if flavor == "sklearn":
        return np.asarray(model.predict(x))
    if flavor == "pytorch":
        import torch

        with torch.no_grad():
            outputs = model(torch.from_numpy(x)).numpy()
    elif flavor == "keras":
        outputs = np.asarray(model(x, training=False))
    else:
        pytest.fail(f"no prediction call for the {flavor!r} flavour: add one to this test")
    return outputs.argmax(axis=1) if task == "classification" else outputs.reshape(-1)


def assert_reports_the_registrys_metrics(
    framework: str, task: str, history: list[dict[str, float]]
) -> None:
    """Each epoch reported exactly the registry's metrics for ``task``, all finite."""
    for metrics in history:
        assert set(metrics) == set(TRAINABLES[framework].metrics[task])
        assert all(math.isfinite(value) for value in metrics.values()), metrics


# --- the generic contract: every framework ------------------------------------------------------


def test_every_registered_model_has_settings_here() -> None:
    models = {model for info in BUNDLED.values() for model in info.models}
    assert models <= TINY.keys() & LEARNS.keys(), "add the new model's settings to this module"
    assert {info.models[0] for info in BUNDLED.values()} <= REGRESSES.keys()


@pytest.mark.parametrize("framework", frameworks())
def test_satisfies_the_protocol(framework: str) -> None:
    assert isinstance(TRAINABLES[framework].load_class()(), TrialTrainable)


@pytest.mark.parametrize("framework", frameworks())
def test_a_trial_without_gpus_runs_on_the_cpu(framework: str) -> None:
    # device_for is optional (protocol): without it the adapter sets up on "cpu".
    device_for = getattr(TRAINABLES[framework].load_class(), "device_for", None)
    assert device_for is None or device_for(0) == "cpu"


@pytest.mark.parametrize(("framework", "model"), frameworks(models=True))
def test_models_learn_digits(framework: str, model: str, digits: Split) -> None:
    """Every model learns, reporting the registry's classification metrics every epoch."""
    trainable = make(framework, settings(model, LEARNS), digits)
    [first] = fit(trainable, digits, epochs=1)
    history = [first, *fit(trainable, digits, epochs=EPOCHS - 1, first_seed=1)]
    assert_reports_the_registrys_metrics(framework, "classification", history)
    last = history[-1]
    assert last["val_accuracy"] > 0.85
    assert last["train_loss"] < first["train_loss"] and last["val_loss"] < first["val_loss"]
    predicted = trainable.predict(digits.x_val)
    assert predicted.dtype == np.int64 and predicted.shape == (len(digits.x_val),)
    assert np.mean(predicted == digits.y_val) == pytest.approx(last["val_accuracy"])


@pytest.mark.parametrize("framework", frameworks())
def test_regression_reports_errors_in_target_units(framework: str, diabetes: Split) -> None:
    model = TRAINABLES[framework].models[0]
    trainable = make(framework, settings(model, REGRESSES, epochs=8), diabetes)
    history = fit(trainable, diabetes, epochs=8)
    assert_reports_the_registrys_metrics(framework, "regression", history)
    metrics = history[-1]
    predicted = trainable.predict(diabetes.x_val)
    assert predicted.dtype == np.float32
    errors = (predicted - diabetes.y_val) * diabetes.spec.target_std
    assert metrics["val_rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))), rel=1e-4)
    assert metrics["val_mae"] == pytest.approx(float(np.mean(np.abs(errors))), rel=1e-4)
    assert metrics["val_rmse"] < 0.9 * diabetes.spec.target_std  # better than the mean


@pytest.mark.parametrize(("framework", "model"), frameworks(models=True))
def test_flattened_and_shaped_inputs_agree(framework: str, model: str, digits: Split) -> None:
    trainable = make(framework, settings(model), digits)
    trainable.train_epoch(digits.train(0, flatten=True))  # training reshapes flat rows too
    shaped, flat = trainable.evaluate(digits.val()), trainable.evaluate(digits.val(flatten=True))
    assert flat == pytest.approx(shaped, rel=1e-6)


@pytest.mark.parametrize("framework", frameworks())
def test_the_same_seed_gives_the_same_metrics(framework: str, digits: Split) -> None:
    model = TRAINABLES[framework].models[0]
    first = fit(make(framework, settings(model, seed=3), digits), digits, epochs=2)
    assert fit(make(framework, settings(model, seed=3), digits), digits, epochs=2) == first


@pytest.mark.parametrize("framework", frameworks())
def test_an_unknown_model_is_refused_naming_the_valid_ones(framework: str, digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="unknown model 'resnet'") as raised:
        make(framework, {"model": "resnet", "epochs": EPOCHS}, digits)
    assert raised.value.key == "model"
    message = str(raised.value)
    assert "\n" not in message and ". Fix: " in message
    assert all(model in message for model in TRAINABLES[framework].models), message


@pytest.mark.parametrize("framework", frameworks())
def test_empty_batches_are_refused(framework: str, digits: Split) -> None:
    trainable = make(framework, settings(TRAINABLES[framework].models[0]), digits)
    with pytest.raises(ValueError, match="received no rows"):
        trainable.train_epoch([])
    with pytest.raises(ValueError, match="received no rows"):
        trainable.evaluate([])


# --- checkpoints: saved once per framework, then loaded, resumed and exported -------------------


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint after two epochs, and what the trainable that wrote it did next.

    Attributes:
        hparams: The trial's hyperparameters.
        directory: Where ``save`` wrote it.
        evaluation: ``evaluate`` right after saving.
        next_epoch: ``train_epoch`` on the next epoch's batches (seed 99), uninterrupted.
        after_next: ``evaluate`` after that epoch.
        predictions: ``predict`` of the first eight validation rows right after saving.

    """

    hparams: dict[str, Any]
    directory: Path
    evaluation: dict[str, float]
    next_epoch: dict[str, float]
    after_next: dict[str, float]
    predictions: np.ndarray


@pytest.fixture(scope="module")
def checkpoints(
    single_thread: None, digits: Split, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Checkpoint]:
    """Return a framework's :class:`Checkpoint`, trained and saved on its first request.

    The model is the framework's last registered one (the neural ones' cnn: conv weights too);
    for the neural frameworks Adam with a rate high enough that its moments matter.
    """
    saved: dict[str, Checkpoint] = {}

    def checkpoint(framework: str) -> Checkpoint:
        if framework not in saved:
            info = TRAINABLES[framework]
            extra = {"optimizer": "adam", "lr": 5e-3} if "optimizer" in info.hparams else {}
            hparams = settings(info.models[-1], seed=7, **extra)
            trainable = make(framework, hparams, digits)
            fit(trainable, digits, epochs=2)
            directory = tmp_path_factory.mktemp(framework) / "checkpoint"
            trainable.save(directory)
            evaluation = trainable.evaluate(digits.val())
            predictions = trainable.predict(digits.x_val[:8])
            next_epoch = trainable.train_epoch(digits.train(99))
            after_next = trainable.evaluate(digits.val())
            saved[framework] = Checkpoint(
                hparams, directory, evaluation, next_epoch, after_next, predictions
            )
        return saved[framework]

    return checkpoint


@pytest.mark.parametrize("framework", frameworks())
def test_a_checkpoint_loads_and_resumes_exactly(
    framework: str, digits: Split, checkpoints: Callable[[str], Checkpoint]
) -> None:
    """Loaded into a fresh instance it evaluates identically; training on equals no stop."""
    saved = checkpoints(framework)
    restored = make(framework, saved.hparams, digits)
    restored.load(saved.directory)
    assert restored.evaluate(digits.val()) == saved.evaluation
    np.testing.assert_array_equal(restored.predict(digits.x_val[:8]), saved.predictions)
    assert restored.train_epoch(digits.train(99)) == saved.next_epoch
    assert restored.evaluate(digits.val()) == saved.after_next


@pytest.mark.parametrize("framework", frameworks())
def test_the_exported_model_predicts_like_the_trainable(
    framework: str, digits: Split, checkpoints: Callable[[str], Checkpoint]
) -> None:
    info, saved = TRAINABLES[framework], checkpoints(framework)
    assert info.can_export and info.mlflow_flavor is not None
    example = digits.x_val[:8]
    exported = info.export_model(saved.hparams, digits.spec, saved.directory, example)
    assert isinstance(exported, ExportedModel)
    if exported.input_example is not None:
        inputs = exported.input_example
    else:
        assert exported.signature_data is not None, "neither an input example nor a signature"
        inputs = exported.signature_data[0]
    assert len(inputs) == len(example)
    predicted = predict_exported(info.mlflow_flavor, exported.model, inputs, digits.spec.task)
    np.testing.assert_array_equal(predicted, saved.predictions)


@pytest.mark.parametrize("framework", frameworks("optimizer"))
def test_the_checkpoint_holds_the_optimizer_state(
    framework: str, digits: Split, checkpoints: Callable[[str], Checkpoint]
) -> None:
    """Resuming equals training on only with Adam's moments: weights alone step differently."""
    saved = checkpoints(framework)
    weights_only = make(framework, saved.hparams, digits)
    weights_only.load(saved.directory)
    fresh = make(framework, saved.hparams, digits)
    copy_weights(weights_only, fresh)
    assert fresh.evaluate(digits.val()) == saved.evaluation
    assert fresh.train_epoch(digits.train(99)) != saved.next_epoch


# --- neural-network keys: the frameworks whose hyperparameters contain the key ----------------


@pytest.mark.parametrize("framework", frameworks("hidden_units"))
def test_seed_controls_initialisation(framework: str, digits: Split) -> None:
    a, b, c = (make(framework, {"model": "mlp", "seed": s}, digits) for s in (3, 3, 4))
    for x, y in zip(weights(a), weights(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(weights(a)[0], weights(c)[0])


@pytest.mark.parametrize("framework", frameworks("momentum"))
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


@pytest.mark.parametrize("framework", frameworks("hypergradient"))
def test_hypergradient_rate_survives_a_checkpoint(
    framework: str, diabetes: Split, tmp_path: Path
) -> None:
    hparams = {"model": "mlp", "hidden_layers": 0, "optimizer": "sgd", "lr": 1e-5}
    hparams["hypergradient"] = True
    source = make(framework, hparams, diabetes)
    adapted = fit(source, diabetes, epochs=2)[-1]["lr"]
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


@pytest.mark.parametrize("framework", frameworks("optimizer"))
def test_bad_optimizer_values_name_their_key(framework: str, digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="optimizer") as raised:
        make(framework, {"model": "mlp", "optimizer": "lion"}, digits)
    assert raised.value.key == "optimizer"
    with pytest.raises(HyperparameterError, match="nesterov") as raised:
        make(framework, {"model": "mlp", "optimizer": "sgd", "nesterov": True}, digits)
    assert raised.value.key == "nesterov"


@pytest.mark.parametrize("framework", frameworks("loss"))
def test_a_loss_of_the_other_task_names_its_key(framework: str, digits: Split) -> None:
    with pytest.raises(HyperparameterError, match="loss") as raised:
        make(framework, {"model": "mlp", "loss": "mse"}, digits)
    assert raised.value.key == "loss"


# --- Keras only -------------------------------------------------------------------------------

keras_only = pytest.mark.skipif(
    bool(TRAINABLES["tensorflow"].missing_modules()), reason="TensorFlow is not installed"
)


@keras_only
def test_keras_checkpoint_holds_no_pickles(digits: Split, tmp_path: Path) -> None:
    from trainables.keras_trainable import load_keras_model

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


@keras_only
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
