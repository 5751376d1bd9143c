"""Parquet read in fragments: listing, split by row hash, one-pass fitting, streaming, faults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_diabetes, load_digits

from pipelines.data.streaming import (
    Moments,
    fit_stream,
    in_validation,
    iter_split,
    list_fragments,
    row_hash,
)
from pipelines.errors import DataError


def _write_digits(folder: Path, files: int = 3, row_group_size: int = 200) -> tuple[Any, Any]:
    """Write scikit-learn's 1,797 real digits as ``files`` Parquet files of several row groups."""
    x, y = load_digits(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in enumerate(np.array_split(np.arange(len(y)), files)):
        columns = {f"p{i}": x[rows, i].astype(np.float32) for i in range(x.shape[1])}
        table = pa.table({**columns, "label": y[rows]})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=row_group_size)
    return x.astype(np.float32), y


def _zero_pages(part: Path, *, row_group: int, column: int) -> None:
    """Overwrite one column chunk's compressed pages with zeros, as a bad sector would."""
    chunk = pq.ParquetFile(part).metadata.row_group(row_group).column(column)
    data = bytearray(part.read_bytes())
    start = chunk.data_page_offset
    data[start : start + chunk.total_compressed_size] = bytes(chunk.total_compressed_size)
    part.write_bytes(bytes(data))


def test_the_listing_reads_footers_only_and_its_fingerprint_follows_sizes_and_mtimes(
    tmp_path: Path,
) -> None:
    _write_digits(tmp_path / "digits")
    listing = list_fragments(str(tmp_path / "digits"))
    assert listing.rows == 1797 and len(listing.files) == 3
    assert len(listing.fragments) == 3 * 3  # 599 rows a file, row groups of 200
    assert [f.first_row for f in listing.fragments][:4] == [0, 200, 400, 599]
    before = listing.fingerprint()
    assert list_fragments(str(tmp_path / "digits")).fingerprint() == before
    part = tmp_path / "digits" / "part-1.parquet"
    stat = part.stat()
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))  # touched, same bytes
    assert list_fragments(str(tmp_path / "digits")).fingerprint() != before


def test_the_row_hash_split_is_stable_unbiased_and_keeps_duplicates_together() -> None:
    x, _ = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    val = in_validation(row_hash(x), 0.2)
    assert abs(val.mean() - 0.2) < 0.03
    # The same rows in another order, another batch cut: the same assignment row by row.
    order = np.random.default_rng(0).permutation(len(x))
    assert (in_validation(row_hash(x[order]), 0.2) == val[order]).all()
    # A pinned value: the hash decides splits, so it must not change across machines or
    # releases (a change would move rows between splits of a cached or resumed sweep).
    assert int(row_hash(np.array([[0.0, 1.0, 2.5]], np.float32))[0]) == 4669218324046406912
    twins = np.concatenate([x, x])
    twin_val = in_validation(row_hash(twins), 0.2)
    assert (twin_val[: len(x)] == twin_val[len(x) :]).all()


def test_moments_merged_batch_by_batch_match_numpy() -> None:
    values = np.random.default_rng(1).normal(5.0, 3.0, size=(1000, 4))
    moments = Moments()
    for piece in np.array_split(values, 7):
        moments.add(piece)
    np.testing.assert_allclose(moments.mean, values.mean(axis=0))
    np.testing.assert_allclose(moments.std, values.std(axis=0))


def test_one_pass_fits_what_a_pass_over_all_rows_in_memory_would(tmp_path: Path) -> None:
    x, _ = _write_digits(tmp_path / "digits")
    fit = fit_stream(list_fragments(str(tmp_path / "digits")), label="label")
    val = in_validation(row_hash(x), 0.2)
    assert (fit.num_train, fit.num_val) == (int((~val).sum()), int(val.sum()))
    assert fit.task == "classification" and fit.classes == tuple(range(10))
    train = x[~val].astype(np.float64)
    np.testing.assert_allclose(fit.mean, train.mean(axis=0), rtol=1e-9, atol=1e-12)
    std = train.std(axis=0)
    np.testing.assert_allclose(fit.std, np.where(std > 0, std, 1.0), rtol=1e-9)


