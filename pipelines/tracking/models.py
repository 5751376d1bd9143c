"""Log the sweep's best model to MLflow, register it, and load a registered version back.

Nothing here knows a framework: the trainable's registry entry rebuilds the model from its
checkpoint (``TrainableInfo.export_model``) and names the MLflow flavour that logs and loads it,
so a new framework needs no change here.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.models import infer_signature

from pipelines.tracking import schema
from pipelines.tracking.client import client_for
from trainables.protocol import DataSpec
from trainables.registry import TRAINABLES, TrainableInfo


def register_best_model(
    *,
    tracking_uri: str,
    run_id: str,
    model_name: str,
    info: TrainableInfo,
    hparams: dict[str, Any],
    spec: DataSpec,
    checkpoint_dir: Path,
    input_example: np.ndarray,
) -> str:
    """Log the model in ``checkpoint_dir`` on run ``run_id`` and register it as a new version.

    The new version gets the alias ``challenger`` and a tag naming its framework.

    Returns:
        The registered version number, as a string.

    """
    import mlflow

    exported = info.export_model(hparams, spec, checkpoint_dir, input_example)
    # Imported after the export: the trainable's module sets its framework's runtime options
    # (TensorFlow's log level, for one) before the flavour imports the framework.
    flavour = _flavour(info)
    options = dict(exported.options)
    if exported.signature_data is not None:
        options["signature"] = infer_signature(*exported.signature_data)
    if exported.input_example is not None:
        options["input_example"] = exported.input_example
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id):
        logged = flavour.log_model(
            exported.model, name=schema.MODEL, registered_model_name=model_name, **options
        )
    version = str(logged.registered_model_version)
    client = client_for(tracking_uri)
    client.set_model_version_tag(model_name, version, schema.VERSION_FRAMEWORK, info.framework)
    client.set_registered_model_alias(model_name, schema.CHALLENGER, version)
    return version


def load_registered_model(
    tracking_uri: str, model_name: str, alias: str = schema.CHALLENGER
) -> Any:
    """Load ``models:/<name>@<alias>`` in the flavour of the framework that trained it.

    The framework is read from the version's tag (or its sweep run's), never assumed.

    Returns:
        The framework's model object: a torch module, a scikit-learn estimator, a Keras model.

    Raises:
        LookupError: If the alias does not exist or the version names no known framework.

    """
    import mlflow

    client = client_for(tracking_uri)
    version = client.get_model_version_by_alias(model_name, alias)
    framework = (version.tags or {}).get(schema.VERSION_FRAMEWORK)
    if framework is None and version.run_id:  # registered before versions carried the tag
        framework = client.get_run(version.run_id).data.tags.get(schema.FRAMEWORK)
    if framework not in TRAINABLES:
        raise LookupError(f"{model_name}@{alias} names no known framework: {framework!r}")
    info = TRAINABLES[framework]
    info.load_class()  # the framework's runtime options first (see register_best_model)
    mlflow.set_tracking_uri(tracking_uri)
    return _flavour(info).load_model(f"models:/{model_name}@{alias}")


def _flavour(info: TrainableInfo) -> Any:
    if info.mlflow_flavor is None:
        raise NotImplementedError(f"the {info.framework} trainable names no MLflow flavour")
    return importlib.import_module(f"mlflow.{info.mlflow_flavor}")
