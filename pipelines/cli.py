"""The ``tunepipe`` command line: ``sweep``, ``validate`` and ``ui``.

User mistakes (bad config, search space or data) print one line and exit with code 2, never a
traceback; they are detected before any cluster work starts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipelines.errors import UserInputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Distributed hyperparameter sweeps on Ray Tune, tracked in MLflow.",
)
# Not a terminal (CI, a log file): rich would wrap tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML file.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set search.num_samples=8."),
]


def _fail(exc: UserInputError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


@app.command()
def sweep(
    config: ConfigArg,
    set_: SetOpt = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")
    ] = None,
) -> None:
    """Run a sweep, print the best configuration and where to look."""
    from pipelines.config import load_config
    from pipelines.overrides import parse_set_options
    from pipelines.report import print_summary
    from pipelines.tuning import run_sweep

    try:
        loaded = load_config(config, parse_set_options(set_ or []))
        summary = run_sweep(loaded, address=address)
    except UserInputError as exc:
        raise _fail(exc) from None
    print_summary(summary, config, console)


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check config, search space and data, and run one training step (no sweep)."""
    from pipelines.config import load_config
    from pipelines.dry_run import dry_run
    from pipelines.overrides import parse_set_options

    try:
        loaded = load_config(config, parse_set_options(set_ or []))
        metrics = dry_run(loaded)
    except UserInputError as exc:
        raise _fail(exc) from None
    shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
    console.print(f"[green]ok[/] {config}: one step ran and reported {shown}", highlight=False)


@app.command()
def ui(
    config: Annotated[
        Path | None, typer.Argument(help="Experiment YAML; links to its latest sweep.")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind (default: loopback only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
) -> None:
    """Start the MLflow UI over the project's store and print the link to the sweep."""
    from pipelines.ui import serve_ui

    try:
        serve_ui(config, host=host, port=port, console=console)
    except UserInputError as exc:
        raise _fail(exc) from None


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
