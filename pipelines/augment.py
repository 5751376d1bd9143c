"""Random, label-preserving image augmentation as pure vectorised batch functions.

numpy in, numpy out: no Ray here, so every transform is unit-testable on plain arrays. The Ray
Data pipeline (:mod:`pipelines.data`) wires :func:`augment_image_batch` into ``map_batches``. The
randomness of a batch is derived from ``(seed, epoch, index of the batch's first row)``, so an
epoch is reproducible and every epoch sees fresh augmentations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.errors import ConfigError

Batch = dict[str, np.ndarray]


@dataclass(frozen=True)
class ImageAugment:
    """Strengths of the image transforms; all zero means identity.

    Attributes:
        shift: Largest translation in pixels, in each direction (0 = off).
        flip: Probability of a horizontal flip per image (0 = off).
        noise: Standard deviation of additive Gaussian noise, in normalised units (0 = off).

    """

    shift: int = 0
    flip: float = 0.0
    noise: float = 0.0

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any]) -> ImageAugment:
        """Read the strengths from a trial's hyperparameters (``aug_shift``, ...)."""
        augment = cls(
            shift=int(hparams.get("aug_shift", 0)),
            flip=float(hparams.get("aug_flip", 0.0)),
            noise=float(hparams.get("aug_noise", 0.0)),
        )
        augment.check()
        return augment

    def check(self) -> None:
        """Raise ConfigError for a strength outside its range."""
        if self.shift < 0:
            raise ConfigError(f"aug_shift must be >= 0, got {self.shift}", fix="use 0 to 4")
        if not 0.0 <= self.flip <= 1.0:
            raise ConfigError(f"aug_flip must be in [0, 1], got {self.flip}", fix="use 0 to 1")
        if self.noise < 0:
            raise ConfigError(f"aug_noise must be >= 0, got {self.noise}", fix="use 0 to 0.5")

    @property
    def is_identity(self) -> bool:
        """True when no transform would change a batch."""
        return self.shift == 0 and self.flip == 0.0 and self.noise == 0.0


def batch_rng(seed: int, epoch: int, first_index: int) -> np.random.Generator:
    """Return the generator for one batch of one epoch (independent streams per batch)."""
    return np.random.default_rng([seed, epoch, first_index])


def random_shift(x: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Translate each image of ``x`` (N, C, H, W) by up to ``max_shift`` pixels per axis.

    Edges are filled by repeating the border, which for digit-like images is the background.
    """
    if max_shift <= 0:
        return x
    n, _, height, width = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (max_shift, max_shift), (max_shift, max_shift)), "edge")
    dy = np.asarray(rng.integers(-max_shift, max_shift + 1, size=n))
    dx = np.asarray(rng.integers(-max_shift, max_shift + 1, size=n))
    rows = np.arange(height)[None, :] + max_shift - dy[:, None]
    cols = np.arange(width)[None, :] + max_shift - dx[:, None]
    # One fancy-indexing gather shifts every image at once (no per-image Python loop).
    shifted: np.ndarray = padded[
        np.arange(n)[:, None, None, None],
        np.arange(x.shape[1])[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    return shifted


def random_flip(x: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Flip each image horizontally with ``probability``."""
    if probability <= 0:
        return x
    flip = rng.random(x.shape[0]) < probability
    out = x.copy()
    out[flip] = out[flip][..., ::-1]
    return out


def gaussian_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """Add zero-mean Gaussian noise of standard deviation ``std``."""
    if std <= 0:
        return x
    noisy: np.ndarray = x + np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32)
    return noisy


def augment_image_batch(batch: Batch, *, augment: ImageAugment, seed: int, epoch: int) -> Batch:
    """Apply shift, flip and noise to ``batch["x"]``; labels and other columns pass through.

    Args:
        batch: Columns ``x`` (N, C, H, W) float32, ``y`` and ``idx`` (row index, for seeding).
        augment: Transform strengths.
        seed: Trial seed.
        epoch: Epoch number; each epoch draws fresh randomness.

    Returns:
        A new batch with the same keys, shapes and dtypes.

    """
    first = int(batch["idx"][0]) if len(batch["idx"]) else 0
    rng = batch_rng(seed, epoch, first)
    x = np.asarray(batch["x"], dtype=np.float32)
    x = random_shift(x, augment.shift, rng)
    x = random_flip(x, augment.flip, rng)
    x = gaussian_noise(x, augment.noise, rng)
    return {**batch, "x": x.astype(np.float32, copy=False)}
