"""The augmentation policy: names, ranges, probabilities and reproducible randomness (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.augment.policy import TRANSFORMS, AugmentPolicy, Step, policy_from_hparams
from pipelines.data.features import Featurizer
from pipelines.data.sweep_data import transform_batch
from pipelines.errors import ConfigError


def _images(n: int = 256, first_index: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((n, 1, 8, 8)).astype(np.float32),
        "y": rng.integers(0, 10, n),
        "idx": np.arange(first_index, first_index + n),
    }


def _augment(batch: dict[str, np.ndarray], hparams: dict[str, float], **seeds: int) -> np.ndarray:
    policy = policy_from_hparams(hparams, "image")
    where = {"seed": 1, "trial": 0, "epoch": 1, **seeds}
    return transform_batch(batch, policy=policy, featurizer=Featurizer(), **where)["x"]


FULL = {
    "aug_rotate": 15.0,
    "aug_translate": 1,
    "aug_hflip": 0.5,
    "aug_vflip": 0.5,
    "aug_zoom": 0.1,
    "aug_crop": 1,
    "aug_brightness": 0.2,
    "aug_contrast": 0.2,
    "aug_noise": 0.1,
    "aug_cutout": 2,
}


def test_every_image_transform_together_keeps_labels_shape_and_dtype() -> None:
    batch = _images()
    out = transform_batch(
        batch,
        policy=policy_from_hparams(FULL, "image"),
        featurizer=Featurizer(),
        seed=1,
        trial=0,
        epoch=1,
    )
    assert out["x"].shape == batch["x"].shape
    assert out["x"].dtype == np.float32
    np.testing.assert_array_equal(out["y"], batch["y"])
    np.testing.assert_array_equal(out["idx"], batch["idx"])
    assert not np.allclose(out["x"], batch["x"])


def test_steps_follow_the_fixed_order_and_identity_strengths_are_dropped() -> None:
    policy = policy_from_hparams({"aug_noise": 0.1, "aug_rotate": 0.0, "aug_hflip": 0.5}, "image")
    assert [step.name for step in policy.steps] == ["hflip", "noise"]
    assert policy_from_hparams({"aug_noise": 0.0, "aug_noise_p": 1.0}, "image").is_identity
    assert policy_from_hparams({"aug_noise": 0.3, "aug_noise_p": 0.0}, "image").is_identity
    assert policy.as_params() == {
        "aug_hflip": 0.5,
        "aug_hflip_p": 1.0,
        "aug_noise": 0.1,
        "aug_noise_p": 1.0,
    }


def test_same_seed_trial_and_epoch_give_the_same_batch_others_differ() -> None:
    first = _augment(_images(), FULL)
    np.testing.assert_array_equal(first, _augment(_images(), FULL))
    assert not np.allclose(first, _augment(_images(), FULL, epoch=2))
    assert not np.allclose(first, _augment(_images(), FULL, trial=1))
    assert not np.allclose(first, _augment(_images(), FULL, seed=2))
    # Another block of the same epoch draws its own randomness.
    assert not np.allclose(first, _augment(_images(first_index=256), FULL))


def test_probability_is_the_fraction_of_rows_transformed() -> None:
    batch = _images(4000)
    out = _augment(batch, {"aug_noise": 0.5, "aug_noise_p": 0.3})
    changed = ~np.all(out == batch["x"], axis=(1, 2, 3))
    assert changed.mean() == pytest.approx(0.3, abs=0.03)


def test_one_transform_draws_the_same_whether_or_not_another_is_on() -> None:
    """Each transform has its own random stream: a flip does not shift the brightness draws."""
    batch = _images(500)
    brightness = _augment(batch, {"aug_brightness": 0.5})
    both = _augment(batch, {"aug_brightness": 0.5, "aug_hflip": 0.5})
    delta_alone = brightness.mean(axis=(1, 2, 3)) - batch["x"].mean(axis=(1, 2, 3))
    delta_both = both.mean(axis=(1, 2, 3)) - batch["x"].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(delta_alone, delta_both, atol=1e-5)


@pytest.mark.parametrize(
    ("hparams", "modality", "message"),
    [
        ({"aug_rotation": 10}, "image", "unknown augmentation 'rotation'"),
        ({"aug_rotate": 200}, "image", "outside"),
        ({"aug_rotate": -1}, "image", "outside"),
        ({"aug_translate": 1.5}, "image", "whole number"),
        ({"aug_noise": "lots"}, "image", "must be a number"),
        ({"aug_noise": 0.1, "aug_noise_p": 1.5}, "image", "probability"),
        ({"aug_noise_p": 0.5}, "image", "strength"),
        ({"aug_synonym": 0.1}, "image", "text augmentation"),
        ({"aug_rotate": 5}, "text", "image augmentation"),
        ({"aug_pitch": 2}, "tabular", "audio augmentation"),
    ],
)
def test_bad_policies_are_config_errors(
    hparams: dict[str, object], modality: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        policy_from_hparams(hparams, modality)
    assert caught.value.fix


def test_every_transform_has_a_sane_range_and_modality() -> None:
    for name, spec in TRANSFORMS.items():
        assert spec.name == name
        assert spec.modality in ("image", "text", "audio")
        assert spec.low < spec.high
        assert spec.identity is None or spec.low <= spec.identity <= spec.high


def test_a_policy_with_no_steps_returns_the_batch_untouched() -> None:
    batch = _images()
    out = transform_batch(
        batch, policy=AugmentPolicy("image"), featurizer=Featurizer(), seed=0, trial=0, epoch=1
    )
    assert out["x"] is batch["x"]
    assert AugmentPolicy("image", (Step("noise", 0.1),)).is_identity is False


#: Every transform's random stream, as recorded trials drew from it. A stream id is never
#: renumbered or reused: a changed id silently changes the augmentation of every recorded trial.
FULL_NAMES = [key[len("aug_") :] for key in FULL]
RECORDED_STREAMS = {
    **{name: stream for stream, name in enumerate(FULL_NAMES)},
    **{"synonym": 10, "insert": 11, "swap": 12, "delete": 13},
    **{"pitch": 14, "speed": 15, "snr_db": 16, "time_shift": 17},
}


def test_stream_ids_are_fixed_unique_and_those_recorded_trials_used() -> None:
    assert {name: spec.stream for name, spec in TRANSFORMS.items()} == RECORDED_STREAMS
    assert len({spec.stream for spec in TRANSFORMS.values()}) == len(TRANSFORMS)
    assert list(TRANSFORMS)[: len(FULL_NAMES)] == FULL_NAMES  # image transforms, in order


def _shear(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """A stand-in new transform: shifts every row by one draw (it must draw to matter)."""
    return (x + np.float32(rng.uniform(-strength, strength))).astype(np.float32)


def test_inserting_a_transform_at_the_front_leaves_recorded_batches_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A recorded trial's augmented, shuffled batches are the same after a new transform is
    inserted at the front of the table: streams are ids of their own, not table positions."""
    from pipelines.augment import policy as policy_module
    from pipelines.augment.spec import TransformSpec

    recorded = {**FULL, "aug_noise_p": 0.5, "aug_cutout_p": 0.3}
    block = _images(first_index=512)
    where = {"seed": 7, "trial": 3, "epoch": 4}

    def batches() -> dict[str, np.ndarray]:
        policy = policy_from_hparams(recorded, "image")
        return transform_batch(
            block, policy=policy, featurizer=Featurizer(), shuffle=True, **where
        )

    before = batches()
    shear = TransformSpec("shear", "image", "largest shift", 0, 1, stream=99, function=_shear)
    table = {"shear": shear, **policy_module.TRANSFORMS}
    monkeypatch.setattr(policy_module, "TRANSFORMS", table)
    # The insertion moved every other transform one place on: positions as stream ids would
    # have changed every draw below (this is what the test guards against).
    assert list(table).index("rotate") == 1
    after = batches()
    for column in ("x", "y", "idx"):
        np.testing.assert_array_equal(after[column], before[column])
    # The new transform works, and a trial that uses it draws differently.
    with_shear = policy_from_hparams({**recorded, "aug_shear": 0.5}, "image")
    assert with_shear.steps[0].name == "shear"
    sheared = transform_batch(block, policy=with_shear, featurizer=Featurizer(), **where)["x"]
    assert not np.array_equal(sheared, before["x"])
