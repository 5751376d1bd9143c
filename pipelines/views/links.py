"""Links into the MLflow UI for a sweep."""

from __future__ import annotations

#: MLflow 3 opens experiments in a GenAI view by default; this asks for the classic ML view.
ML_VIEW = "workflowType=machine_learning"


def experiment_link(base_url: str, experiment_id: str) -> str:
    """Return the UI link that lists an experiment's runs in the machine-learning view."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}?{ML_VIEW}"


def run_link(base_url: str, experiment_id: str, run_id: str) -> str:
    """Return the UI link to one run (e.g. a sweep's parent run)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"
