"""scikit-learn implementation of the :class:`~trainables.protocol.TrialTrainable` contract.

Tree ensembles have no epochs, so one "epoch" here grows the ensemble with ``warm_start=True``:
epoch ``k`` of ``epochs`` brings it to ``round(n_estimators * k / epochs)`` trees. Reporting after
every step lets the sweep's scheduler (ASHA) stop a weak trial before all its trees are grown.

Checkpoints are written with skops, never pickle or joblib: loading a pickle runs whatever code
the file names. skops only rebuilds types it is told to trust; this module trusts the few that its
own checkpoints need (:data:`ALLOWED_UNTRUSTED_TYPES`), refuses a file that needs any other, and
checks every loaded tree's structure because a tampered tree can crash ``predict``.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import skops.io as sio
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.metrics import log_loss, mean_absolute_error, mean_squared_error
from sklearn.tree import BaseDecisionTree

from trainables.errors import HyperparameterError
from trainables.protocol import Batch, DataSpec, ExportedModel

MODEL_FILE = "model.skops"
STATE_FILE = "state.json"

DEFAULT_N_ESTIMATORS = 100
DEFAULT_MAX_DEPTH: int | None = None
DEFAULT_MIN_SAMPLES_LEAF = 1
DEFAULT_LR = 0.1
DEFAULT_SEED = 0

VALID_MODELS = ("random_forest", "gradient_boosting")
VALID_TASKS = ("classification", "regression")

#: Types that skops does not trust by default but our checkpoints contain. The tree node storage
#: is flagged because scikit-learn indexes its node arrays without bounds checks; we accept it
#: only together with :func:`check_trees`. Anything else in a checkpoint is refused.
ALLOWED_UNTRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})

Ensemble: TypeAlias = (
    RandomForestClassifier
    | RandomForestRegressor
    | GradientBoostingClassifier
    | GradientBoostingRegressor
)

# GradientBoosting* rather than HistGradientBoosting*: only the former grows by n_estimators
# under warm_start, which is what makes an "epoch" of trees possible.
_ESTIMATORS: dict[tuple[str, str], type[Ensemble]] = {
    ("random_forest", "classification"): RandomForestClassifier,
    ("random_forest", "regression"): RandomForestRegressor,
    ("gradient_boosting", "classification"): GradientBoostingClassifier,
    ("gradient_boosting", "regression"): GradientBoostingRegressor,
}

_TREE_LEAF = -1  # sklearn.tree._tree.TREE_LEAF: a leaf's child index.


class UntrustedCheckpointError(ValueError):
    """A checkpoint needs a type outside the allow-list, or its contents are malformed."""


@dataclass(frozen=True)
class EnsembleSettings:
    """Validated hyperparameters of one scikit-learn trial.

    Attributes:
        model: ``"random_forest"`` or ``"gradient_boosting"``.
        n_estimators: Trees in the ensemble after the last epoch.
        max_depth: Maximum tree depth, or ``None`` for unlimited.
        min_samples_leaf: Minimum training rows in a leaf.
        lr: Gradient boosting's learning rate (unused by random forests).
        epochs: Number of :meth:`SklearnTrainable.train_epoch` calls the trees are spread over.
        seed: ``random_state`` of the estimator.

    """

    model: str
    n_estimators: int
    max_depth: int | None
    min_samples_leaf: int
    lr: float
    epochs: int
    seed: int

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> EnsembleSettings:
        """Read and validate the keys this trainable uses; other keys are ignored.

        Args:
            hparams: Flat trial hyperparameters. ``model`` and ``epochs`` are required.

        Returns:
            The validated settings.

        Raises:
            HyperparameterError: If the model is unknown, a required key is missing or a value
                is out of range.

        """
        model = hparams.get("model")
        if model not in VALID_MODELS:
            raise HyperparameterError(
                f"unknown model {model!r}",
                key="model",
                fix=f"use one of: {', '.join(VALID_MODELS)}",
            )
        if "epochs" not in hparams:
            raise HyperparameterError(
                "hyperparameter 'epochs' is required", key="epochs", fix="set epochs"
            )
        max_depth = hparams.get("max_depth", DEFAULT_MAX_DEPTH)
        lr = hparams.get("lr", DEFAULT_LR)
        if not _is_real(lr) or not float(lr) > 0:
            raise HyperparameterError(
                f"lr must be a number > 0, got {lr!r}", key="lr", fix="use a positive lr"
            )
        return cls(
            model=model,
            n_estimators=_positive_int(hparams, "n_estimators", DEFAULT_N_ESTIMATORS),
            max_depth=None if max_depth is None else _positive_int(hparams, "max_depth", None),
            min_samples_leaf=_positive_int(hparams, "min_samples_leaf", DEFAULT_MIN_SAMPLES_LEAF),
            lr=float(lr),
            epochs=_positive_int(hparams, "epochs", None),
            seed=_integer(hparams.get("seed", DEFAULT_SEED), "seed"),
        )


def _is_real(value: Any) -> bool:
    # bool is an int subclass; True as a tree count is a config mistake, not 1.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer(value: Any, key: str) -> int:
    # Tune's quantised samplers yield floats such as 50.0: accept whole numbers of any type.
    if not _is_real(value) or not float(value).is_integer():
        raise HyperparameterError(
            f"{key} must be an integer, got {value!r}", key=key, fix="use a whole number"
        )
    return int(value)


def _positive_int(hparams: Mapping[str, Any], key: str, default: int | None) -> int:
    value = _integer(hparams.get(key, default), key)
    if value < 1:
        raise HyperparameterError(f"{key} must be >= 1, got {value}", key=key, fix="use 1 or more")
    return value


def trees_after_epoch(n_estimators: int, epoch: int, epochs: int) -> int:
    """Return the ensemble size once ``epoch`` (1-based) of ``epochs`` has run.

    Python's ``round`` (ties to even) of ``n_estimators * epoch / epochs``, at least one tree and
    never more than ``n_estimators`` (should the loop run past ``epochs``).
    """
    return min(n_estimators, max(1, round(n_estimators * epoch / epochs)))


def build_estimator(settings: EnsembleSettings, task: str, n_jobs: int) -> Ensemble:
    """Build the unfitted, warm-starting estimator for ``settings`` and ``task``.

    Args:
        settings: Validated hyperparameters.
        task: ``"classification"`` or ``"regression"``.
        n_jobs: Threads for random forests (gradient boosting grows one tree at a time).

    Returns:
        An estimator with no trees yet; :meth:`SklearnTrainable.train_epoch` sets
        ``n_estimators`` before each fit.

    Raises:
        ValueError: If the task is unknown.

    """
    if task not in VALID_TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(VALID_TASKS)}")
    common: dict[str, Any] = {
        "n_estimators": 1,
        "max_depth": settings.max_depth,
        "min_samples_leaf": settings.min_samples_leaf,
        "random_state": settings.seed,
        "warm_start": True,
    }
    if settings.model == "random_forest":
        common["n_jobs"] = n_jobs
    else:
        common["learning_rate"] = settings.lr
    return _ESTIMATORS[settings.model, task](**common)


def tree_count(estimator: Ensemble) -> int:
    """Return how many boosting stages or forest trees ``estimator`` holds (0 before fitting)."""
    # A forest keeps a list of trees; boosting a (stages, trees per stage) array: len counts both.
    return len(getattr(estimator, "estimators_", ()))


def to_features(x: np.ndarray) -> np.ndarray:
    """Flatten examples of any shape into a 2-D ``float32`` matrix (the trees' own dtype)."""
    x = np.asarray(x)
    return x.reshape(len(x), -1).astype(np.float32, copy=False)


def save_estimator(estimator: Ensemble, path: Path) -> None:
    """Write ``estimator`` to ``path`` with skops, failing now if it could not be loaded back.

    Raises:
        UntrustedCheckpointError: If the file needs a type outside the allow-list (a new
            scikit-learn version, say): better to fail the save than write a dead checkpoint.

    """
    sio.dump(estimator, path)
    _trusted_types(path)


def load_estimator(path: Path, expected: type[Ensemble], n_features: int) -> Ensemble:
    """Load an estimator written by :func:`save_estimator`, refusing anything unexpected.

    Args:
        path: The ``.skops`` file.
        expected: The exact estimator class the trial built.
        n_features: Columns the estimator must take.

    Returns:
        The loaded estimator.

    Raises:
        UntrustedCheckpointError: If the file needs a type outside
            :data:`ALLOWED_UNTRUSTED_TYPES`, holds another class than ``expected``, or holds
            a malformed tree.

    """
    estimator = sio.load(path, trusted=_trusted_types(path))
    if type(estimator) is not expected:
        raise UntrustedCheckpointError(
            f"{path} holds a {type(estimator).__name__}, expected {expected.__name__}"
        )
    check_trees(estimator, n_features)
    return estimator


def _trusted_types(path: Path) -> list[str]:
    # The list passed to skops.io.load is exactly what the file needs, and only once every entry
    # is on the allow-list: the file cannot widen what we trust.
    needed = [str(name) for name in sio.get_untrusted_types(file=path)]
    refused = sorted(set(needed) - ALLOWED_UNTRUSTED_TYPES)
    if refused:
        raise UntrustedCheckpointError(f"{path} needs untrusted types: {', '.join(refused)}")
    return needed


def check_trees(estimator: Ensemble, n_features: int) -> None:
    """Check the structure of every tree, since scikit-learn walks them without bounds checks.

    Args:
        estimator: A loaded ensemble.
        n_features: Columns the estimator must take.

    Raises:
        UntrustedCheckpointError: If the ensemble's shape or any tree is malformed.

    """
    if getattr(estimator, "n_features_in_", n_features) != n_features:
        raise UntrustedCheckpointError(
            f"checkpoint takes {estimator.n_features_in_} features, the data has {n_features}"
        )
    for tree in _trees(estimator):
        if not isinstance(tree, BaseDecisionTree):
            raise UntrustedCheckpointError(f"ensemble member is a {type(tree).__name__}")
        _check_tree_nodes(tree.tree_, n_features)


def _trees(estimator: Ensemble) -> Iterator[Any]:
    members = getattr(estimator, "estimators_", [])
    if isinstance(estimator, GradientBoostingClassifier | GradientBoostingRegressor):
        # The compiled stage predictor writes column k of the output for the k-th tree of a
        # stage without bounds checks, so the stage width must match the output width.
        width = estimator.n_trees_per_iteration_
        if not isinstance(members, np.ndarray) or members.ndim != 2 or members.shape[1] != width:
            raise UntrustedCheckpointError(f"boosting stages are not {width} trees wide")
    yield from np.asarray(members, dtype=object).ravel()


def _check_tree_nodes(tree: Any, n_features: int) -> None:
    left, right, feature = tree.children_left, tree.children_right, tree.feature
    count = len(left)
    values = np.asarray(tree.value)
    nodes = np.arange(count)
    leaf = left == _TREE_LEAF
    split = ~leaf
    # Children after their parent (as scikit-learn builds them) rules out cycles, so every walk
    # from the root ends at a leaf inside the arrays.
    valid = (
        count >= 1
        # Boosting's compiled predictor reads one value per node straight from memory.
        and values.shape[0] == count
        and values[0].size >= 1
        and np.all(right[leaf] == _TREE_LEAF)
        and np.all((left[split] > nodes[split]) & (left[split] < count))
        and np.all((right[split] > nodes[split]) & (right[split] < count))
        and np.all((feature[split] >= 0) & (feature[split] < n_features))
    )
    if not valid:
        raise UntrustedCheckpointError("checkpoint holds a malformed tree")


def export_model(
    hparams: Mapping[str, Any],
    data: DataSpec,
    checkpoint_dir: Path,
    example: np.ndarray,
    build: Any = None,
) -> ExportedModel:
    """Return the checkpoint's estimator for ``mlflow.sklearn`` (see the trainable registry).

    skops instead of pickle: loading the registered model cannot run arbitrary code.
    """
    trainable = SklearnTrainable()
    trainable.setup(hparams, data, "cpu")
    trainable.load(checkpoint_dir)  # checks the file's types and trees before use
    return ExportedModel(
        model=trainable.estimator,
        options={
            "serialization_format": "skops",
            "skops_trusted_types": sorted(ALLOWED_UNTRUSTED_TYPES),
        },
        input_example=example.reshape(len(example), -1).astype(np.float32),
    )


class SklearnTrainable:
    """One trial's scikit-learn tree ensemble, grown an epoch at a time.

    Attributes:
        cpu_threads: Threads (``n_jobs``) for random forests; set via :meth:`set_cpu_threads`.
        estimator: The ensemble being grown (``None`` until :meth:`setup`).

    """

    cpu_threads: int = 1

    @staticmethod
    def set_cpu_threads(cpus: int) -> None:
        """Use as many threads as CPUs the trial reserved (not every core of the node)."""
        SklearnTrainable.cpu_threads = max(1, int(cpus))

    @staticmethod
    def device_for(gpus: float) -> str:
        """Return "cpu": scikit-learn's tree ensembles do not run on a GPU."""
        return "cpu"

    def __init__(self) -> None:
        self.estimator: Ensemble | None = None
        self._settings: EnsembleSettings | None = None
        self._data: DataSpec | None = None
        self._epoch = 0

    def setup(self, hparams: Mapping[str, Any], data: DataSpec, device: str) -> None:
        """Build the estimator from hyperparameters.

        Args:
            hparams: Flat trial hyperparameters; see :meth:`EnsembleSettings.from_hparams`.
            data: Description of the dataset.
            device: Ignored: scikit-learn's trees run on the CPU, and a trial that reserved a
                GPU should still run rather than fail.

        Raises:
            ValueError: If the model or task is unknown or a value is out of range.

        """
        del device
        settings = EnsembleSettings.from_hparams(hparams)
        self.estimator = build_estimator(settings, data.task, self.cpu_threads)
        self._settings, self._data, self._epoch = settings, data, 0

    def _parts(self) -> tuple[Ensemble, EnsembleSettings, DataSpec]:
        if self.estimator is None or self._settings is None or self._data is None:
            raise RuntimeError("call setup() first")
        return self.estimator, self._settings, self._data

    @property
    def _is_classification(self) -> bool:
        return self._parts()[2].task == "classification"

    def _gather(self, batches: Iterable[Batch], where: str) -> tuple[np.ndarray, np.ndarray]:
        # Trees need every row at once: the mini-batches of one epoch become one matrix.
        xs, ys = [], []
        for batch in batches:
            xs.append(to_features(batch["x"]))
            ys.append(np.asarray(batch["y"]).reshape(-1))
        if not xs or sum(len(y) for y in ys) == 0:
            raise ValueError(f"{where} received no rows")
        y = np.concatenate(ys)
        return np.concatenate(xs), y.astype(np.int64) if self._is_classification else y

    def _probabilities(self, x: np.ndarray) -> np.ndarray:
        # predict_proba has a column per class seen in training; log loss needs one per class
        # of the task, in label order, even if a class was missing from the training rows.
        estimator, _, data = self._parts()
        proba = estimator.predict_proba(x)
        full = np.zeros((len(x), data.num_classes), dtype=np.float64)
        full[:, estimator.classes_.astype(np.int64)] = proba
        return full

    def _loss(self, x: np.ndarray, y: np.ndarray) -> float:
        if self._is_classification:
            labels = range(self._parts()[2].num_classes)
            return float(log_loss(y, self._probabilities(x), labels=labels))
        return float(mean_squared_error(y, self._parts()[0].predict(x)))

    def train_epoch(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Grow the ensemble to this epoch's size on all rows of ``batches``.

        Args:
            batches: Mini-batches with ``"x"`` and ``"y"`` numpy arrays.

        Returns:
            ``train_loss`` (log loss or MSE on the training rows) and ``n_trees``.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        estimator, settings, _ = self._parts()
        x, y = self._gather(batches, "train_epoch")
        self._epoch += 1
        target = trees_after_epoch(settings.n_estimators, self._epoch, settings.epochs)
        # warm_start keeps the existing trees and fits only the new ones; with nothing to add,
        # fitting would only warn (forest) or redo the bookkeeping (boosting).
        if target > tree_count(estimator):
            estimator.set_params(n_estimators=target)
            estimator.fit(x, y)
        return {"train_loss": self._loss(x, y), "n_trees": tree_count(estimator)}

    def evaluate(self, batches: Iterable[Batch]) -> dict[str, float]:
        """Compute validation metrics over ``batches``.

        Args:
            batches: Mini-batches with ``"x"`` and ``"y"`` numpy arrays.

        Returns:
            ``val_loss`` (log loss) and ``val_accuracy`` for classification; ``val_loss``
            (MSE on standardised targets), ``val_rmse`` and ``val_mae`` (in target units) for
            regression.

        Raises:
            ValueError: If ``batches`` is empty.

        """
        estimator, _, data = self._parts()
        x, y = self._gather(batches, "evaluate")
        if self._is_classification:
            proba = self._probabilities(x)
            labels = range(data.num_classes)
            accuracy = float(np.mean(proba.argmax(axis=1) == y))
            return {"val_loss": float(log_loss(y, proba, labels=labels)), "val_accuracy": accuracy}
        predictions = estimator.predict(x)
        mse = float(mean_squared_error(y, predictions))
        scale = float(getattr(data, "target_std", 1.0))
        return {
            "val_loss": mse,
            "val_rmse": math.sqrt(mse) * scale,
            "val_mae": float(mean_absolute_error(y, predictions)) * scale,
        }

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predict for examples of any shape.

        Args:
            x: Features shaped ``(n, *input_shape)`` or ``(n, prod(input_shape))``.

        Returns:
            Class indices (``int64``, shape ``(n,)``) for classification, or predicted values
            (``float32``, shape ``(n,)``, in standardised units) for regression.

        """
        estimator, _, _ = self._parts()
        dtype = np.int64 if self._is_classification else np.float32
        if len(x) == 0:  # scikit-learn rejects an empty matrix.
            return np.empty((0,), dtype=dtype)
        return np.asarray(estimator.predict(to_features(x))).astype(dtype)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Return class probabilities ``(n, classes)``, or predictions ``(n,)`` for regression.

        What the validation-split metric library reads (:mod:`trainables.metrics`).
        """
        if len(x) == 0:
            return np.empty((0,), dtype=np.float64)
        features = to_features(x)
        if self._is_classification:
            return self._probabilities(features)
        estimator, _, _ = self._parts()
        return np.asarray(estimator.predict(features), dtype=np.float64)

    def save(self, directory: Path) -> None:
        """Write the estimator (its trees and random state) and the epoch count.

        Args:
            directory: Destination; created if missing.

        Raises:
            UntrustedCheckpointError: If the estimator would need a type outside the allow-list.

        """
        estimator, _, _ = self._parts()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_estimator(estimator, directory / MODEL_FILE)
        # The epoch sets the next ensemble size; the tree count alone cannot give it back when
        # several epochs round to the same size.
        (directory / STATE_FILE).write_text(json.dumps({"epoch": self._epoch}))

    def load(self, directory: Path) -> None:
        """Restore the state written by :meth:`save`; call after :meth:`setup`.

        The next :meth:`train_epoch` adds trees to the loaded ensemble, as if training had not
        been interrupted.

        Args:
            directory: Directory holding ``model.skops`` and ``state.json``.

        Raises:
            UntrustedCheckpointError: If the model file needs a type outside the allow-list,
                holds another estimator class than :meth:`setup` built, or a malformed tree.
            ValueError: If ``state.json`` is malformed.

        """
        estimator, _, data = self._parts()
        directory = Path(directory)
        epoch = json.loads((directory / STATE_FILE).read_text()).get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"{directory / STATE_FILE} has no valid epoch: {epoch!r}")
        n_features = math.prod(data.input_shape)
        loaded = load_estimator(directory / MODEL_FILE, type(estimator), n_features)
        if "n_jobs" in loaded.get_params():
            # The checkpoint may come from a worker with a different CPU reservation.
            loaded.set_params(n_jobs=self.cpu_threads)
        self.estimator, self._epoch = loaded, epoch
