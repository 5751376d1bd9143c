"""B5: augmentation throughput on 28x28 images (horizontal flip + random crop + Gaussian noise).

Three ways to produce one epoch of augmented training batches from the same 40,960 normalised
MNIST images (the 4,000-row training split, tiled), each with the same policy
(``hflip`` p = 0.5, ``crop`` 4 pixels of padding, ``noise`` std 0.1):

* ours: the sweep's Ray Data pipeline (:meth:`SweepData.train_batches`): a materialised dataset
  in one block per CPU (here 2 blocks of 20,000 images), ``map_batches`` with the vectorised
  policy and a per-block row shuffle (zero-CPU tasks, concurrency 2), cut into batches of 128
  rows, in a 2-CPU local Ray;
* a torch ``DataLoader`` with 2 worker processes whose ``Dataset`` augments one item at a time
  (numpy per item, the way per-sample transforms are usually written), batches of 128;
* single-process vectorised numpy: the same policy functions over 1,024-row slices in a loop.

Each is timed over 3 epochs after a warm-up epoch; images/s is rows / median epoch time.
Results go to bench/results/augment_throughput.md. Run:
`.venv/bin/python bench/augment_throughput.py` (about 2 min on 2 cores).
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TILES = int(os.environ.get("BENCH_TILES", "10"))
EPOCHS = 3
BATCH = 128
HPARAMS = {"aug_hflip": 0.5, "aug_crop": 4, "aug_noise": 0.1}


def images() -> np.ndarray:
    from pipelines.config import DataConfig
    from pipelines.data import prepare_arrays

    prepared, _ = prepare_arrays(DataConfig(dataset="mnist5k", cache=False))
    return np.concatenate([prepared.x_train] * TILES)


def timed(epoch: Callable[[int], int], rows: int) -> dict[str, float]:
    """Run one warm-up epoch then EPOCHS timed ones; check every row came out each time."""
    assert epoch(0) == rows
    times = []
    for number in range(1, EPOCHS + 1):
        started = time.perf_counter()
        produced = epoch(number)
        times.append(time.perf_counter() - started)
        assert produced == rows, (produced, rows)
    median = statistics.median(times)
    return {"epoch_s": median, "images_per_s": rows / median}


def ours(x: np.ndarray) -> dict[str, float]:
    import ray

    from pipelines.augment import policy_from_hparams
    from pipelines.data import SweepData, configure_ray_data, to_ray_dataset
    from trainables.protocol import DataSpec

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        configure_ray_data()
        y = np.zeros(len(x), dtype=np.int64)
        spec = DataSpec(tuple(x.shape[1:]), 10, "classification", len(x), 0)
        train = to_ray_dataset(x, y, parallelism=2)
        data = SweepData(train, None, spec, "bench", train_blocks=train.num_blocks())
        policy = policy_from_hparams(HPARAMS, "image")

        def epoch(number: int) -> int:
            batches = data.train_batches(
                batch_size=BATCH, epoch=number, seed=0, policy=policy, cpus=2
            )
            return sum(len(batch["x"]) for batch in batches)

        return timed(epoch, len(x))
    finally:
        ray.shutdown()


class PerItemDataset:
    """A map-style dataset that augments one image per call, as per-sample transforms do."""

    def __init__(self, x: np.ndarray, epoch: int = 0) -> None:
        self.x, self.epoch = x, epoch

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        import torch

        rng = np.random.default_rng([0, self.epoch, index])
        image = self.x[index]
        if rng.random() < HPARAMS["aug_hflip"]:
            image = image[..., ::-1]
        pad = int(HPARAMS["aug_crop"])
        padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), constant_values=image.min())
        top, left = rng.integers(0, 2 * pad + 1, size=2)
        image = padded[:, top : top + image.shape[1], left : left + image.shape[2]]
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        image = image + np.float32(HPARAMS["aug_noise"]) * noise
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), 0


def dataloader(x: np.ndarray) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    torch.set_num_threads(1)
    dataset = PerItemDataset(x)
    loader = DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True
    )

    def epoch(number: int) -> int:
        dataset.epoch = number  # workers hold a copy; the epoch only changes the draws
        return sum(len(images) for images, _ in loader)

    return timed(epoch, len(x))


def numpy_single_process(x: np.ndarray) -> dict[str, float]:
    from pipelines.augment import apply_policy, policy_from_hparams

    policy = policy_from_hparams(HPARAMS, "image")

    def epoch(number: int) -> int:
        rows = 0
        for start in range(0, len(x), 1024):
            out = apply_policy(
                x[start : start + 1024], policy, seed=0, trial=0, epoch=number, first_index=start
            )
            rows += len(out)
        return rows

    return timed(epoch, len(x))


def main() -> None:
    sys.path.insert(0, str(REPO))
    x = images()
    results = {
        "ours (Ray Data map_batches)": ours(x),
        "torch DataLoader, per item, 2 workers": dataloader(x),
        "numpy, vectorised, 1 process": numpy_single_process(x),
    }
    ours_rate = results["ours (Ray Data map_batches)"]["images_per_s"]
    loader_rate = results["torch DataLoader, per item, 2 workers"]["images_per_s"]
    numpy_rate = results["numpy, vectorised, 1 process"]["images_per_s"]
    import ray

    lines = [
        "# B5: augmentation throughput, 28x28 images, hflip + crop + noise",
        "",
        f"{len(x):,} MNIST images (training split x{TILES}), policy {HPARAMS}, batches of "
        f"{BATCH}; median of {EPOCHS} epochs after a warm-up. Recorded "
        f"{time.strftime('%Y-%m-%d %H:%M')} on {platform.node()} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, Ray {ray.__version__}).",
        "",
        "| pipeline | epoch (s) | images/s |",
        "|---|---|---|",
        *(
            f"| {name} | {r['epoch_s']:.2f} | {r['images_per_s']:,.0f} |"
            for name, r in results.items()
        ),
        "",
        f"Ours / DataLoader: {ours_rate / loader_rate:.2f}x (goal >= 3x). "
        f"Ours / single-process numpy: {ours_rate / numpy_rate:.2f}x (goal >= 0.8x).",
    ]
    text = "\n".join(lines) + "\n"
    out = REPO / "bench" / "results" / "augment_throughput.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
