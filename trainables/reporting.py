"""The only module that talks to Ray Tune's reporting and checkpoint API.

When Ray changes this API, this file is the one that changes. Everything else in a trial works
with plain dicts and directories.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune


@contextmanager
def latest_checkpoint() -> Iterator[Path | None]:
    """Yield the directory of the trial's latest checkpoint, or None on a fresh start."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as directory:
        yield Path(directory)


def report(metrics: dict[str, Any], *, save: Callable[[Path], None] | None = None) -> None:
    """Report one epoch's metrics, with a checkpoint written by ``save`` if given.

    The Ray node id is added to the metrics: Tune's own ``node_ip`` cannot tell apart two nodes
    that share a machine.
    """
    metrics = {**metrics, "node_id": ray.get_runtime_context().get_node_id()}
    if save is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="tunepipe-ckpt-") as directory:
        save(Path(directory))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))


def trial_resources() -> tuple[int, float]:
    """Return ``(cpus, gpus)`` reserved for the running trial."""
    resources = tune.get_context().get_trial_resources()
    bundle = resources.required_resources
    return max(1, int(bundle.get("CPU", 1))), float(bundle.get("GPU", 0.0))


def trial_index() -> int:
    """Return the trial's number in its sweep (the suffix of Tune's trial id, ``..._00003``).

    It seeds the trial's augmentation, so two trials with the same seed still draw differently,
    and a restored trial draws what it drew before.
    """
    trial_id = tune.get_context().get_trial_id() or ""
    suffix = trial_id.rsplit("_", 1)[-1]
    if suffix.isdigit():
        return int(suffix)
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16)
