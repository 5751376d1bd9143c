"""Log the sweep's best model to MLflow, register it, and load a registered version back."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import infer_signature
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


def _log_keras(
    hparams: dict[str, Any], spec: DataSpec, checkpoint_dir: Path, example: np.ndarray, name: str
) -> Any:
    from trainables.keras_trainable import load_keras_model

    # Imported after (mlflow.keras imports keras at once): TensorFlow's log settings come first.
    mlflow_keras = importlib.import_module("mlflow.keras")
    model = load_keras_model(hparams, spec, checkpoint_dir)
    example = example.astype(np.float32)
    # A signature, not an input example: mlflow.keras 3.17 writes the example before it creates
    # the model folder (FileNotFoundError). The batch dimension of a tensor signature is -1.
    signature = infer_signature(example, np.asarray(model(example, training=False)))
    # The native .keras format: architecture as JSON plus weights, loaded in Keras's safe mode.
    return mlflow_keras.log_model(
        model, name="model", signature=signature, registered_model_name=name
    )


_LOGGERS = {"torch": _log_torch, "sklearn": _log_sklearn, "tensorflow": _log_keras}


def load_registered_model(
    tracking_uri: str, model_name: str, alias: str = CHALLENGER, framework: str = "torch"
) -> Any:
    """Load ``models:/<name>@<alias>`` in its framework's flavour.

    Returns:
        A torch module, a scikit-learn estimator or a Keras model.

    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    uri = f"models:/{model_name}@{alias}"
    if framework == "tensorflow":
        import trainables.keras_runtime  # noqa: F401  (TensorFlow's log settings first)

        return importlib.import_module("mlflow.keras").load_model(uri)
    if framework == "sklearn":
        import mlflow.sklearn

        return mlflow.sklearn.load_model(uri)
    import mlflow.pytorch

    return mlflow.pytorch.load_model(uri)
