"""A folder of npz shards streamed like Parquet row groups: listed from headers, fitted alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipelines.config import DataConfig
from pipelines.data import prepare_source
from pipelines.data.streaming import StreamFit, fit_stream, list_fragments, read_encoded
from pipelines.errors import DataError
from tests.unit.test_streaming import _write_digits


def _write_shards(folder: Path, files: int = 3) -> None:
    """The 1,797 real digits as ``files`` shards of x (float32, 64 features) and y."""
    x, y = load_digits(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in enumerate(np.array_split(np.arange(len(y)), files)):
        np.savez(folder / f"shard-{part}.npz", x=x[rows].astype(np.float32), y=y[rows])


def test_shards_are_listed_from_headers_and_fit_as_the_same_rows_in_parquet_do(
    tmp_path: Path,
) -> None:
    _write_shards(tmp_path / "shards")
    listing = list_fragments(str(tmp_path / "shards"), suffix=".npz")
    assert [f.rows for f in listing.fragments] == [599, 599, 599]
    assert listing.columns == (*(f"x{i}" for i in range(64)), "y")
    shards = fit_stream(listing, label="y")
    _write_digits(tmp_path / "parquet")  # the same rows, as p0..p63 and label
    parquet = fit_stream(list_fragments(str(tmp_path / "parquet")), label="label")
    # The split hashes feature values, not names or files: the same rows land alike.
    assert (shards.num_train, shards.num_val) == (parquet.num_train, parquet.num_val)
    np.testing.assert_allclose(shards.mean, parquet.mean)
    assert shards.classes == parquet.classes == tuple(range(10))
    rows = read_encoded(shards, listing.fragments[1], "val")
    assert rows["x"].shape[1] == 64 and (rows["idx"] >= 599).all()


def test_a_folder_of_shards_streams_without_being_asked(tmp_path: Path) -> None:
    _write_shards(tmp_path / "shards")
    config = DataConfig(dataset="npz", path=tmp_path / "shards")
    fit, _ = prepare_source(config)
    assert isinstance(fit, StreamFit) and fit.label == "y"
    assert fit.num_train + fit.num_val == 1797 and fit.task == "classification"


def test_shards_that_cannot_stream_are_refused_naming_the_shard(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    _write_shards(folder)
    part = folder / "shard-1.npz"
    intact = part.read_bytes()
    part.write_bytes(intact[: len(intact) // 3])  # a torn copy
    with pytest.raises(DataError, match=r"shard-1\.npz is not a readable \.npz shard"):
        list_fragments(str(folder), suffix=".npz")
    np.savez(part, x=np.zeros((5, 8, 8), np.float32), y=np.zeros(5))  # images
    with pytest.raises(DataError, match=r"shard-1\.npz has x of shape \(5, 8, 8\)"):
        list_fragments(str(folder), suffix=".npz")
    np.savez(part, x=np.array([[{"a": 1}]], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="never unpickled"):
        list_fragments(str(folder), suffix=".npz")


def test_a_shard_damaged_after_the_listing_is_an_error_mid_stream(tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    _write_shards(folder)
    fit = fit_stream(list_fragments(str(folder), suffix=".npz"), label="y")
    part = folder / "shard-2.npz"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of x's data: the zip's CRC-32 catches it
    part.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"shard-2\.npz is not a readable \.npz shard"):
        read_encoded(fit, fit.listing.fragments[2], "train")
