"""Printing a finished sweep for a person: top trials, the best configuration, where to look."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.links import run_link
from pipelines.results import best_of_trial

#: Where ``tunepipe ui`` serves by default.
DEFAULT_UI_URL = "http://127.0.0.1:5000"

TOP_K = 5


def top_trials(results: Any, metric: str, mode: str, k: int = TOP_K) -> list[tuple[Any, float]]:
    """Return the ``k`` best (result, value) pairs, best first; no diverged or failed trials."""
    scored = []
    for result in results:
        found = best_of_trial(result, metric, mode)
        if found is not None:
            scored.append((result, found[0]))
    scored.sort(key=lambda pair: pair[1], reverse=(mode == "max"))
    return scored[:k]


def print_summary(summary: Any, config_path: Path, console: Console) -> None:
    """Print the top-trials table, the best configuration and the commands to look further."""
    table = Table(title=f"Top trials by {summary.metric} ({summary.mode})")
    searched = [name for name in summary.searched if name in summary.best_config]
    for column in ("trial", summary.metric, "epochs", *searched):
        table.add_column(column)
    for result, value in top_trials(summary.results, summary.metric, summary.mode):
        frame = result.metrics_dataframe
        cells = [_short(result.config.get(name)) for name in searched]
        table.add_row(
            str(result.metrics.get("trial_id", "")), f"{value:.4f}", str(len(frame)), *cells
        )
    console.print(table)
    reasons = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in summary.end_reasons.items() if n)
    console.print(f"Trials: {reasons} in {summary.elapsed_s:.0f}s")
    console.print(
        f"[bold]Best {summary.metric}[/]: {summary.best_metric:.4f} "
        f"(trial {summary.best_trial_id}, epoch {summary.best_epoch})"
    )
    console.print(f"[bold]Best config[/]: {summary.best_config}", highlight=False)
    model = f"models:/{summary.experiment_name}/{summary.model_version}"
    if not getattr(summary, "new_best", True):
        console.print(
            "The extension found nothing better: the sweep's best stands"
            + (f" ({model})" if summary.model_version else ""),
            highlight=False,
        )
    else:
        console.print(f"Best checkpoint: {summary.best_checkpoint}", highlight=False)
        if summary.model_version:
            console.print(f"Registered model: {model} (alias challenger)", highlight=False)
    console.print(
        f"MLflow: {summary.mlflow_tracking_uri} · sweep run {summary.mlflow_parent_run_id}",
        highlight=False,
    )
    link = run_link(DEFAULT_UI_URL, summary.mlflow_experiment_id, summary.mlflow_parent_run_id)
    console.print(
        f"Look at it in the MLflow UI: [bold]tunepipe ui {config_path}[/], then open {link}",
        highlight=False,
        soft_wrap=True,  # a wrapped link is a broken link
    )


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}"
    return str(value)
