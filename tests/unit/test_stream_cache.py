"""Streamed data kept on disk: the fit by the listing's fingerprint, row groups per node."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import DataConfig
from pipelines.data import stream_cache
from pipelines.data.stream_cache import RowCache
from pipelines.data.stream_sweep import prepare_stream
from pipelines.data.streaming import Fragment, StreamFit, read_encoded
from pipelines.errors import DataError
from tests.unit.test_streaming import _write_digits


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TUNEPIPE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _config(folder: Path, **changes: object) -> DataConfig:
    return DataConfig(dataset="parquet", path=folder, streaming=True, **changes)  # type: ignore[arg-type]


def _same_fit(a: StreamFit, b: StreamFit) -> None:
    assert a.fields() == b.fields()
    assert a.fingerprint() == b.fingerprint()


def test_a_second_prepare_reuses_the_fit_until_a_file_or_a_setting_changes(
    tmp_path: Path, home: Path
) -> None:
    _write_digits(tmp_path / "digits")
    first, hit = prepare_stream(_config(tmp_path / "digits"), "classification")
    assert not hit and first.row_cache is not None and home in Path(first.row_cache).parents
    again, hit = prepare_stream(_config(tmp_path / "digits"), "classification")
    assert hit
    _same_fit(first, again)
    assert again.mean.dtype == np.float64 and again.classes == tuple(range(10))
    # Another split fraction is another fit.
    _, hit = prepare_stream(_config(tmp_path / "digits", val_fraction=0.3), "classification")
    assert not hit
    # A file rewritten (another size) is another listing: fitted again.
    _write_digits(tmp_path / "digits", files=3, row_group_size=150)
    _, hit = prepare_stream(_config(tmp_path / "digits"), "classification")
    assert not hit


def test_data_cache_false_neither_reads_nor_writes_either_cache(
    tmp_path: Path, home: Path
) -> None:
    _write_digits(tmp_path / "digits")
    fit, hit = prepare_stream(_config(tmp_path / "digits", cache=False), "classification")
    assert not hit and fit.row_cache is None
    read_encoded(fit, fit.listing.fragments[0], "train")
    assert not (home / "cache" / "stream").exists()


def test_a_damaged_cached_fit_is_fitted_again_not_used(tmp_path: Path, home: Path) -> None:
    _write_digits(tmp_path / "digits")
    first, _ = prepare_stream(_config(tmp_path / "digits"), "classification")
    [entry] = (home / "cache" / "stream" / "fits").glob("*.json")
    saved = json.loads(entry.read_text())
    saved["body"]["mean"][3] += 1.0  # a flipped digit, the digest left as it was
    entry.write_text(json.dumps(saved))
    again, hit = prepare_stream(_config(tmp_path / "digits"), "classification")
    assert not hit
    _same_fit(first, again)
    entry.write_bytes(entry.read_bytes()[:40])  # a torn write
    _, hit = prepare_stream(_config(tmp_path / "digits"), "classification")
    assert not hit


def test_row_groups_read_once_are_served_from_the_node_cache(tmp_path: Path, home: Path) -> None:
    _write_digits(tmp_path / "digits")
    fit, _ = prepare_stream(_config(tmp_path / "digits"), "classification")
    fragment = fit.listing.fragments[4]
    train = read_encoded(fit, fragment, "train")
    cache = RowCache(str(fit.row_cache), fit.row_shape)
    # One read of the source kept both splits.
    for split in ("train", "val"):
        assert cache.path(split, fragment.path, fragment.row_group).exists()
    # The same rows as without a cache, column by column.
    plain = read_encoded(StreamFit(**{**fit.__dict__, "row_cache": None}), fragment, "train")
    for name in ("x", "y", "idx"):
        np.testing.assert_array_equal(train[name], plain[name])
    # With the source gone, the cached row group still reads: it came from the cache.
    Path(fragment.path).rename(tmp_path / "moved.parquet")
    val = read_encoded(fit, fragment, "val")
    assert len(val["y"]) + len(train["y"]) == fragment.rows
    with pytest.raises(DataError):  # an uncached row group of that file needs the file
        read_encoded(fit, Fragment(fragment.path, 0, 200, fragment.first_row - 200), "train")


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_cached_row_group_is_read_from_the_source_again(
    tmp_path: Path, home: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    _write_digits(tmp_path / "digits")
    fit, _ = prepare_stream(_config(tmp_path / "digits"), "classification")
    fragment = fit.listing.fragments[2]
    first = read_encoded(fit, fragment, "train")
    entry = RowCache(str(fit.row_cache), fit.row_shape).path(
        "train", fragment.path, fragment.row_group
    )
    data = bytearray(entry.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10  # one bit, in the middle of the stored features
        entry.write_bytes(bytes(data))
    else:
        entry.write_bytes(bytes(data[: len(data) // 2]))
    again = read_encoded(fit, fragment, "train")
    for name in ("x", "y", "idx"):
        np.testing.assert_array_equal(again[name], first[name])
    assert "damaged" in caplog.text
    assert entry.exists()  # rebuilt from the source


def test_no_row_group_is_cached_on_a_disk_that_would_be_left_too_full(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_digits(tmp_path / "digits")
    fit, _ = prepare_stream(_config(tmp_path / "digits"), "classification")
    # A disk with less free space than the reserve: the rule, not the disk, is what is tested.
    monkeypatch.setattr(stream_cache, "KEEP_FREE_BYTES", 1 << 62)
    rows = read_encoded(fit, fit.listing.fragments[0], "train")
    assert len(rows["y"]) > 0
    assert not list(Path(str(fit.row_cache)).rglob("*.npz"))


def test_a_node_that_cannot_make_the_cache_folder_reads_the_source_and_says_so_once(
    tmp_path: Path, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_digits(tmp_path / "digits")
    fit, _ = prepare_stream(_config(tmp_path / "digits"), "classification")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # the driver's path names a file on this node
    fit = StreamFit(**{**fit.__dict__, "row_cache": str(blocker / "rows")})
    rows = [read_encoded(fit, fragment, "train") for fragment in fit.listing.fragments[:3]]
    assert all(len(r["y"]) > 0 for r in rows)
    assert caplog.text.count("cannot cache rows") == 2  # once per split folder, not per read
