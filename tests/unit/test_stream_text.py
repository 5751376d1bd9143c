"""Streamed text columns: the vocabulary counted in one pass, rows encoded in the reading tasks."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.config import DataConfig
from pipelines.data.streaming import (
    StreamFit,
    fit_texts,
    list_fragments,
    not_streamable,
    read_encoded,
    read_split,
    text_hashes,
)
from pipelines.data.text import build_synonym_table, build_vocab, load_sms_spam, tokenize
from pipelines.data.wordnet import load_wordnet_synonyms
from pipelines.errors import DataError


def _sms_parquet(folder: Path, rows: int = 1200) -> Path:
    """Real SMS messages (ham and spam) in two Parquet files of 200-row row groups."""
    texts, y = load_sms_spam()
    folder.mkdir(parents=True)
    labels = np.where(y[:rows] == 1, "spam", "ham")
    for part, index in enumerate(np.array_split(np.arange(rows), 2)):
        table = pa.table({"message": [texts[i] for i in index], "kind": labels[index]})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=200)
    return folder


def _fit(folder: Path, suffix: str = ".parquet", **settings: object) -> StreamFit:
    listing = list_fragments(str(folder), suffix=suffix)
    return fit_texts(listing, text="message", label="kind", **settings)  # type: ignore[arg-type]


def test_the_vocabulary_is_the_in_memory_one_built_from_the_same_training_rows(
    tmp_path: Path,
) -> None:
    fit = _fit(_sms_parquet(tmp_path / "sms"), max_tokens=32)
    assert fit.spec().input_shape == (2048,) and fit.spec().modality == "text"
    assert fit.classes == ("ham", "spam") and fit.num_train + fit.num_val == 1200

    texts = pq.read_table(tmp_path / "sms").column("message").to_pylist()
    train = [
        t for t, h in zip(texts, text_hashes(texts), strict=True) if (h >> 11) * 2.0**-53 >= 0.2
    ]
    assert len(train) == fit.num_train
    vocab, table = build_synonym_table(
        build_vocab([tokenize(t) for t in train]), load_wordnet_synonyms()
    )
    assert fit.vocab == tuple(vocab)
    assert np.array_equal(fit.synonyms.ids, table.ids)

    # Encoded rows are token ids (augmented per batch); validation rows arrive featurised.
    fragment = fit.listing.fragments[0]
    rows = read_encoded(fit, fragment, "train")
    assert rows["x"].shape[1:] == (32,) and rows["x"].dtype == np.int32
    batch = {
        "path": np.array([fragment.path]),
        **{name: np.array([getattr(fragment, name)]) for name in ("row_group", "rows")},
        **{name: np.array([getattr(fragment, name)]) for name in ("first_row", "offset")},
        "length": np.array([fragment.length]),
    }
    val = read_split(batch, fit=fit, split="val")
    assert val["x"].shape[1:] == (2048,) and val["x"].dtype == np.float32


def test_duplicated_texts_share_a_split_and_a_cached_fit_keeps_the_vocabulary(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    lines = [f"message number {i} about the weather" for i in range(200)] * 2
    with (folder / "a.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["message", "kind"])
        writer.writerows([line, i % 2] for i, line in enumerate(lines))
    fit = _fit(folder, ".csv")
    encoded = {s: read_encoded(fit, fit.listing.fragments[0], s) for s in ("train", "val")}
    val_ids = set(encoded["val"]["idx"].tolist())
    assert all((i in val_ids) == (i + 200 in val_ids) for i in range(200))

    again = StreamFit.from_fields(fit.listing, fit.fields())
    assert again.vocab == fit.vocab and again.fingerprint() == fit.fingerprint()
    assert np.array_equal(again.synonyms.counts, fit.synonyms.counts)


def test_a_missing_text_names_its_row(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    folder.mkdir()
    table = pa.table({"message": ["hello there", None, "bye"] * 10, "kind": [0, 1, 0] * 10})
    pq.write_table(table, folder / "a.parquet", row_group_size=10)
    with pytest.raises(DataError, match=r"row group 0, row 2: missing value in column 'message'"):
        _fit(folder)


def test_text_streams_from_parquet_and_csv_only(tmp_path: Path) -> None:
    parquet = DataConfig(dataset="parquet", path=tmp_path, text_column="message", streaming=True)
    assert not_streamable(parquet) is None
    npz = DataConfig(dataset="npz", path=tmp_path, text_column="message", streaming=True)
    assert not_streamable(npz) == (
        "data.text_column",
        "streams text from Parquet and CSV columns only",
    )
    tabular = parquet.model_copy(update={"modality": "tabular"})
    assert (not_streamable(tabular) or ("",))[0] == "data.modality"
