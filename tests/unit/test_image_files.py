"""Streamed image folders: listed in mixed chunks, fitted in one pass, loud about bad images."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from pipelines.config import DataConfig
from pipelines.data import image_files
from pipelines.data.sources import load_raw
from pipelines.data.stream_cache import RowCache
from pipelines.data.streaming import fit_images, read_encoded, wants_streaming
from pipelines.errors import DataError


def _digits_images(root: Path, count: int = 400) -> Path:
    """The first ``count`` real 8x8 digits as grey PNGs in one folder per digit."""
    x, y = load_digits(return_X_y=True)
    for i in range(count):
        folder = root / f"digit{y[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (x[i].reshape(8, 8) * 16).clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture
def small_fragments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_files, "IMAGES_PER_FRAGMENT", 64)


@pytest.mark.usefixtures("small_fragments")
def test_a_listing_mixes_classes_in_every_chunk_and_counts_empty_class_folders(
    tmp_path: Path,
) -> None:
    root = _digits_images(tmp_path / "digits")
    (root / "unused").mkdir()  # an empty class folder is a class, as in memory
    (root / "digit3" / ".DS_Store").write_bytes(b"hidden")  # hidden files are not images
    (root / "README.txt").write_text("beside the class folders, not in one")
    listing = image_files.list_images(str(root))

    assert listing.rows == 400 and len(listing.fragments) == 7  # 6 of 64 and one of 16
    assert listing.classes == (*(f"digit{d}" for d in range(10)), "unused")
    assert [f.first_row for f in listing.fragments] == list(range(0, 400, 64))
    for fragment in listing.fragments:
        files = listing.files[fragment.offset : fragment.offset + fragment.length]
        assert len({image_files.class_of(str(root), path) for path, _, _ in files}) >= 5
    # The same folder lists the same way; a touched file changes the fingerprint.
    assert image_files.list_images(str(root)) == listing
    touched = root / "digit0" / "0000.png"
    os.utime(touched, ns=(1, 1))
    assert image_files.list_images(str(root)).fingerprint() != listing.fingerprint()


def test_large_images_make_smaller_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_files, "PIXEL_BYTES_PER_FRAGMENT", 20 * 8 * 8 * 4)
    listing = image_files.list_images(str(_digits_images(tmp_path / "digits", count=100)))
    assert {f.rows for f in listing.fragments[:-1]} == {20}


@pytest.mark.usefixtures("small_fragments")
def test_the_fit_matches_the_in_memory_statistics_and_splits_by_file_bytes(
    tmp_path: Path,
) -> None:
    root = _digits_images(tmp_path / "digits")
    shutil.copy(root / "digit0" / "0000.png", root / "digit0" / "copy.png")
    fit = fit_images(image_files.list_images(str(root)), val_fraction=0.25)
    raw = load_raw(DataConfig(dataset="image_folder", path=root))

    assert fit.spec().input_shape == (1, 8, 8) and fit.spec().modality == "image"
    assert fit.num_train + fit.num_val == 401 and 60 < fit.num_val < 140
    assert fit.classes == raw.class_names and fit.image_mode == "L"
    # One scalar statistic for every pixel, as in memory (there over every row).
    assert fit.mean[0] == pytest.approx(raw.x.mean(), abs=0.02)
    assert fit.std[0] == pytest.approx(raw.x.std(), abs=0.02)

    rows = {
        split: [read_encoded(fit, f, split) for f in fit.listing.fragments]
        for split in ("train", "val")
    }
    counts = {split: sum(len(r["idx"]) for r in parts) for split, parts in rows.items()}
    assert counts == {"train": fit.num_train, "val": fit.num_val}
    ids = np.concatenate([r["idx"] for parts in rows.values() for r in parts])
    assert sorted(ids) == list(range(401))  # every image once, in one split
    # A file and its copy land in the same split: a copy of a validation image never trains.
    names = [path for path, _, _ in fit.listing.files]
    original = names.index(str(root / "digit0" / "0000.png"))
    copy = names.index(str(root / "digit0" / "copy.png"))
    val_ids = set(np.concatenate([r["idx"] for r in rows["val"]]).tolist())
    assert (original in val_ids) == (copy in val_ids)
    x = np.concatenate([r["x"] for r in rows["train"]])
    assert x.shape[1:] == (1, 8, 8) and abs(float(x.mean())) < 0.05


@pytest.mark.usefixtures("small_fragments")
def test_an_undecodable_image_mid_folder_names_itself(tmp_path: Path) -> None:
    root = _digits_images(tmp_path / "digits")
    listing = image_files.list_images(str(root))
    middle = listing.files[200][0]
    Path(middle).write_bytes(Path(middle).read_bytes()[:40])  # a torn write
    with pytest.raises(DataError, match=re.escape(f"cannot decode image {middle}")) as failed:
        fit_images(listing)
    assert failed.value.key == "data.path"


@pytest.mark.usefixtures("small_fragments")
def test_another_size_is_refused_unless_image_size_resizes(tmp_path: Path) -> None:
    root = _digits_images(tmp_path / "digits", count=100)
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(root / "digit1" / "big.png")
    with pytest.raises(DataError, match=re.escape("big.png is 10x12")) as failed:
        fit_images(image_files.list_images(str(root)))
    assert failed.value.key == "data.image_size"
    fit = fit_images(image_files.list_images(str(root), (6, 6)), image_size=(6, 6))
    assert fit.shape == (1, 6, 6) and fit.num_train + fit.num_val == 101


def test_a_non_image_file_in_a_class_folder_is_refused_when_listed(tmp_path: Path) -> None:
    root = _digits_images(tmp_path / "digits", count=20)
    (root / "digit2" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=re.escape("notes.txt is not an image file")):
        image_files.list_images(str(root))


def test_an_image_folder_streams_when_asked_or_when_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.data import streaming

    root = _digits_images(tmp_path / "digits", count=20)
    assert not wants_streaming(DataConfig(dataset="image_folder", path=root))
    assert wants_streaming(DataConfig(dataset="image_folder", path=root, streaming=True))
    monkeypatch.setattr(streaming, "STREAM_ABOVE_BYTES", 1000)
    assert wants_streaming(DataConfig(dataset="image_folder", path=root))


@pytest.mark.usefixtures("small_fragments")
def test_cached_image_rows_are_checked_against_the_image_shape(tmp_path: Path) -> None:
    root = _digits_images(tmp_path / "digits", count=100)
    fit = fit_images(image_files.list_images(str(root)))
    fragment = fit.listing.fragments[0]
    rows = fit.encode(fragment, "train")
    RowCache(str(tmp_path / "cache"), fit.row_shape).save("train", fragment.path, 0, rows)
    kept = RowCache(str(tmp_path / "cache"), fit.row_shape).load(
        "train", fragment.path, 0, fragment.rows
    )
    assert kept is not None and np.array_equal(kept["x"], rows["x"])
    # The same entry read as rows of another image size is damage: dropped, not trusted.
    other = RowCache(str(tmp_path / "cache"), (1, 6, 6))
    assert other.load("train", fragment.path, 0, fragment.rows) is None
