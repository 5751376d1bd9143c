"""A sweep on Parquet streamed in row groups (data.streaming): trained, scored and registered."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import load_digits

from pipelines import run_sweep
from pipelines.data import StreamFit, prepare_source
from pipelines.data.streaming import iter_split
from pipelines.errors import ConfigError
from pipelines.sweep.inputs import sweep_config
from pipelines.sweep.plan import plan_sweep

pytestmark = pytest.mark.usefixtures("ray_local")

SPACE = {
    "lr": {"type": "loguniform", "low": 3e-3, "high": 3e-2},
    "hidden_units": {"type": "int", "low": 32, "high": 64},
}


def _digits_folder(folder: Path) -> Path:
    """The 1,797 real digits as three Parquet files of 200-row row groups (64 pixel columns)."""
    x, y = load_digits(return_X_y=True)
    folder.mkdir(parents=True)
    for part, rows in enumerate(np.array_split(np.arange(len(y)), 3)):
        table = pa.table({**{f"p{i}": x[rows, i] for i in range(64)}, "digit": y[rows]})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=200)
    return folder


def _experiment(folder: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "streamed_digits",
        "metric": "val_accuracy",
        "mode": "max",
        "data": {"dataset": "parquet", "path": str(folder), "label_column": "digit", **data},
        "trainable": {
            "framework": "torch",
            "model": "mlp",
            "params": {"epochs": 2, "batch_size": 64, "optimizer": "adam"},
        },
        "search": {"method": "random", "num_samples": 2, "seed": 3},
    }


def test_a_streamed_sweep_scores_on_the_streamed_split_and_registers_its_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _digits_folder(tmp_path / "digits")
    raw = _experiment(folder, streaming=True)
    caplog.set_level(logging.INFO, logger="pipelines.data")
    summary = run_sweep(raw, search_space=SPACE, progress=False)

    assert summary.end_reasons["completed"] == 2
    assert "data: streaming 1,797 rows" in caplog.text
    fit, _ = prepare_source(load_config_dict(raw).data)
    assert isinstance(fit, StreamFit) and fit.num_train + fit.num_val == 1797

    # Each child run has a metric per epoch, computed on the streamed validation split.
    client = MlflowClient(summary.mlflow_tracking_uri)
    children = client.search_runs(
        [summary.mlflow_experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
    )
    assert len(children) == 2
    for child in children:
        history = client.get_metric_history(child.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2]

    # The registered model, scored again on the split streamed row group by row group, gives
    # the sweep's best value: the trial scored every validation row, each once.
    mlflow.set_tracking_uri(summary.mlflow_tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{summary.experiment_name}@challenger")
    batches = list(iter_split(fit, "val"))
    x = np.concatenate([b["x"] for b in batches])
    y = np.concatenate([b["y"] for b in batches])
    accuracy = float((np.asarray(model.predict(x)).argmax(axis=1) == y).mean())
    assert len(y) == fit.num_val
    assert accuracy == pytest.approx(summary.best_metric)
    assert summary.best_metric > 0.8


def load_config_dict(raw: dict[str, Any]) -> Any:
    """The experiment config of ``raw`` as a sweep reads it (the space given inline)."""
    return sweep_config(raw, search_space=SPACE)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"dataset": "digits"}, "data.dataset"),
        ({"modality": "image"}, "data.modality"),
    ],
)
def test_what_does_not_stream_yet_is_refused_before_any_cluster_work(
    tmp_path: Path, data: dict[str, Any], key: str
) -> None:
    folder = _digits_folder(tmp_path / "digits")
    config = load_config_dict(_experiment(folder, streaming=True, **data))
    with pytest.raises(ConfigError) as refused:
        plan_sweep(config)
    assert refused.value.key == key


def test_scikit_learn_on_streamed_data_is_refused(tmp_path: Path) -> None:
    folder = _digits_folder(tmp_path / "digits")
    raw = _experiment(folder, streaming=True)
    raw["trainable"] = {
        "framework": "sklearn",
        "model": "random_forest",
        "params": {"epochs": 2, "batch_size": 256},
    }
    space = {"max_depth": {"type": "int", "low": 2, "high": 8}}
    config = sweep_config(raw, search_space=space)
    with pytest.raises(ConfigError) as refused:
        plan_sweep(config)
    assert refused.value.key == "data.streaming"


def test_a_dry_run_on_streamed_data_trains_one_step_on_the_first_rows(tmp_path: Path) -> None:
    """The user-code check before a sweep runs on the first row groups, not the whole split."""
    from pipelines.data.stream_sweep import sample_prepared
    from pipelines.sweep.dry_run import dry_run

    folder = _digits_folder(tmp_path / "digits")
    config = load_config_dict(_experiment(folder, streaming=True))
    fit, _ = prepare_source(config.data)
    assert isinstance(fit, StreamFit) and plan_sweep(config).info.framework == "torch"
    sample = sample_prepared(fit, 300)
    assert len(sample.y_train) == 300 and 0 < len(sample.y_val) <= 300
    assert sample.spec().input_shape == (64,) and sample.num_classes == 10
    metrics = dry_run(config)
    assert 0.0 <= metrics["val_accuracy"] <= 1.0


def test_data_parallel_ranks_split_a_streamed_epoch_between_them(tmp_path: Path) -> None:
    """Each rank of a data-parallel trial streams the epoch and keeps every world_size-th batch.

    That is only right if every rank sees the same batches in the same order: the first read
    of each row group comes from Parquet, the second from the node cache, with two row groups
    in flight at a time.
    """
    from pipelines.data import materialise
    from trainables.data_parallel import Shard

    folder = _digits_folder(tmp_path / "digits")
    fit, _ = prepare_source(load_config_dict(_experiment(folder, streaming=True)).data)
    data = materialise(fit, cache_hit=False, cpus_per_trial=2)

    def epoch(rank: int | None) -> list[Any]:
        stream = data.for_trial({"seed": 5}, trial=1, cpus=2)
        batches = stream if rank is None else Shard(stream, rank, 2)
        return [b["x"] for b in batches.train_batches(1, 64)]

    whole = epoch(None)  # reads Parquet and fills the cache
    assert sum(len(x) for x in whole) == fit.num_train
    groups = len(whole) // 2
    for rank in (0, 1):
        mine = epoch(rank)  # from the cache
        assert len(mine) == groups
        for got, expected in zip(mine, whole[rank::2], strict=False):
            np.testing.assert_array_equal(got, expected)


def test_data_parallel_ranks_each_read_only_their_own_row_groups(tmp_path: Path) -> None:
    """With enough row groups, each rank streams and augments its own, as many batches each."""
    from collections import Counter

    from pipelines.data import materialise
    from pipelines.data.streaming import rank_share, read_encoded
    from tests.unit.test_streaming import _write_digits
    from trainables.data_parallel import Shard

    _write_digits(tmp_path / "digits", files=3, row_group_size=50)  # 36 row groups
    raw = _experiment(tmp_path / "digits", streaming=True, label_column="label")
    fit, _ = prepare_source(load_config_dict(raw).data)
    data = materialise(fit, cache_hit=False, cpus_per_trial=1)
    for rank in (0, 1):
        stream = data.for_trial({"seed": 5}, trial=1, cpus=1)
        mine = list(Shard(stream, rank, 2).train_batches(3, 64))
        share = rank_share(fit, (5, 1, 3), rank, 2, 64)
        assert share is not None and len(mine) == share[1] > 0
        assert all(len(b["y"]) == 64 for b in mine)
        # Every row it trained on comes from its own row groups, each row at most once.
        own = Counter(
            row.tobytes()
            for i in share[0]
            for row in read_encoded(fit, fit.listing.fragments[i], "train")["x"]
        )
        seen = Counter(row.tobytes() for b in mine for row in np.asarray(b["x"]))
        assert not seen - own


@pytest.mark.parametrize("dataset", ["csv", "npz"])
def test_a_sweep_streams_a_folder_of_csv_files_or_npz_shards(tmp_path: Path, dataset: str) -> None:
    from tests.unit.test_csv_files import _write_csvs
    from tests.unit.test_npz_shards import _write_shards

    (_write_csvs if dataset == "csv" else _write_shards)(tmp_path / "files")
    raw = _experiment(tmp_path / "files")
    raw["data"] = {"dataset": dataset, "path": str(tmp_path / "files")}  # streams: a folder
    raw["trainable"]["params"]["epochs"] = 1
    raw["search"]["num_samples"] = 1
    summary = run_sweep(raw, search_space=SPACE, progress=False)
    assert summary.end_reasons["completed"] == 1 and summary.best_metric > 0.5


@pytest.mark.slow  # a CNN sweep on 1,797 PNGs (~50 s)
def test_a_streamed_image_folder_is_augmented_afresh_each_epoch_and_tuned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Images stream in chunks of files, augmented per epoch with the trial's strengths."""
    from pipelines.data import image_files, materialise
    from pipelines.data.streaming import read_encoded
    from tests.unit.test_image_files import _digits_images

    monkeypatch.setattr(image_files, "IMAGES_PER_FRAGMENT", 128)
    root = _digits_images(tmp_path / "digits", count=1797)
    raw = _experiment(root, streaming=True)
    raw["data"] = {"dataset": "image_folder", "path": str(root), "streaming": True}
    config = load_config_dict(raw).data
    fit, _ = prepare_source(config)
    assert isinstance(fit, StreamFit) and fit.spec().input_shape == (1, 8, 8)
    data = materialise(fit, cache_hit=False, cpus_per_trial=1)
    assert data.modality == "image"

    plain = {
        int(i): row
        for fragment in fit.listing.fragments
        for piece in [read_encoded(fit, fragment, "train")]
        for i, row in zip(piece["idx"], piece["x"], strict=True)
    }
    stream = data.for_trial({"seed": 5, "aug_rotate": 20.0}, trial=0, cpus=1)
    epochs = {}
    for epoch in (1, 2):
        batches = list(stream.train_batches(epoch, 64))
        ids = np.concatenate([b["idx"] for b in batches])
        assert sorted(ids.tolist()) == sorted(plain)  # every training image once per epoch
        epochs[epoch] = {int(i): x for b in batches for i, x in zip(b["idx"], b["x"], strict=True)}
    changed = [i for i in plain if not np.allclose(epochs[1][i], plain[i])]
    assert len(changed) > 0.9 * len(plain)  # rotated, not passed through
    assert not all(np.allclose(epochs[1][i], epochs[2][i]) for i in changed)  # afresh

    raw["trainable"] = {
        "framework": "torch",
        "model": "cnn",
        "params": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.003},
    }
    space = {"aug_rotate": {"type": "uniform", "low": 0.0, "high": 15.0}}
    summary = run_sweep(raw, search_space=space, progress=False)
    assert summary.end_reasons["completed"] == 2 and summary.best_metric > 0.5
    client = MlflowClient(summary.mlflow_tracking_uri)
    children = client.search_runs(
        [summary.mlflow_experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
    )
    assert len({c.data.params["aug_rotate"] for c in children}) == 2


@pytest.mark.slow  # a text sweep (~40 s)
def test_a_streamed_text_column_is_augmented_with_its_own_vocabulary_and_tuned(
    tmp_path: Path,
) -> None:
    """Token ids stream and are augmented per batch (synonyms from the streamed vocabulary)."""
    from pipelines.data import materialise
    from tests.unit.test_stream_text import _sms_parquet

    folder = _sms_parquet(tmp_path / "sms")
    raw = _experiment(folder, streaming=True)
    raw["data"] = {
        "dataset": "parquet",
        "path": str(folder),
        "text_column": "message",
        "label_column": "kind",
        "streaming": True,
    }
    fit, _ = prepare_source(load_config_dict(raw).data)
    assert isinstance(fit, StreamFit) and fit.modality == "text"
    data = materialise(fit, cache_hit=False, cpus_per_trial=1)

    def epoch(hparams: dict[str, Any]) -> dict[int, np.ndarray]:
        stream = data.for_trial({"seed": 5, **hparams}, trial=0, cpus=1)
        batches = list(stream.train_batches(1, 64))
        assert all(b["x"].shape[1:] == (2048,) for b in batches)  # featurised after augmenting
        return {int(i): x for b in batches for i, x in zip(b["idx"], b["x"], strict=True)}

    plain, augmented = epoch({}), epoch({"aug_synonym": 0.3, "aug_delete": 0.2})
    assert sorted(plain) == sorted(augmented) and len(plain) == fit.num_train
    changed = sum(not np.array_equal(plain[i], augmented[i]) for i in plain)
    assert changed > 0.5 * len(plain)

    space = {
        "lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2},
        "aug_synonym": {"type": "uniform", "low": 0.0, "high": 0.3},
    }
    summary = run_sweep(raw, search_space=space, progress=False)
    assert summary.end_reasons["completed"] == 2 and summary.best_metric > 0.9  # ham is 0.87
