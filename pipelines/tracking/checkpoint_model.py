"""The user's trainable class, registered as an MLflow pyfunc model that loads its checkpoint.

A class implementing the trainable protocol has no MLflow flavour of its own. Its best
checkpoint is logged as the model's artifact, and this small wrapper rebuilds the trainable from
it when the model is loaded (``mlflow.pyfunc.load_model``): ``setup`` with the trial's
hyperparameters, ``load`` of the checkpoint, then ``scores`` (class probabilities, or
predictions) or ``predict`` for every call. What MLflow pickles is this wrapper: the reference to
the user's class and plain data, never a trained object.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from trainables.protocol import DataSpec
from trainables.registry import TrainableInfo

#: The artifact key the checkpoint is logged under.
CHECKPOINT_ARTIFACT = "checkpoint"


class CheckpointModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Serves a trainable class's checkpoint through MLflow's pyfunc interface.

    Args:
        info: The trainable's registry entry (the user's class, by reference).
        hparams: The best trial's hyperparameters.
        spec: The data description the model was built for.

    """

    def __init__(self, info: TrainableInfo, hparams: dict[str, Any], spec: DataSpec) -> None:
        self.info = info
        self.hparams = hparams
        self.spec = dataclasses.asdict(spec)
        self.trainable: Any = None

    def load_context(self, context: Any) -> None:
        """Rebuild the trainable and load the logged checkpoint into it."""
        spec = DataSpec(**{**self.spec, "input_shape": tuple(self.spec["input_shape"])})
        trainable = self.info.instantiate()
        trainable.setup(self.hparams, spec, "cpu")
        trainable.load(Path(context.artifacts[CHECKPOINT_ARTIFACT]))
        self.trainable = trainable

    # An ndarray hint: MLflow hands the rows over as an array and infers no schema.
    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        """Return class probabilities (or predictions) for the rows of ``model_input``."""
        x = np.asarray(model_input, dtype=np.float32)
        scores = getattr(self.trainable, "scores", None)
        if scores is not None:
            return np.asarray(scores(x))
        return np.asarray(self.trainable.predict(x))
