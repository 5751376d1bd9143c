"""Image folders (``<path>/<class>/<image>``): decoded one image at a time, loaded or streamed.

One decoding rule serves both readers: the in-memory reader (:mod:`pipelines.data.sources`)
and the streamed one, whose fragments are chunks of files (:func:`list_images`,
:func:`read_images`). The mode (``L`` for grey images, else ``RGB``) and size come from the
first image unless ``data.image_size`` is set, in which case every image is resized to it.
Every file must decode: an image that does not is a DataError naming it, never a skipped row.

A streamed folder is cut into fragments of :data:`IMAGES_PER_FRAGMENT` files taken in the order
of a hash of their paths below the root, so each fragment mixes the classes (a fragment of one
class would make batches of one class) and the cut is the same on every machine. A streamed
image's split is decided by a hash of its file's bytes, not of its decoded pixels: JPEG
decoders of different versions may differ by a pixel value, and the driver that fits and the
node that reads must agree on every row's split. Identical files share a split.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.data.fragments import Fragment, Listing, filesystem_of
from pipelines.data.row_hashes import SPLIT_KEY, digest64
from pipelines.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: How decoding a damaged image fails, besides PIL's OSError: a broken PNG chunk (SyntaxError),
#: bad sizes (ValueError, struct.error), a flipped size field that claims a decompression bomb.
_IMAGE_DAMAGE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)
#: Most images in one streamed fragment: enough fragments in a folder of thousands for
#: data-parallel ranks to share them evenly.
IMAGES_PER_FRAGMENT = 256
#: Decoded pixels in one fragment, at most (fewer, larger images a fragment, down to
#: :data:`FEWEST_PER_FRAGMENT`): what a reader task holds at once, twice over while it encodes.
PIXEL_BYTES_PER_FRAGMENT = 32 << 20
FEWEST_PER_FRAGMENT = 8
#: PIL modes read as one grey channel; every other mode is read as RGB.
_GREY_MODES = ("1", "L", "I", "I;16", "F")


def image_mode(name: str) -> str:
    """Return the mode a decoded image is converted to: ``L`` for grey modes, else ``RGB``."""
    return "L" if name in _GREY_MODES else "RGB"


def decode_image(
    data: bytes | Any, name: str, mode: str | None, size: tuple[int, int] | None, *, resize: bool
) -> tuple[np.ndarray, str, tuple[int, int]]:
    """Decode one image into float32 pixels in [0, 1], channels first.

    Args:
        data: The file's bytes, or a path PIL can open.
        name: How errors name the image.
        mode: ``L`` or ``RGB``; the image's own (see :func:`image_mode`) when None.
        size: ``(height, width)`` every image must have; the image's own when None.
        resize: Resize to ``size`` (``data.image_size`` is set) instead of refusing another size.

    Returns:
        The pixels ``(C, H, W)``, and the mode and size they were read in.

    Raises:
        DataError: If the image does not decode, or has another size and may not be resized.

    """
    from PIL import Image, UnidentifiedImageError

    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with Image.open(source) as image:
            image.load()
            mode = mode or image_mode(image.mode)
            picture = image.convert(mode)
    except (*_IMAGE_DAMAGE, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot decode image {name}: {detail}",
            key="data.path",
            fix="replace or remove the corrupt file; no image is skipped silently",
        ) from None
    wanted = (size[1], size[0]) if size else picture.size
    if picture.size != wanted:
        if not resize:
            raise DataError(
                f"{name} is {picture.size[0]}x{picture.size[1]} but the first image is "
                f"{wanted[0]}x{wanted[1]}",
                key="data.image_size",
                fix="set data.image_size: [height, width] to resize every image",
            )
        picture = picture.resize(wanted, Image.Resampling.BILINEAR)
    pixels = np.asarray(picture, dtype=np.float32) / 255.0
    chw = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return chw, mode, (picture.size[1], picture.size[0])


def refuse_non_image(name: str) -> None:
    """Raise a DataError if ``name`` does not end like an image file."""
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise DataError(
            f"{name} is not an image file",
            key="data.path",
            fix=f"keep only images ({', '.join(IMAGE_SUFFIXES)}) in the class folders",
        )


def list_images(source: str, image_size: Sequence[int] | None = None) -> Listing:
    """List a streamed image folder: its class folders, its files and their fragments.

    Classes are the folders directly below the root (empty ones too, as the in-memory reader
    counts them); images are the files directly inside them, hidden files aside. The first
    image listed is decoded to size the fragments (see :data:`PIXEL_BYTES_PER_FRAGMENT`).

    Raises:
        DataError: If the folder is missing, holds no images, or holds a file that is not one.

    """
    import pyarrow.fs

    fs, root = filesystem_of(source)
    root = root.rstrip("/")
    if fs.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        raise DataError(
            f"image folder not found: {source}", key="data.path", fix="point at a folder"
        )
    classes: list[str] = []
    files: list[tuple[str, str, Any]] = []  # (path below the root, class, info)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        parts = info.path[len(root) + 1 :].split("/")
        if info.type == pyarrow.fs.FileType.Directory and len(parts) == 1:
            classes.append(parts[0])
        elif info.type == pyarrow.fs.FileType.File and len(parts) == 2 and parts[1][:1] != ".":
            refuse_non_image(info.path)
            files.append(("/".join(parts), parts[0], info))
    if not files:
        raise DataError(
            f"{source} has no images in class folders",
            key="data.path",
            fix="lay the images out as <path>/<class name>/<image file>",
        )
    files.sort(key=lambda item: hashlib.blake2b(item[0].encode(), digest_size=8).digest())
    stamps = tuple((info.path, int(info.size), int(info.mtime_ns or 0)) for _, _, info in files)
    first, _, _ = decode_image(
        _read_file(fs, stamps[0][0]), stamps[0][0], None, _hw(image_size), resize=True
    )
    fitting = PIXEL_BYTES_PER_FRAGMENT // max(1, first.nbytes)
    per_fragment = max(1, min(IMAGES_PER_FRAGMENT, max(FEWEST_PER_FRAGMENT, fitting)))
    fragments = []
    for number, start in enumerate(range(0, len(stamps), per_fragment)):
        count = min(per_fragment, len(stamps) - start)
        fragments.append(Fragment(root, number, count, start, start, count))
    return Listing(source, stamps, tuple(fragments), (), classes=tuple(sorted(classes)))


def class_of(root: str, path: str) -> str:
    """Return the class of an image: the name of the folder below ``root`` it is in."""
    return path[len(root) + 1 :].split("/", 1)[0]


def read_images(
    listing: Listing,
    fragment: Fragment,
    mode: str | None,
    size: Sequence[int] | None,
    *,
    resize: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read and decode one fragment's images.

    Returns:
        Pixels ``(N, C, H, W)``, class names ``(N,)``, and two 64-bit hashes of each file's
        bytes: its split hash and its holdout hash (:mod:`pipelines.data.row_hashes`).

    Raises:
        DataError: Naming the image that cannot be read or decoded.

    """
    fs, _ = filesystem_of(listing.source)
    hw = _hw(size)
    pixels, labels, split_hashes, holdout_hashes = [], [], [], []
    for path, _, _ in listing.files[fragment.offset : fragment.offset + fragment.length]:
        data = _read_file(fs, path)
        image, mode, hw = decode_image(data, path, mode, hw, resize=resize)
        pixels.append(image)
        labels.append(class_of(fragment.path, path))
        split_hashes.append(digest64(data, SPLIT_KEY))
        holdout_hashes.append(digest64(data))
    return (
        np.stack(pixels),
        np.asarray(labels),
        np.asarray(split_hashes, dtype=np.uint64),
        np.asarray(holdout_hashes, dtype=np.uint64),
    )


def _hw(size: Sequence[int] | None) -> tuple[int, int] | None:
    return (int(size[0]), int(size[1])) if size else None


def _read_file(fs: Any, path: str) -> bytes:
    """Return a file's bytes; a file that cannot be read is a DataError naming it."""
    try:
        with fs.open_input_file(path) as handle:
            return bytes(handle.read())
    except OSError as exc:
        raise DataError(
            f"cannot read image {path}: {str(exc).splitlines()[0][:200]}",
            key="data.path",
            fix="restore the file; no image is skipped silently",
        ) from None
