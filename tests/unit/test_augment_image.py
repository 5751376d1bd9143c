"""Image augmentations, checked without Ray, in both implementations.

``pipelines.augment.image`` (numpy) and ``pipelines.augment.image_torch`` (torch, here on CPU
tensors) keep the same contract and the same statistics, so every test runs against both: the
``transforms`` fixture hands out either table behind the numpy signature. The contract tests run
over every transform; the statistical tests check, per transform, that the effect on a large
batch has the size and spread its strength promises.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from pipelines.augment.image import IMAGE_TRANSFORMS

Transform = Callable[..., np.ndarray]

#: A typical non-identity strength per transform, used by the contract tests.
STRENGTHS = {
    "rotate": 30.0,
    "translate": 3.0,
    "hflip": 0.5,
    "vflip": 0.5,
    "zoom": 0.3,
    "crop": 3.0,
    "brightness": 0.5,
    "contrast": 0.5,
    "noise": 0.2,
    "cutout": 5.0,
}
NAMES = list(IMAGE_TRANSFORMS)


def _images(n: int = 32, channels: int = 1, height: int = 16, width: int = 12) -> np.ndarray:
    # Not square, so that a mix-up of H and W shows; random, so every image and mirror differs.
    rng = np.random.default_rng(1234)
    return rng.standard_normal((n, channels, height, width)).astype(np.float32)


def _blob(n: int, size: int, row: float, col: float, sigma: float) -> np.ndarray:
    """Digit-like images: background -1 and a Gaussian bump of height 2 at (row, col)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    bump = np.exp(-((ys - row) ** 2 + (xs - col) ** 2) / (2 * sigma**2))
    image = (2 * bump - 1).astype(np.float32)
    return np.broadcast_to(image, (n, 1, size, size)).copy()


