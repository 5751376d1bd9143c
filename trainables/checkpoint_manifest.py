"""Checksums for a trial's checkpoints: written when a checkpoint is saved, verified before load.

A checkpoint can be damaged after it was reported: a driver or node killed while it was being
uploaded leaves some files missing or short, a disk or a network flips bits. Loading such a
checkpoint fails on every retry of the trial (or, worse, loads wrong weights), so each one
carries a manifest of its files' sizes and SHA-256 digests, and a checkpoint whose files do not
match it is passed over for the previous good one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "tunepipe-manifest.json"
_CHUNK = 1 << 20


def write_manifest(directory: Path) -> None:
    """Record the size and SHA-256 digest of every file under ``directory``.

    Call it last, once the checkpoint's files are all written: files added afterwards (Ray's own
    metadata) are not part of what is verified.
    """
    files = {
        path.relative_to(directory).as_posix(): _describe(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    (directory / MANIFEST).write_text(json.dumps({"version": 1, "files": files}, indent=1))


def damage(directory: Path) -> str | None:
    """Return why the checkpoint in ``directory`` cannot be trusted, or None if it is whole.

    Args:
        directory: A local copy of the checkpoint.

    Returns:
        None when every file in the manifest is present with its size and digest; otherwise
        one line naming the first file that is missing, short or changed (or the manifest).

    """
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return f"{MANIFEST} is missing (the checkpoint was not written to the end)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return f"{MANIFEST} is damaged"
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        actual = _describe(path)
        if actual["size"] != expected.get("size"):
            return f"{name} has {actual['size']} bytes, {expected.get('size')} were written"
        if actual["sha256"] != expected.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def _describe(path: Path) -> dict[str, int | str]:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}
