"""The image transforms of :mod:`pipelines.augment.image` in torch, on the device a batch is on.

Same contract as the numpy functions (``f(x, strength, rng) -> x'`` on a float32 batch shaped
(N, C, H, W), strength 0 returns ``x`` itself, never writes to ``x``), and the same statistics:
every per-image parameter (angle, shift, factor, coin flip, square) is drawn from the numpy
generator ``rng`` with the same calls, in the same order, as the numpy twin, then copied to the
device (N numbers, not N * H * W). For one generator state both implementations therefore make
the same draws and their outputs agree up to float rounding. ``noise`` is the one exception: its
N * C * H * W normals are drawn on the device by torch, from a seed taken from ``rng``, because
copying that many from the host would cost more than the whole policy on the device.

Why plain torch and not kornia (or ``grid_sample``, which kornia's warps call): the numpy warps
are defined in pixel coordinates about the centre (H - 1) / 2, with coordinates clamped to the
border and the lower corner capped at size - 2. Written with ``gather`` that definition carries
over line for line, with the same float32 operations in the same order. ``grid_sample`` first
maps coordinates to [-1, 1] and back, which moves whole-pixel reads by float rounding (1e-5 on
normalised images), and kornia adds its own angle and centre conventions to re-map; neither
would save code here.

Importing this module imports torch: only a trial's data stream imports it, and only when its
augmentation runs on the device (:mod:`pipelines.augment.device`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from pipelines.augment.image import _check, _pixels
from pipelines.augment.policy import AugmentPolicy, step_rng

__all__ = [
    "TORCH_IMAGE_TRANSFORMS",
    "apply_image_policy",
    "brightness",
    "contrast",
    "crop",
    "cuda_usable",
    "cutout",
    "hflip",
    "noise",
    "rotate",
    "to_device",
    "translate",
    "vflip",
    "zoom",
]

TorchTransform = Callable[[torch.Tensor, float, np.random.Generator], torch.Tensor]


def _check_images(x: torch.Tensor, strength: float, name: str) -> None:
    # The numpy rules read only .ndim and .shape, which a tensor has too.
    _check(x, strength, name)  # type: ignore[arg-type]


def _on(values: np.ndarray, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Copy per-image parameters drawn on the host onto ``x``'s device."""
    return torch.as_tensor(np.asarray(values), device=x.device).to(dtype)


