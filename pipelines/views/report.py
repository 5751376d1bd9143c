"""Printing a sweep for a person: its top trials, the best configuration and where to look.

Right after it ran (``tunepipe sweep``), or read back from MLflow (``tunepipe report``).
``tunepipe report`` works for sweeps run anywhere that logged to a reachable tracking store: it
needs no Ray results, only the MLflow parent run and its children. It also prints the
hyperparameter importance and writes the sweep's plots to a folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.errors import ConfigError
from pipelines.tracking import queries
from pipelines.tracking.history import SweepHistory, best_params, load_sweep_history
from pipelines.views.links import run_link

#: Where ``tunepipe ui`` serves by default.
DEFAULT_UI_URL = "http://127.0.0.1:5000"

TOP_K = 5


def print_summary(summary: Any, config_path: Path, console: Console) -> None:
    """Print a finished sweep's top trials, best configuration and the commands to look further.

    Args:
        summary: A :class:`~pipelines.sweep.finish.SweepSummary`.
        config_path: The experiment file (for the ``tunepipe ui`` command shown).
        console: Where to print.

    """
    table = Table(title=f"Top trials by {summary.metric} ({summary.mode})")
    searched = [name for name in summary.searched if name in summary.best_config]
    for column in ("trial", summary.metric, "epochs", *searched):
        table.add_column(column)
    for trial in summary.top:
        cells = [_short(trial.config.get(name)) for name in searched]
        table.add_row(trial.trial_id, f"{trial.value:.4f}", str(trial.epochs), *cells)
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
    pending = getattr(summary, "mlflow_pending", 0)
    if pending:
        console.print(
            f"[bold yellow]MLflow was unreachable:[/] {pending} writes wait in the spool "
            f"{summary.spool}; `tunepipe sync` (or the next tunepipe command) writes them "
            "when it is back",
            highlight=False,
            soft_wrap=True,
        )
        if summary.mlflow_parent_run_id.startswith("key:"):
            return  # no run id yet, so no link
    link = run_link(DEFAULT_UI_URL, summary.mlflow_experiment_id, summary.mlflow_parent_run_id)
    console.print(
        f"Look at it in the MLflow UI: [bold]tunepipe ui {config_path}[/], then open {link}",
        highlight=False,
        soft_wrap=True,  # a wrapped link is a broken link
    )


def find_sweep_run(tracking_uri: str, experiment: str, run_id: str | None = None) -> str:
    """Return the run id of the newest sweep of ``experiment`` (or check ``run_id`` is a sweep).

    Raises:
        ConfigError: If there is no such experiment or sweep in the tracking store.

    """
    experiment_id = queries.find_experiment(tracking_uri, experiment)
    if experiment_id is None:
        names = queries.experiment_names(tracking_uri)
        raise ConfigError(
            f"no MLflow experiment named {experiment!r}",
            key="SWEEP",
            fix=f"use one of: {', '.join(names) or 'none yet, run a sweep first'}",
        )
    found = queries.latest_sweep(tracking_uri, experiment_id, run_id)
    if found is None:
        raise ConfigError(
            f"experiment {experiment!r} has no sweep run" + (f" {run_id}" if run_id else ""),
            key="SWEEP",
            fix="check the name, --run and --tracking-uri",
        )
    return found


def print_report(history: SweepHistory, best_params: dict[str, str], console: Console) -> None:
    """Print the top trials, the best configuration and the importance of each hyperparameter."""
    from pipelines.views.importance import importance_data

    ranked = history.ranked()
    table = Table(title=f"{history.name}: top trials by {history.metric} ({history.mode})")
    for column in ("trial", history.metric, "epochs", "ended", *history.searched):
        table.add_column(column)
    for trial in ranked[:TOP_K]:
        epochs = len(trial.metrics.get(history.metric, []))
        cells = [trial.params.get(name, "") for name in history.searched]
        value = history.best(trial)
        table.add_row(trial.name, f"{value:.4f}", str(epochs), trial.end_reason, *cells)
    console.print(table)
    reasons: dict[str, int] = {}
    for trial in history.trials:
        reasons[trial.end_reason] = reasons.get(trial.end_reason, 0) + 1
    console.print(
        "Trials: " + ", ".join(f"{n} {r.replace('_', ' ')}" for r, n in sorted(reasons.items()))
    )
    console.print(f"[bold]Best config[/]: {best_params}", highlight=False)
    importance = importance_data(history)
    if importance:
        shown = ", ".join(f"{name} {value:.2f}" for name, value in importance.items())
        console.print(f"[bold]Importance[/] for {history.metric}: {shown}", highlight=False)


def report(
    tracking_uri: str, experiment: str, out: Path, console: Console, run_id: str | None = None
) -> dict[str, Path]:
    """Print a sweep's report and write its plots under ``out``; return the plot files."""
    from pipelines.views.plots import write_plots

    parent = find_sweep_run(tracking_uri, experiment, run_id)
    history = load_sweep_history(tracking_uri, parent)
    print_report(history, best_params(tracking_uri, parent), console)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = write_plots(history, out)
    for path in plots.values():
        console.print(f"wrote {path}", highlight=False)
    return plots


def _short(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}"
    return str(value)
