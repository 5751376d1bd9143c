"""Log the sweep's best model to MLflow, register it, and load a registered version back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from trainables.protocol import DataSpec

#: Alias given to every newly registered best model; promotion to ``champion`` is a later step.
CHALLENGER = "challenger"


def register_best_model(
    *,
    tracking_uri: str,
    run_id: str,
    model_name: str,
    framework: str,
    hparams: dict[str, Any],
    spec: DataSpec,
    checkpoint_dir: Path,
    input_example: np.ndarray,
) -> str:
    """Log the model in ``checkpoint_dir`` on run ``run_id`` and register it as a new version.

    The new version gets the alias ``challenger``.

    Returns:
        The registered version number, as a string.

    """
    import mlflow

    if framework not in _LOGGERS:
        raise NotImplementedError(f"model logging for {framework!r} is not implemented")
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        info = _LOGGERS[framework](hparams, spec, checkpoint_dir, input_example, model_name)
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri).set_registered_model_alias(model_name, CHALLENGER, version)
    return version


def _log_torch(
    hparams: dict[str, Any], spec: DataSpec, checkpoint_dir: Path, example: np.ndarray, name: str
) -> Any:
    import mlflow.pytorch

    from trainables.torch_trainable import load_torch_model

    model = load_torch_model(hparams, spec, checkpoint_dir)
    # pt2 (torch.export) loads back without unpickling our classes, unlike "pickle".
    return mlflow.pytorch.log_model(
        model,
        name="model",
        serialization_format="pt2",
        input_example=example.astype(np.float32),
        registered_model_name=name,
    )


def _log_sklearn(
    hparams: dict[str, Any], spec: DataSpec, checkpoint_dir: Path, example: np.ndarray, name: str
) -> Any:
    import mlflow.sklearn

    from trainables.sklearn_trainable import ALLOWED_UNTRUSTED_TYPES, SklearnTrainable

    trainable = SklearnTrainable()
    trainable.setup(hparams, spec, "cpu")
    trainable.load(checkpoint_dir)  # checks the file's types and trees before use
    # skops instead of pickle: loading the registered model cannot run arbitrary code.
    return mlflow.sklearn.log_model(
        trainable.estimator,
        name="model",
        serialization_format="skops",
        skops_trusted_types=sorted(ALLOWED_UNTRUSTED_TYPES),
        input_example=example.reshape(len(example), -1).astype(np.float32),
        registered_model_name=name,
    )


_LOGGERS = {"torch": _log_torch, "sklearn": _log_sklearn}


def load_registered_model(
    tracking_uri: str, model_name: str, alias: str = CHALLENGER, framework: str = "torch"
) -> Any:
    """Load ``models:/<name>@<alias>`` in its framework's flavour (torch module or estimator)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{model_name}@{alias}"
    if framework == "sklearn":
        import mlflow.sklearn

        return mlflow.sklearn.load_model(uri)
    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri)
