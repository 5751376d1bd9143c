"""The ``tunepipe`` command line: sweep, retrain, schedule, validate, ui, report, replay, sync.

User mistakes (bad config, search space or data) print one line and exit with code 2, never a
traceback; they are detected before any cluster work starts. Exit codes a scheduler can act on:
0 done, 1 failed (retry later), 2 bad input (a person must fix it), 75 busy (another retrain of
the experiment is running).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

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

TrackingOpt = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the project's)."),
]


def _fail(exc: UserInputError) -> typer.Exit:
    # Escaped: the message echoes the user's text, and "[/x]" in it would be rich markup.
    message = escape(exc.one_line())
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


#: What a bare ``--resume`` means: the experiment's newest sweep.
LATEST_SWEEP = "latest"

AddressOpt = Annotated[
    str | None, typer.Option(help="Ray cluster address (default: RAY_ADDRESS or local).")
]


@app.command()
def sweep(
    config: ConfigArg,
    set_: SetOpt = None,
    address: AddressOpt = None,
    extend: Annotated[
        str | None,
        typer.Option(
            help="Add search.num_samples trials to this earlier sweep (its parent run id); "
            "the searcher continues from its trials."
        ),
    ] = None,
    resume: Annotated[
        str | None,
        typer.Option(
            metavar="[SWEEP_RUN_ID]",
            help="Continue an interrupted sweep (its parent run id; alone: the newest sweep) "
            "in the same MLflow runs, from its trials' last checkpoints.",
        ),
    ] = None,
) -> None:
    """Run a sweep (or extend or resume one), print the best configuration and where to look.

    Exit codes: 0 done (or nothing left to resume), 1 failed, 2 bad input, 130/143 stopped by
    SIGINT/SIGTERM at the trials' checkpoints (continue with --resume).
    """
    from pipelines.config import load_config
    from pipelines.overrides import parse_set_options
    from pipelines.sweep.run import (
        SweepAlreadyFinished,
        SweepFailed,
        SweepInterrupted,
        run_sweep,
    )
    from pipelines.views.report import print_summary

    if resume is not None and extend is not None:
        raise _fail(UserInputError("--resume and --extend do not go together", fix="pick one"))
    try:
        loaded = load_config(config, parse_set_options(set_ or []))
        summary = run_sweep(loaded, address=address, extend=extend, resume=resume)
    except UserInputError as exc:
        raise _fail(exc) from None
    except SweepFailed as exc:
        errors.print(f"[bold red]sweep failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except SweepAlreadyFinished as exc:
        console.print(f"{exc}.", highlight=False, soft_wrap=True)
        return
    except SweepInterrupted as exc:
        errors.print(f"[bold yellow]interrupted:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=exc.exit_code) from None
    print_summary(summary, config, console)


JobAddressOpt = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="RAY_JOB_ADDRESS",
        help="The cluster's job server, http://HEAD:8265 (default: RAY_JOB_ADDRESS).",
    ),
]


@app.command()
def submit(config: ConfigArg, address: JobAddressOpt, set_: SetOpt = None) -> None:
    """Run the sweep on a cluster as a Ray job, print its id and where to look, and return.

    The config is validated here first (exit 2 on bad input, nothing submitted); the config's
    folder and tunepipe's code travel with the job. Follow it with `tunepipe jobs`.
    """
    from pipelines.config import load_config
    from pipelines.overrides import parse_set_options
    from pipelines.sweep.plan import plan_sweep
    from pipelines.sweep.submit import submit_sweep

    try:
        loaded = load_config(config, parse_set_options(set_ or []))
        plan_sweep(loaded)
        job = submit_sweep(loaded, address, overrides=list(set_ or []))
    except UserInputError as exc:
        raise _fail(exc) from None
    console.print(f"submitted: [bold]{job.job_id}[/]", highlight=False)
    console.print(
        f"Follow it: tunepipe jobs status|logs|stop {job.job_id} --address {address}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"MLflow: experiment {job.experiment!r} in the tracking store of the cluster's "
        "driver (its MLFLOW_TRACKING_URI, or tracking.uri in the config); the sweep is a new "
        "run there as soon as the job starts.",
        highlight=False,
        soft_wrap=True,
    )


jobs_app = typer.Typer(no_args_is_help=True, help="Follow sweeps submitted as Ray jobs.")
app.add_typer(jobs_app, name="jobs")
JobArg = Annotated[str, typer.Argument(help="The job id `tunepipe submit` printed.")]


def _job(job_id: str, address: str) -> Any:
    from pipelines.sweep.submit import SweepJob, job_client

    try:
        return SweepJob(job_id, address, _client=job_client(address))
    except UserInputError as exc:
        raise _fail(exc) from None


@jobs_app.command("status")
def jobs_status(job_id: JobArg, address: JobAddressOpt) -> None:
    """Print the job's status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED."""
    try:
        console.print(_job(job_id, address).status(), highlight=False)
    except UserInputError as exc:
        raise _fail(exc) from None


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobArg,
    address: JobAddressOpt,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Until the job ends.")] = False,
) -> None:
    """Print the output of the job's driver (the sweep's progress and summary)."""
    job = _job(job_id, address)
    try:
        shown = 0
        while True:
            text, status = job.logs(), job.status()
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
            if not follow or status in {"SUCCEEDED", "FAILED", "STOPPED"}:
                return
            time.sleep(2)
    except UserInputError as exc:
        raise _fail(exc) from None


