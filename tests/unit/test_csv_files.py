"""A folder of CSV files streamed one file a fragment: counted, fitted as Parquet, faults loud."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from pipelines.config import DataConfig
from pipelines.data import prepare_source, streaming
from pipelines.data.streaming import StreamFit, fit_stream, list_fragments, read_encoded
from pipelines.errors import DataError
from tests.unit.test_streaming import _write_digits


def _write_csvs(folder: Path, files: int = 3) -> None:
    """The 1,797 real digits as ``files`` CSV files: p0..p63 and label, one record a line."""
    x, y = load_digits(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    header = ",".join([*(f"p{i}" for i in range(64)), "label"])
    for part, rows in enumerate(np.array_split(np.arange(len(y)), files)):
        lines = [",".join([*(f"{v:g}" for v in x[r]), str(y[r])]) for r in rows]
        (folder / f"part-{part}.csv").write_text("\n".join([header, *lines]) + "\n")


def test_csv_files_are_counted_and_fit_as_the_same_rows_in_parquet_do(tmp_path: Path) -> None:
    _write_csvs(tmp_path / "csv")
    listing = list_fragments(str(tmp_path / "csv"), suffix=".csv")
    assert [f.rows for f in listing.fragments] == [599, 599, 599]
    assert listing.columns[-1] == "label" and len(listing.columns) == 65
    streamed = fit_stream(listing, label="label")
    _write_digits(tmp_path / "parquet")
    parquet = fit_stream(list_fragments(str(tmp_path / "parquet")), label="label")
    assert (streamed.num_train, streamed.num_val) == (parquet.num_train, parquet.num_val)
    np.testing.assert_allclose(streamed.mean, parquet.mean)
    assert streamed.classes == parquet.classes
    rows = read_encoded(streamed, listing.fragments[2], "train")
    assert (rows["idx"] >= 2 * 599).all() and rows["x"].shape[1] == 64


def test_a_folder_of_csv_files_streams_and_a_last_line_without_an_end_counts(
    tmp_path: Path,
) -> None:
    _write_csvs(tmp_path / "csv")
    part = tmp_path / "csv" / "part-0.csv"
    part.write_text(part.read_text().rstrip("\n"))
    fit, _ = prepare_source(DataConfig(dataset="csv", path=tmp_path / "csv"))
    assert isinstance(fit, StreamFit) and fit.num_train + fit.num_val == 1797


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("short record", r"part-1\.csv, bytes \d+-\d+: cannot read a record \(CSV parse error"),
        ("blank line", r"part-1\.csv, bytes \d+-\d+: parsed \d+ records from \d+ lines"),
        ("quoted line break", r"part-1\.csv, bytes \d+-\d+: parsed \d+ records from \d+ lines"),
    ],
)
def test_a_bad_record_mid_folder_is_an_error_naming_the_file_and_bytes(
    tmp_path: Path, damage: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streaming, "CSV_RANGE_BYTES", 16 << 10)  # several ranges a file
    _write_csvs(tmp_path / "csv")
    part = tmp_path / "csv" / "part-1.csv"
    lines = part.read_text().splitlines()
    if damage == "short record":
        lines[300] = lines[300].rsplit(",", 2)[0]
    elif damage == "blank line":
        lines[300] = ""
    else:  # lines 300 and 301 become one record whose first value holds a line break
        lines[300] = '"1'
        lines[301] = '2",' + lines[301].split(",", 1)[1]
    part.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        fit_stream(list_fragments(str(tmp_path / "csv"), suffix=".csv"), label="label")


@pytest.mark.parametrize("range_kib", [1, 7, 64, 4096])
@pytest.mark.parametrize("ending", ["\n", "\r\n", ""])
def test_ranges_of_whole_lines_hold_every_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, range_kib: int, ending: str
) -> None:
    """Cut anywhere, with or without a last line end, the ranges parse to the file's rows."""
    monkeypatch.setattr(streaming, "CSV_RANGE_BYTES", range_kib << 10)
    x, y = load_digits(return_X_y=True)
    header = ",".join([*(f"p{i}" for i in range(64)), "label"])
    lines = [",".join([*(f"{v:g}" for v in x[r]), str(y[r])]) for r in range(700)]
    newline = ending or "\n"
    (tmp_path / "one.csv").write_bytes((newline.join([header, *lines]) + ending).encode())
    listing = list_fragments(str(tmp_path / "one.csv"), suffix=".csv")
    assert listing.rows == 700
    if range_kib == 4096:
        assert len(listing.fragments) == 1
    if range_kib == 1:  # ~150-byte records: about 7 a range
        assert len(listing.fragments) >= 90
    fit = fit_stream(listing, label="label")
    rows = [read_encoded(fit, f, split) for f in listing.fragments for split in ("train", "val")]
    idx = np.sort(np.concatenate([r["idx"] for r in rows]))
    np.testing.assert_array_equal(idx, np.arange(700))