def _centroid(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (row, col) of each image's mass above the background -1."""
    mass = images[:, 0] + 1.0
    ys, xs = np.mgrid[0 : mass.shape[1], 0 : mass.shape[2]]
    total = mass.sum(axis=(1, 2))
    return (mass * ys).sum(axis=(1, 2)) / total, (mass * xs).sum(axis=(1, 2)) / total


def _torch_table() -> dict[str, Transform]:
    """The torch transforms behind the numpy signature: the input as a CPU tensor, numpy out."""
    torch = pytest.importorskip("torch")
    from pipelines.augment.image_torch import TORCH_IMAGE_TRANSFORMS

    def wrap(function: Callable[..., object]) -> Transform:
        def run(x: np.ndarray, strength: float, rng: object) -> np.ndarray:
            with warnings.catch_warnings():  # read-only inputs are on purpose: see the tests
                warnings.simplefilter("ignore", UserWarning)
                tensor = torch.from_numpy(x)  # shares x's memory: a write to it would show
            out = function(tensor, strength, rng)
            return x if out is tensor else out.numpy()  # type: ignore[attr-defined]

        return run

    return {name: wrap(function) for name, function in TORCH_IMAGE_TRANSFORMS.items()}


@pytest.fixture(params=["numpy", "torch"])
def transforms(request: pytest.FixtureRequest) -> dict[str, Transform]:
    """Each image transform by name, in one implementation (the param)."""
    return dict(IMAGE_TRANSFORMS) if request.param == "numpy" else _torch_table()


class _Fixed:
    """Stands in for the generator so that a warp's parameter can be pinned exactly."""

    def __init__(self, value: float) -> None:
        self.value = value

    def uniform(self, low: float, high: float, size: int) -> np.ndarray:
        return np.full(size, self.value)


# --- the contract every transform keeps --------------------------------------------------------


def test_registry_lists_the_ten_transforms_in_policy_order() -> None:
    assert NAMES == [
        "rotate",
        "translate",
        "hflip",
        "vflip",
        "zoom",
        "crop",
        "brightness",
        "contrast",
        "noise",
        "cutout",
    ]
    assert set(STRENGTHS) == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_are_preserved_and_the_output_is_new(
    transforms: dict[str, Transform], name: str, channels: int
) -> None:
    x = _images(channels=channels)
    out = transforms[name](x, STRENGTHS[name], np.random.default_rng(0))
    assert out.shape == x.shape
    assert out.dtype == np.float32
    assert not np.shares_memory(out, x)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_input_is_not_modified(transforms: dict[str, Transform], name: str) -> None:
    x = _images()
    before = x.copy()
    x.setflags(write=False)  # numpy: an in-place write raises; torch ignores the flag
    transforms[name](x, STRENGTHS[name], np.random.default_rng(0))
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("name", NAMES)
def test_strength_zero_is_the_identity(transforms: dict[str, Transform], name: str) -> None:
    x = _images()
    out = transforms[name](x, 0.0, np.random.default_rng(0))
    np.testing.assert_array_equal(out, x)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_output_other_seed_other_output(
    transforms: dict[str, Transform], name: str
) -> None:
    x, strength, transform = _images(), STRENGTHS[name], transforms[name]
    first = transform(x, strength, np.random.default_rng(7))
    again = transform(x, strength, np.random.default_rng(7))
    other = transform(x, strength, np.random.default_rng(8))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("name", NAMES)
def test_every_image_gets_its_own_draw(transforms: dict[str, Transform], name: str) -> None:
    x = np.broadcast_to(_images(n=1), (64, 1, 16, 12)).copy()
    out = transforms[name](x, STRENGTHS[name], np.random.default_rng(0))
    distinct = {image.tobytes() for image in out}
    assert len(distinct) > 1


@pytest.mark.parametrize("name", NAMES)
def test_channels_of_an_image_share_the_draw(transforms: dict[str, Transform], name: str) -> None:
    x = np.repeat(_images(), 3, axis=1)
    out = transforms[name](x, STRENGTHS[name], np.random.default_rng(0))
    same = np.array_equal(out[:, 0], out[:, 1]) and np.array_equal(out[:, 0], out[:, 2])
    assert same == (name != "noise")  # noise is per pixel, so per channel too


@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_passes_through(transforms: dict[str, Transform], name: str) -> None:
    x = np.zeros((0, 1, 16, 12), np.float32)
    out = transforms[name](x, STRENGTHS[name], np.random.default_rng(0))
    assert out.shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_a_negative_strength_is_rejected(transforms: dict[str, Transform], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        transforms[name](_images(), -1.0, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("name", "strength"),
    [
        ("translate", 1.5),
        ("crop", 2.5),
        ("cutout", 0.5),
        ("hflip", 1.1),
        ("vflip", 2.0),
        ("zoom", 1.0),
        ("contrast", 1.0),
    ],
)
def test_a_strength_outside_its_range_is_rejected(
    transforms: dict[str, Transform], name: str, strength: float
) -> None:
    with pytest.raises(ValueError):
        transforms[name](_images(), strength, np.random.default_rng(0))


@pytest.mark.parametrize("name", ["translate", "crop", "cutout"])
def test_a_whole_number_of_pixels_may_come_as_a_float(
    transforms: dict[str, Transform], name: str
) -> None:
    x, transform = _images(), transforms[name]
    as_int = transform(x, 2, np.random.default_rng(3))
    as_float = transform(x, 2.0, np.random.default_rng(3))
    np.testing.assert_array_equal(as_int, as_float)


# --- the size of each effect matches its strength ----------------------------------------------


def test_rotate_keeps_the_radius_and_spreads_angles_over_the_range(
    transforms: dict[str, Transform],
) -> None:
    strength, size, radius = 40.0, 41, 12.0
    centre = (size - 1) / 2
    x = _blob(2000, size, centre, centre + radius, sigma=1.5)
    out = transforms["rotate"](x, strength, np.random.default_rng(0))
    row, col = _centroid(out)
    dy, dx = row - centre, col - centre
    np.testing.assert_allclose(np.hypot(dy, dx), radius, atol=0.05)
    angle = np.degrees(np.arctan2(-dy, dx))  # rows point down: counter-clockwise is positive
    assert np.abs(angle).max() <= strength + 0.2
    assert angle.min() < -strength + 1 and angle.max() > strength - 1
    counts, _ = np.histogram(angle, bins=8, range=(-strength, strength))
    assert counts.min() > 0.7 * len(x) / 8  # uniform: about 250 per bin
    # Resampling neither creates nor loses the blob's mass (up to bilinear smoothing).
    np.testing.assert_allclose(
        (out + 1).sum(axis=(1, 2, 3)), (x + 1).sum(axis=(1, 2, 3)), rtol=0.02
    )


def test_rotate_by_a_quarter_turn_is_a_counter_clockwise_rot90_and_by_zero_the_identity(
    transforms: dict[str, Transform],
) -> None:
    x = _images(n=8, channels=2, height=15, width=15)
    turned = transforms["rotate"](x, 90.0, _Fixed(90.0))  # type: ignore[arg-type]
    np.testing.assert_allclose(turned, np.rot90(x, k=1, axes=(2, 3)), atol=1e-5)
    # Whole-pixel coordinates read pixels as they are, up to rounding on the last row/column.
    np.testing.assert_allclose(transforms["rotate"](x, 90.0, _Fixed(0.0)), x, atol=1e-6)  # type: ignore[arg-type]


def test_rotate_fills_the_corners_with_the_nearest_border_value(
    transforms: dict[str, Transform],
) -> None:
    x = np.full((4, 1, 9, 9), -1.0, np.float32)
    x[:, :, 3:6, 3:6] = 2.0  # content far from the border; the border is all background
    out = transforms["rotate"](x, 45.0, _Fixed(45.0))  # type: ignore[arg-type]
    np.testing.assert_allclose(out[:, :, 0, 0], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[:, :, -1, -1], -1.0, atol=1e-6)


def test_translate_moves_a_pixel_by_at_most_strength_and_reaches_every_offset(
    transforms: dict[str, Transform],
) -> None:
    strength, size = 3, 15
    centre = size // 2
    x = np.full((3000, 1, size, size), -1.0, np.float32)
    x[:, 0, centre, centre] = 3.0
    out = transforms["translate"](x, strength, np.random.default_rng(0))
    assert ((out == 3.0).sum(axis=(1, 2, 3)) == 1).all()  # moved whole, never smeared
    assert ((out == -1.0).sum(axis=(1, 2, 3)) == size * size - 1).all()
    flat = out[:, 0].reshape(len(x), -1).argmax(axis=1)
    dy, dx = flat // size - centre, flat % size - centre
    assert np.abs(dy).max() <= strength and np.abs(dx).max() <= strength
    offsets = set(zip(dy.tolist(), dx.tolist(), strict=True))
    assert len(offsets) == (2 * strength + 1) ** 2


def _which_window(out: np.ndarray, padded: np.ndarray, span: int) -> np.ndarray:
    """For each image, the (top, left) window of ``padded`` that ``out`` equals, else (-1, -1)."""
    height, width = out.shape[2:]
    found = np.full((len(out), 2), -1)
    for top in range(span):  # a loop over candidate offsets, each compared for the whole batch
        for left in range(span):
            window = padded[:, :, top : top + height, left : left + width]
            match = (out == window).all(axis=(1, 2, 3))
            assert not (match & (found[:, 0] >= 0)).any(), "two windows match one image"
            found[match] = (top, left)
    return found


def test_translate_content_is_the_image_shifted_with_the_border_repeated(
    transforms: dict[str, Transform],
) -> None:
    strength, x = 2, _images(n=1000)
    out = transforms["translate"](x, strength, np.random.default_rng(0))
    padded = np.pad(x, ((0, 0), (0, 0), (strength, strength), (strength, strength)), "edge")
    found = _which_window(out, padded, 2 * strength + 1)
    assert (found >= 0).all()
    shift = strength - found  # a window at offset o shows the image moved by strength - o
    assert len(set(map(tuple, shift.tolist()))) == (2 * strength + 1) ** 2
    # Uniform integer shifts: mean 0 and variance ((2s+1)^2 - 1) / 12 per axis.
    np.testing.assert_allclose(shift.mean(axis=0), 0, atol=0.15)
    np.testing.assert_allclose(shift.var(axis=0), ((2 * strength + 1) ** 2 - 1) / 12, rtol=0.15)


@pytest.mark.parametrize(("name", "mirror"), [("hflip", -1), ("vflip", -2)])
def test_flips_mirror_exactly_with_the_given_probability(
    transforms: dict[str, Transform], name: str, mirror: int
) -> None:
    transform, probability, x = transforms[name], 0.3, _images(n=4000)
    out = transform(x, probability, np.random.default_rng(0))
    kept = (out == x).all(axis=(1, 2, 3))
    flipped = (out == np.flip(x, axis=mirror)).all(axis=(1, 2, 3))
    assert (kept ^ flipped).all()  # every image is exactly the original or exactly the mirror
    assert abs(flipped.mean() - probability) < 4 * np.sqrt(probability * (1 - probability) / 4000)
    always = transform(x, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(always, np.flip(x, axis=mirror))


def test_zoom_scales_the_distance_from_the_centre_within_the_range(
    transforms: dict[str, Transform],
) -> None:
    strength, size, distance = 0.4, 41, 10.0
    centre = (size - 1) / 2
    x = _blob(2000, size, centre - distance * 0.6, centre + distance * 0.8, sigma=2.0)
    out = transforms["zoom"](x, strength, np.random.default_rng(0))
    row, col = _centroid(out)
    dy, dx = row - centre, col - centre
    ratio = np.hypot(dy, dx) / distance
    assert ratio.min() >= 1 - strength - 0.005 and ratio.max() <= 1 + strength + 0.005
    assert ratio.min() < 1 - strength + 0.02 and ratio.max() > 1 + strength - 0.02
    np.testing.assert_allclose(ratio.mean(), 1.0, atol=0.02)
    np.testing.assert_allclose(ratio.std(), strength / np.sqrt(3), rtol=0.06)
    # The blob moves along its ray from the centre: zoom changes scale, not direction.
    np.testing.assert_allclose(
        np.degrees(np.arctan2(-dy, dx)), np.degrees(np.arctan2(0.6, 0.8)), atol=0.3
    )


def test_zoom_by_one_is_the_identity_and_zooming_out_repeats_the_border(
    transforms: dict[str, Transform],
) -> None:
    x = _images(n=4)
    np.testing.assert_allclose(transforms["zoom"](x, 0.5, _Fixed(1.0)), x, atol=1e-6)  # type: ignore[arg-type]
    out = transforms["zoom"](x, 0.5, _Fixed(0.5))  # type: ignore[arg-type]
    # Half size: the outer ring of the output reads from beyond the image, i.e. its border.
    np.testing.assert_allclose(out[:, :, 0, 0], x[:, :, 0, 0], atol=1e-6)
    np.testing.assert_allclose(out[:, :, -1, -1], x[:, :, -1, -1], atol=1e-5)


def test_crop_is_a_random_window_of_the_image_padded_with_its_minimum(
    transforms: dict[str, Transform],
) -> None:
    strength, x = 3, _images(n=2000)
    out = transforms["crop"](x, strength, np.random.default_rng(0))
    side = (0, 0), (0, 0), (strength, strength), (strength, strength)
    padded = np.stack([np.pad(image, side[1:], constant_values=image.min()) for image in x])
    found = _which_window(out, padded, 2 * strength + 1)
    assert (found >= 0).all()
    assert len(set(map(tuple, found.tolist()))) == (2 * strength + 1) ** 2
    np.testing.assert_allclose(found.mean(axis=0), strength, atol=0.2)


def test_crop_moves_a_pixel_by_at_most_the_padding(transforms: dict[str, Transform]) -> None:
    strength, size = 2, 11
    centre = size // 2
    x = np.full((1000, 1, size, size), -1.0, np.float32)
    x[:, 0, centre, centre] = 3.0
    out = transforms["crop"](x, strength, np.random.default_rng(0))
    assert ((out == 3.0).sum(axis=(1, 2, 3)) == 1).all()
    assert ((out == -1.0).sum(axis=(1, 2, 3)) == size * size - 1).all()  # padded with the min
    flat = out[:, 0].reshape(len(x), -1).argmax(axis=1)
    dy, dx = flat // size - centre, flat % size - centre
    assert np.abs(dy).max() <= strength and np.abs(dx).max() <= strength
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) == (2 * strength + 1) ** 2


def test_brightness_adds_one_uniform_offset_per_image(transforms: dict[str, Transform]) -> None:
    strength, x = 0.5, _images(n=4000, height=8, width=8)
    shift = transforms["brightness"](x, strength, np.random.default_rng(0)) - x
    delta = shift.mean(axis=(1, 2, 3))
    np.testing.assert_allclose(
        shift, np.broadcast_to(delta[:, None, None, None], x.shape), atol=1e-5
    )
    assert np.abs(delta).max() <= strength + 1e-5
    np.testing.assert_allclose(delta.mean(), 0, atol=0.02)
    np.testing.assert_allclose(delta.std(), strength / np.sqrt(3), rtol=0.05)
    assert delta.min() < -0.95 * strength and delta.max() > 0.95 * strength


def test_contrast_scales_each_image_about_its_own_mean(transforms: dict[str, Transform]) -> None:
    strength, x = 0.6, _images(n=4000, channels=2, height=8, width=8) + 0.5
    out = transforms["contrast"](x, strength, np.random.default_rng(0))
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3), keepdims=True), mean, atol=1e-5)
    ratio = out.std(axis=(1, 2, 3)) / x.std(axis=(1, 2, 3))
    # One factor per image: every deviation from the mean is scaled by the same ratio.
    np.testing.assert_allclose(out - mean, (x - mean) * ratio[:, None, None, None], atol=1e-4)
    assert ratio.min() >= 1 - strength - 1e-5 and ratio.max() <= 1 + strength + 1e-5
    np.testing.assert_allclose(ratio.mean(), 1.0, atol=0.02)
    np.testing.assert_allclose(ratio.std(), strength / np.sqrt(3), rtol=0.05)