@jobs_app.command("stop")
def jobs_stop(job_id: JobArg, address: JobAddressOpt) -> None:
    """Stop the job: the sweep stops its trials at a checkpoint; `sweep --resume` continues it."""
    try:
        stopped = _job(job_id, address).stop()
    except UserInputError as exc:
        raise _fail(exc) from None
    console.print("stopping" if stopped else "already ended", highlight=False)


@app.command()
def retrain(
    config: ConfigArg,
    set_: SetOpt = None,
    address: AddressOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even when the data is unchanged.")
    ] = False,
) -> None:
    """Re-tune warm, judge the winner on the holdout, promote it to champion only if better.

    Exit codes: 0 promoted, kept or skipped; 1 failed; 2 bad input; 75 another retrain of the
    experiment is running.
    """
    from pipelines.config import load_config
    from pipelines.overrides import parse_set_options
    from pipelines.retrain.run import EXIT_BUSY, RetrainBusy, run_retrain
    from pipelines.sweep.run import SweepFailed, SweepInterrupted
    from pipelines.views.links import run_link
    from pipelines.views.report import DEFAULT_UI_URL

    def stage(name: str) -> None:
        console.print(f"[dim]retrain: {name}[/]", highlight=False)

    try:
        loaded = load_config(config, parse_set_options(set_ or []))
        outcome = run_retrain(loaded, force=force, address=address, on_stage=stage)
    except UserInputError as exc:
        raise _fail(exc) from None
    except RetrainBusy as exc:
        errors.print(f"[bold yellow]busy:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=EXIT_BUSY) from None
    except SweepFailed as exc:
        errors.print(f"[bold red]retrain failed:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    except SweepInterrupted as exc:
        errors.print(f"[bold yellow]interrupted:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=exc.exit_code) from None
    scores = ""
    if outcome.challenger_score is not None:
        scores = f" holdout {outcome.metric}: challenger {outcome.challenger_score:.4f}"
        if outcome.champion_score is not None:
            scores += f", champion {outcome.champion_score:.4f}"
        scores += "."
    resumed = " (resumed an interrupted retrain)" if outcome.resumed else ""
    champion = f"v{outcome.champion_version}" if outcome.champion_version else "none"
    console.print(
        f"[bold]{outcome.decision}[/]{resumed}: {outcome.reason}.{scores} "
        f"Champion: {champion}. Run {outcome.run_id}.",
        highlight=False,
        soft_wrap=True,
    )
    link = run_link(DEFAULT_UI_URL, outcome.experiment_id, outcome.run_id)
    console.print(
        f"Look at it in the MLflow UI: [bold]tunepipe ui {config}[/], then open {link}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
def schedule(
    config: ConfigArg,
    cron: Annotated[str, typer.Option(help='When to retrain, a crontab line: "0 3 * * *".')],
    set_: SetOpt = None,
    timezone: Annotated[
        str | None, typer.Option(help="Time zone of the cron expression (default: local).")
    ] = None,
    run_now: Annotated[
        bool, typer.Option("--run-now", help="Also retrain once right away.")
    ] = False,
    max_runs: Annotated[
        int | None, typer.Option(help="Stop after this many retrains (default: never).")
    ] = None,
) -> None:
    """Retrain CONFIG on a cron schedule in this process (each run as `tunepipe retrain`)."""
    from pipelines.config import load_config
    from pipelines.overrides import parse_set_options
    from pipelines.retrain.cron import parse_cron
    from pipelines.retrain.runner import run_schedule

    extra = [arg for item in set_ or [] for arg in ("--set", item)]
    try:
        load_config(config, parse_set_options(set_ or []))  # bad input fails now, not at 3 am
        parse_cron(cron, timezone)
        run_schedule(cron, config, extra, max_runs=max_runs, run_now=run_now, timezone=timezone)
    except UserInputError as exc:
        raise _fail(exc) from None


@app.command()
def validate(config: ConfigArg, set_: SetOpt = None) -> None:
    """Check config, search space and data, and run one training step (no sweep)."""
    from pipelines.config import load_config
    from pipelines.overrides import parse_set_options
    from pipelines.sweep.dry_run import dry_run

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
    auth: Annotated[
        bool,
        typer.Option(
            help="Require a password (MLflow basic auth; admin from MLFLOW_TRACKING_USERNAME "
            "and MLFLOW_TRACKING_PASSWORD). Needed for any --host beyond loopback."
        ),
    ] = False,
    auth_file: Annotated[
        Path | None,
        typer.Option(help="With --auth: a file with one line user:password (instead of env)."),
    ] = None,
) -> None:
    """Start the MLflow UI over the project's store and print the link to the sweep."""
    from pipelines.views.ui import serve_ui

    try:
        serve_ui(config, host=host, port=port, console=console, auth=auth, auth_file=auth_file)
    except UserInputError as exc:
        raise _fail(exc) from None


@app.command()
def sync(tracking_uri: TrackingOpt = None) -> None:
    """Write the MLflow records that stopped sweeps left in the spool while MLflow was down.

    Every tunepipe command that reads MLflow does this first; this one does only this.
    Exit codes: 0 all written (or nothing waited), 1 MLflow is still unreachable (try later).
    """
    from pipelines.paths import default_tracking_uri
    from pipelines.secrets import hold_credentials
    from pipelines.tracking.spool import replay_stopped_spools

    uri = hold_credentials(tracking_uri or default_tracking_uri())
    written, left = replay_stopped_spools(uri)
    if left:
        errors.print(
            f"[bold yellow]MLflow at {uri} is unreachable:[/] {left} writes still wait in the "
            "spool; run `tunepipe sync` again when it is back",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    console.print(f"{written} spooled MLflow writes written to {uri}", highlight=False)


@app.command()
def report(
    sweep: Annotated[str, typer.Argument(help="The sweep's name (its MLflow experiment).")],
    out: Annotated[
        Path | None, typer.Option(help="Folder for the plots (default: ./report-<SWEEP>).")
    ] = None,
    tracking_uri: TrackingOpt = None,
    run: Annotated[
        str | None, typer.Option(help="A sweep run id (default: the newest sweep).")
    ] = None,
) -> None:
    """Print a finished sweep's top trials, best config and importance; write its plots."""
    from pipelines.paths import default_tracking_uri
    from pipelines.tracking.spool import sync_stopped_drivers
    from pipelines.views.report import report as write_report

    sync_stopped_drivers(tracking_uri or default_tracking_uri())
    try:
        write_report(
            tracking_uri or default_tracking_uri(),
            sweep,
            out or Path(f"report-{sweep}"),
            console,
            run_id=run,
        )
    except UserInputError as exc:
        raise _fail(exc) from None


@app.command()
def replay(
    run_id: Annotated[str, typer.Argument(help="MLflow run id of a trial (a sweep's child run).")],
    tracking_uri: TrackingOpt = None,
    tolerance: Annotated[
        float, typer.Option(help="Largest accepted difference of the final metric.")
    ] = 0.005,
) -> None:
    """Re-train one recorded trial outside Tune and compare its final validation metric."""
    from pipelines.paths import default_tracking_uri
    from pipelines.sweep.replay import replay as replay_trial

    try:
        result = replay_trial(tracking_uri or default_tracking_uri(), run_id, tolerance)
    except UserInputError as exc:
        raise _fail(exc) from None
    verdict = "[green]reproduced[/]" if result.reproduced else "[red]NOT reproduced[/]"
    console.print(
        f"{verdict}: {result.metric} after epoch {result.epochs} was {result.recorded:.6g}, "
        f"replayed {result.replayed:.6g} (difference {result.difference:.2g}, tolerance "
        f"{result.tolerance:g}); data {'matches' if result.data_matches else 'DIFFERS'}",
        highlight=False,
    )
    if not result.reproduced:
        raise typer.Exit(code=1)


def main() -> None:
    """Console-script entry point."""
    app(args=optional_resume_value(sys.argv[1:]))


def optional_resume_value(args: list[str]) -> list[str]:
    """Let ``--resume`` stand alone (the newest sweep) as well as take a run id.

    Click options take a value or none, never an optional one: a bare ``--resume`` (last, or
    followed by another option) gets the value ``latest``.
    """
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--resume" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, LATEST_SWEEP)
            break
    return out


if __name__ == "__main__":
    main()