def test_regression_targets_are_recognised_and_standardised(tmp_path: Path) -> None:
    x, y = load_diabetes(return_X_y=True)
    table = pa.table({**{f"f{i}": x[:, i] for i in range(10)}, "target": y / 7.0})
    pq.write_table(table, tmp_path / "diabetes.parquet", row_group_size=100)
    fit = fit_stream(list_fragments(str(tmp_path / "diabetes.parquet")), label="target")
    assert fit.task == "regression" and fit.classes == ()
    val = in_validation(row_hash(x.astype(np.float32)), 0.2)
    assert fit.target_mean == pytest.approx((y / 7.0)[~val].mean())


def test_bad_labels_and_features_are_refused_before_any_stream(tmp_path: Path) -> None:
    _write_digits(tmp_path / "digits")
    listing = list_fragments(str(tmp_path / "digits"))
    with pytest.raises(DataError, match="no column 'target'"):
        fit_stream(listing, label="target")
    table = pa.table({"a": [1.0, float("nan"), 3.0, 4.0], "label": [0, 1, 0, 1]})
    pq.write_table(table, tmp_path / "nan.parquet")
    with pytest.raises(DataError, match=r"nan.parquet, row group 0, row 2: .*NaN"):
        fit_stream(list_fragments(str(tmp_path / "nan.parquet")), label="label")


def test_a_truncated_file_in_the_middle_of_a_folder_is_named(tmp_path: Path) -> None:
    _write_digits(tmp_path / "digits")
    part = tmp_path / "digits" / "part-1.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # a copy cut short
    with pytest.raises(DataError, match=r"cannot read .*part-1\.parquet"):
        list_fragments(str(tmp_path / "digits"))


def test_a_damaged_row_group_in_the_middle_is_named_with_its_row_group(tmp_path: Path) -> None:
    """A real fault: the compressed pages of the second row group of the middle file are
    overwritten with zeros, as a bad disk sector would; the footer stays intact."""
    _write_digits(tmp_path / "digits")
    _zero_pages(tmp_path / "digits" / "part-1.parquet", row_group=1, column=0)
    listing = list_fragments(str(tmp_path / "digits"))
    with pytest.raises(DataError, match=r"part-1\.parquet, row group 1"):
        fit_stream(listing, label="label")


@pytest.mark.usefixtures("ray_local")
def test_both_splits_stream_every_row_once_in_fragment_tasks(tmp_path: Path) -> None:
    x, y = _write_digits(tmp_path / "digits")
    fit = fit_stream(list_fragments(str(tmp_path / "digits")), label="label")
    seen = {}
    for split in ("train", "val"):
        batches = list(iter_split(fit, split, batch_size=256))
        seen[split] = np.concatenate([b["idx"] for b in batches])
        xs = np.concatenate([b["x"] for b in batches])
        ys = np.concatenate([b["y"] for b in batches])
        np.testing.assert_allclose(xs, (x[seen[split]] - fit.mean) / fit.std, rtol=1e-5, atol=1e-6)
        assert (ys == y[seen[split]]).all()
    assert len(seen["train"]) == fit.num_train and len(seen["val"]) == fit.num_val
    assert sorted(np.concatenate(list(seen.values())).tolist()) == list(range(1797))


def test_a_stream_inside_an_actor_that_holds_every_cpu_does_not_wait_for_one(
    ray_local: None, tmp_path: Path
) -> None:
    """The trap Ray Data's own reader falls into inside a trial (see the module docstring)."""
    import ray

    _write_digits(tmp_path / "digits")
    fit = fit_stream(list_fragments(str(tmp_path / "digits")), label="label")

    @ray.remote(num_cpus=2)
    class Trial:
        def rows(self, fit: Any) -> int:
            return sum(len(b["y"]) for b in iter_split(fit, "train"))

    trial = Trial.remote()  # type: ignore[attr-defined]
    try:
        assert ray.get(trial.rows.remote(fit), timeout=120) == fit.num_train
    finally:
        ray.kill(trial)


