"""Which trainables exist, what hyperparameters they take and which metrics they report.

Pure data, no framework imports: the config validator uses it to reject a typo'd hyperparameter
or a metric the trainable never reports before any trial starts, the adapter uses it to import
the implementation lazily inside the trial, and tracking uses it to log and load the best model
in the framework's MLflow flavour. Everything the pipeline knows about a framework is in its
entry here, so a new framework is a new module under ``trainables/`` plus one entry.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainables.precision_settings import PRECISION_HPARAMS
from trainables.protocol import DataSpec, ExportedModel

#: Keys the epoch loop (adapter) handles for every framework: the same key means the same thing in
#: torch, Keras and scikit-learn trials. (The data pipeline adds its augmentation keys.)
LOOP_HPARAMS = frozenset(
    {"epochs", "batch_size", "seed"}
    | {"lr_schedule", "lr_decay", "lr_step_size", "lr_factor", "lr_warmup_epochs", "lr_min"}
    | {"lr_patience", "lr_min_delta"}
    | {"early_stopping_patience", "early_stopping_min_delta", "early_stopping_restore_best"}
)


@dataclass(frozen=True)
class TrainableInfo:
    """What the pipeline knows about one framework's trainable.

    Attributes:
        framework: Config name, e.g. ``"torch"``.
        implementation: ``"module:Class"`` imported only inside a trial.
        models: Model names the implementation builds.
        hparams: Hyperparameter keys it understands (besides :data:`LOOP_HPARAMS`).
        metrics: Metric names reported per task.
        install_hint: What to install when the framework is missing.
        requires: Top-level modules the implementation imports (checked before a sweep).
        packages: Distributions whose versions can change a trial's numbers (recorded with
            every trial for reproducibility).
        exporter: ``"module:function"`` that turns a checkpoint into an
            :class:`~trainables.protocol.ExportedModel`; None: the best model cannot be
            registered (a sweep that asks for it is refused before it starts).
        mlflow_flavor: The ``mlflow.<flavor>`` module that logs and loads the exported model.
        builder: The user's model builder, ``"module:function"`` or the function itself, that
            the implementation trains instead of its built-in models (None: the built-ins).
        search_path: Folder the user's module is imported from (the config file's folder, or
            the working directory), put on ``sys.path`` in the trial too; None: installed.
        user_code: The entry runs the user's code, which reads hyperparameters of its own:
            any key is accepted.
        required_hparams: Hyperparameters every sweep must fix or search.
        own_loop: The user's training function runs its own loop and reports itself (the
            adapter gives it a context instead of driving an epoch loop); ``builder`` names it.

    """

    framework: str
    implementation: str | type[Any]
    models: tuple[str, ...]
    hparams: frozenset[str]
    metrics: dict[str, tuple[str, ...]]
    install_hint: str
    requires: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    exporter: str | None = None
    mlflow_flavor: str | None = None
    builder: Any = None
    search_path: str | None = None
    user_code: bool = False
    required_hparams: tuple[str, ...] = ("epochs", "batch_size")
    own_loop: bool = False

    def missing_modules(self) -> list[str]:
        """Return the required modules that are not installed (found without importing them)."""
        return [name for name in self.requires if not _installed(name)]

    def load_class(self) -> type[Any]:
        """Import and return the implementation class (the framework import happens here)."""
        return self._load(self.implementation)  # type: ignore[no-any-return]

    def reference(self) -> str | None:
        """Return the user's code as ``module:attribute``, to import it again (a replay).

        None for a bundled model, or an object defined in ``__main__`` (a notebook's).
        """
        code = self.builder if self.builder is not None else self.implementation
        if not self.user_code:
            return None
        if isinstance(code, str):
            return code
        module = getattr(code, "__module__", "__main__")
        return None if module == "__main__" else f"{module}:{code.__qualname__}"

    def load_function(self) -> Callable[..., Any]:
        """Return the user's training function (an ``own_loop`` entry's ``builder``)."""
        return self._load(self.builder)  # type: ignore[no-any-return]

    def instantiate(self) -> Any:
        """Return a new implementation instance, given the user's builder if there is one."""
        implementation = self.load_class()
        if self.builder is None:
            return implementation()
        return implementation(build=self._load(self.builder))

    @property
    def batch_framework(self) -> str:
        """The framework whose batches the entry's trials take: ``custom`` for numpy ones.

        Only the bundled trainables (built-in models or the user's model builder) take batches
        as their framework's tensors on the trial's device; the user's own class and training
        function get numpy batches, whatever they declare.
        """
        if self.own_loop or (self.user_code and self.builder is None):
            return "custom"
        return self.framework

    @property
    def can_export(self) -> bool:
        """Whether the best model of a sweep can be logged and registered in MLflow."""
        return self.exporter is not None and self.mlflow_flavor is not None

    def export_model(
        self, hparams: dict[str, Any], spec: DataSpec, checkpoint_dir: Path, example: np.ndarray
    ) -> ExportedModel:
        """Rebuild the model saved in ``checkpoint_dir`` for logging (see :attr:`exporter`).

        Raises:
            NotImplementedError: If the framework has no exporter (refused before a sweep).

        """
        if self.exporter is None:
            raise NotImplementedError(f"the {self.framework} trainable cannot export a model")
        export: Callable[..., ExportedModel] = self._load(self.exporter)
        build = None if self.builder is None else self._load(self.builder)
        return export(hparams, spec, checkpoint_dir, example, build=build)

    def _load(self, target: Any) -> Any:
        """Import ``"module:attribute"`` (an object passed in from Python is used as it is)."""
        if not isinstance(target, str):
            return target
        if self.search_path is not None and self.search_path not in sys.path:
            # The user's module lives beside the config, not in an installed package.
            sys.path.insert(0, self.search_path)
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise ModuleNotFoundError(
                f"{self.framework} trainable needs {exc.name!r}: {self.install_hint}"
            ) from exc
        return getattr(module, attribute)

    def accepted_hparams(self) -> frozenset[str] | None:
        """Return every hyperparameter key a trial accepts; None: any (user code reads its own)."""
        return None if self.user_code else self.hparams | LOOP_HPARAMS


