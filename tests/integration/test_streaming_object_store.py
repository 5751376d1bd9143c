"""Streamed data in an object store: a sweep reads Parquet from a real S3-compatible server.

The sweep runs in its own process, so that its Ray workers (which read the bucket) start with
the store's credentials in their environment, as a cluster's nodes would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs
import pytest

from pipelines.errors import ConfigError
from pipelines.sweep.inputs import sweep_config
from pipelines.sweep.plan import plan_sweep
from tests.integration.test_streaming_sweep import SPACE, _digits_folder
from tests.support.chaos import S3_CREDENTIALS, make_bucket
from tests.support.scripts import run_for_result

#: Runs the sweep of argv[1] (JSON) and prints what its MLflow runs recorded.
_SWEEP = """
import json, sys
from mlflow.tracking import MlflowClient
from pipelines import run_sweep

raw, space = json.loads(sys.argv[1]), json.loads(sys.argv[2])
summary = run_sweep(raw, search_space=space, progress=False)
client = MlflowClient(summary.mlflow_tracking_uri)
parent = client.get_run(summary.mlflow_parent_run_id)
children = client.search_runs(
    [summary.mlflow_experiment_id],
    filter_string=f"tags.`mlflow.parentRunId` = '{summary.mlflow_parent_run_id}'",
)
steps = [
    [m.step for m in client.get_metric_history(c.info.run_id, "val_accuracy")] for c in children
]
print("RESULT " + json.dumps({
    "completed": summary.end_reasons.get("completed", 0),
    "best": summary.best_metric,
    "steps": steps,
    "statuses": [c.info.status for c in children],
    "recorded": sorted(
        f"{k}={v}"
        for k, v in {**parent.data.params, **parent.data.tags}.items()
        if "s3" in v or "chaos" in v
    ),
}))
"""


def _experiment(uri: str, endpoint: str, **data: Any) -> dict[str, Any]:
    return {
        "name": "digits_from_s3",
        "metric": "val_accuracy",
        "mode": "max",
        "data": {"dataset": "parquet", "path": uri, "endpoint": endpoint, "label_column": "digit",
                 **data},
        "trainable": {
            "framework": "torch",
            "model": "mlp",
            "params": {"epochs": 2, "batch_size": 64, "optimizer": "adam"},
        },
        "search": {"method": "random", "num_samples": 1, "seed": 3},
    }  # fmt: skip


def test_a_sweep_streams_parquet_from_an_s3_compatible_store(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # the sweep's process and its Ray workers read them
    make_bucket(s3_endpoint, "datasets")
    local = _digits_folder(tmp_path / "digits")
    s3 = pyarrow.fs.S3FileSystem(
        endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", region="us-east-1"
    )
    pyarrow.fs.copy_files(str(local), "datasets/digits", destination_filesystem=s3)

    raw = _experiment("s3://datasets/digits", s3_endpoint)
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "register_model": False}
    outcome = run_for_result(_SWEEP, json.dumps(raw), json.dumps(SPACE))

    assert outcome["completed"] == 1 and outcome["statuses"] == ["FINISHED"]
    assert outcome["steps"] == [[1, 2]] and outcome["best"] > 0.5
    # The path as written, not the URI pyarrow opened (its endpoint folded in), and no secret.
    assert "config.data.path=s3://datasets/digits" in outcome["recorded"]
    assert not [r for r in outcome["recorded"] if "endpoint_override" in r or "chaos" in r]
    # The trial's node kept every row group it read (9 of them, both splits) on local disk,
    # so its second epoch read no Parquet from the store.
    cached = list((isolated_home / "cache" / "stream" / "rows").rglob("*.npz"))
    assert len(cached) == 9 * 2


def test_an_image_folder_streams_from_an_s3_compatible_store(
    tmp_path: Path, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    """Listed, fitted and read from the bucket exactly as from the local copy of the folder."""
    from pipelines.config import DataConfig
    from pipelines.data import prepare_source
    from pipelines.data.streaming import StreamFit, read_encoded
    from tests.unit.test_image_files import _digits_images

    for name, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    make_bucket(s3_endpoint, "images")
    local = _digits_images(tmp_path / "digits", count=160)
    s3 = pyarrow.fs.S3FileSystem(
        endpoint_override=s3_endpoint.removeprefix("http://"), scheme="http", region="us-east-1"
    )
    pyarrow.fs.copy_files(str(local), "images/digits", destination_filesystem=s3)

    remote = DataConfig(dataset="image_folder", path="s3://images/digits", endpoint=s3_endpoint)
    fit, _ = prepare_source(remote)
    here, _ = prepare_source(DataConfig(dataset="image_folder", path=local, streaming=True))
    assert isinstance(fit, StreamFit) and isinstance(here, StreamFit)
    assert (fit.num_train, fit.num_val, fit.classes) == (
        here.num_train,
        here.num_val,
        here.classes,
    )
    assert fit.mean == pytest.approx(here.mean) and fit.std == pytest.approx(here.std)
    for split in ("train", "val"):
        got = read_encoded(fit, fit.listing.fragments[0], split)
        expected = read_encoded(here, here.listing.fragments[0], split)
        assert np.array_equal(got["x"], expected["x"]) and np.array_equal(got["y"], expected["y"])


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"path": "s3://AKIAEXAMPLE:secret@datasets/digits"}, "data.path"),
        ({"path": "s3://datasets/digits?secret_key=abc"}, "data.path"),
        ({"streaming": False}, "data.streaming"),
        ({"dataset": "digits"}, "data.dataset"),
        ({"path": "gs://datasets/digits"}, "data.endpoint"),
        ({"path": "nosuchscheme://datasets/digits", "endpoint": None}, "data.path"),
    ],
)
def test_bad_data_uris_are_refused_before_any_cluster_work(
    change: dict[str, Any], key: str
) -> None:
    raw = _experiment("s3://datasets/digits", "http://127.0.0.1:9")
    raw["data"] = {k: v for k, v in {**raw["data"], **change}.items() if v is not None}
    with pytest.raises(ConfigError) as refused:
        plan_sweep(sweep_config(raw, search_space=SPACE))
    assert refused.value.key == key
    assert "secret" not in str(refused.value)
