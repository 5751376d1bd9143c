"""``tunepipe report``: a finished sweep, read back from MLflow, for people and for files.

Works for sweeps run anywhere that logged to a reachable tracking store: it needs no Ray results,
only the MLflow parent run and its children. Prints the top trials, the best configuration and
the hyperparameter importance, and writes the sweep's plots to a folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.errors import ConfigError
from pipelines.sweep_history import SweepHistory, load_sweep_history

TOP_K = 5


def find_sweep_run(client: Any, experiment: str, run_id: str | None = None) -> str:
    """Return the run id of the newest sweep of ``experiment`` (or check ``run_id`` is a sweep).

    Raises:
        ConfigError: If there is no such experiment or sweep in the tracking store.

    """
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
        raise ConfigError(
            f"no MLflow experiment named {experiment!r}",
            key="SWEEP",
            fix=f"use one of: {', '.join(names) or 'none yet, run a sweep first'}",
        )
    query = "tags.`tunepipe.kind` = 'sweep'"
    if run_id:
        query += f" and attributes.run_id = '{run_id}'"
    runs = client.search_runs(
        [found.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not runs:
        raise ConfigError(
            f"experiment {experiment!r} has no sweep run" + (f" {run_id}" if run_id else ""),
            key="SWEEP",
            fix="check the name, --run and --tracking-uri",
        )
    return str(runs[0].info.run_id)


def print_report(history: SweepHistory, best_params: dict[str, str], console: Console) -> None:
    """Print the top trials, the best configuration and the importance of each hyperparameter."""
    from pipelines.plots import importance_data

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
    from mlflow.tracking import MlflowClient

    from pipelines.plots import write_plots

    client = MlflowClient(tracking_uri)
    parent = find_sweep_run(client, experiment, run_id)
    history = load_sweep_history(client, parent)
    best = {
        key[len("best.") :]: value
        for key, value in client.get_run(parent).data.tags.items()
        if key.startswith("best.")
    }
    print_report(history, best, console)
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = write_plots(history, out)
    for path in plots.values():
        console.print(f"wrote {path}", highlight=False)
    return plots
