"""PyTorch implementation of the :class:`~trainables.protocol.TrialTrainable` contract."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.precision_settings import (
    PRECISION_HPARAMS,
    PrecisionSettings,
    check_device,
    precision_settings,
)
from trainables.protocol import Batch, DataSpec, ExportedModel, require_rows
from trainables.torch_losses import (
    LOSS_HPARAMS,
    LossFn,
    build_loss,
    penalty_strengths,
    predicted_classes,
    weight_penalty,
)
from trainables.torch_models import MODEL_HPARAMS, build_torch_model, split_weights
from trainables.torch_optim import OPTIMIZER_HPARAMS, TrainingOptimizer
from trainables.user_code import build_user_model

MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
#: fp16's loss scale, so a resumed trial does not start again from an overflowing scale.
SCALER_FILE = "scaler.pt"
#: Rows per forward pass in :meth:`TorchTrainable.predict`; bounds memory on large inputs.
PREDICT_CHUNK = 1024
DEFAULT_SEED = 0

#: Every hyperparameter key this trainable reads (documentation; the registry keeps its own copy).
TORCH_HPARAMS: frozenset[str] = (
    MODEL_HPARAMS | OPTIMIZER_HPARAMS | LOSS_HPARAMS | PRECISION_HPARAMS | {"seed"}
)
_AUTOCAST_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def load_torch_model(
    hparams: Mapping[str, Any],
    data: DataSpec,
    checkpoint_dir: Path,
    device: str = "cpu",
    build: Callable[..., Any] | None = None,
) -> nn.Module:
    """Rebuild a model from its hyperparameters and load the weights saved by a trial.

    Args:
        hparams: The trial's hyperparameters (must describe the same architecture).
        data: Description of the dataset the model was trained on.
        checkpoint_dir: Directory holding ``model.pt`` written by :meth:`TorchTrainable.save`.
        device: Where to place the model.
        build: The user's model builder the trial used (None: the built-in models).

    Returns:
        The model with the checkpoint's weights, on ``device``, in eval mode.

    """
    model = _build(hparams, data, build)
    model.load_state_dict(_load_state(Path(checkpoint_dir) / MODEL_FILE, torch.device(device)))
    return model.to(device).eval()


def _build(
    hparams: Mapping[str, Any], data: DataSpec, build: Callable[..., Any] | None
) -> nn.Module:
    if build is None:
        return build_torch_model(hparams, data)
    model: nn.Module = build_user_model(build, hparams, data, nn.Module, "torch.nn.Module")
    if any(nn.parameter.is_lazy(p) for p in model.parameters()):
        # Lazy layers (LazyLinear) learn their sizes from a first batch; the optimiser and the
        # weight penalties need them now.
        was_training = model.training
        with torch.no_grad():
            model.eval()(torch.zeros(2, *data.input_shape))
        model.train(was_training)
    return model


def export_model(
    hparams: Mapping[str, Any],
    data: DataSpec,
    checkpoint_dir: Path,
    example: np.ndarray,
    build: Callable[..., Any] | None = None,
) -> ExportedModel:
    """Return the checkpoint's model for ``mlflow.pytorch`` (see the trainable registry)."""
    # pt2 (torch.export) loads back without unpickling any class, ours or the user's, unlike
    # "pickle"; the example is shaped as the model receives its input.
    return ExportedModel(
        model=load_torch_model(hparams, data, checkpoint_dir, build=build),
        options={"serialization_format": "pt2"},
        input_example=example.reshape(len(example), *data.input_shape).astype(np.float32),
    )


