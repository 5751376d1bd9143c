"""Image augmentation on the trial's device: the decision, the torch twin and the wiring (no Ray).

The torch transforms' statistics are tested with the numpy ones (test_augment_image.py runs every
test on both); here: where augmentation runs, that the two implementations make the same draws,
and that a trial's stream hands out augmented device tensors, reproducibly per epoch. CI has no
GPU, so the device path is forced onto a CPU torch device by building the stream with
``augment_on="cpu"``; the last test runs on a real CUDA device where there is one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pipelines.augment.device import augments_on_device
from pipelines.augment.image import IMAGE_TRANSFORMS
from pipelines.augment.policy import AugmentPolicy, apply_policy, policy_from_hparams
from pipelines.data import sweep_data
from pipelines.data.features import Featurizer
from pipelines.data.sweep_data import SweepData, TrialStream, rebatch, transform_batch
from pipelines.errors import ConfigError
from tests.unit.test_augment_image import STRENGTHS
from trainables.protocol import Batch, DataSpec

torch = pytest.importorskip("torch")
from pipelines.augment.image_torch import (  # noqa: E402  (needs torch, skipped above)
    TORCH_IMAGE_TRANSFORMS,
    apply_image_policy,
)

#: Every image transform, most of them applied to only some rows.
POLICY = {f"aug_{name}": strength for name, strength in STRENGTHS.items()} | {
    "aug_rotate_p": 0.5,
    "aug_zoom_p": 0.7,
    "aug_contrast_p": 0.3,
    "aug_cutout_p": 0.5,
}
WITHOUT_NOISE = {key: value for key, value in POLICY.items() if "noise" not in key}


def _images(n: int = 64, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(5).standard_normal((n, channels, 14, 11)).astype(np.float32)


# --- where augmentation runs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "device", "framework", "expected"),
    [
        ("cpu", "cuda", "torch", False),
        ("cpu", "cpu", "tensorflow", False),
        ("auto", "cuda", "torch", True),
        ("auto", "cuda:1", "torch", True),
        ("auto", "cpu", "torch", False),
        ("auto", "cuda", "tensorflow", False),
        ("auto", "cuda", None, False),
        ("gpu", "cuda", "torch", True),
    ],
)
def test_the_decision_follows_setting_device_and_framework(
    setting: str, device: str, framework: str | None, expected: bool
) -> None:
    assert augments_on_device(setting, device, framework) is expected


@pytest.mark.parametrize(
    ("device", "framework", "message"),
    [("cpu", "torch", "CUDA"), ("cuda", "tensorflow", "torch"), ("cuda", None, "torch")],
)
def test_gpu_where_it_cannot_run_is_a_config_error(
    device: str, framework: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        augments_on_device("gpu", device, framework)
    assert raised.value.key == "data.augment_device"


def test_an_unknown_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown"):
        augments_on_device("tpu", "cuda", "torch")


def _sweep_data(modality: str = "image", augment_device: str = "auto") -> SweepData:
    spec = DataSpec((1, 14, 11), 10, "classification", 64, 0, modality=modality)
    return SweepData(None, None, spec, "", modality=modality, augment_device=augment_device)


def test_for_trial_binds_the_device_only_where_augmentation_can_run_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hparams = {"aug_hflip": 0.5}
    image = _sweep_data()
    assert image.for_trial(hparams, trial=0, cpus=1).augment_on is None  # defaults: CPU
    # Without CUDA in this process, "auto" falls back to numpy and "gpu" is the user's error.
    monkeypatch.setattr(sweep_data, "_cuda_usable", lambda: False)

    def on_cuda(data: SweepData, framework: str = "torch", **aug: float) -> str | None:
        stream = data.for_trial(
            aug or hparams, trial=0, cpus=1, device="cuda", framework=framework
        )
        return stream.augment_on

    assert on_cuda(image) is None
    with pytest.raises(ConfigError, match="CUDA"):
        on_cuda(_sweep_data(augment_device="gpu"))
    monkeypatch.setattr(sweep_data, "_cuda_usable", lambda: True)
    assert on_cuda(image) == "cuda"
    assert on_cuda(_sweep_data(augment_device="cpu")) is None
    assert on_cuda(_sweep_data("text"), aug_swap=0.1) is None  # text and audio stay in numpy
    with pytest.raises(ConfigError, match="torch"):
        on_cuda(_sweep_data(augment_device="gpu"), framework="sklearn")


# --- the torch twin makes the numpy draws -------------------------------------------------------


def test_both_implementations_offer_the_same_transforms() -> None:
    assert list(TORCH_IMAGE_TRANSFORMS) == list(IMAGE_TRANSFORMS)


@pytest.mark.parametrize("name", [name for name in STRENGTHS if name != "noise"])
def test_for_one_generator_state_torch_and_numpy_agree(name: str) -> None:
    x = _images()
    expected = IMAGE_TRANSFORMS[name](x, STRENGTHS[name], np.random.default_rng(3))
    got = TORCH_IMAGE_TRANSFORMS[name](
        torch.from_numpy(x), STRENGTHS[name], np.random.default_rng(3)
    )
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_the_torch_policy_makes_the_numpy_policys_draws() -> None:
    x, policy = _images(), policy_from_hparams(WITHOUT_NOISE, "image")
    where = {"seed": 4, "trial": 2, "epoch": 3, "first_index": 128}
    expected = apply_policy(x, policy, **where)
    got = apply_image_policy(torch.from_numpy(x.copy()), policy, **where)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_the_torch_policy_rejects_a_transform_without_a_device_version() -> None:
    policy = policy_from_hparams({"aug_swap": 0.1}, "text")
    with pytest.raises(ValueError, match="swap"):
        apply_image_policy(
            torch.zeros((2, 1, 4, 4)), policy, seed=0, trial=0, epoch=0, first_index=0
        )


# --- the trial's stream -------------------------------------------------------------------------


class _Blocks:
    """Stands in for SweepData.train_batches: the Ray Data step on one block, without Ray."""

    def __init__(self, n: int = 96) -> None:
        rng = np.random.default_rng(0)
        self.block: dict[str, np.ndarray] = {
            "x": rng.standard_normal((n, 1, 14, 11)).astype(np.float32),
            "y": rng.integers(0, 10, n),
            "idx": np.arange(n),
        }
        self.policies: list[AugmentPolicy] = []

    def train_batches(self, *, batch_size: int, epoch: int, **where: Any) -> Iterator[Batch]:
        self.policies.append(where["policy"])
        block = transform_batch(
            self.block,
            policy=where["policy"],
            featurizer=Featurizer(),
            seed=where["seed"],
            trial=where["trial"],
            epoch=epoch,
            shuffle=True,
        )
        return rebatch([block], batch_size)


def _tensor(batch: Batch) -> Any:
    """The batch's ``x``, which the device path makes a torch tensor (Batch says numpy)."""
    x: Any = batch["x"]
    assert isinstance(x, torch.Tensor)
    return x


