"""Image augmentation throughput: numpy on the CPU vs torch on the CPU and on CUDA.

The same policy (every image transform, pipelines.augment) over the same synthetic batches of
normalised 28x28 images, applied batch by batch the way a trial's stream does it:

* numpy: :func:`pipelines.augment.policy.apply_policy` (the Ray Data path, one process);
* torch/cpu: :func:`pipelines.augment.image_torch.apply_image_policy` on CPU tensors;
* torch/cuda: the same on the GPU, host arrays copied over per batch (as
  :func:`pipelines.data.sweep_data.augment_on_device` does), timed to the last kernel's end.

Before timing, each torch run's output is checked against numpy on a noise-free policy (same
draws, so equal up to float rounding). Images/s is rows / median of the timed repeats.
Run: ``.venv/bin/python bench/augment_device.py [--rows 16384] [--batch 128 1024]``
(about a minute on 2 CPU cores; torch uses ``--threads`` CPU threads, default 1 like numpy:
more threads than free cores make OpenMP spin and run many times slower).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

HPARAMS = {
    "aug_rotate": 15.0,
    "aug_translate": 2,
    "aug_hflip": 0.5,
    "aug_zoom": 0.1,
    "aug_zoom_p": 0.5,
    "aug_crop": 4,
    "aug_brightness": 0.2,
    "aug_contrast": 0.2,
    "aug_noise": 0.1,
    "aug_cutout": 8,
    "aug_cutout_p": 0.5,
}
REPEATS = 3


def images(rows: int) -> np.ndarray:
    """Synthetic normalised digit-like images (N, 1, 28, 28); no dataset needed."""
    return np.random.default_rng(0).standard_normal((rows, 1, 28, 28)).astype(np.float32)


def time_epoch(run_epoch: Callable[[], None], sync: Callable[[], None]) -> float:
    """Median seconds of REPEATS epochs, after one warm-up epoch."""
    run_epoch()
    sync()
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        run_epoch()
        sync()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def numpy_epoch(x: np.ndarray, batch: int) -> Callable[[], None]:
    from pipelines.augment import apply_policy, policy_from_hparams

    policy = policy_from_hparams(HPARAMS, "image")

    def run() -> None:
        for start in range(0, len(x), batch):
            apply_policy(
                x[start : start + batch], policy, seed=0, trial=0, epoch=1, first_index=start
            )

    return run


def torch_epoch(x: np.ndarray, batch: int, device: str) -> Callable[[], None]:
    from pipelines.augment import policy_from_hparams
    from pipelines.augment.image_torch import apply_image_policy, to_device

    policy = policy_from_hparams(HPARAMS, "image")

    def run() -> None:
        for start in range(0, len(x), batch):
            tensor = to_device(x[start : start + batch], device)
            apply_image_policy(tensor, policy, seed=0, trial=0, epoch=1, first_index=start)

    return run


def check(device: str) -> float:
    """Largest difference from numpy on a noise-free policy (the same draws by design)."""
    from pipelines.augment import apply_policy, policy_from_hparams
    from pipelines.augment.image_torch import apply_image_policy, to_device

    x = images(256)
    hparams = {k: v for k, v in HPARAMS.items() if "noise" not in k}
    policy = policy_from_hparams(hparams, "image")
    where = {"seed": 3, "trial": 1, "epoch": 2, "first_index": 0}
    expected = apply_policy(x, policy, **where)
    got = apply_image_policy(to_device(x, device), policy, **where).cpu().numpy()
    assert got.shape == expected.shape and got.dtype == np.float32
    return float(np.abs(got - expected).max())


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16_384)
    parser.add_argument("--batch", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = images(args.rows)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        difference = check(device)
        assert difference < 1e-4, (device, difference)
        print(f"torch/{device} matches numpy (noise-free policy): max |diff| {difference:.1e}")
    no_sync: Callable[[], None] = lambda: None  # noqa: E731
    print(f"\n{args.rows} images 1x28x28, policy {sorted(HPARAMS)}\n")
    print(f"| {'path':<11} | {'batch':>5} | {'images/s':>10} | {'vs numpy':>8} |")
    print(f"|{'-' * 13}|{'-' * 7}|{'-' * 12}|{'-' * 10}|")
    for batch in args.batch:
        base = args.rows / time_epoch(numpy_epoch(x, batch), no_sync)
        print(f"| {'numpy':<11} | {batch:>5} | {base:>10,.0f} | {1.0:>7.2f}x |")
        for device in devices:
            sync = torch.cuda.synchronize if device == "cuda" else no_sync
            rate = args.rows / time_epoch(torch_epoch(x, batch, device), sync)
            print(
                f"| {'torch/' + device:<11} | {batch:>5} | {rate:>10,.0f} | {rate / base:>7.2f}x |"
            )


if __name__ == "__main__":
    main()
