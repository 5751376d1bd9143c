"""What a streamed source is made of: its files and fragments, and the filesystem they are on.

Its own module so that the readers of each kind of file (:mod:`pipelines.data.image_files`) and
the streaming machinery (:mod:`pipelines.data.streaming`) share these types without importing
each other.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Fragment:
    """One row group, CSV range, npz shard or chunk of images: the smallest piece a reader streams.

    Attributes:
        path: The file, as the filesystem names it (no scheme); an image folder's root.
        row_group: The fragment's index in the file (a row group's, a CSV range's), or among
            an image folder's chunks.
        rows: Rows in the fragment, from the footer (or the count of a CSV range's lines).
        first_row: Position of its first row in the whole listing (row ids are these
            positions: stable while the files are).
        offset: Where a CSV fragment's bytes start in its file (its header aside); where an
            image chunk's files start in the listing.
        length: How many bytes (images) it has (-1: the whole row group or file).

    """

    path: str
    row_group: int
    rows: int
    first_row: int
    offset: int = 0
    length: int = -1


@dataclass(frozen=True)
class Listing:
    """The files of a streamed source and their fragments, read from listings and footers.

    Attributes:
        source: ``data.path`` as given (a file, a folder or a URI).
        files: ``(path, size, mtime_ns)`` of each file, sorted by path (an image folder's in
            the order its chunks take them).
        fragments: Every row group of every file, in file order.
        columns: Column names of the first file's schema (none for images).
        classes: An image folder's class folders, sorted (none for other sources).

    """

    source: str
    files: tuple[tuple[str, int, int], ...]
    fragments: tuple[Fragment, ...]
    columns: tuple[str, ...]
    classes: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        """Rows of the whole source."""
        return sum(fragment.rows for fragment in self.fragments)

    @property
    def size_bytes(self) -> int:
        """Bytes of the whole source, as stored."""
        return sum(size for _, size, _ in self.files)

    def fingerprint(self) -> str:
        """Return a hash of the listing: each file's path, size and modification time.

        CSV files also bring where their fragments start and end, which decide which rows a
        cached fragment holds.
        """
        spans = [[f.offset, f.length] for f in self.fragments if f.length >= 0]
        extra = ([spans] if spans else []) + ([list(self.classes)] if self.classes else [])
        payload = json.dumps([self.source, list(self.files), *extra])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def filesystem_of(source: str) -> tuple[Any, str]:
    """Return the pyarrow filesystem and path of a local path or a URI (``s3://...``)."""
    import pyarrow.fs

    if "://" in source:
        return pyarrow.fs.FileSystem.from_uri(source)  # type: ignore[no-any-return]
    return pyarrow.fs.LocalFileSystem(), source
