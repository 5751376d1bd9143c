"""Tune from Python, as in a notebook: a DataFrame, a search space dict and a model builder.

Run it: ``.venv/bin/python examples/notebook/tune_dataframe.py``. Nothing here is a file
tunepipe reads: the config is a dict, the search space a dict, the data a pandas DataFrame (the
breast-cancer table that ships with scikit-learn), and the model a function defined right here.
tunepipe saves the space and the data under ``.tunepipe/inputs/`` and records them like files.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from sklearn.datasets import load_breast_cancer
from torch import nn

from pipelines import run_sweep


def build(hp: dict[str, Any], spec: Any) -> nn.Module:
    """Return a small MLP for the 30 features; ``width`` is this model's own hyperparameter."""
    width = int(hp["width"])
    return nn.Sequential(
        nn.Linear(spec.input_shape[0], width),
        nn.ReLU(),
        nn.Linear(width, spec.num_outputs),
    )


CONFIG = {
    "name": "example_notebook",
    "metric": "val_roc_auc",  # from the metric library, on the validation split
    "mode": "max",
    "data": {"label_column": "target"},
    "trainable": {
        "framework": "torch",
        "params": {"epochs": 4, "batch_size": 64, "optimizer": "adam"},
        "metrics": ["val_f1_macro"],
    },
    "search": {"method": "random", "num_samples": 3, "seed": 0},
}
SPACE = {
    "lr": {"type": "loguniform", "low": 1.0e-3, "high": 3.0e-2},
    "width": {"type": "categorical", "values": [16, 32]},
}


def main() -> None:
    """Run the sweep and print where to look."""
    frame = load_breast_cancer(as_frame=True).frame
    summary = run_sweep(
        CONFIG,
        trainable=build,
        search_space=SPACE,
        data=frame,
        progress=os.environ.get("TUNEPIPE_PROGRESS", "1") == "1",
    )
    print(f"best {summary.metric}: {summary.best_metric:.4f} with {summary.best_config}")
    print(f"registered: models:/{summary.experiment_name}/{summary.model_version}")
    sys.exit(0 if summary.best_metric > 0.9 else 1)


if __name__ == "__main__":
    main()
