"""Deterministic preprocessing, run once per sweep and cached: split, normalise, encode, tokenise.

Everything here is a pure function of the raw rows and the ``data`` config section, which is what
makes the result cacheable (:mod:`pipelines.data.cache`). Statistics (means, standard deviations,
the vocabulary) come from the training split only, so nothing about the validation rows leaks
into training.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipelines.config import DataConfig
from pipelines.data.features import Featurizer
from pipelines.data.row_hashes import holdout_rows
from pipelines.data.sources import RawData
from pipelines.errors import DataError
from trainables.protocol import DataSpec

#: Bump when preprocessing changes what it produces: older cache entries are then not reused.
PREPROCESS_VERSION = 1


@dataclass(frozen=True)
class Prepared:
    """The preprocessed splits and what trials need to know about them.

    ``x_train`` holds rows in the form augmentation works on (normalised images and tables,
    token ids, waveforms); ``x_val`` holds model inputs (features), since it is never augmented.
    ``x_holdout``/``y_holdout`` (model inputs, like ``x_val``) exist when ``data.holdout_fraction``
    is set: rows no trial sees, on which a retrained model is judged against the champion.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    modality: str
    task: str
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    featurizer: Featurizer = field(default_factory=Featurizer)
    target_mean: float = 0.0
    target_std: float = 1.0
    synonym_ids: np.ndarray | None = None
    synonym_counts: np.ndarray | None = None
    vocab: tuple[str, ...] = field(default=(), repr=False)
    x_holdout: np.ndarray | None = field(default=None, repr=False)
    y_holdout: np.ndarray | None = field(default=None, repr=False)

    def spec(self) -> DataSpec:
        """Return what a trainable needs to build its model for this data."""
        return DataSpec(
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            task=self.task,
            num_train=len(self.y_train),
            num_val=len(self.y_val),
            target_std=self.target_std,
            modality=self.modality,
        )

    def synonym_table(self) -> Any:
        """Return the text augmentation's synonym table (None for other data)."""
        if self.synonym_ids is None or self.synonym_counts is None:
            return None
        from pipelines.augment.tokens import SynonymTable

        return SynonymTable(self.synonym_ids, self.synonym_counts)

    def fingerprint(self) -> str:
        """Return a content hash of the prepared splits (recorded on every sweep)."""
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val):
            digest.update(np.ascontiguousarray(array).tobytes())
        # Only when present, so fingerprints of data without a holdout stay what they were.
        for optional in (self.x_holdout, self.y_holdout):
            if optional is not None:
                digest.update(np.ascontiguousarray(optional).tobytes())
        return digest.hexdigest()[:16]


def preprocess(raw: RawData, config: DataConfig) -> Prepared:
    """Split ``raw`` with a fixed seed (stratified for classes) and prepare it for training.

    Holdout rows (``data.holdout_fraction``) are set aside first and prepared like validation
    rows, with statistics from the training split only.
    """
    holdout = holdout_rows(raw.x, config.holdout_fraction)
    train_index, val_index = _split(raw, config, np.flatnonzero(~holdout))
    scored = np.concatenate([val_index, np.flatnonzero(holdout)])
    if raw.modality == "text":
        prepared = _text(raw, train_index, scored, config)
    elif raw.modality == "audio":
        prepared = _audio(raw, train_index, scored)
    else:
        prepared = _numeric(raw, train_index, scored)
    if not holdout.any():
        return prepared
    n_val = len(val_index)
    return replace(
        prepared,
        x_val=prepared.x_val[:n_val],
        y_val=prepared.y_val[:n_val],
        x_holdout=prepared.x_val[n_val:],
        y_holdout=prepared.y_val[n_val:],
    )


