"""Random, label-preserving image augmentations as pure, vectorised numpy functions.

Every transform has the signature ``f(x, strength, rng) -> x'`` on a float32 batch shaped
(N, C, H, W). Keeping them pure (numpy in, numpy out, all randomness from the ``rng`` passed in)
means they can be unit-tested on plain arrays without Ray, and that an augmented batch is
reproducible from the generator's state alone. Each image gets its own draw, but the work is done
for the whole batch at once with gathers and broadcasting: a Python loop over images would cost
more than the training step that consumes the batch.

A strength of 0 is the identity and returns ``x`` itself; any other strength returns a new array
and never writes to ``x``. Channels of one image always share the geometric draw, so colour
images stay aligned.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipelines.augment.spec import TransformSpec

__all__ = [
    "IMAGE_SPECS",
    "IMAGE_TRANSFORMS",
    "brightness",
    "contrast",
    "crop",
    "cutout",
    "hflip",
    "noise",
    "rotate",
    "translate",
    "vflip",
    "zoom",
]


def _check(x: np.ndarray, strength: float, name: str) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name} expects images shaped (N, C, H, W), got shape {x.shape}")
    if not strength >= 0:  # written this way so that NaN is rejected too
        raise ValueError(f"{name} strength must be >= 0, got {strength!r}")


def _pixels(strength: float, name: str) -> int:
    # Hyperparameter search hands integer strengths over as floats (2.0); 2.5 pixels is a mistake.
    if float(strength) != int(strength):
        raise ValueError(f"{name} strength is a whole number of pixels, got {strength!r}")
    return int(strength)


def _pad(x: np.ndarray, pad: int, fill: np.ndarray | None) -> np.ndarray:
    """Return ``x`` padded by ``pad`` pixels per side: the border repeated, or ``fill[n]``.

    Written out with slices because ``np.pad`` cannot fill each image with its own value and is
    slower for the edge mode on small images.
    """
    n, channels, height, width = x.shape
    out = np.empty((n, channels, height + 2 * pad, width + 2 * pad), np.float32)
    bottom, right = pad + height, pad + width
    out[:, :, pad:bottom, pad:right] = x
    if fill is None:
        out[:, :, :pad, pad:right] = x[:, :, :1]
        out[:, :, bottom:, pad:right] = x[:, :, -1:]
        out[..., :pad] = out[..., pad : pad + 1]
        out[..., right:] = out[..., right - 1 : right]
    else:
        value = fill.astype(np.float32)[:, None, None, None]
        out[:, :, :pad] = value
        out[:, :, bottom:] = value
        out[:, :, pad:bottom, :pad] = value
        out[:, :, pad:bottom, right:] = value
    return out


def _windows(
    padded: np.ndarray, top: np.ndarray, left: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """Cut the window at (``top[n]``, ``left[n]``) of size ``shape`` out of each padded image.

    Indexing a sliding-window view copies whole rows per image; it needs no per-pixel index
    array, which on a large batch costs more memory traffic than the copy itself.
    """
    windows = sliding_window_view(padded, shape, axis=(2, 3))
    # Advanced indices on axes 0, 2 and 3 around the channel slice: the result is (N, C, H, W).
    out: np.ndarray = windows[np.arange(len(padded)), :, top, left]
    return out


def _bilinear(x: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample every image of ``x`` at float32 source coordinates (N, H*W), edge-clamped.

    ``src_y`` and ``src_x`` are scratch space and are overwritten. Clamping the coordinates (not
    the indices) makes a point outside the image take the value of the nearest border pixel.
    Capping the lower corner at size - 2 keeps the upper corner in range without a second clamp;
    its weight is then 1 on the last row or column (exact up to float32 rounding). The work reuses
    a few (N, H*W) buffers: every fresh multi-megabyte temporary costs page faults on each call,
    which on a 1024-image batch took longer than the arithmetic.
    """
    n, channels, height, width = x.shape
    plane = height * width
    np.clip(src_y, 0, height - 1, out=src_y)
    np.clip(src_x, 0, width - 1, out=src_x)
    y0 = np.floor(src_y)
    np.minimum(y0, max(height - 2, 0), out=y0)
    x0 = np.floor(src_x)
    np.minimum(x0, max(width - 2, 0), out=x0)
    wy, wx = src_y, src_x
    wy -= y0
    wx -= x0
    if plane < 2**24:  # whole numbers below 2**24 are exact in float32: the fast path
        y0 *= width
        y0 += x0
        index = y0.astype(np.intp)
    else:
        index = y0.astype(np.intp)
        index *= width
        np.add(index, x0, out=index, casting="unsafe")
    index += (np.arange(n, dtype=np.intp) * (channels * plane))[:, None]
    step_x = 1 if width > 1 else 0
    step_y = width if height > 1 else 0
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty((n, channels, plane), np.float32)
    right, low = y0, x0  # free now: reused as buffers for the other corners
    acc = out[:, 0] if channels == 1 else np.empty((n, plane), np.float32)
    for channel in range(channels):
        # mode="clip" only skips numpy's buffered bounds check; the indices are in range.
        np.take(flat, index, out=acc, mode="clip")
        index += step_x
        np.take(flat, index, out=right, mode="clip")
        right -= acc
        right *= wx
        acc += right  # the top edge, interpolated along x
        index += step_y
        np.take(flat, index, out=right, mode="clip")
        index -= step_x
        np.take(flat, index, out=low, mode="clip")
        right -= low
        right *= wx
        low += right  # the bottom edge
        low -= acc
        low *= wy
        acc += low
        if channels > 1:
            out[:, channel] = acc
        index += plane - step_y
    result: np.ndarray = out.reshape(x.shape)
    return result