def _centred_grid(height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Offsets of every pixel from the image centre, flattened, as float32 (1, H*W) rows."""
    ys = torch.arange(height, dtype=torch.float32, device=device) - (height - 1) / 2
    xs = torch.arange(width, dtype=torch.float32, device=device) - (width - 1) / 2
    return ys.repeat_interleave(width)[None, :], xs.repeat(height)[None, :]


def _bilinear(x: torch.Tensor, src_y: torch.Tensor, src_x: torch.Tensor) -> torch.Tensor:
    """Sample every image of ``x`` at float32 source coordinates (N, H*W), edge-clamped.

    The numpy ``_bilinear`` step for step: clamping the coordinates makes a point outside the
    image take the nearest border pixel, and capping the lower corner at size - 2 keeps the
    upper one in range (its weight is then 1 on the last row or column).
    """
    n, channels, height, width = x.shape
    src_y = src_y.clamp(0, height - 1)
    src_x = src_x.clamp(0, width - 1)
    y0 = src_y.floor().clamp(max=max(height - 2, 0))
    x0 = src_x.floor().clamp(max=max(width - 2, 0))
    wy, wx = (src_y - y0)[:, None], (src_x - x0)[:, None]
    index = y0.long() * width + x0.long()
    step_x = 1 if width > 1 else 0
    step_y = width if height > 1 else 0
    flat = x.reshape(n, channels, height * width)

    def corner(offset: int) -> torch.Tensor:
        # One index row per image, shared by its channels (expand makes no copy).
        return flat.gather(2, (index + offset)[:, None].expand(n, channels, -1))

    top_left = corner(0)
    top = top_left + (corner(step_x) - top_left) * wx
    bottom_left = corner(step_y)
    bottom = bottom_left + (corner(step_y + step_x) - bottom_left) * wx
    return (top + (bottom - top) * wy).reshape(x.shape)


def _shifted(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, fill: torch.Tensor | None
) -> torch.Tensor:
    """Read output pixel (i, j) of image n from source (``rows[n, i]``, ``cols[n, j]``).

    A source outside the image takes the border pixel (``fill`` None, numpy's edge padding) or
    ``fill[n]``; two gathers, one per axis, need no padded copy of the batch.
    """
    n, channels, height, width = x.shape
    out = x.gather(2, rows.clamp(0, height - 1)[:, None, :, None].expand(n, channels, -1, width))
    out = out.gather(3, cols.clamp(0, width - 1)[:, None, None, :].expand(n, channels, height, -1))
    if fill is None:
        return out
    inside = ((rows >= 0) & (rows < height))[:, None, :, None] & ((cols >= 0) & (cols < width))[
        :, None, None, :
    ]
    return torch.where(inside, out, fill[:, None, None, None])


def rotate(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Rotate each image about its centre by an angle drawn from U(-strength, strength) degrees.

    As :func:`pipelines.augment.image.rotate`: counter-clockwise for a positive angle, bilinear,
    corners from outside the image repeat the nearest border pixel.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Largest angle in degrees (0 = off).
        rng: Source of the per-image angles.

    Returns:
        The rotated images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "rotate")
    if strength == 0:
        return x
    _, _, height, width = x.shape
    angle = np.deg2rad(rng.uniform(-strength, strength, size=len(x)))
    cos = _on(np.cos(angle).astype(np.float32), x)[:, None]
    sin = _on(np.sin(angle).astype(np.float32), x)[:, None]
    grid_y, grid_x = _centred_grid(height, width, x.device)
    # The numpy inverse map, in the same float32 operations and order.
    src_y = grid_y * cos + grid_x * sin + (height - 1) / 2
    src_x = grid_x * cos - grid_y * sin + (width - 1) / 2
    return _bilinear(x, src_y, src_x)


def translate(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Shift each image by whole pixels dy, dx drawn uniformly from [-strength, strength].

    The border row or column is repeated into the space the image leaves behind.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Largest shift in pixels per axis, a whole number (0 = off).
        rng: Source of the per-image shifts.

    Returns:
        The shifted images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "translate")
    pixels = _pixels(strength, "translate")
    if pixels == 0:
        return x
    _, _, height, width = x.shape
    dy = _on(rng.integers(-pixels, pixels + 1, size=len(x)), x, torch.long)
    dx = _on(rng.integers(-pixels, pixels + 1, size=len(x)), x, torch.long)
    # Content moving down by dy means output row i reads source row i - dy.
    rows = torch.arange(height, device=x.device) - dy[:, None]
    cols = torch.arange(width, device=x.device) - dx[:, None]
    return _shifted(x, rows, cols, None)


def _flip(
    x: torch.Tensor, probability: float, rng: np.random.Generator, axis: int
) -> torch.Tensor:
    if probability > 1:
        raise ValueError(f"a flip probability must be in [0, 1], got {probability}")
    flipped = _on(rng.random(len(x)) < probability, x, torch.bool)
    return torch.where(flipped[:, None, None, None], x.flip(axis), x)


def hflip(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability ``strength``.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Probability of a mirror per image, in [0, 1] (0 = off).
        rng: Source of the per-image coin flips.

    Returns:
        The images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "hflip")
    if strength == 0:
        return x
    return _flip(x, strength, rng, axis=-1)


def vflip(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Mirror each image top-bottom with probability ``strength``.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Probability of a mirror per image, in [0, 1] (0 = off).
        rng: Source of the per-image coin flips.

    Returns:
        The images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "vflip")
    if strength == 0:
        return x
    return _flip(x, strength, rng, axis=-2)


def zoom(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Scale each image about its centre by a factor drawn from U(1 - strength, 1 + strength).

    Above 1 zooms in; below 1 shrinks and the border is repeated around it. Bilinear.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Largest relative change of scale, in [0, 1) (0 = off).
        rng: Source of the per-image factors.

    Returns:
        The zoomed images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "zoom")
    if strength == 0:
        return x
    if strength >= 1:
        raise ValueError(f"zoom strength must be < 1 (a scale of 0 is no image), got {strength}")
    _, _, height, width = x.shape
    factor = rng.uniform(1.0 - strength, 1.0 + strength, size=len(x))
    inverse = _on((1.0 / factor).astype(np.float32), x)[:, None]
    grid_y, grid_x = _centred_grid(height, width, x.device)
    return _bilinear(x, grid_y * inverse + (height - 1) / 2, grid_x * inverse + (width - 1) / 2)


def crop(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Pad each image by ``strength`` pixels with its minimum and take a random window.

    As :func:`pipelines.augment.image.crop` (torchvision's ``RandomCrop(size, padding)``, window
    offsets uniform in [0, 2 * strength] per axis).

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Padding in pixels on every side, a whole number (0 = off).
        rng: Source of the per-image window offsets.

    Returns:
        The cropped images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "crop")
    pad = _pixels(strength, "crop")
    if pad == 0:
        return x
    n, _, height, width = x.shape
    top = _on(rng.integers(0, 2 * pad + 1, size=n), x, torch.long)
    left = _on(rng.integers(0, 2 * pad + 1, size=n), x, torch.long)
    # The window at (top, left) of the padded image reads source row i + top - pad.
    rows = torch.arange(height, device=x.device) + (top - pad)[:, None]
    cols = torch.arange(width, device=x.device) + (left - pad)[:, None]
    fill = x.amin(dim=(1, 2, 3)) if n else x.new_zeros(0)
    return _shifted(x, rows, cols, fill)


def brightness(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Add one offset drawn from U(-strength, strength) to every pixel of each image.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Largest shift in normalised units (0 = off).
        rng: Source of the per-image offsets.

    Returns:
        The shifted images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "brightness")
    if strength == 0:
        return x
    delta = _on(rng.uniform(-strength, strength, size=len(x)).astype(np.float32), x)
    return x + delta[:, None, None, None]


def contrast(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Scale each image's deviations from its mean by a factor from U(1 - strength, 1 + strength).

    The mean is over all channels and pixels of the image, so it stays as it was.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Largest relative change of contrast, in [0, 1) (0 = off).
        rng: Source of the per-image factors.

    Returns:
        The images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "contrast")
    if strength == 0:
        return x
    if strength >= 1:
        raise ValueError(f"contrast strength must be < 1 (keeps the factor > 0), got {strength}")
    factor = _on(rng.uniform(1.0 - strength, 1.0 + strength, size=len(x)).astype(np.float32), x)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * factor[:, None, None, None] + mean


def noise(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Add independent zero-mean Gaussian noise with standard deviation ``strength`` to each pixel.

    The normals come from a torch generator on ``x``'s device, seeded from ``rng``: the same
    ``rng`` state gives the same noise on the same kind of device (CPU and CUDA streams differ).

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Standard deviation in normalised units (0 = off).
        rng: Source of the seed.

    Returns:
        The noisy images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "noise")
    if strength == 0:
        return x
    generator = torch.Generator(device=x.device)
    generator.manual_seed(int(rng.integers(0, 2**63 - 1)))
    normal = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    return normal.mul_(strength).add_(x)


def cutout(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """Set a square of side ``strength`` to 0 in each image, centred on a uniform pixel.

    Clipped at the border; for an even side the centre is the lower-right middle pixel.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        strength: Side of the square in pixels, a whole number (0 = off).
        rng: Source of the per-image centres.

    Returns:
        The images, a new float32 tensor shaped like ``x`` on its device.

    """
    _check_images(x, strength, "cutout")
    side = _pixels(strength, "cutout")
    if side == 0:
        return x
    n, _, height, width = x.shape
    top = _on(rng.integers(0, height, size=n) - side // 2, x, torch.long)
    left = _on(rng.integers(0, width, size=n) - side // 2, x, torch.long)
    rows = torch.arange(height, device=x.device) - top[:, None]
    cols = torch.arange(width, device=x.device) - left[:, None]
    erased = ((rows >= 0) & (rows < side))[:, None, :, None] & ((cols >= 0) & (cols < side))[
        :, None, None, :
    ]
    # where rather than multiplying by a mask, which would turn inf or NaN pixels into NaN.
    return torch.where(erased, torch.zeros((), dtype=x.dtype, device=x.device), x)


#: The torch transforms by name, the same names as :data:`pipelines.augment.image.IMAGE_SPECS`.
TORCH_IMAGE_TRANSFORMS: dict[str, TorchTransform] = {
    "rotate": rotate,
    "translate": translate,
    "hflip": hflip,
    "vflip": vflip,
    "zoom": zoom,
    "crop": crop,
    "brightness": brightness,
    "contrast": contrast,
    "noise": noise,
    "cutout": cutout,
}


def apply_image_policy(
    x: torch.Tensor,
    policy: AugmentPolicy,
    *,
    seed: int,
    trial: int,
    epoch: int,
    first_index: int,
) -> torch.Tensor:
    """Apply every step of an image ``policy`` to a batch tensor, on the tensor's device.

    The same loop as :func:`pipelines.augment.policy.apply_policy`, with the same random
    streams (:func:`~pipelines.augment.policy.step_rng`): for the same ``first_index`` it makes
    the same draws, so it differs from the numpy path only in float rounding and the noise.

    Args:
        x: Images, float32 (N, C, H, W), on any device.
        policy: The trial's resolved policy (image transforms only).
        seed: The trial's seed.
        trial: The trial's index in the sweep.
        epoch: The epoch (fresh randomness each epoch).
        first_index: Names the batch's random streams (independent streams per batch).

    Returns:
        The augmented images, on ``x``'s device.

    Raises:
        ValueError: For a step that has no torch version (a text or audio transform).

    """
    if policy.is_identity or len(x) == 0:
        return x
    for step in policy.steps:
        function = TORCH_IMAGE_TRANSFORMS.get(step.name)
        if function is None:
            raise ValueError(f"{step.name!r} has no device version (only image transforms do)")
        rng = step_rng(seed, trial, epoch, first_index, step.name)
        if step.probability >= 1.0:
            x = function(x, step.strength, rng)
            continue
        chosen = rng.random(len(x)) < step.probability
        if chosen.any():
            mask = _on(chosen, x, torch.bool)
            x = x.clone()
            x[mask] = function(x[mask], step.strength, rng)
    return x


def to_device(array: np.ndarray, device: str) -> torch.Tensor:
    """Copy a batch column onto ``device`` as float32 (pinned first when it is a GPU).

    Pinning makes the copy an asynchronous DMA, so it overlaps the previous step's kernels.
    """
    array = np.asarray(array, dtype=np.float32)
    target = torch.device(device)
    if target.type != "cuda":
        # Ray hands out read-only views; a CPU tensor would share that memory, so copy it.
        return torch.from_numpy(array if array.flags.writeable else array.copy())
    with warnings.catch_warnings():
        # torch warns that the view is read-only; pin_memory copies it before anything writes.
        warnings.simplefilter("ignore", UserWarning)
        tensor = torch.from_numpy(array)
    return tensor.pin_memory().to(target, non_blocking=True)


def cuda_usable() -> bool:
    """Return whether this process can use a CUDA device."""
    return bool(torch.cuda.is_available())