def _to_scores(outputs: torch.Tensor, classification: bool) -> torch.Tensor:
    """Probabilities per class (a one-logit binary model gets two columns), or the values."""
    if not classification:
        return outputs[:, 0]
    if outputs.shape[1] == 1:
        positive = torch.sigmoid(outputs[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(outputs, dim=1)


def _bf16_ok(device: torch.device) -> bool:
    return device.type != "cuda" or torch.cuda.is_bf16_supported()


class _ScaledStep:
    """What ``GradScaler`` needs of an optimiser: the groups it unscales and the step it skips.

    The training step is :class:`TrainingOptimizer`'s (decoupled decay, hypergradient
    descent), not the bare ``torch.optim`` one, so the scaler is handed this view of it.
    """

    def __init__(self, training: TrainingOptimizer) -> None:
        self.param_groups = training.optimizer.param_groups
        self.step = training.step


def _load_state(path: Path, device: torch.device) -> dict[str, Any]:
    # weights_only=True refuses arbitrary pickled objects, so a tampered checkpoint cannot run
    # code in the worker; our checkpoints only ever contain tensors and plain containers.
    state: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    return state


class TorchTrainable:
    """One trial's PyTorch model and optimiser, trained and evaluated an epoch at a time.

    Hyperparameters: the model keys of :mod:`trainables.torch_models`, the optimiser keys of
    :mod:`trainables.torch_optim`, the loss and penalty keys of :mod:`trainables.torch_losses`,
    ``precision`` and ``compile`` (:mod:`trainables.precision_settings`) and ``seed``;
    :data:`TORCH_HPARAMS` lists them all.

    Attributes:
        model: The ``nn.Module`` being trained (``None`` until :meth:`setup`).
        optimizer: Its ``torch.optim`` optimiser (``None`` until :meth:`setup`).

    """

    @staticmethod
    def set_cpu_threads(cpus: int) -> None:
        """Use as many intra-op threads as CPUs the trial reserved (not every core of the node)."""
        torch.set_num_threads(max(1, cpus))

    @staticmethod
    def device_for(gpus: float) -> str:
        """Return "cuda" when the trial was given a GPU and CUDA is usable, else "cpu"."""
        return "cuda" if gpus > 0 and torch.cuda.is_available() else "cpu"

    def __init__(self, build: Callable[..., Any] | None = None) -> None:
        """Start empty; ``build`` is the user's model builder (None: the built-in models)."""
        self._build = build
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._training: TrainingOptimizer | None = None
        self._data: DataSpec | None = None
        self._device = torch.device("cpu")
        self._loss_fn: LossFn | None = None
        self._weights: list[nn.Parameter] = []
        self._l1 = self._l2 = 0.0
        self._precision = PrecisionSettings()
        # What computes the outputs: the model, or its torch.compile'd wrapper (which shares
        # its parameters; state dicts are always the plain model's). Training may go through
        # another wrapper of the same parameters (DistributedDataParallel, see train_through).
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._scaler: torch.amp.GradScaler | None = None

    def setup(self, hparams: Mapping[str, Any], data: DataSpec, device: str) -> None:
        """Build the model, loss and optimiser from hyperparameters on ``device``.

        Args:
            hparams: Flat trial hyperparameters (see :data:`TORCH_HPARAMS`). ``seed`` (default
                0) fixes the weight initialisation.
            data: Description of the dataset.
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

        Raises:
            ValueError: If the model, optimiser, loss or task is unknown or a value is out of
                range.
            HyperparameterError: A precision the device cannot run (fp16 on the CPU).

        """
        # Validated first so a bad task, loss or precision fails before any model is built.
        self._loss_fn = build_loss(hparams, data)
        self._l1, self._l2 = penalty_strengths(hparams)
        self._device = torch.device(device)
        self._precision = precision_settings(hparams)
        check_device(self._precision, device, bf16_ok=_bf16_ok(self._device))
        self._data = data
        # Seeding right before construction makes the initial weights a function of the seed only.
        torch.manual_seed(int(hparams.get("seed", DEFAULT_SEED)))
        self.model = _build(hparams, data, self._build).to(self._device)
        self._weights, others = split_weights(self.model.parameters())
        self._training = TrainingOptimizer(hparams, self._weights, others)
        self.optimizer = self._training.optimizer
        self._forward = self._compiled(self.model)
        self._train_forward = self._forward
        self._scaler = torch.amp.GradScaler("cuda") if self._precision.scales_loss else None

    def _compiled(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        return torch.compile(module) if self._precision.compile else module

    def train_through(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run training passes through ``wrap(model)``, e.g. ``DistributedDataParallel``.

        Evaluation, prediction and checkpoints keep using the plain model (whose state dict
        has the plain parameter names, loadable by any trial); ``compile`` applies to the
        wrapper, the order torch.compile documents for DDP.
        """
        model, _ = self._parts()
        self._train_forward = self._compiled(wrap(model))

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Run the enclosed passes in the trial's precision (fp32: nothing changes)."""
        dtype = _AUTOCAST_TYPES.get(self._precision.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self._device.type, dtype=dtype)

    def _outputs(self, x: torch.Tensor, *, training: bool = False) -> torch.Tensor:
        """Return the model's outputs in float32 (metrics and losses never sum in 16 bits)."""
        forward = self._train_forward if training else self._forward
        if forward is None:
            raise RuntimeError("call setup() first")
        with self._autocast():
            return forward(x).float()

    def _backward_and_step(self, objective: torch.Tensor, training: TrainingOptimizer) -> None:
        if self._scaler is None:
            objective.backward()
            training.step()
            return
        # fp16: scale the loss so small gradients survive; the scaler unscales them, skips the
        # step when any is inf/NaN (and shrinks the scale), else steps and may grow the scale.
        self._scaler.scale(objective).backward()
        self._scaler.step(_ScaledStep(training))  # type: ignore[arg-type]
        self._scaler.update()

    @property
    def current_lr(self) -> float:
        """The learning rate the next step will use."""
        return self._parts()[1].lr

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every param group (used by the epoch loop's schedules).

        Under hypergradient descent the adaptation continues from ``lr``.

        Raises:
            ValueError: If ``lr`` is negative or not finite.

        """
        self._parts()[1].set_lr(lr)

    @property
    def _is_classification(self) -> bool:
        return self._spec.task == "classification"

    @property
    def _spec(self) -> DataSpec:
        if self._data is None:
            raise RuntimeError("call setup() first")
        return self._data

    def _parts(self) -> tuple[nn.Module, TrainingOptimizer]:
        if self.model is None or self._training is None:
            raise RuntimeError("call setup() first")
        return self.model, self._training

    def _to_device(self, array: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Move a batch column to the trial's device (a tensor already there stays as it is).

        On a GPU the host copy is pinned first, so the transfer is an asynchronous DMA that
        overlaps the previous step's kernels instead of a synchronous pageable copy.
        """
        if isinstance(array, torch.Tensor):  # device-side augmentation made it on the device
            return array.to(self._device, dtype=dtype, non_blocking=True)
        tensor = torch.from_numpy(_writable(array))
        if self._device.type == "cuda":
            tensor = tensor.pin_memory()
        return tensor.to(self._device, dtype=dtype, non_blocking=True)

    def _to_inputs(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        tensor = self._to_device(x, torch.float32)
        # Batches may arrive flattened (tabular storage); the model wants the example shape.
        return tensor.reshape(tensor.shape[0], *self._spec.input_shape)

    def _to_targets(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        dtype = torch.long if self._is_classification else torch.float32
        return self._to_device(y, dtype).reshape(-1)

    def _tensors(self, batches: Iterable[Batch]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches:
            yield self._to_inputs(batch["x"]), self._to_targets(batch["y"])

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self._loss_fn is None:
            raise RuntimeError("call setup() first")
        return self._loss_fn(outputs, targets)

    def train_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Run one optimisation pass over ``batches``.

        The ``l1``/``l2`` penalties join the objective that is minimised but not the reported
        ``train_loss``, so losses stay comparable across penalty strengths.

        Args:
            batches: Mini-batches with ``"x"`` and ``"y"`` numpy arrays.

        Returns:
            ``{"train_loss": mean data loss per sample, "lr": learning rate at the end}``.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        model, training = self._parts()
        model.train()
        # Summed on the device and read once per epoch: a per-batch .item() would force a
        # host-device sync on every step.
        loss_sum = torch.zeros((), device=self._device)
        count = 0
        for x, y in self._tensors(batches):
            training.zero_grad()
            loss = self._loss(self._outputs(x, training=True), y)
            penalty = weight_penalty(self._weights, self._l1, self._l2)
            self._backward_and_step(loss if penalty is None else loss + penalty, training)
            loss_sum += loss.detach() * y.shape[0]
            count += y.shape[0]
        require_rows(count, "train_epoch")
        return {"train_loss": loss_sum.item() / count, "lr": training.lr}

    def _batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return this batch's ``[loss, correct]`` or ``[loss, squared error, absolute error]``.

        Sums over the rows, so batches of any size add up to exact epoch means.
        """
        loss = self._loss(outputs, targets) * targets.shape[0]
        if self._is_classification:
            correct = (predicted_classes(outputs) == targets).sum()
            return torch.stack([loss, correct.to(loss.dtype)])
        errors = outputs.reshape(-1) - targets
        return torch.stack([loss, errors.square().sum(), errors.abs().sum()])

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Compute validation metrics over ``batches`` without updating weights.

        Args:
            batches: Mini-batches with ``"x"`` and ``"y"`` numpy arrays.

        Returns:
            ``val_loss`` (the training loss, without penalties) plus ``val_accuracy``
            (classification) or ``val_rmse`` and ``val_mae`` (regression). The regression
            errors are multiplied by ``data.target_std`` to be in the target's own units.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        model, _ = self._parts()
        model.eval()
        count = 0
        # float64 so that long validation sets do not lose precision in the running sums.
        totals = torch.zeros(2 if self._is_classification else 3, dtype=torch.float64)
        totals = totals.to(self._device)
        with torch.inference_mode():
            for x, y in self._tensors(batches):
                totals += self._batch_sums(self._outputs(x), y)
                count += y.shape[0]
        require_rows(count, "evaluate")
        sums = [value / count for value in totals.tolist()]  # the epoch's only device sync
        if self._is_classification:
            return {"val_loss": sums[0], "val_accuracy": sums[1]}
        # Targets arrive standardised; getattr keeps older DataSpec stand-ins working.
        scale = float(getattr(self._spec, "target_std", 1.0))
        return {
            "val_loss": sums[0],
            "val_rmse": math.sqrt(sums[1]) * scale,
            "val_mae": sums[2] * scale,
        }

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict in eval mode, in chunks of :data:`PREDICT_CHUNK` rows.

        Args:
            x: Features shaped ``(n, *input_shape)`` or ``(n, prod(input_shape))``.

        Returns:
            Class indices (``int64``, shape ``(n,)``) for classification, or predicted values
            (``float32``, shape ``(n,)``, in standardised units) for regression.

        """
        model, _ = self._parts()
        model.eval()
        chunks: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(x), PREDICT_CHUNK):
                outputs = self._outputs(self._to_inputs(x[start : start + PREDICT_CHUNK]))
                classes = self._is_classification
                chunks.append(predicted_classes(outputs) if classes else outputs[:, 0])
        if not chunks:
            dtype = np.int64 if self._is_classification else np.float32
            return np.empty((0,), dtype=dtype)
        return torch.cat(chunks).cpu().numpy()

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Return class probabilities ``(n, classes)``, or predictions ``(n,)`` for regression.

        What the validation-split metric library reads (:mod:`trainables.metrics`).
        """
        model, _ = self._parts()
        model.eval()
        chunks: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(x), PREDICT_CHUNK):
                outputs = self._outputs(self._to_inputs(x[start : start + PREDICT_CHUNK]))
                chunks.append(_to_scores(outputs, self._is_classification))
        if not chunks:
            return np.empty((0,), dtype=np.float32)
        return torch.cat(chunks).cpu().numpy()

    def save(self, directory: Path) -> None:
        """Write the model and optimiser state into ``directory``.

        Args:
            directory: Destination; created if missing.

        """
        model, training = self._parts()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), directory / MODEL_FILE)
        torch.save(training.state_dict(), directory / OPTIMIZER_FILE)
        if self._scaler is not None:
            torch.save(self._scaler.state_dict(), directory / SCALER_FILE)

    def load(self, directory: Path) -> None:
        """Restore the state written by :meth:`save`; call after :meth:`setup`.

        The optimiser's buffers (moments, momentum, hypergradient direction) come from the
        checkpoint, but its hyperparameters (lr, momentum, betas, rho, eps, weight decay) are
        this trial's: population-based training resumes a trial from another trial's
        checkpoint with mutated values.

        Args:
            directory: Directory holding ``model.pt`` and ``optimizer.pt``.

        Raises:
            pickle.UnpicklingError: If a file holds anything other than tensors and plain
                containers (refused by ``weights_only=True``).

        """
        model, training = self._parts()
        directory = Path(directory)
        model.load_state_dict(_load_state(directory / MODEL_FILE, self._device))
        training.load_state_dict(_load_state(directory / OPTIMIZER_FILE, self._device))
        if self._scaler is not None and (directory / SCALER_FILE).is_file():
            self._scaler.load_state_dict(_load_state(directory / SCALER_FILE, self._device))


def _writable(array: np.ndarray) -> np.ndarray:
    """Return ``array``, copied only if it is read-only.

    Ray Data hands out zero-copy read-only views, and torch warns when it shares such memory.
    """
    array = np.asarray(array)
    return array if array.flags.writeable else array.copy()
