"""Save the sweep's best model in MLflow's format, and load a registered version back.

Nothing here knows a framework: the trainable's registry entry rebuilds the model from its
checkpoint (``TrainableInfo.export_model``) and names the MLflow flavour that logs and loads it,
so a new framework needs no change here.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import infer_signature

from pipelines.secrets import with_credentials
from pipelines.tracking import schema
from pipelines.tracking.client import client_for
from trainables.protocol import DataSpec
from trainables.registry import TRAINABLES, TrainableInfo


def save_best_model(
    *,
    info: TrainableInfo,
    hparams: dict[str, Any],
    spec: DataSpec,
    checkpoint_dir: Path,
    input_example: np.ndarray,
    folder: Path,
) -> None:
    """Save the model in ``checkpoint_dir`` as an MLflow model folder at ``folder`` (new).

    Saved locally, not logged: the sweep's spool logs and registers it
    (:meth:`~pipelines.tracking.sweep_run.SweepRun.register_model`), so an MLflow outage at the
    end of a sweep delays the registration instead of losing it.
    """
    import mlflow.pyfunc

    if not info.can_export:  # the user's trainable class: its checkpoint, served by a wrapper
        from pipelines.tracking.checkpoint_model import CHECKPOINT_ARTIFACT, CheckpointModel

        mlflow.pyfunc.save_model(
            str(folder),
            python_model=CheckpointModel(info, hparams, spec),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_dir)},
        )
        return
    exported = info.export_model(hparams, spec, checkpoint_dir, input_example)
    # Imported after the export: the trainable's module sets its framework's runtime options
    # (TensorFlow's log level, for one) before the flavour imports the framework.
    flavour = _flavour(info)
    options = dict(exported.options)
    if exported.signature_data is not None:
        options["signature"] = infer_signature(*exported.signature_data)
    if exported.input_example is not None:
        options["input_example"] = exported.input_example
    # MLflow infers pip requirements and warns about every local version label (torch's "+cpu").
    logging.getLogger("mlflow.utils.requirements_utils").setLevel(logging.ERROR)
    flavour.save_model(exported.model, str(folder), **options)


def load_registered_model(
    tracking_uri: str, model_name: str, alias: str = schema.CHALLENGER
) -> Any:
    """Load ``models:/<name>@<alias>`` in the flavour of the framework that trained it.

    The framework is read from the version's tag (or its sweep run's), never assumed.

    Returns:
        The framework's model object: a torch module, a scikit-learn estimator, a Keras model.

    Raises:
        MlflowException: If the alias does not exist.

    """
    import mlflow

    client = client_for(tracking_uri)
    version = client.get_model_version_by_alias(model_name, alias)
    framework = (version.tags or {}).get(schema.VERSION_FRAMEWORK)
    if framework is None and version.run_id:  # registered before versions carried the tag
        framework = client.get_run(version.run_id).data.tags.get(schema.FRAMEWORK)
    uri = f"models:/{model_name}@{alias}"
    mlflow.set_tracking_uri(with_credentials(tracking_uri))
    info = TRAINABLES.get(framework or "")
    if info is None or info.mlflow_flavor is None:
        # The user's own code, registered in a flavour of its choosing: MLflow's generic one.
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(uri)
    info.load_class()  # the framework's runtime options first (see register_best_model)
    return _flavour(info).load_model(uri)


def _flavour(info: TrainableInfo) -> Any:
    if info.mlflow_flavor is None:
        raise NotImplementedError(f"the {info.framework} trainable names no MLflow flavour")
    return importlib.import_module(f"mlflow.{info.mlflow_flavor}")
