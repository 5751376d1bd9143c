"""Storage as a path or a URI: what Tune gets, what is refused before any cluster work."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.config import StorageConfig, config_from_mapping
from pipelines.errors import ConfigError
from pipelines.sweep.storage import check_storage, join, storage_uri


def test_a_local_path_becomes_absolute_and_stays_a_path(tmp_path: Path) -> None:
    storage = StorageConfig(path="runs")
    assert storage.is_local
    assert storage.path == str(Path.cwd() / "runs")
    assert storage_uri(storage) == storage.path
    assert StorageConfig(path="file:///srv/nfs/runs").path == "/srv/nfs/runs"


def test_an_s3_uri_keeps_its_scheme_and_gets_the_endpoint_folded_in() -> None:
    # The bug this replaces: pathlib turned s3://bucket/x into s3:/bucket/x.
    storage = StorageConfig(path="s3://bucket/sweeps", endpoint="http://127.0.0.1:9000")
    assert not storage.is_local
    uri = storage_uri(storage)
    assert uri.startswith("s3://bucket/sweeps?")
    assert "endpoint_override=127.0.0.1%3A9000" in uri and "scheme=http" in uri
    assert "region=us-east-1" in uri
    assert join(uri, "chaos-1").startswith("s3://bucket/sweeps/chaos-1?endpoint_override=")
    assert storage_uri(StorageConfig(path="gs://bucket/x")) == "gs://bucket/x"
    check_storage(storage)  # pyarrow accepts it (no I/O at plan time)


@pytest.mark.parametrize(
    ("storage", "words"),
    [
        ({"path": "s3://key:secret@bucket/x"}, "credentials"),
        ({"path": "s3://bucket/x?access_key=AKIA&secret_key=s"}, "credentials"),
        ({"path": "/tmp/x", "endpoint": "http://127.0.0.1:9000"}, "only for s3"),
        ({"path": "nosuchscheme://bucket/x"}, "pyarrow"),
        ({"path": "s3://bucket/x?no_such_option=1"}, "pyarrow"),
    ],
)
def test_bad_storage_is_refused_at_plan_time_with_the_key_and_a_fix(
    storage: dict[str, str], words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        check_storage(StorageConfig(**storage))
    message = caught.value.one_line()
    assert words in message and "storage." in message and "Fix:" in message
    assert "secret" not in message.replace("secret_key", "")  # a credential is never echoed


def test_an_endpoint_without_a_scheme_is_a_config_error() -> None:
    raw = {
        "name": "x",
        "metric": "val_loss",
        "mode": "min",
        "trainable": {
            "model": "mlp",
            "search_space": "mlp",
        },
        "storage": {"path": "s3://b/x", "endpoint": "127.0.0.1:9000"},
    }
    with pytest.raises(ConfigError, match=r"storage\.endpoint.*http://"):
        config_from_mapping(raw)
