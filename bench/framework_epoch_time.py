"""B4: per-epoch time of the same CNN in torch and in Keras (TensorFlow), on 2 CPUs.

The demo's CNN (channels 16, batch 64, Adam, dropout 0.2, no augmentation) on MNIST-5k
(4,000 training rows, 1,000 validation rows), measured two ways for each framework:

* in a sweep: one trial with 2 CPUs through the whole pipeline (Ray Data feeding, the epoch loop,
  checkpoints, MLflow), the median of Tune's ``time_this_iter_s`` over epochs 2..N (epoch 1
  pays the one-off worker start and, for Keras, the graph tracing);
* bare: the trainable alone on in-memory numpy batches with 2 threads, median of epochs 2..N.

Results go to bench/results/framework_epoch_time.md. Run:
`.venv/bin/python bench/framework_epoch_time.py` (about 5 min on 2 cores).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EPOCHS = int(os.environ.get("BENCH_EPOCHS", "6"))
FRAMEWORKS = ("torch", "tensorflow")
HPARAMS: dict[str, Any] = {
    "model": "cnn",
    "channels": 16,
    "batch_size": 64,
    "optimizer": "adam",
    "lr": 1e-3,
    "dropout": 0.2,
}


def in_sweep(framework: str, home: Path) -> list[float]:
    from pipelines import run_sweep
    from pipelines.config import load_config

    home.mkdir(parents=True, exist_ok=True)
    space = home / "space.yaml"
    space.write_text("parameters:\n  seed: {type: constant, value: 0}\n")
    params = {f"trainable.params.{k}": v for k, v in HPARAMS.items() if k != "model"}
    config = load_config(
        REPO / "pipelines" / "configs" / "mnist_cnn.yaml",
        {
            "trainable.framework": framework,
            "trainable.search_space": str(space),
            "trainable.params.epochs": EPOCHS,
            **params,
            "search.method": "random",
            "search.options": {},
            "search.num_samples": 1,
            "scheduler": {"name": "fifo"},
            "resources.cpu": 2,
            "tracking.uri": f"sqlite:///{home / 'mlflow.db'}",
            "tracking.register_model": False,
            "storage.path": str(home / "ray_results"),
        },
    )
    summary = run_sweep(config, progress=False)
    (result,) = list(summary.results)
    return [float(t) for t in result.metrics_dataframe["time_this_iter_s"]]


def bare(framework: str) -> list[float]:
    import numpy as np

    from pipelines.config import DataConfig
    from pipelines.data import prepare_arrays
    from trainables.registry import get_trainable_info

    split, _ = prepare_arrays(DataConfig(dataset="mnist5k"))
    spec = split.spec()
    implementation = get_trainable_info(framework).load_class()
    implementation.set_cpu_threads(2)
    trainable = implementation()
    trainable.setup(HPARAMS, spec, "cpu")
    rng = np.random.default_rng(0)
    times = []
    for _ in range(EPOCHS):
        order = rng.permutation(spec.num_train)
        train = [
            {"x": split.x_train[order[i : i + 64]], "y": split.y_train[order[i : i + 64]]}
            for i in range(0, spec.num_train, 64)
        ]
        val = [
            {"x": split.x_val[i : i + 1024], "y": split.y_val[i : i + 1024]}
            for i in range(0, spec.num_val, 1024)
        ]
        started = time.perf_counter()
        trainable.train_epoch(train)
        trainable.evaluate(val)
        times.append(time.perf_counter() - started)
    return times


def bare_in_subprocess(framework: str) -> list[float]:
    """Each framework in its own process, so neither one's thread pools affect the other."""
    import json
    import subprocess

    code = (
        f"import json, sys; sys.path.insert(0, {str(REPO)!r});"
        f" from bench.framework_epoch_time import bare; print(json.dumps(bare({framework!r})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return [float(t) for t in json.loads(done.stdout.strip().splitlines()[-1])]


def main() -> None:
    import mlflow
    import ray

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    sys.path.insert(0, str(REPO))
    rows = {}
    for framework in FRAMEWORKS:
        rows[framework] = {"bare": bare_in_subprocess(framework)}
        print(framework, "bare", rows[framework]["bare"], flush=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    with tempfile.TemporaryDirectory() as folder:
        for framework in FRAMEWORKS:
            rows[framework]["sweep"] = in_sweep(framework, Path(folder) / framework)
            print(framework, "sweep", rows[framework]["sweep"], flush=True)
    ray.shutdown()

    def median_after_first(times: list[float]) -> float:
        return statistics.median(times[1:])

    lines = [
        "# B4: per-epoch time of the same CNN, torch vs Keras (TensorFlow), 2 CPUs",
        "",
        f"MNIST-5k CNN {HPARAMS}, {EPOCHS} epochs; medians of epochs 2..{EPOCHS}. Recorded "
        f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, Ray {ray.__version__}, MLflow {mlflow.__version__}).",
        "",
        "| framework | epoch in a sweep (s) | first epoch in a sweep (s) | bare epoch (s) |",
        "|---|---|---|---|",
    ]
    for framework in FRAMEWORKS:
        sweep_times, bare_times = rows[framework]["sweep"], rows[framework]["bare"]
        lines.append(
            f"| {framework} | {median_after_first(sweep_times):.2f} | {sweep_times[0]:.2f} | "
            f"{median_after_first(bare_times):.2f} |"
        )
    ratio_sweep = median_after_first(rows["tensorflow"]["sweep"]) / median_after_first(
        rows["torch"]["sweep"]
    )
    ratio_bare = median_after_first(rows["tensorflow"]["bare"]) / median_after_first(
        rows["torch"]["bare"]
    )
    lines += [
        "",
        f"Keras / torch per-epoch time: {ratio_sweep:.2f}x in a sweep, {ratio_bare:.2f}x bare.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "framework_epoch_time.md").write_text(text)


if __name__ == "__main__":
    main()
