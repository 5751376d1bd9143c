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

    if framework != "torch":
        raise NotImplementedError(f"model logging for {framework!r} is not implemented")
    import mlflow.pytorch

    from trainables.torch_trainable import load_torch_model

    model = load_torch_model(hparams, spec, checkpoint_dir)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        # pt2 (torch.export) loads back without unpickling our classes, unlike "pickle".
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            serialization_format="pt2",
            input_example=input_example.astype(np.float32),
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    MlflowClient(tracking_uri).set_registered_model_alias(model_name, CHALLENGER, version)
    return version


def load_registered_model(tracking_uri: str, model_name: str, alias: str = CHALLENGER) -> Any:
    """Load ``models:/<name>@<alias>`` as a callable PyTorch module."""
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.pytorch.load_model(f"models:/{model_name}@{alias}")
