"""Ray Data in real sweeps: preprocessing once (and cached), augmentation per modality, no hangs.

Local Ray with 2 CPUs and MLflow on SQLite in tmp_path, as in every integration test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray.data
from mlflow.tracking import MlflowClient

from pipelines import run_sweep
from pipelines.config import DataConfig
from pipelines.data import cache, prepare_data
from tests.support.configs import shrunk

pytestmark = pytest.mark.usefixtures("ray_local")


def _children(summary: Any) -> list[Any]:
    client = MlflowClient(summary.mlflow_tracking_uri)
    return client.search_runs(
        [summary.mlflow_experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
    )


def _parent_tags(summary: Any) -> dict[str, str]:
    client = MlflowClient(summary.mlflow_tracking_uri)
    return dict(client.get_run(summary.mlflow_parent_run_id).data.tags)


def test_preprocessing_runs_once_for_eight_trials_and_not_at_all_for_the_next_sweep() -> None:
    overrides = {
        "search.num_samples": 8,
        "trainable.params.epochs": 1,
        "data.augment": {"noise": {"strength": 0.1}, "translate": {"p": 0.5, "strength": 1}},
    }
    first = run_sweep(shrunk("digits_mlp_random.yaml", **overrides), progress=False)
    key = cache.cache_key(DataConfig(dataset="digits"))

    # builds.jsonl gets a line from whichever process preprocesses: trials never do.
    assert len(first.results) == 8 and not first.results.errors
    assert len(cache.builds(key)) == 1
    assert _parent_tags(first)["tunepipe.data_cache"] == "miss"

    second = run_sweep(
        shrunk("digits_mlp_random.yaml", **overrides, name="digits_again"), progress=False
    )
    assert len(second.results) == 8 and not second.results.errors
    assert len(cache.builds(key)) == 1  # zero preprocessing runs for the second sweep
    assert _parent_tags(second)["tunepipe.data_cache"] == "hit"
    fingerprints = {_parent_tags(s)["tunepipe.data_fingerprint"] for s in (first, second)}
    assert len(fingerprints) == 1  # the cached data is the data


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("config_name", "modality", "searched"),
    [
        ("digits_augment_policy.yaml", "image", {"aug_rotate", "aug_zoom"}),
        # Text and audio run in make test-slow (the default run keeps under ~15 min on 2 cores).
        pytest.param(
            "sms_spam_mlp.yaml",
            "text",
            {"aug_synonym", "aug_insert", "aug_swap", "aug_delete"},
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "tones_cnn.yaml",
            "audio",
            {"aug_pitch", "aug_speed", "aug_time_shift"},
            marks=pytest.mark.slow,
        ),
    ],
)
def test_sweep_per_modality_logs_each_trials_augmentation_in_mlflow(
    config_name: str, modality: str, searched: set[str]
) -> None:
    """2 CPUs, 2 concurrent 1-CPU trials, augmentation on: the sweep completes (no starvation)."""
    config = shrunk(
        config_name,
        **{
            "search.num_samples": 2,
            "search.max_concurrent": 2,
            "resources.cpu": 1,
            "trainable.params.epochs": 2,
            "scheduler": {"name": "fifo"},
        },
    )
    summary = run_sweep(config, progress=False)

    assert not summary.results.errors
    assert _parent_tags(summary)["tunepipe.data_modality"] == modality
    children = _children(summary)
    assert len(children) == 2
    fixed = {f"aug_{name}": step.strength for name, step in config.data.augment.items()}
    for child in children:
        params = child.data.params
        assert searched <= set(params), sorted(params)
        for key in searched:  # searched strengths are real, varied numbers within range
            assert float(params[key]) >= 0.0
        for key, value in fixed.items():
            if value is not None:
                assert float(params[key]) == pytest.approx(value)
        assert child.info.status == "FINISHED"
    values = [tuple(c.data.params[k] for k in sorted(searched)) for c in children]
    assert values[0] != values[1]  # two different policies were tried
    # Both trials ran at the same time: each started before the other finished.
    frames = [result.metrics_dataframe for result in summary.results]
    starts = [frame["timestamp"].min() - frame["time_this_iter_s"].iloc[0] for frame in frames]
    ends = [frame["timestamp"].max() for frame in frames]
    assert starts[0] < ends[1] and starts[1] < ends[0]
    assert summary.best_metric > 0.5  # better than chance for every task here


def test_sweep_data_holds_every_row_of_a_user_csv_and_never_skips_errored_blocks(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    rows = 123
    x = rng.standard_normal((rows, 4))
    lines = ["a,b,c,d,label", *(f"{','.join(map(str, r))},{int(r[0] > 0)}" for r in x)]
    path = tmp_path / "table.csv"
    path.write_text("\n".join(lines) + "\n")

    data = prepare_data(DataConfig(dataset="csv", path=path))

    assert data.train.count() + data.val.count() == rows
    assert data.spec.num_train + data.spec.num_val == rows
    assert ray.data.DataContext.get_current().max_errored_blocks == 0
    ids = np.concatenate([batch["idx"] for batch in data.train.iter_batches(batch_format="numpy")])
    assert sorted(ids) == list(range(data.spec.num_train))  # each training row exactly once