def _stream(blocks: _Blocks, augment_on: str | None, hparams: dict[str, Any]) -> TrialStream:
    policy = policy_from_hparams(hparams, "image")
    return TrialStream(blocks, policy, 7, 1, 1, augment_on=augment_on)  # type: ignore[arg-type]


def test_on_the_device_batches_arrive_as_augmented_tensors_and_numpy_skips_them() -> None:
    blocks = _Blocks()
    batches = list(_stream(blocks, "cpu", POLICY).train_batches(epoch=2, batch_size=32))
    assert blocks.policies == [AugmentPolicy("image")]  # the Ray Data step only shuffles
    assert [len(batch["y"]) for batch in batches] == [32, 32, 32]
    for batch in batches:
        x = _tensor(batch)
        assert x.device.type == "cpu"
        assert x.dtype == torch.float32 and x.shape == (32, 1, 14, 11)
        assert isinstance(batch["y"], np.ndarray)
        original = blocks.block["x"][batch["idx"]]  # rows stay aligned with their labels
        np.testing.assert_array_equal(batch["y"], blocks.block["y"][batch["idx"]])
        assert not np.allclose(x.numpy(), original)


def test_on_the_device_each_batch_is_the_torch_policy_of_its_place_in_the_epoch() -> None:
    blocks, policy = _Blocks(), policy_from_hparams(POLICY, "image")
    batches = list(_stream(blocks, "cpu", POLICY).train_batches(epoch=2, batch_size=40))
    for number, batch in enumerate(batches):
        rows = torch.from_numpy(blocks.block["x"][batch["idx"]])
        where = {"seed": 7, "trial": 1, "epoch": 2, "first_index": 40 * number}
        torch.testing.assert_close(batch["x"], apply_image_policy(rows, policy, **where))


def test_on_the_device_an_epoch_is_reproducible_and_the_next_one_differs() -> None:
    stream = _stream(_Blocks(), "cpu", POLICY)

    def epoch(number: int) -> np.ndarray:
        return np.concatenate([_tensor(b).numpy() for b in stream.train_batches(number, 32)])

    np.testing.assert_array_equal(epoch(1), epoch(1))
    assert not np.allclose(epoch(1), epoch(2))


def test_on_the_cpu_path_batches_stay_numpy_and_the_policy_runs_in_the_block_step() -> None:
    blocks = _Blocks()
    batches = list(_stream(blocks, None, POLICY).train_batches(epoch=2, batch_size=32))
    assert blocks.policies == [policy_from_hparams(POLICY, "image")]
    assert all(isinstance(batch["x"], np.ndarray) for batch in batches)


def test_without_augmentation_nothing_moves_to_the_device() -> None:
    batches = list(_stream(_Blocks(), "cpu", {}).train_batches(epoch=2, batch_size=32))
    assert all(isinstance(batch["x"], np.ndarray) for batch in batches)


# --- on a real GPU ------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_transforms_match_the_cpu_and_batches_arrive_on_the_gpu() -> None:
    x = _images(n=512)
    for name in STRENGTHS:
        on_gpu = torch.from_numpy(x).cuda()
        got = TORCH_IMAGE_TRANSFORMS[name](on_gpu, STRENGTHS[name], np.random.default_rng(11))
        assert got.device.type == "cuda" and got.dtype == torch.float32
        if name == "noise":  # drawn by the CUDA generator: check its statistics instead
            residual = (got.cpu() - torch.from_numpy(x)).flatten()
            assert abs(float(residual.std()) - STRENGTHS[name]) < 0.01 * STRENGTHS[name]
            continue
        expected = IMAGE_TRANSFORMS[name](x, STRENGTHS[name], np.random.default_rng(11))
        np.testing.assert_allclose(got.cpu().numpy(), expected, atol=1e-4)
    batches = list(_stream(_Blocks(), "cuda", POLICY).train_batches(epoch=0, batch_size=32))
    assert all(_tensor(batch).device.type == "cuda" for batch in batches)
