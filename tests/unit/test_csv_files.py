"""A folder of CSV files streamed one file a fragment: counted, fitted as Parquet, faults loud."""

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
        ("short record", r"part-1\.csv: cannot read a record \(CSV parse error"),
        ("blank line", r"part-1\.csv: parsed 598 records, but it has 599 lines"),
        ("quoted line break", r"part-1\.csv: parsed 598 records, but it has 599 lines"),
    ],
)
def test_a_bad_record_mid_folder_is_an_error_naming_the_file(
    tmp_path: Path, damage: str, message: str
) -> None:
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
