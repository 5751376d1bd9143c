"""PyTorch implementation of the :class:`~trainables.protocol.TrialTrainable` contract."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainables.protocol import Batch, DataSpec
from trainables.torch_models import build_torch_model, output_size

MODEL_FILE = "model.pt"
OPTIMIZER_FILE = "optimizer.pt"
#: Rows per forward pass in :meth:`TorchTrainable.predict`; bounds memory on large inputs.
PREDICT_CHUNK = 1024

DEFAULT_OPTIMIZER = "adam"
DEFAULT_LR = 1e-3
DEFAULT_MOMENTUM = 0.0
DEFAULT_WEIGHT_DECAY = 0.0
DEFAULT_SEED = 0

VALID_OPTIMIZERS = ("sgd", "adam")


def build_optimizer(
    hparams: Mapping[str, Any], params: Iterable[nn.Parameter]
) -> torch.optim.Optimizer:
    """Build the optimiser named by ``hparams["optimizer"]`` (default ``"adam"``).

    Args:
        hparams: Uses ``optimizer``, ``lr``, ``weight_decay`` and, for SGD only, ``momentum``.
        params: The parameters to optimise.

    Returns:
        A ``torch.optim.SGD`` or ``torch.optim.Adam`` instance.

    Raises:
        ValueError: If the optimiser name is unknown.

    """
    name = hparams.get("optimizer", DEFAULT_OPTIMIZER)
    lr = float(hparams.get("lr", DEFAULT_LR))
    weight_decay = float(hparams.get("weight_decay", DEFAULT_WEIGHT_DECAY))
    if name == "sgd":
        momentum = float(hparams.get("momentum", DEFAULT_MOMENTUM))
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(
        f"unknown optimizer {name!r}; valid optimizers: {', '.join(VALID_OPTIMIZERS)}"
    )


def load_torch_model(
    hparams: Mapping[str, Any],
    data: DataSpec,
    checkpoint_dir: Path,
    device: str = "cpu",
) -> nn.Module:
    """Rebuild a model from its hyperparameters and load the weights saved by a trial.

    Args:
        hparams: The trial's hyperparameters (must describe the same architecture).
        data: Description of the dataset the model was trained on.
        checkpoint_dir: Directory holding ``model.pt`` written by :meth:`TorchTrainable.save`.
        device: Where to place the model.

    Returns:
        The model with the checkpoint's weights, on ``device``, in eval mode.

    """
    model = build_torch_model(hparams, data)
    model.load_state_dict(_load_state(Path(checkpoint_dir) / MODEL_FILE, torch.device(device)))
    return model.to(device).eval()


def _load_state(path: Path, device: torch.device) -> dict[str, Any]:
    # weights_only=True refuses arbitrary pickled objects, so a tampered checkpoint cannot run
    # code in the worker; our checkpoints only ever contain tensors and plain containers.
    state: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    return state


class TorchTrainable:
    """One trial's PyTorch model and optimiser, trained and evaluated an epoch at a time.

    Attributes:
        model: The ``nn.Module`` being trained (``None`` until :meth:`setup`).
        optimizer: Its optimiser (``None`` until :meth:`setup`).

    """

    @staticmethod
    def set_cpu_threads(cpus: int) -> None:
        """Use as many intra-op threads as CPUs the trial reserved (not every core of the node)."""
        torch.set_num_threads(max(1, cpus))

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._data: DataSpec | None = None
        self._device = torch.device("cpu")

    def setup(self, hparams: Mapping[str, Any], data: DataSpec, device: str) -> None:
        """Build the model and optimiser from hyperparameters on ``device``.

        Args:
            hparams: Flat trial hyperparameters; see :func:`build_torch_model` and
                :func:`build_optimizer`. ``seed`` (default 0) fixes the weight initialisation.
            data: Description of the dataset.
            device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

        Raises:
            ValueError: If the model, optimiser or task is unknown or a value is out of range.

        """
        output_size(data)  # Fails fast on an unknown task before any work is done.
        self._device = torch.device(device)
        self._data = data
        # Seeding right before construction makes the initial weights a function of the seed only.
        torch.manual_seed(int(hparams.get("seed", DEFAULT_SEED)))
        self.model = build_torch_model(hparams, data).to(self._device)
        self.optimizer = build_optimizer(hparams, self.model.parameters())

    @property
    def _is_classification(self) -> bool:
        return self._spec.task == "classification"

    @property
    def _spec(self) -> DataSpec:
        if self._data is None:
            raise RuntimeError("call setup() first")
        return self._data

    def _parts(self) -> tuple[nn.Module, torch.optim.Optimizer]:
        if self.model is None or self.optimizer is None:
            raise RuntimeError("call setup() first")
        return self.model, self.optimizer

    def _to_inputs(self, x: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(_writable(x)).to(
            self._device, dtype=torch.float32, non_blocking=True
        )
        # Batches may arrive flattened (tabular storage); the model wants the example shape.
        return tensor.reshape(tensor.shape[0], *self._spec.input_shape)

    def _to_targets(self, y: np.ndarray) -> torch.Tensor:
        dtype = torch.long if self._is_classification else torch.float32
        tensor = torch.from_numpy(_writable(y)).to(self._device, dtype=dtype, non_blocking=True)
        return tensor.reshape(-1)

    def _tensors(self, batches: Iterable[Batch]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches:
            yield self._to_inputs(batch["x"]), self._to_targets(batch["y"])

    def _loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self._is_classification:
            return nn.functional.cross_entropy(outputs, targets)
        return nn.functional.mse_loss(outputs.reshape(-1), targets)

    def train_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Run one optimisation pass over ``batches``.

        Args:
            batches: Mini-batches with ``"x"`` and ``"y"`` numpy arrays.

        Returns:
            ``{"train_loss": mean loss per sample}``.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        model, optimizer = self._parts()
        model.train()
        # Summed on the device and read once per epoch: a per-batch .item() would force a
        # host-device sync on every step.
        loss_sum = torch.zeros((), device=self._device)
        count = 0
        for x, y in self._tensors(batches):
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss(model(x), y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * y.shape[0]
            count += y.shape[0]
        _require_rows(count, "train_epoch")
        return {"train_loss": loss_sum.item() / count}

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Compute validation metrics over ``batches`` without updating weights.

        Args:
            batches: Mini-batches with ``"x"`` and ``"y"`` numpy arrays.

        Returns:
            ``val_loss`` plus ``val_accuracy`` (classification) or ``val_rmse`` (regression).

        Raises:
            ValueError: If ``batches`` is empty.

        """
        model, _ = self._parts()
        model.eval()
        count = 0
        with torch.inference_mode():
            loss_sum = torch.zeros((), device=self._device)
            correct = torch.zeros((), device=self._device, dtype=torch.long)
            for x, y in self._tensors(batches):
                outputs = model(x)
                loss_sum += self._loss(outputs, y) * y.shape[0]
                if self._is_classification:
                    correct += (outputs.argmax(dim=1) == y).sum()
                count += y.shape[0]
        _require_rows(count, "evaluate")
        val_loss = loss_sum.item() / count
        if self._is_classification:
            return {"val_loss": val_loss, "val_accuracy": correct.item() / count}
        # The loss is the MSE, so its root is the RMSE without a second pass.
        return {"val_loss": val_loss, "val_rmse": math.sqrt(val_loss)}

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict in eval mode, in chunks of :data:`PREDICT_CHUNK` rows.

        Args:
            x: Features shaped ``(n, *input_shape)`` or ``(n, prod(input_shape))``.

        Returns:
            Class indices (``int64``, shape ``(n,)``) for classification, or predicted values
            (``float32``, shape ``(n,)``) for regression.

        """
        model, _ = self._parts()
        model.eval()
        chunks: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(x), PREDICT_CHUNK):
                outputs = model(self._to_inputs(x[start : start + PREDICT_CHUNK]))
                chunks.append(outputs.argmax(dim=1) if self._is_classification else outputs[:, 0])
        if not chunks:
            dtype = np.int64 if self._is_classification else np.float32
            return np.empty((0,), dtype=dtype)
        return torch.cat(chunks).cpu().numpy()

    def save(self, directory: Path) -> None:
        """Write the model and optimiser state into ``directory``.

        Args:
            directory: Destination; created if missing.

        """
        model, optimizer = self._parts()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), directory / MODEL_FILE)
        torch.save(optimizer.state_dict(), directory / OPTIMIZER_FILE)

    def load(self, directory: Path) -> None:
        """Restore the state written by :meth:`save`; call after :meth:`setup`.

        Args:
            directory: Directory holding ``model.pt`` and ``optimizer.pt``.

        Raises:
            pickle.UnpicklingError: If a file holds anything other than tensors and plain
                containers (refused by ``weights_only=True``).

        """
        model, optimizer = self._parts()
        directory = Path(directory)
        model.load_state_dict(_load_state(directory / MODEL_FILE, self._device))
        optimizer.load_state_dict(_load_state(directory / OPTIMIZER_FILE, self._device))


def _require_rows(count: int, where: str) -> None:
    # An empty split would otherwise surface as a ZeroDivisionError far from its cause.
    if count == 0:
        raise ValueError(f"{where} received no rows")


def _writable(array: np.ndarray) -> np.ndarray:
    """Return ``array``, copied only if it is read-only.

    Ray Data hands out zero-copy read-only views, and torch warns when it shares such memory.
    """
    array = np.asarray(array)
    return array if array.flags.writeable else array.copy()
