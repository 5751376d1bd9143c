"""User data files, loud data faults, rows in == rows out, and the preprocessing cache (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.config import DataConfig
from pipelines.data import cache, load_raw, prepare_arrays
from pipelines.errors import DataError


def _csv(tmp_path: Path, text: str, name: str = "table.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _tabular_rows(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3)).astype(np.float32)
    return x, np.where(x[:, 0] > 0, "yes", "no")


def _lines(x: np.ndarray, labels: np.ndarray) -> list[str]:
    rows = (f"{r[0]},{r[1]},{r[2]},{label}" for r, label in zip(x, labels, strict=True))
    return ["a,b,c,label", *rows]


def test_csv_with_string_labels_loads_every_row_and_encodes_classes(tmp_path: Path) -> None:
    x, labels = _tabular_rows()
    lines = _lines(x, labels)
    raw = load_raw(DataConfig(dataset="csv", path=_csv(tmp_path, "\n".join(lines) + "\n")))

    assert (raw.modality, raw.task, raw.class_names) == (
        "tabular",
        "classification",
        ("no", "yes"),
    )
    np.testing.assert_allclose(raw.x, x, rtol=1e-6)
    np.testing.assert_array_equal(raw.y, (labels == "yes").astype(np.int64))


def test_parquet_folder_with_chosen_columns_and_a_regression_target(tmp_path: Path) -> None:
    x, _ = _tabular_rows(40)
    target = (x @ np.array([1.0, -2.0, 0.5])).astype(np.float64) + 0.25
    folder = tmp_path / "parts"
    folder.mkdir()
    for part, rows in enumerate((slice(0, 25), slice(25, 40))):
        table = pa.table({"f0": x[rows, 0], "f1": x[rows, 1], "unused": x[rows, 2],
                          "y": target[rows]})  # fmt: skip
        pq.write_table(table, folder / f"part-{part}.parquet")
    config = DataConfig(
        dataset="parquet", path=folder, label_column="y", feature_columns=["f0", "f1"]
    )
    raw = load_raw(config)

    assert (raw.modality, raw.task, raw.x.shape) == ("tabular", "regression", (40, 2))
    np.testing.assert_allclose(np.sort(raw.y), np.sort(target.astype(np.float32)), rtol=1e-6)


def test_text_csv_is_a_text_dataset(tmp_path: Path) -> None:
    path = _csv(tmp_path, 'text,label\n"a fine day",pos\n"a bad day",neg\n"so good",pos\n')
    raw = load_raw(DataConfig(dataset="csv", path=path, text_column="text"))
    assert raw.modality == "text"
    assert raw.x == ["a fine day", "a bad day", "so good"]
    assert list(raw.y) == [1, 0, 1]


def _image_folder(tmp_path: Path, per_class: int = 6, size: tuple[int, int] = (10, 12)) -> Path:
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / name / f"{i}.png")
    return root


def test_image_folder_uses_folder_names_as_labels(tmp_path: Path) -> None:
    root = _image_folder(tmp_path)
    raw = load_raw(DataConfig(dataset="image_folder", path=root))
    assert raw.x.shape == (12, 1, 12, 10)  # (N, C, H, W) from 10x12 (width x height) files
    assert raw.class_names == ("cat", "dog")
    assert list(np.bincount(raw.y)) == [6, 6]
    first = np.asarray(Image.open(root / "cat" / "0.png"), dtype=np.float32) / 255
    np.testing.assert_allclose(raw.x[0, 0], first)


def test_image_folder_resizes_when_image_size_is_set(tmp_path: Path) -> None:
    root = _image_folder(tmp_path)
    Image.fromarray(np.zeros((20, 20), np.uint8), mode="L").save(root / "cat" / "big.png")
    with pytest.raises(DataError, match="image_size"):
        load_raw(DataConfig(dataset="image_folder", path=root))
    raw = load_raw(DataConfig(dataset="image_folder", path=root, image_size=(8, 8)))
    assert raw.x.shape == (13, 1, 8, 8)


@pytest.mark.parametrize(
    ("case", "message", "key"),
    [
        ("missing path", "not found", "data.path"),
        ("empty csv", "no rows", "data.path"),
        ("malformed record", "Expected 3 columns", "data.path"),
        ("missing label column", "no column 'label'", "data.label_column"),
        ("missing value", "missing value", "data.path"),
        ("non-numeric feature", "not numeric", "data.feature_columns"),
        ("corrupt image", "cannot decode image", "data.path"),
        ("not an npz", "not a readable .npz", "data.path"),
    ],
)
def test_each_data_fault_is_a_clear_error(
    case: str, message: str, key: str, tmp_path: Path
) -> None:
    config: DataConfig
    if case == "missing path":
        config = DataConfig(dataset="csv", path=tmp_path / "nope.csv")
    elif case == "empty csv":
        config = DataConfig(dataset="csv", path=_csv(tmp_path, "a,b,label\n"))
    elif case == "malformed record":
        path = _csv(tmp_path, "a,b,label\n1,2,0\n3,4,5,1\n5,6,0\n")
        config = DataConfig(dataset="csv", path=path)
    elif case == "missing label column":
        config = DataConfig(dataset="csv", path=_csv(tmp_path, "a,b,y\n1,2,0\n"))
    elif case == "missing value":
        config = DataConfig(dataset="csv", path=_csv(tmp_path, "a,b,label\n1,2,0\n3,,1\n"))
    elif case == "non-numeric feature":
        path = _csv(tmp_path, "a,b,label\n1,x,0\n3,y,1\n")
        config = DataConfig(dataset="csv", path=path)
    elif case == "corrupt image":
        root = _image_folder(tmp_path)
        (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        config = DataConfig(dataset="image_folder", path=root)
    else:
        path = tmp_path / "data.npz"
        path.write_bytes(b"definitely not a zip file")
        config = DataConfig(dataset="npz", path=path)

    with pytest.raises(DataError, match=message) as caught:
        prepare_arrays(config)
    assert caught.value.key == key
    assert caught.value.fix


def test_rows_in_equal_rows_out_through_preprocessing(tmp_path: Path) -> None:
    x, labels = _tabular_rows(97)
    lines = _lines(x, labels)
    config = DataConfig(dataset="csv", path=_csv(tmp_path, "\n".join(lines) + "\n"))
    prepared, _ = prepare_arrays(config)

    assert len(prepared.y_train) + len(prepared.y_val) == 97
    # Every input row is in exactly one split: de-standardise and match them back.
    rows = np.concatenate([prepared.x_train, prepared.x_val])
    order = np.lexsort(rows.T[::-1])
    assert len(np.unique(rows[order], axis=0)) == 97


def test_second_preparation_reuses_the_cache_and_changes_invalidate_it(tmp_path: Path) -> None:
    x, labels = _tabular_rows(50)
    lines = _lines(x, labels)
    path = _csv(tmp_path, "\n".join(lines) + "\n")
    config = DataConfig(dataset="csv", path=path)

    first, hit_first = prepare_arrays(config)
    second, hit_second = prepare_arrays(config)
    assert (hit_first, hit_second) == (False, True)
    assert len(cache.builds()) == 1
    np.testing.assert_array_equal(first.x_train, second.x_train)
    assert first.fingerprint() == second.fingerprint()

    # Other preprocessing settings, or other bytes in the file, are another entry.
    assert prepare_arrays(config.model_copy(update={"val_fraction": 0.3}))[1] is False
    path.write_text("\n".join([*lines, "9,9,9,yes"]) + "\n")
    assert prepare_arrays(config)[1] is False
    assert len(cache.builds()) == 3


def test_a_damaged_cache_entry_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    config = DataConfig(dataset="digits")
    prepare_arrays(config)
    entry = cache.cache_root() / cache.cache_key(config)
    (entry / "arrays.npz").write_bytes(b"truncated")
    prepared, hit = prepare_arrays(config)
    assert hit is False
    assert len(prepared.y_train) + len(prepared.y_val) == 1797
    meta = json.loads((entry / "meta.json").read_text())
    assert meta["fingerprint"] == prepared.fingerprint()


def test_cache_off_always_preprocesses() -> None:
    config = DataConfig(dataset="digits", cache=False)
    assert prepare_arrays(config)[1] is False
    assert prepare_arrays(config)[1] is False
    assert cache.builds() == []
