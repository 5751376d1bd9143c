"""Keras 3 (TensorFlow backend) implementation of the trainable contract.

Same hyperparameter keys, metrics and checkpoint semantics as
:class:`trainables.torch_trainable.TorchTrainable`; the epoch loop, schedules and early stopping
are the adapter's, shared by both. Training runs a custom step compiled with ``tf.function``
(forward, loss, L1/L2 penalty, gradients, optimiser) rather than ``model.fit``: the epoch loop,
per-epoch learning rates and hypergradient descent belong to tunepipe, not to Keras callbacks.

Checkpoints hold ``model.weights.h5`` (arrays only) and ``optimizer.npz`` (loaded with
``allow_pickle=False``): nothing in them can run code when loaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainables.keras_losses import LossFn, build_loss, predicted_classes, weight_penalty
from trainables.keras_models import build_keras_model, split_weights
from trainables.keras_optim import KerasTrainingOptimizer
from trainables.keras_runtime import keras, limit_cpu_threads, tf
from trainables.loss_settings import penalty_strengths
from trainables.precision_settings import PrecisionSettings, check_device, precision_settings
from trainables.protocol import Batch, DataSpec, ExportedModel, require_rows
from trainables.user_code import build_user_model

MODEL_FILE = "model.weights.h5"
OPTIMIZER_FILE = "optimizer.npz"
#: Rows per forward pass in :meth:`KerasTrainable.predict`; bounds memory on large inputs.
PREDICT_CHUNK = 1024
DEFAULT_SEED = 0

#: Keras dtype policies per precision: 16-bit compute, float32 variables.
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
#: fp16 loss scaling: the starting scale, and how many finite steps before it doubles (the
#: values torch's GradScaler and Keras's LossScaleOptimizer start from).
_INITIAL_LOSS_SCALE = 2.0**15
_GROWTH_INTERVAL = 2000

_log = logging.getLogger(__name__)


def _bf16_ok() -> bool:
    """Whether every GPU TensorFlow sees has bfloat16 units (compute capability 8.0+)."""
    for gpu in tf.config.list_physical_devices("GPU"):
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if capability is not None and tuple(capability) < (8, 0):
            return False
    return True


class _LossScale:
    """Dynamic loss scaling for fp16, inside the compiled train step.

    The training step is tunepipe's own (decoupled decay, hypergradient descent), so Keras's
    ``LossScaleOptimizer``, which wraps a stock optimiser, does not fit; this is its rule: scale
    the loss, unscale the gradients, skip a step with an inf/NaN gradient and halve the scale,
    double it after :data:`_GROWTH_INTERVAL` finite steps.
    """

    def __init__(self) -> None:
        self.scale = tf.Variable(_INITIAL_LOSS_SCALE, trainable=False, dtype=tf.float32)
        self.good_steps = tf.Variable(0, trainable=False, dtype=tf.int64)

    def unscale(self, grads: list[Any]) -> tuple[list[Any], Any]:
        """Return the gradients divided by the scale, and whether all of them are finite."""
        grads = [tf.cast(g, tf.float32) / self.scale for g in grads]
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])
        return grads, finite

    def update(self, finite: Any) -> None:
        """Halve the scale after an overflow; double it after a run of finite steps."""
        grown = self.good_steps + 1 >= _GROWTH_INTERVAL
        self.scale.assign(
            tf.where(finite, tf.where(grown, self.scale * 2.0, self.scale), self.scale / 2.0)
        )
        self.good_steps.assign(tf.where(finite & ~grown, self.good_steps + 1, 0))


def load_keras_model(
    hparams: Mapping[str, Any],
    data: DataSpec,
    checkpoint_dir: Path,
    build: Callable[..., Any] | None = None,
) -> Any:
    """Rebuild a model from its hyperparameters and load the weights saved by a trial.

    Args:
        hparams: The trial's hyperparameters (must describe the same architecture).
        data: Description of the dataset the model was trained on.
        checkpoint_dir: Directory holding ``model.weights.h5`` written by
            :meth:`KerasTrainable.save`.
        build: The user's model builder the trial used (None: the built-in models).

    Returns:
        The ``keras.Sequential`` with the checkpoint's weights, computing in float32 whatever
        precision the trial trained in (its variables were float32 all along).

    """
    keras.config.set_dtype_policy("float32")  # a trial in this process may have changed it
    model = _build(hparams, data, build)
    model.load_weights(Path(checkpoint_dir) / MODEL_FILE)
    return model


def _build(hparams: Mapping[str, Any], data: DataSpec, build: Callable[..., Any] | None) -> Any:
    if build is None:
        return build_keras_model(hparams, data)
    return build_user_model(build, hparams, data, keras.Model, "keras.Model")


def export_model(
    hparams: Mapping[str, Any],
    data: DataSpec,
    checkpoint_dir: Path,
    example: np.ndarray,
    build: Callable[..., Any] | None = None,
) -> ExportedModel:
    """Return the checkpoint's model for ``mlflow.keras`` (see the trainable registry).

    A signature, not an input example: mlflow.keras 3.17 writes the example before it creates
    the model folder (FileNotFoundError). The batch dimension of a tensor signature is -1. The
    model is logged in the native .keras format: architecture as JSON plus weights, loaded in
    Keras's safe mode.
    """
    model = load_keras_model(hparams, data, checkpoint_dir, build=build)
    example = example.reshape(len(example), *data.input_shape).astype(np.float32)
    outputs = np.asarray(model(example, training=False))
    return ExportedModel(model=model, signature_data=(example, outputs))


class KerasTrainable:
    """One trial's Keras model and optimiser, trained and evaluated an epoch at a time.

    Attributes:
        model: The ``keras.Sequential`` being trained (``None`` until :meth:`setup`).
        training: Its optimiser wrapper (``None`` until :meth:`setup`).

    """

    @staticmethod
    def set_cpu_threads(cpus: int) -> None:
        """Use as many TensorFlow threads as CPUs the trial reserved."""
        limit_cpu_threads(cpus)

    @staticmethod
    def device_for(gpus: float) -> str:
        """Return "cuda" for a trial given a GPU; :meth:`setup` warns if TensorFlow sees none."""
        return "cuda" if gpus > 0 else "cpu"

    def __init__(self, build: Callable[..., Any] | None = None) -> None:
        """Start empty; ``build`` is the user's model builder (None: the built-in models)."""
        self._build = build
        self.model: Any = None
        self.training: KerasTrainingOptimizer | None = None
        self._data: DataSpec | None = None
        self._loss_fn: LossFn | None = None
        self._train_step: Any = None
        self._eval_step: Any = None
        self._precision = PrecisionSettings()
        self._loss_scale: _LossScale | None = None
        self._strategy: Any = None

    def setup(self, hparams: Mapping[str, Any], data: DataSpec, device: str) -> None:
        """Build the model, loss and optimiser from hyperparameters.

        Args:
            hparams: Flat trial hyperparameters, the same keys as the torch trainable's.
                ``seed`` (default 0) fixes the weight initialisation and dropout masks.
            data: Description of the dataset.
            device: ``"cpu"`` or ``"cuda"``; TensorFlow places work on a GPU by itself when it
                has one, and this build of it may have none (then the trial runs on the CPU).

        Raises:
            HyperparameterError: A bad optimiser, loss, penalty or precision value, or a
                precision the device cannot run (fp16 on the CPU).
            ValueError: An unknown model or a capacity value out of range.

        """
        self._loss_fn = build_loss(hparams, data)
        l1, l2 = penalty_strengths(hparams)
        self._precision = precision_settings(hparams)
        check_device(self._precision, device, bf16_ok=_bf16_ok())
        if device.startswith("cuda") and not tf.config.list_physical_devices("GPU"):
            _log.warning("the trial was given a GPU but this TensorFlow sees none; using the CPU")
        # A strategy's scope lives on TensorFlow's default graph, which clear_session resets:
        # read it first. Its workers are fresh processes, with no earlier trial to clear.
        self._strategy = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
        # A reused trial actor builds a new model per trial: drop the previous graphs, and set
        # the dtype policy every trial (it is global, and the previous trial's may differ).
        if self._strategy is None:
            keras.backend.clear_session()
        keras.config.set_dtype_policy(_POLICIES[self._precision.precision])
        self._loss_scale = _LossScale() if self._precision.scales_loss else None
        keras.utils.set_random_seed(int(hparams.get("seed", DEFAULT_SEED)))
        self._data = data
        self.model = _build(hparams, data, self._build)
        weights, others = split_weights(self.model)
        self.training = KerasTrainingOptimizer(hparams, weights, others)
        self._check_replicas()
        self._train_step = self._compile_train_step(weights, l1, l2)
        self._eval_step = self._compile_eval_step()

    @property
    def replicas(self) -> int:
        """How many replicas train in lock-step: above 1 when set up in a strategy's scope.

        Set up inside a ``tf.distribute`` strategy's scope (a Ray Train worker's
        MultiWorkerMirroredStrategy, one replica per worker) the model and optimiser are
        mirrored, and each step's gradients are summed over the replicas by the Keras
        optimiser: each replica's objective is divided by their number, so the step takes the
        mean of the replicas' batch means (as DistributedDataParallel does).
        """
        return int(self._strategy.num_replicas_in_sync) if self._strategy is not None else 1

    def _check_replicas(self) -> None:
        """Refuse what cannot yet train in lock-step over several replicas."""
        if self.replicas == 1:
            return
        from trainables.errors import HyperparameterError

        assert self.training is not None
        if self.training.settings.hyper_lr is not None:
            raise HyperparameterError(
                "hypergradient descent (hyper_lr) is not supported in data-parallel Keras "
                "trials yet: its learning-rate state would differ on each replica"
            )
        if self._loss_scale is not None:
            raise HyperparameterError(
                "precision fp16 is not supported in data-parallel Keras trials yet (its loss "
                "scale would differ on each replica); use bf16"
            )
        if self._precision.compile:
            raise HyperparameterError(
                "compile (XLA) is not supported in data-parallel Keras trials: XLA has no "
                "collectives for CPU devices, and the GPU path is not verified yet"
            )
        if len(self._strategy.extended.worker_devices) != 1:
            # Every replica would get this worker's whole batch (no split across local GPUs).
            raise HyperparameterError(
                "data-parallel Keras trials train one replica per worker: give each worker "
                "one GPU (resources.gpu: 1 or less per worker)"
            )

    def _compile_train_step(self, weights: list[Any], l1: float, l2: float) -> Any:
        model, training, loss_fn = self.model, self.training, self._loss_fn
        assert training is not None and loss_fn is not None
        variables = training.variables
        shape = tuple(self._spec.input_shape)
        scaling = self._loss_scale
        replicas = self.replicas

        def step(x: Any, y: Any) -> Any:
            x = tf.reshape(x, (-1, *shape))
            with tf.GradientTape() as tape:
                # Outputs in float32 under a mixed policy: losses never sum in 16 bits.
                loss = loss_fn(tf.cast(model(x, training=True), tf.float32), y)
                penalty = weight_penalty(weights, l1, l2)
                objective = loss if penalty is None else loss + penalty
                if scaling is not None:
                    objective = objective * scaling.scale
                if replicas > 1:
                    objective = objective / replicas  # the optimiser sums the replicas' grads
            grads = tape.gradient(objective, variables)
            if scaling is None:
                training.apply(grads)
            else:
                grads, finite = scaling.unscale(grads)
                if finite:
                    training.apply(grads)
                scaling.update(finite)
            return loss * tf.cast(tf.shape(y)[0], loss.dtype)

        if replicas == 1:
            return tf.function(step, reduce_retracing=True, jit_compile=self._precision.compile)
        strategy = self._strategy

        def replicated(x: Any, y: Any) -> Any:
            # This worker's one replica trains on this worker's batch.
            return strategy.experimental_local_results(strategy.run(step, args=(x, y)))[0]

        return tf.function(replicated, reduce_retracing=True)

    def _compile_eval_step(self) -> Any:
        model, loss_fn = self.model, self._loss_fn
        assert loss_fn is not None
        shape = tuple(self._spec.input_shape)
        classification = self._is_classification

        def step(x: Any, y: Any) -> Any:
            outputs = tf.cast(model(tf.reshape(x, (-1, *shape)), training=False), tf.float32)
            n = tf.cast(tf.shape(y)[0], tf.float64)
            loss = tf.cast(loss_fn(outputs, y), tf.float64) * n
            if classification:
                hits = tf.equal(predicted_classes(outputs), tf.cast(y, tf.int64))
                return tf.stack([loss, tf.reduce_sum(tf.cast(hits, tf.float64))])
            errors = tf.cast(tf.reshape(outputs, [-1]), tf.float64) - tf.cast(y, tf.float64)
            return tf.stack([loss, tf.reduce_sum(errors**2), tf.reduce_sum(tf.abs(errors))])

        return tf.function(step, reduce_retracing=True, jit_compile=self._precision.compile)

    @property
    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return self._parts()[1].lr

    def set_lr(self, lr: float) -> None:
        """Set the learning rate for the next steps (used by the epoch loop's schedules).

        Raises:
            ValueError: If ``lr`` is negative or not finite.

        """
        self._parts()[1].set_lr(lr)

    @property
    def _spec(self) -> DataSpec:
        if self._data is None:
            raise RuntimeError("call setup() first")
        return self._data

    @property
    def _is_classification(self) -> bool:
        return self._spec.task == "classification"

    def _parts(self) -> tuple[Any, KerasTrainingOptimizer]:
        if self.model is None or self.training is None:
            raise RuntimeError("call setup() first")
        return self.model, self.training

    def _tensors(self, batch: Batch) -> tuple[Any, Any]:
        target_type = tf.int64 if self._is_classification else tf.float32
        x = tf.convert_to_tensor(batch["x"], dtype=tf.float32)
        return x, tf.reshape(tf.convert_to_tensor(batch["y"], dtype=target_type), [-1])

    def train_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Run one optimisation pass over ``batches``.

        The ``l1``/``l2`` penalties join the objective but not the reported ``train_loss``.

        Returns:
            ``{"train_loss": mean data loss per sample, "lr": learning rate at the end}``.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        _, training = self._parts()
        total, count = tf.constant(0.0, tf.float64), 0
        for batch in batches:
            x, y = self._tensors(batch)
            # Summed as tensors and read once per epoch, not synchronised per batch.
            total += tf.cast(self._train_step(x, y), tf.float64)
            count += int(y.shape[0])
        require_rows(count, "train_epoch")
        return {"train_loss": float(total.numpy()) / count, "lr": training.lr}

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Compute validation metrics over ``batches`` without updating weights.

        Returns:
            ``val_loss`` plus ``val_accuracy`` (classification) or ``val_rmse`` and ``val_mae``
            in the target's own units (regression), as the torch trainable reports them.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        self._parts()
        totals, count = None, 0
        for batch in batches:
            x, y = self._tensors(batch)
            sums = self._eval_step(x, y)
            totals = sums if totals is None else totals + sums
            count += int(y.shape[0])
        require_rows(count, "evaluate")
        assert totals is not None
        means = [value / count for value in totals.numpy().tolist()]
        if self._is_classification:
            return {"val_loss": means[0], "val_accuracy": means[1]}
        scale = float(self._spec.target_std)
        return {
            "val_loss": means[0],
            "val_rmse": math.sqrt(means[1]) * scale,
            "val_mae": means[2] * scale,
        }

    def _outputs(self, x: np.ndarray) -> Iterator[Any]:
        """Yield the model's outputs in inference mode, :data:`PREDICT_CHUNK` rows at a time."""
        model, _ = self._parts()
        shape = tuple(self._spec.input_shape)
        for start in range(0, len(x), PREDICT_CHUNK):
            inputs = tf.reshape(
                tf.convert_to_tensor(x[start : start + PREDICT_CHUNK], tf.float32), (-1, *shape)
            )
            yield tf.cast(model(inputs, training=False), tf.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict in inference mode, in chunks of :data:`PREDICT_CHUNK` rows.

        Returns:
            Class indices (``int64``) for classification, or predicted values (``float32``,
            standardised units) for regression; shape ``(n,)``.

        """
        chunks = []
        for outputs in self._outputs(x):
            values = predicted_classes(outputs) if self._is_classification else outputs[:, 0]
            chunks.append(values.numpy())
        if not chunks:
            return np.empty((0,), dtype=np.int64 if self._is_classification else np.float32)
        return np.concatenate(chunks)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Return class probabilities ``(n, classes)``, or predictions ``(n,)`` for regression.

        What the validation-split metric library reads (:mod:`trainables.metrics`).
        """
        chunks = []
        for raw in self._outputs(x):
            outputs = tf.cast(raw, tf.float32)
            if not self._is_classification:
                chunks.append(outputs[:, 0].numpy())
            elif outputs.shape[1] == 1:
                positive = tf.sigmoid(outputs[:, 0]).numpy()
                chunks.append(np.stack([1 - positive, positive], axis=1))
            else:
                chunks.append(tf.nn.softmax(outputs, axis=1).numpy())
        if not chunks:
            return np.empty((0,), dtype=np.float32)
        return np.concatenate(chunks)

    def save(self, directory: Path) -> None:
        """Write the model weights and optimiser state into ``directory`` (created if missing)."""
        model, training = self._parts()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model.save_weights(directory / MODEL_FILE)
        arrays: dict[str, Any] = training.state_arrays()
        np.savez(directory / OPTIMIZER_FILE, **arrays)

    def load(self, directory: Path) -> None:
        """Restore the state written by :meth:`save`; call after :meth:`setup`.

        The optimiser's moments and step count come from the checkpoint, its hyperparameters
        are this trial's (population-based training mutates them between trials).

        Raises:
            ValueError: If the files hold pickled objects or another optimiser's state.

        """
        model, training = self._parts()
        directory = Path(directory)
        model.load_weights(directory / MODEL_FILE)
        with np.load(directory / OPTIMIZER_FILE, allow_pickle=False) as arrays:
            training.load_state_arrays({key: arrays[key] for key in arrays.files})
