"""The README's main job: the shipped demo config, unshrunk, reaches >= 0.95 on MNIST-5k."""

from __future__ import annotations

import pytest

from pipelines import run_sweep
from tests.support.configs import CONFIGS


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_demo_sweep_reaches_095_validation_accuracy() -> None:
    summary = run_sweep(CONFIGS / "mnist_cnn.yaml", progress=False)
    assert summary.best_metric >= 0.95
    assert sum(summary.end_reasons.values()) == 8
    assert summary.model_version is not None
