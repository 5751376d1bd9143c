"""B3: ASHA against random search (FIFO) at equal configurations on MNIST-5k.

For each seed, the same 18 configurations (random search with that seed proposes identical
configurations to both runs) are trained for at most 9 epochs: once to the end (FIFO), once under
ASHA (grace period 1, reduction factor 3, so rungs at 1, 3 and 9 epochs). Reported per seed and as
medians: wall-time ratio, epochs ratio and best-accuracy difference. Results go to
bench/results/asha_vs_random.md. Run: `.venv/bin/python bench/asha_vs_random.py` (about 15 min
on 2 cores).
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
SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "0,1,2").split(",")]
CONFIGS, MAX_EPOCHS = 18, 9


def sweep(scheduler: str, seed: int, home: Path) -> dict[str, float]:
    from pipelines import run_sweep
    from pipelines.config import load_config

    overrides = {
        "search.method": "random",
        "search.options": {},
        "search.num_samples": CONFIGS,
        "search.seed": seed,
        "search.max_concurrent": 2,
        "scheduler.name": scheduler,
        "scheduler.options": {"grace_period": 1, "reduction_factor": 3}
        if scheduler == "asha"
        else {},
        "trainable.params.epochs": MAX_EPOCHS,
        "tracking.uri": f"sqlite:///{home / 'mlflow.db'}",
        "tracking.register_model": False,
        "storage.path": str(home / "ray_results"),
    }
    config = load_config(REPO / "pipelines" / "configs" / "mnist_cnn.yaml", overrides)
    summary = run_sweep(config, progress=False)
    results = list(summary.results)
    configs = sorted(
        json.dumps(summary.results[i].config, sort_keys=True, default=str)
        for i in range(len(results))
    )
    return {
        "wall_s": summary.elapsed_s,
        "epochs": float(sum(len(r.metrics_dataframe) for r in results)),
        "best": summary.best_metric,
        "configs": configs,  # type: ignore[dict-item]
    }


def main() -> None:
    import ray

    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    sys.path.insert(0, str(REPO))
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in SEEDS:
            fifo = sweep("fifo", seed, Path(folder) / f"fifo-{seed}")
            asha = sweep("asha", seed, Path(folder) / f"asha-{seed}")
            assert fifo["configs"] == asha["configs"], "the two runs did not see the same configs"
            row = {
                "seed": seed,
                "fifo_wall_s": fifo["wall_s"],
                "asha_wall_s": asha["wall_s"],
                "wall_ratio": fifo["wall_s"] / asha["wall_s"],
                "fifo_epochs": fifo["epochs"],
                "asha_epochs": asha["epochs"],
                "epochs_ratio": fifo["epochs"] / asha["epochs"],
                "best_diff_pt": 100 * (asha["best"] - fifo["best"]),
                "fifo_best": fifo["best"],
                "asha_best": asha["best"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    ray.shutdown()
    write_report(rows)


def write_report(rows: list[dict[str, float]]) -> None:
    import mlflow
    import ray

    lines = [
        "# B3: ASHA vs random search (FIFO) at equal configurations, MNIST-5k CNN",
        "",
        f"{CONFIGS} configurations, at most {MAX_EPOCHS} epochs, eta 3, seeds {SEEDS}. Recorded "
        f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, Ray {ray.__version__}, MLflow {mlflow.__version__}).",
        "",
        "| seed | FIFO wall (s) | ASHA wall (s) | wall ratio | FIFO epochs | ASHA epochs | "
        "epochs ratio | FIFO best | ASHA best | best diff (pt) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['fifo_wall_s']:.0f} | {r['asha_wall_s']:.0f} | "
            f"{r['wall_ratio']:.2f} | {r['fifo_epochs']:.0f} | {r['asha_epochs']:.0f} | "
            f"{r['epochs_ratio']:.2f} | {r['fifo_best']:.4f} | {r['asha_best']:.4f} | "
            f"{r['best_diff_pt']:+.2f} |"
        )
    median = {
        k: statistics.median(r[k] for r in rows)
        for k in ("wall_ratio", "epochs_ratio", "best_diff_pt")
    }
    lines += [
        "",
        f"Medians: wall-time ratio {median['wall_ratio']:.2f}, epochs ratio "
        f"{median['epochs_ratio']:.2f}, best-accuracy difference "
        f"{median['best_diff_pt']:+.2f} pt.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (REPO / "bench" / "results").mkdir(parents=True, exist_ok=True)
    (REPO / "bench" / "results" / "asha_vs_random.md").write_text(text)


if __name__ == "__main__":
    main()
