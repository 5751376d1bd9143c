"""Image augmentation as pure numpy batch functions (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.augment import (
    ImageAugment,
    augment_image_batch,
    gaussian_noise,
    random_flip,
    random_shift,
)
from pipelines.errors import ConfigError


def _batch(n: int = 64, first_index: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((n, 1, 8, 8)).astype(np.float32),
        "y": rng.integers(0, 10, n),
        "idx": np.arange(first_index, first_index + n),
    }


def test_zero_strength_is_identity() -> None:
    batch = _batch()
    out = augment_image_batch(batch, augment=ImageAugment(), seed=1, epoch=1)
    np.testing.assert_array_equal(out["x"], batch["x"])


def test_labels_shape_and_dtype_are_preserved() -> None:
    batch = _batch()
    out = augment_image_batch(
        batch, augment=ImageAugment(shift=2, flip=0.5, noise=0.1), seed=1, epoch=1
    )
    assert out["x"].shape == batch["x"].shape
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], batch["y"])
    np.testing.assert_array_equal(out["idx"], batch["idx"])


def test_same_seed_epoch_and_rows_give_the_same_batch_and_a_new_epoch_differs() -> None:
    augment = ImageAugment(shift=2, flip=0.5, noise=0.1)
    first = augment_image_batch(_batch(), augment=augment, seed=3, epoch=1)["x"]
    again = augment_image_batch(_batch(), augment=augment, seed=3, epoch=1)["x"]
    next_epoch = augment_image_batch(_batch(), augment=augment, seed=3, epoch=2)["x"]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, next_epoch)


def test_shift_moves_a_single_pixel_by_at_most_the_strength() -> None:
    x = np.zeros((500, 1, 9, 9), dtype=np.float32)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre
    shifted = random_shift(x, 2, np.random.default_rng(0))
    positions = np.stack(np.unravel_index(shifted[:, 0].reshape(500, -1).argmax(1), (9, 9)), 1)
    offsets = positions - 4
    assert np.abs(offsets).max() == 2  # reaches the strength...
    assert (np.abs(offsets) <= 2).all()  # ...never beyond it
    assert len({tuple(o) for o in offsets}) == 25  # every offset in [-2, 2]^2 occurs
    assert np.allclose(shifted.sum(axis=(1, 2, 3)), 1.0)  # the pixel is moved, not lost


def test_flip_probability_one_mirrors_every_image_and_zero_none() -> None:
    x = _batch()["x"]
    np.testing.assert_array_equal(random_flip(x, 1.0, np.random.default_rng(0)), x[..., ::-1])
    np.testing.assert_array_equal(random_flip(x, 0.0, np.random.default_rng(0)), x)


def test_flip_rate_matches_probability() -> None:
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 1, 8).repeat(4000, axis=0)
    flipped = random_flip(x, 0.3, np.random.default_rng(0))
    rate = (flipped[:, 0, 0, 0] == 7).mean()
    assert rate == pytest.approx(0.3, abs=0.03)


def test_noise_standard_deviation_matches_strength() -> None:
    x = np.zeros((200, 1, 28, 28), dtype=np.float32)
    noisy = gaussian_noise(x, 0.15, np.random.default_rng(0))
    assert noisy.std() == pytest.approx(0.15, rel=0.02)
    assert abs(noisy.mean()) < 0.01


@pytest.mark.parametrize(
    ("hparams", "key"),
    [
        ({"aug_shift": -1}, "aug_shift"),
        ({"aug_flip": 1.5}, "aug_flip"),
        ({"aug_noise": -0.1}, "aug_noise"),
    ],
)
def test_out_of_range_strength_is_a_config_error(hparams: dict[str, float], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ImageAugment.from_hparams(hparams)