def _centred_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of every pixel from the image centre, flattened, as float32 (1, H*W) rows."""
    ys = np.arange(height, dtype=np.float32) - np.float32((height - 1) / 2)
    xs = np.arange(width, dtype=np.float32) - np.float32((width - 1) / 2)
    grid_y = np.repeat(ys, width)[None, :]
    grid_x = np.tile(xs, height)[None, :]
    return grid_y, grid_x


def rotate(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate each image about its centre by an angle drawn from U(-strength, strength) degrees.

    A positive angle turns the content counter-clockwise as the image is displayed (row 0 at the
    top). Pixels are sampled bilinearly; corners that come from outside the image repeat the
    nearest border pixel, which for digit images is the background.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Largest angle in degrees (0 = off).
        rng: Source of the per-image angles.

    Returns:
        The rotated images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "rotate")
    if strength == 0:
        return x
    _, _, height, width = x.shape
    angle = np.deg2rad(rng.uniform(-strength, strength, size=len(x)))
    cos = np.cos(angle).astype(np.float32)[:, None]
    sin = np.sin(angle).astype(np.float32)[:, None]
    grid_y, grid_x = _centred_grid(height, width)
    # Inverse map: each output pixel reads the source point rotated back by the angle. With rows
    # pointing down, turning counter-clockwise by a reads (y cos a + x sin a, x cos a - y sin a).
    src_y = grid_y * cos
    src_x = grid_x * sin
    src_y += src_x
    src_y += np.float32((height - 1) / 2)
    np.multiply(grid_x, cos, out=src_x)
    src_x -= grid_y * sin
    src_x += np.float32((width - 1) / 2)
    return _bilinear(x, src_y, src_x)


def translate(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by whole pixels dy, dx drawn uniformly from [-strength, strength].

    The border row or column is repeated into the space the image leaves behind.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Largest shift in pixels per axis, a whole number (0 = off).
        rng: Source of the per-image shifts.

    Returns:
        The shifted images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "translate")
    pixels = _pixels(strength, "translate")
    if pixels == 0:
        return x
    _, _, height, width = x.shape
    dy = np.asarray(rng.integers(-pixels, pixels + 1, size=len(x)))
    dx = np.asarray(rng.integers(-pixels, pixels + 1, size=len(x)))
    # Content moving down by dy means output row i reads padded row i - dy + pixels.
    return _windows(_pad(x, pixels, None), pixels - dy, pixels - dx, (height, width))


def _flip(x: np.ndarray, probability: float, rng: np.random.Generator, axis: int) -> np.ndarray:
    if probability > 1:
        raise ValueError(f"a flip probability must be in [0, 1], got {probability}")
    flipped = rng.random(len(x)) < probability
    out = x.astype(np.float32, copy=True)
    out[flipped] = np.flip(x[flipped], axis=axis)
    return out


def hflip(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image left-right with probability ``strength``.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Probability of a mirror per image, in [0, 1] (0 = off).
        rng: Source of the per-image coin flips.

    Returns:
        The images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "hflip")
    if strength == 0:
        return x
    return _flip(x, strength, rng, axis=-1)


def vflip(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Mirror each image top-bottom with probability ``strength``.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Probability of a mirror per image, in [0, 1] (0 = off).
        rng: Source of the per-image coin flips.

    Returns:
        The images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "vflip")
    if strength == 0:
        return x
    return _flip(x, strength, rng, axis=-2)


def zoom(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scale each image about its centre by a factor drawn from U(1 - strength, 1 + strength).

    A factor above 1 zooms in (content grows); below 1 it shrinks and the border is repeated
    around it. Pixels are sampled bilinearly.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Largest relative change of scale, in [0, 1) (0 = off).
        rng: Source of the per-image factors.

    Returns:
        The zoomed images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "zoom")
    if strength == 0:
        return x
    if strength >= 1:
        raise ValueError(f"zoom strength must be < 1 (a scale of 0 is no image), got {strength}")
    _, _, height, width = x.shape
    inverse = (1.0 / rng.uniform(1.0 - strength, 1.0 + strength, size=len(x))).astype(np.float32)
    grid_y, grid_x = _centred_grid(height, width)
    src_y = grid_y * inverse[:, None]
    src_y += np.float32((height - 1) / 2)
    src_x = grid_x * inverse[:, None]
    src_x += np.float32((width - 1) / 2)
    return _bilinear(x, src_y, src_x)


def crop(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Pad each image by ``strength`` pixels and take a random window of the original size.

    This is torchvision's ``RandomCrop(size, padding=strength)``: window offsets are uniform in
    [0, 2 * strength] per axis. The padding takes the image's own minimum, which for normalised
    digit images is the background, so no artificial frame appears.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Padding in pixels on every side, a whole number (0 = off).
        rng: Source of the per-image window offsets.

    Returns:
        The cropped images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "crop")
    pad = _pixels(strength, "crop")
    if pad == 0:
        return x
    n, _, height, width = x.shape
    top = np.asarray(rng.integers(0, 2 * pad + 1, size=n))
    left = np.asarray(rng.integers(0, 2 * pad + 1, size=n))
    padded = _pad(x, pad, x.min(axis=(1, 2, 3)))
    return _windows(padded, top, left, (height, width))


def brightness(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Add one offset drawn from U(-strength, strength) to every pixel of each image.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Largest shift in normalised units (0 = off).
        rng: Source of the per-image offsets.

    Returns:
        The shifted images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "brightness")
    if strength == 0:
        return x
    delta = rng.uniform(-strength, strength, size=len(x)).astype(np.float32)
    out: np.ndarray = x + delta[:, None, None, None]
    return out.astype(np.float32, copy=False)


def contrast(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scale each image's deviations from its mean by a factor from U(1 - strength, 1 + strength).

    The mean is taken over all channels and pixels of the image, so it is left unchanged and the
    image's standard deviation is multiplied by the factor.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Largest relative change of contrast, in [0, 1) (0 = off).
        rng: Source of the per-image factors.

    Returns:
        The images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "contrast")
    if strength == 0:
        return x
    if strength >= 1:
        raise ValueError(f"contrast strength must be < 1 (keeps the factor > 0), got {strength}")
    factor = rng.uniform(1.0 - strength, 1.0 + strength, size=len(x)).astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), dtype=np.float32, keepdims=True)
    out: np.ndarray = x - mean
    out *= factor[:, None, None, None]
    out += mean
    return out.astype(np.float32, copy=False)


def noise(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Add independent zero-mean Gaussian noise with standard deviation ``strength`` to each pixel.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Standard deviation in normalised units (0 = off).
        rng: Source of the noise.

    Returns:
        The noisy images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "noise")
    if strength == 0:
        return x
    # Drawn in float32 and updated in place: no float64 or extra batch-sized temporary.
    out = rng.standard_normal(x.shape, dtype=np.float32)
    out *= np.float32(strength)
    out += x
    return out


def cutout(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Set a square of side ``strength`` to 0 (the dataset mean) in each image.

    The square is centred at a pixel drawn uniformly over the image and clipped at the border,
    so it covers exactly strength**2 pixels when it lies inside and fewer otherwise. For an even
    side the centre is the lower-right of the four middle pixels.

    Args:
        x: Images, float32 (N, C, H, W).
        strength: Side of the square in pixels, a whole number (0 = off).
        rng: Source of the per-image centres.

    Returns:
        The images, a new float32 array shaped like ``x``.

    """
    _check(x, strength, "cutout")
    side = _pixels(strength, "cutout")
    if side == 0:
        return x
    n, _, height, width = x.shape
    top = np.asarray(rng.integers(0, height, size=n)) - side // 2
    left = np.asarray(rng.integers(0, width, size=n)) - side // 2
    rows = np.arange(height) - top[:, None]
    cols = np.arange(width) - left[:, None]
    rows_in = (rows >= 0) & (rows < side)
    cols_in = (cols >= 0) & (cols < side)
    erased = rows_in[:, None, :, None] & cols_in[:, None, None, :]
    # np.where rather than multiplying by a mask, which would turn inf or NaN pixels into NaN.
    out: np.ndarray = np.where(erased, np.float32(0), x)
    return out.astype(np.float32, copy=False)