@pytest.mark.usefixtures("ray_local")
def test_a_row_group_damaged_after_fitting_stops_the_stream_with_its_name(tmp_path: Path) -> None:
    """Mid-stream: the fault comes from a Ray Data task and reaches the reader as a DataError
    naming the file and row group, not as a task traceback, and after no silent skip."""
    _write_digits(tmp_path / "digits")
    fit = fit_stream(list_fragments(str(tmp_path / "digits")), label="label")
    _zero_pages(tmp_path / "digits" / "part-2.parquet", row_group=2, column=5)
    with pytest.raises(DataError, match=r"part-2\.parquet, row group 2"):
        for _ in iter_split(fit, "train"):
            pass


def test_the_choice_of_streaming_follows_the_size_unless_the_config_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.config import DataConfig
    from pipelines.data import streaming

    _write_digits(tmp_path / "digits")
    size = list_fragments(str(tmp_path / "digits")).size_bytes
    config = DataConfig(dataset="parquet", path=tmp_path / "digits", label_column="label")
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", size - 1)
    assert streaming.wants_streaming(config)
    assert not streaming.wants_streaming(config.model_copy(update={"streaming": False}))
    # What cannot stream yet stays in memory when the size alone would have chosen streaming.
    assert not streaming.wants_streaming(config.model_copy(update={"modality": "audio"}))
    assert streaming.wants_streaming(config.model_copy(update={"holdout_fraction": 0.1}))
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", size)
    assert not streaming.wants_streaming(config)
    assert streaming.wants_streaming(config.model_copy(update={"streaming": True}))


def test_a_second_listing_reads_no_footer_of_an_unchanged_file(tmp_path: Path) -> None:
    """Footers are read once per file, size and modification time (requests on object stores)."""
    _write_digits(tmp_path / "digits")
    first = list_fragments(str(tmp_path / "digits"))
    part = tmp_path / "digits" / "part-2.parquet"
    stat = part.stat()
    data = bytearray(part.read_bytes())
    data[-8:-4] = bytes(4)  # the footer's length: unreadable if the footer were read again
    part.write_bytes(bytes(data))
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size, same mtime
    assert list_fragments(str(tmp_path / "digits")) == first
    os.utime(part, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000))  # now it looks changed
    with pytest.raises(DataError, match=r"part-2\.parquet"):
        list_fragments(str(tmp_path / "digits"))


def test_ranks_are_dealt_an_epochs_row_groups_evenly_and_identically() -> None:
    from pipelines.data.streaming import assign_fragments

    rows = [100, 90, 80, 10, 10, 10, 95, 5]
    order = [6, 0, 1, 2, 3, 4, 5, 7]
    shares = assign_fragments(order, rows, 2)
    assert shares == assign_fragments(order, rows, 2)  # every rank computes the same deal
    assert sorted(shares[0] + shares[1]) == list(range(8))
    totals = [sum(rows[i] for i in share) for share in shares]
    assert abs(totals[0] - totals[1]) <= max(rows)
    assert totals == [200, 200]


def test_ranks_share_fragments_only_when_there_are_enough_of_them(tmp_path: Path) -> None:
    from pipelines.data.streaming import FRAGMENTS_PER_RANK, rank_share

    _write_digits(tmp_path / "digits", files=3, row_group_size=50)  # 36 row groups
    fit = fit_stream(list_fragments(str(tmp_path / "digits")), label="label")
    assert sum(fit.train_rows) == fit.num_train and len(fit.train_rows) == 36
    shares = [rank_share(fit, (0, 1, 2), rank, 2, 64) for rank in (0, 1)]
    assert shares[0] is not None and shares[1] is not None
    assert not set(shares[0][0]) & set(shares[1][0])
    assert shares[0][1] == shares[1][1] >= (fit.num_train // 2 - 50) // 64
    assert rank_share(fit, (0, 1, 2), 0, 36 // FRAGMENTS_PER_RANK + 1, 64) is None
    assert rank_share(fit, (0, 1, 2), 0, 1, 64) is None
