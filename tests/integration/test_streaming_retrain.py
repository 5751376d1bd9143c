"""Retraining on streamed data: the holdout is set aside by its hash and judged as it streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.data import StreamFit, prepare_arrays, prepare_source
from pipelines.data.streaming import read_encoded
from pipelines.retrain.run import run_retrain
from tests.integration.test_streaming_sweep import _digits_folder
from tests.support.configs import shrunk

# One retrain and its skip, about a minute: with `make test-slow`.
pytestmark = [pytest.mark.usefixtures("ray_local"), pytest.mark.slow]


def test_a_retrain_on_streamed_data_judges_on_a_holdout_no_trial_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TUNEPIPE_HOME", str(tmp_path / "home"))
    folder = _digits_folder(tmp_path / "digits")
    settings = {
        "data.dataset": "parquet",
        "data.path": str(folder),
        "data.label_column": "digit",
        "data.streaming": True,
        "trainable.params.epochs": 2,
        "retrain.num_samples": 2,
        "tracking.uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "storage.path": str(tmp_path / "ray_results"),
    }
    config = shrunk("digits_retrain.yaml", **settings)
    fit, _ = prepare_source(config.data)
    assert isinstance(fit, StreamFit) and fit.holdout_fraction == 0.2

    # The holdout is the in-memory one: the same rows of the same table, by the same hash.
    table = pq.read_table(folder)
    (tmp_path / "one").mkdir()
    pq.write_table(table, tmp_path / "one" / "all.parquet")
    in_memory, _ = prepare_arrays(
        config.data.model_copy(
            update={"path": tmp_path / "one" / "all.parquet", "streaming": False}
        )
    )
    assert in_memory.y_holdout is not None
    assert fit.num_holdout == len(in_memory.y_holdout) and fit.num_holdout > 0.1 * 1797
    assert fit.num_train + fit.num_val + fit.num_holdout == 1797

    # No holdout row is in a split a trial reads.
    ids = {
        split: np.concatenate([read_encoded(fit, f, split)["idx"] for f in fit.listing.fragments])
        for split in ("train", "val", "holdout")
    }
    assert len(ids["holdout"]) == fit.num_holdout
    assert not set(ids["holdout"]) & (set(ids["train"]) | set(ids["val"]))

    first = run_retrain(config, progress=False)
    assert first.decision == "promoted" and first.challenger_score is not None
    assert first.challenger_score > 0.7
    again = run_retrain(shrunk("digits_retrain.yaml", **settings), progress=False)
    assert again.decision == "skipped" and "data unchanged" in again.reason