#: The image transforms, in the order the augmentation policy applies them. Stream ids are fixed
#: for good (see TransformSpec.stream): a new transform takes the next unused number.
IMAGE_SPECS = (
    TransformSpec("rotate", "image", "largest rotation angle in degrees", 0, 180, 0, rotate),
    TransformSpec(
        "translate", "image", "largest shift in pixels", 0, 16, 1, translate, integer=True
    ),
    TransformSpec("hflip", "image", "probability of a left-right mirror", 0, 1, 2, hflip),
    TransformSpec("vflip", "image", "probability of a top-bottom mirror", 0, 1, 3, vflip),
    TransformSpec("zoom", "image", "largest relative change of scale", 0, 0.5, 4, zoom),
    TransformSpec(
        "crop", "image", "padding in pixels before a random crop", 0, 16, 5, crop, integer=True
    ),
    TransformSpec(
        "brightness", "image", "largest brightness shift (normalised units)", 0, 3, 6, brightness
    ),
    TransformSpec(
        "contrast", "image", "largest relative change of contrast", 0, 0.95, 7, contrast
    ),
    TransformSpec("noise", "image", "Gaussian noise std (normalised units)", 0, 2, 8, noise),
    TransformSpec(
        "cutout", "image", "side of the erased square in pixels", 0, 32, 9, cutout, integer=True
    ),
)
#: The image transform functions by name.
IMAGE_TRANSFORMS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    spec.name: spec.function for spec in IMAGE_SPECS
}
