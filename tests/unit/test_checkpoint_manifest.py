"""Checkpoints carry checksums: a damaged one is named, and a trial restores the newest whole one.

The damage is done to real files the way disks and networks do it: cut short, a flipped bit, a
file gone, the manifest itself cut. The Tune session that hands a trial its checkpoint is the one
part replaced (``tune.get_checkpoint``): the checkpoints are real folders read through Ray's
``Checkpoint``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ray import tune

from trainables import reporting
from trainables.checkpoint_manifest import MANIFEST, damage, write_manifest


def _checkpoint(folder: Path, epoch: int) -> Path:
    folder.mkdir(parents=True)
    np.save(folder / "weights.npy", np.full((64, 10), float(epoch)), allow_pickle=False)
    (folder / "tunepipe.json").write_text(json.dumps({"epoch": epoch}))
    write_manifest(folder)
    return folder


def test_a_whole_checkpoint_passes(tmp_path: Path) -> None:
    assert damage(_checkpoint(tmp_path / "c", 1)) is None


def test_files_added_after_the_manifest_are_not_checked(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "c", 1)
    (folder / ".metadata.json").write_text("{}")  # Ray's own, written after ours
    assert damage(folder) is None


def test_a_truncated_file_is_named(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "c", 1)
    weights = folder / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert damage(folder) == f"weights.npy has {weights.stat().st_size} bytes, 5248 were written"


def test_a_flipped_bit_is_found(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "c", 1)
    weights = folder / "weights.npy"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    assert damage(folder) == "weights.npy does not match its checksum"


def test_a_missing_file_or_manifest_is_named(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "c", 1)
    (folder / "tunepipe.json").unlink()
    assert damage(folder) == "tunepipe.json is missing"
    manifest = folder / MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:20])
    assert damage(folder) == f"{MANIFEST} is damaged"
    manifest.unlink()
    assert "is missing" in str(damage(folder))


def _restored_epoch(monkeypatch: pytest.MonkeyPatch, named: Path) -> int | None:
    monkeypatch.setattr(reporting.tune, "get_checkpoint", lambda: tune.Checkpoint(str(named)))
    with reporting.latest_checkpoint() as folder:
        return (
            None
            if folder is None
            else int(json.loads((folder / "tunepipe.json").read_text())["epoch"])
        )


def test_a_damaged_newest_checkpoint_gives_way_to_the_one_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = tmp_path / "trial"
    _checkpoint(trial / "checkpoint_000001", 1)
    newest = _checkpoint(trial / "checkpoint_000002", 2)
    assert _restored_epoch(monkeypatch, newest) == 2
    weights = newest / "weights.npy"
    weights.write_bytes(weights.read_bytes()[:100])
    assert _restored_epoch(monkeypatch, newest) == 1


def test_a_deleted_checkpoint_gives_way_to_a_newer_whole_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trial = tmp_path / "trial"
    _checkpoint(trial / "checkpoint_000003", 3)
    half_uploaded = _checkpoint(trial / "checkpoint_000004", 4)
    (half_uploaded / "weights.npy").unlink()
    assert _restored_epoch(monkeypatch, trial / "checkpoint_000002") == 3


def test_with_no_whole_checkpoint_the_trial_starts_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only = _checkpoint(tmp_path / "trial" / "checkpoint_000001", 1)
    (only / MANIFEST).unlink()
    assert _restored_epoch(monkeypatch, only) is None