#: The neural-network keys: torch and Keras read every one of them with the same meaning
#: (see trainables.optimizer_settings, loss_settings and model_settings).
NEURAL_HPARAMS = frozenset(
    {"optimizer", "lr", "momentum", "nesterov", "rho", "eps"}
    | {"initial_accumulator_value", "beta1", "beta2", "hypergradient", "hyper_lr"}
    | {"weight_decay", "l1", "l2", "dropout", "loss", "huber_delta"}
    | {"hidden_layers", "hidden_units", "channels"}
    | PRECISION_HPARAMS
)
NEURAL_METRICS = {
    "classification": ("train_loss", "lr", "val_loss", "val_accuracy"),
    "regression": ("train_loss", "lr", "val_loss", "val_rmse", "val_mae"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install is as good as none
        return False


TRAINABLES: dict[str, TrainableInfo] = {
    "torch": TrainableInfo(
        framework="torch",
        implementation="trainables.torch_trainable:TorchTrainable",
        models=("mlp", "cnn"),
        hparams=NEURAL_HPARAMS,
        metrics=NEURAL_METRICS,
        install_hint="pip install 'tunepipe[torch]'",
        requires=("torch",),
        packages=("torch",),
        exporter="trainables.torch_trainable:export_model",
        mlflow_flavor="pytorch",
    ),
    "tensorflow": TrainableInfo(
        framework="tensorflow",
        implementation="trainables.keras_trainable:KerasTrainable",
        models=("mlp", "cnn"),
        hparams=NEURAL_HPARAMS,
        metrics=NEURAL_METRICS,
        install_hint="pip install 'tunepipe[tensorflow]'",
        requires=("tensorflow", "keras"),
        packages=("tensorflow-cpu", "tensorflow", "keras"),
        exporter="trainables.keras_trainable:export_model",
        mlflow_flavor="keras",
    ),
    "sklearn": TrainableInfo(
        framework="sklearn",
        implementation="trainables.sklearn_trainable:SklearnTrainable",
        models=("random_forest", "gradient_boosting"),
        hparams=frozenset({"n_estimators", "max_depth", "min_samples_leaf", "lr"}),
        metrics={
            "classification": ("train_loss", "n_trees", "val_loss", "val_accuracy"),
            "regression": ("train_loss", "n_trees", "val_loss", "val_rmse", "val_mae"),
        },
        install_hint="pip install scikit-learn skops",
        requires=("sklearn", "skops"),
        packages=("scikit-learn", "skops"),
        exporter="trainables.sklearn_trainable:export_model",
        mlflow_flavor="sklearn",
    ),
    # The user's training function, train(hp, ctx): picked by trainable.target, never by name
    # alone. It reports what it likes (its metrics are found by a dry run before the sweep)
    # and hands its model to ctx.log_model; "epochs" bounds its reports (the schedulers'
    # horizon).
    "function": TrainableInfo(
        framework="function",
        # The runner the adapter calls with the user's function (own_loop: no class to build).
        implementation="trainables.function_trainable:run_training_function",
        models=(),
        hparams=frozenset(),
        metrics={},
        install_hint="set trainable.target to the training function, package.module:function",
        user_code=True,
        required_hparams=("epochs",),
        own_loop=True,
    ),
}


def get_trainable_info(framework: str) -> TrainableInfo:
    """Return the registry entry for ``framework``.

    Raises:
        KeyError: If the framework is unknown (callers turn this into a config error).

    """
    return TRAINABLES[framework]
