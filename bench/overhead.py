"""B1: orchestration overhead of the pipeline against bare Ray Tune, on the same trivial trainable.

50 trials x 10 reports on a local Ray instance with 2 CPUs, in one run:
  - bare Ray Tune with its defaults (reuse_actors=False);
  - bare Ray Tune with reuse_actors=True;
  - the pipeline (run_sweep: config, Ray Data shared data, adapter, MLflow tracking on SQLite,
    a checkpoint every epoch), and the pipeline with one checkpoint per trial only.
The MLflow store is created before timing (a one-off ~7 s on first use, not per sweep).
Each variant runs REPEATS times, interleaved; medians and ratios are printed and written to
bench/results/overhead.md. Run: `make bench` or `.venv/bin/python bench/overhead.py`.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRIALS, REPORTS, REPEATS = 50, 10, int(os.environ.get("BENCH_REPEATS", "3"))


def bare_trainable(config: dict) -> None:
    from ray import tune

    for step in range(1, REPORTS + 1):
        tune.report({"score": config["x"] * step})


def run_bare(storage: Path, reuse: bool) -> float:
    from ray import tune

    tuner = tune.Tuner(
        bare_trainable,
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            num_samples=TRIALS, metric="score", mode="max", reuse_actors=reuse
        ),
        run_config=tune.RunConfig(storage_path=str(storage), verbose=0),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    elapsed = time.perf_counter() - started
    assert len(grid) == TRIALS and not grid.errors
    return elapsed


def warm_store(uri: str) -> None:
    """Create the SQLite schema once (~7 s here), as a user's store already exists after one
    sweep; this one-off cost is not per-sweep overhead."""
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()


def run_pipeline(home: Path, checkpoint_every: int, store: Path) -> float:
    from pipelines import run_sweep
    from pipelines.config import load_config

    space = home / "space.yaml"
    space.write_text("parameters:\n  x: {type: uniform, low: 0.0, high: 1.0}\n")
    config_file = home / "bench.yaml"
    config_file.write_text(
        f"""
name: bench_overhead
metric: score
mode: max
data: {{dataset: digits}}
trainable:
  framework: noop
  model: noop
  search_space: {space}
  params: {{epochs: {REPORTS}, batch_size: 64}}
search: {{method: random, num_samples: {TRIALS}}}
scheduler: {{name: fifo}}
fault_tolerance: {{checkpoint_every: {checkpoint_every}}}
storage: {{path: {home / "ray_results"}}}
tracking: {{uri: "sqlite:///{store}", register_model: false}}
"""
    )
    config = load_config(config_file)
    started = time.perf_counter()
    summary = run_sweep(config, progress=False)
    elapsed = time.perf_counter() - started
    assert sum(summary.end_reasons.values()) == TRIALS
    return elapsed


def register_noop() -> None:
    from trainables.registry import TRAINABLES, TrainableInfo

    TRAINABLES["noop"] = TrainableInfo(
        framework="noop",
        implementation="bench.noop_trainable:NoopTrainable",
        models=("noop",),
        hparams=frozenset({"x"}),
        metrics={"classification": ("train_loss", "score")},
        install_hint="",
    )


def main() -> None:
    # Trial workers import bench.noop_trainable: they inherit this path from the driver.
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    sys.path.insert(0, str(REPO))
    import ray

    register_noop()
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    times: dict[str, list[float]] = {
        "bare Tune, defaults": [],
        "bare Tune, reuse_actors": [],
        "pipeline (checkpoint every epoch)": [],
        "pipeline (checkpoint at end)": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        store = root / "mlflow.db"
        warm_store(f"sqlite:///{store}")
        for repeat in range(REPEATS):
            for name in times:
                work = root / f"{repeat}-{len(times[name])}-{name.split()[0]}-{hash(name)}"
                work.mkdir()
                if name.startswith("bare"):
                    elapsed = run_bare(work, reuse="reuse" in name)
                else:
                    elapsed = run_pipeline(work, 1 if "every" in name else REPORTS, store)
                times[name].append(elapsed)
                print(f"repeat {repeat + 1}/{REPEATS} {name}: {elapsed:.1f}s", flush=True)
    ray.shutdown()
    write_report(times)


def write_report(times: dict[str, list[float]]) -> None:
    import mlflow
    import ray

    median = {name: statistics.median(values) for name, values in times.items()}
    pipeline = median["pipeline (checkpoint every epoch)"]
    lines = [
        "# B1: orchestration overhead, 50 trials x 10 reports, local Ray with 2 CPUs",
        "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}, Ray {ray.__version__}, "
        f"MLflow {mlflow.__version__}); median of {REPEATS} interleaved repeats.",
        "",
        "| variant | median wall time (s) | all runs (s) |",
        "|---|---|---|",
    ]
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        lines.append(f"| {name} | {median[name]:.1f} | {runs} |")
    ratios = {
        "pipeline / bare Tune defaults": pipeline / median["bare Tune, defaults"],
        "pipeline / bare Tune with reuse_actors": pipeline / median["bare Tune, reuse_actors"],
        "pipeline (checkpoint at end) / bare Tune with reuse_actors": median[
            "pipeline (checkpoint at end)"
        ]
        / median["bare Tune, reuse_actors"],
    }
    lines += ["", "| ratio | value |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in ratios.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "overhead.md").write_text(text)
    (REPO / "bench" / "results" / "overhead.json").write_text(
        json.dumps({"times_s": times, "ratios": ratios}, indent=2)
    )


if __name__ == "__main__":
    main()
