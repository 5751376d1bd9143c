"""tunepipe: distributed hyperparameter sweeps on Ray Tune, tracked in MLflow.

Public entry points are imported lazily so ``import pipelines`` stays cheap and works without
torch or TensorFlow installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import ExperimentConfig, load_config
    from pipelines.retrain.run import RetrainOutcome, run_retrain
    from pipelines.sweep.finish import SweepSummary
    from pipelines.sweep.run import run_sweep
    from pipelines.sweep.submit import SweepJob, submit_sweep

__all__ = [
    "ExperimentConfig",
    "RetrainOutcome",
    "SweepJob",
    "SweepSummary",
    "load_config",
    "run_retrain",
    "run_sweep",
    "submit_sweep",
]

_LAZY = {
    "run_sweep": "pipelines.sweep.run",
    "SweepSummary": "pipelines.sweep.finish",
    "submit_sweep": "pipelines.sweep.submit",
    "SweepJob": "pipelines.sweep.submit",
    "run_retrain": "pipelines.retrain.run",
    "RetrainOutcome": "pipelines.retrain.run",
    "load_config": "pipelines.config",
    "ExperimentConfig": "pipelines.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