def _split(raw: RawData, config: DataConfig, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _check_splittable(len(rows), config)
    labels = raw.y[rows]
    stratify = labels if raw.task == "classification" and _can_stratify(labels, config) else None
    train, val = train_test_split(
        rows, test_size=config.val_fraction, random_state=config.seed, stratify=stratify
    )
    # Shuffled order, not sorted: blocks then mix classes, which the streaming shuffle relies on.
    return np.asarray(train), np.asarray(val)


def _check_splittable(rows: int, config: DataConfig) -> None:
    """Refuse data too small for a training and a validation row, which sklearn would crash on."""
    val_rows = math.ceil(config.val_fraction * rows)  # how train_test_split rounds
    if val_rows < 1 or rows - val_rows < 1:
        raise DataError(
            f"{config.path or config.dataset} leaves {rows} row(s) to split into training and "
            f"validation (data.val_fraction {config.val_fraction}, data.holdout_fraction "
            f"{config.holdout_fraction})",
            key="data.path",
            fix="add rows: a sweep needs at least one training and one validation row",
        )


def _can_stratify(labels: np.ndarray, config: DataConfig) -> bool:
    """Stratify when every class has at least two rows and both splits can hold every class."""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    val_rows = int(np.ceil(config.val_fraction * len(labels)))
    return bool(counts.min() >= 2 and len(counts) <= min(val_rows, len(labels) - val_rows))


def _targets(raw: RawData, train: np.ndarray, val: np.ndarray) -> dict[str, Any]:
    """Standardise regression targets (losses of a sensible size for any target scale)."""
    y_train, y_val = raw.y[train], raw.y[val]
    if raw.task != "regression":
        return {"y_train": y_train, "y_val": y_val}
    mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
    return {
        "y_train": ((y_train - mean) / std).astype(np.float32),
        "y_val": ((y_val - mean) / std).astype(np.float32),
        "target_mean": mean,
        "target_std": std,
    }


def _common(raw: RawData) -> dict[str, Any]:
    return {
        "modality": raw.modality,
        "task": raw.task,
        "num_classes": raw.num_classes,
        "class_names": raw.class_names,
    }


def _numeric(raw: RawData, train: np.ndarray, val: np.ndarray) -> Prepared:
    """Images share one scalar statistic; tabular features are standardised per column."""
    x_train, x_val = raw.x[train], raw.x[val]
    axis = 0 if raw.x.ndim == 2 else None
    mean, std = x_train.mean(axis=axis), x_train.std(axis=axis)
    std = np.where(std > 0, std, 1.0)
    return Prepared(
        x_train=((x_train - mean) / std).astype(np.float32),
        x_val=((x_val - mean) / std).astype(np.float32),
        input_shape=tuple(int(d) for d in raw.x.shape[1:]),
        **_targets(raw, train, val),
        **_common(raw),
    )


def _text(raw: RawData, train: np.ndarray, val: np.ndarray, config: DataConfig) -> Prepared:
    """Tokenise, build the vocabulary from the training texts, and encode token ids."""
    from pipelines.data.text import build_synonym_table, build_vocab, encode, tokenize
    from pipelines.data.wordnet import load_wordnet_synonyms

    tokens = [tokenize(text) for text in raw.x]
    vocab = build_vocab([tokens[i] for i in train])
    vocab, table = build_synonym_table(vocab, load_wordnet_synonyms())
    ids = encode(tokens, vocab, config.max_tokens)
    featurizer = Featurizer("hashed_ngrams")
    return Prepared(
        x_train=ids[train],
        x_val=featurizer(ids[val]),
        input_shape=(featurizer.buckets,),
        featurizer=featurizer,
        synonym_ids=table.ids,
        synonym_counts=table.counts,
        vocab=tuple(vocab),
        **_targets(raw, train, val),
        **_common(raw),
    )


def _audio(raw: RawData, train: np.ndarray, val: np.ndarray) -> Prepared:
    """Keep waveforms for augmentation; standardise spectrograms with training statistics."""
    x_train = raw.x[train].astype(np.float32)
    features = Featurizer("log_spectrogram").raw(x_train)
    featurizer = Featurizer(
        "log_spectrogram", mean=float(features.mean()), std=float(features.std()) or 1.0
    )
    val_features = featurizer(raw.x[val].astype(np.float32))
    return Prepared(
        x_train=x_train,
        x_val=val_features,
        input_shape=tuple(int(d) for d in val_features.shape[1:]),
        featurizer=featurizer,
        **_targets(raw, train, val),
        **_common(raw),
    )