def test_noise_is_zero_mean_gaussian_with_the_given_std(transforms: dict[str, Transform]) -> None:
    strength, x = 0.3, _images(n=500)
    residual = (transforms["noise"](x, strength, np.random.default_rng(0)) - x).ravel()
    np.testing.assert_allclose(residual.std(), strength, rtol=0.01)
    np.testing.assert_allclose(residual.mean(), 0, atol=4 * strength / np.sqrt(residual.size))
    within_one_std = (np.abs(residual) < strength).mean()
    np.testing.assert_allclose(within_one_std, 0.6827, atol=0.01)


@pytest.mark.parametrize("side", [4, 5])
def test_cutout_zeroes_one_square_clipped_at_the_border(
    transforms: dict[str, Transform], side: int
) -> None:
    height, width = 12, 10
    x = np.ones((3000, 1, height, width), np.float32)
    out = transforms["cutout"](x, side, np.random.default_rng(0))
    zero = out[:, 0] == 0.0
    assert ((out == 0.0) | (out == 1.0)).all()
    count = zero.sum(axis=(1, 2))
    assert (count >= 1).all() and (count <= side * side).all()
    rows, cols = zero.any(axis=2), zero.any(axis=1)
    n_rows, n_cols = rows.sum(axis=1), cols.sum(axis=1)
    assert (count == n_rows * n_cols).all()  # a filled rectangle ...
    assert (n_rows <= side).all() and (n_cols <= side).all()  # ... no larger than the square
    inside = ~(rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1])
    assert inside.sum() > 500
    assert (count[inside] == side * side).all()  # exactly side**2 away from the border
    assert zero.any(axis=0).all()  # the centre ranges over the whole image


def test_cutout_sets_the_square_to_zero_and_leaves_the_rest(
    transforms: dict[str, Transform],
) -> None:
    x = _images(n=500)
    out = transforms["cutout"](x, 4, np.random.default_rng(0))
    assert ((out == x) | (out == 0.0)).all()
    assert ((out == 0.0).sum(axis=(1, 2, 3)) >= 1).all()
