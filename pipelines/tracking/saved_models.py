"""A model a training function hands over (``ctx.log_model``), saved in MLflow's format.

This runs inside the trial: the model is saved with the trial's checkpoint as an MLflow model
folder (an ``MLmodel`` file and the flavour's files), so the driver can register the best
trial's model when the sweep ends without the model object ever leaving the trial. It lives in
tracking because MLflow's formats are tracking's business; the trainable gets the function
handed to it and never imports MLflow.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np


class _Predicts(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """A model with a ``predict`` method, served through MLflow's generic pyfunc flavour."""

    def __init__(self, model: Any) -> None:
        self.model = model

    # An ndarray hint: MLflow hands the rows over as an array and infers no schema.
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        """Return the wrapped model's predictions."""
        return np.asarray(self.model.predict(model_input))


def predict_saved_model(folder: Path, x: np.ndarray) -> np.ndarray:
    """Load the MLflow model saved in ``folder`` (pyfunc) and predict the rows of ``x``."""
    model = mlflow.pyfunc.load_model(str(folder))
    return np.asarray(model.predict(x))


def save_model(model: Any, flavor: str | None, folder: Path, options: Mapping[str, Any]) -> None:
    """Save ``model`` in MLflow flavour ``flavor`` into ``folder`` (a new directory).

    Args:
        model: The model object.
        flavor: An MLflow flavour module name (``"sklearn"``, ``"xgboost"``, ``"pytorch"``...);
            None: the generic pyfunc flavour around the model's ``predict`` (MLflow pickles
            the model with cloudpickle then, so it loads back where the same code is installed).
        folder: Where to write it (must not exist yet).
        options: Extra arguments for the flavour's ``save_model``.

    """
    # MLflow infers pip requirements and warns about every local version label it meets
    # (torch's "+cpu"): noise in a trial's log, and nothing the user can act on here.
    logging.getLogger("mlflow.utils.requirements_utils").setLevel(logging.ERROR)
    if flavor is None:
        mlflow.pyfunc.save_model(str(folder), python_model=_Predicts(model), **options)
        return
    flavour = importlib.import_module(f"mlflow.{flavor}")
    flavour.save_model(model, str(folder), **options)
