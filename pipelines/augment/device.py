"""Where a trial's image augmentation runs: in numpy as batches are made, or on its device.

``data.augment_device`` chooses: ``"cpu"`` keeps today's numpy path (the Ray Data tasks augment
each block); ``"gpu"`` augments each training batch with :mod:`pipelines.augment.image_torch`
on the trial's CUDA device, after it left Ray Data; ``"auto"`` (the default) does the latter
whenever it can, i.e. when the trial trains a torch model on a CUDA device. Only image
transforms have a device version: text and audio are always augmented in numpy.

Nothing here imports torch, so the decision is testable (and cheap) in any process.
"""

from __future__ import annotations

from pipelines.errors import ConfigError

#: The values ``data.augment_device`` accepts.
SETTINGS = ("auto", "cpu", "gpu")
#: The one framework whose trainable takes device tensors in a batch (TorchTrainable).
DEVICE_FRAMEWORK = "torch"
KEY = "data.augment_device"


def is_cuda(device: str) -> bool:
    """Return whether ``device`` names a CUDA device (``"cuda"``, ``"cuda:1"``)."""
    return device == "cuda" or device.startswith("cuda:")


def augments_on_device(setting: str, device: str, framework: str | None) -> bool:
    """Decide whether a trial's image augmentation runs on its device (True) or in numpy.

    Args:
        setting: ``data.augment_device``: ``"auto"``, ``"cpu"`` or ``"gpu"``.
        device: The device the trial trains on (``"cpu"``, ``"cuda"``, ``"cuda:0"``).
        framework: The framework of the trial's trainable (``"torch"``, ``"tensorflow"``, ...);
            None when unknown, which is treated as not torch.

    Returns:
        True for ``"gpu"``, and for ``"auto"`` when a torch trainable trains on CUDA; else False.

    Raises:
        ConfigError: For ``"gpu"`` with a trainable other than torch (only TorchTrainable
            accepts tensors already on the device) or a trial without a CUDA device, and for an
            unknown setting.

    """
    if setting == "cpu":
        return False
    torch_trainable = framework == DEVICE_FRAMEWORK
    if setting == "auto":
        return torch_trainable and is_cuda(device)
    if setting != "gpu":
        raise ConfigError(
            f"unknown augmentation device {setting!r}", key=KEY, fix="use auto, cpu or gpu"
        )
    if not torch_trainable:
        raise ConfigError(
            f"augmentation on the GPU needs a torch trainable, not {framework or 'this one'}",
            key=KEY,
            fix="use auto or cpu (numpy augmentation), or trainable.framework: torch",
        )
    if not is_cuda(device):
        raise no_cuda_error(device)
    return True


def no_cuda_error(device: str) -> ConfigError:
    """Return the error for ``data.augment_device: gpu`` in a trial without a usable GPU."""
    return ConfigError(
        f"augmentation on the GPU needs a usable CUDA device, but the trial runs on {device}",
        key=KEY,
        fix="give trials a GPU (resources.gpu > 0) on a CUDA machine, or use auto or cpu",
    )
