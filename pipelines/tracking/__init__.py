"""MLflow tracking, written from the driver only (trainables never talk to MLflow).

- :mod:`.sweep_run`: the experiment and the sweep's parent run (config, search space, best result);
- :mod:`.callback`: a Tune callback that mirrors each trial as a nested child run;
- :mod:`.models`: logging the best model and registering it with alias ``challenger``.
"""

import os

# Private by default: MLflow 3 reports usage to its developers unless told not to (and each
# wrapped client call pays for it). A user who wants it sets the variable to "false".
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipelines.tracking.callback import MlflowTrialCallback
from pipelines.tracking.models import load_registered_model, register_best_model
from pipelines.tracking.sweep_run import SweepRun

__all__ = ["MlflowTrialCallback", "SweepRun", "load_registered_model", "register_best_model"]
