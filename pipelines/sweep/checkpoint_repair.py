"""Before a sweep is resumed: give every trial a checkpoint that Tune can restore from.

Tune deletes a trial's checkpoints beyond ``num_to_keep`` as soon as a newer one is registered,
and uploads its experiment snapshot (what ``Tuner.restore`` reads) only afterwards. A driver
killed in that window leaves a snapshot naming a checkpoint that is gone, and Tune's restore then
fails the trial on every retry ("does not exist on storage anymore"), losing it. Another whole
checkpoint of the same trial is copied to the path the snapshot names; the trial resumes from
its epoch (each checkpoint records its own).

An older one is preferred: the epochs after it are trained again, and MLflow keeps the first
record of each. A newer one may hold an epoch whose metrics the killed driver never recorded
(they were in flight when it died), and the resumed trial would never report that epoch again:
a hole in the history. A newer one is used only when no older one is whole.

The same killed driver may also have deleted an *older* checkpoint that the snapshot still
lists among those kept. Tune would try to delete it again when the resumed trial registers its
next checkpoint; the delete raises, and Tune skips the rest of that checkpoint's bookkeeping (its
index and the next snapshot). Such entries are dropped from the snapshot before Tune reads it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path, PurePosixPath
from typing import Any

from pipelines.sweep.storage import filesystem
from pipelines.uris import redact
from trainables.checkpoint_manifest import damage
from trainables.reporting import trial_checkpoints

logger = logging.getLogger(__name__)


def fill_missing_checkpoints(experiment_uri: str) -> list[str]:
    """Copy each unfinished trial's newest whole checkpoint to the path its snapshot names.

    Args:
        experiment_uri: The interrupted Tune experiment (a local path or an object-store URI).

    Returns:
        The checkpoint paths that were filled in (empty when every one was there).

    """
    import pyarrow.fs
    from ray.tune import ExperimentAnalysis

    fs, _ = filesystem(experiment_uri)
    filled = []
    for trial in ExperimentAnalysis(experiment_uri).trials:
        checkpoint = trial.checkpoint
        if trial.status == "TERMINATED" or checkpoint is None:
            continue
        named = checkpoint.path.rstrip("/")
        if fs.get_file_info(named).type != pyarrow.fs.FileType.NotFound:
            continue
        source = _sibling_to_resume(fs, named)
        if source is None:
            logger.warning("trial %s has no whole checkpoint left to resume from", trial.trial_id)
            continue
        fs.create_dir(named, recursive=True)  # a local filesystem does not make it itself
        pyarrow.fs.copy_files(source, named, source_filesystem=fs, destination_filesystem=fs)
        logger.warning(
            "trial %s: checkpoint %s was deleted after Tune's last snapshot; it resumes from %s",
            trial.trial_id,
            redact(named),
            redact(source),
        )
        filled.append(named)
    return filled


def _sibling_to_resume(fs: Any, named: str) -> str | None:
    """Return the newest whole checkpoint older than ``named``, else the oldest newer one."""
    from ray import tune

    siblings = trial_checkpoints(fs, named)  # newest first; names sort in save order
    older = [path for path in siblings if path < named]
    newer = [path for path in reversed(siblings) if path > named]
    for sibling in [*older, *newer]:
        with tune.Checkpoint(sibling, filesystem=fs).as_directory() as local:
            reason = damage(Path(local))
        if reason is None:
            return sibling
        logger.warning("checkpoint %s is damaged: %s", redact(sibling), reason)
    return None


def forget_missing_checkpoints(experiment_uri: str) -> list[str]:
    """Drop from Tune's newest snapshot every kept checkpoint that no longer exists.

    Only the snapshot's list of kept checkpoints changes: a trial's latest checkpoint is
    never dropped (:func:`fill_missing_checkpoints` gives it one first), nor anything else Tune
    recorded. The snapshot is Tune's own file from this sweep; it is read and written back
    through Tune's own run-metadata type so that Tune reads it as before.

    Args:
        experiment_uri: The interrupted Tune experiment (a local path or an object-store URI).

    Returns:
        The checkpoint paths that were dropped (empty when every one was there).

    """
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    fs, experiment_path = filesystem(experiment_uri)
    snapshot_path = _find_newest_experiment_checkpoint(experiment_path, fs=fs)
    if snapshot_path is None:
        return []
    with fs.open_input_stream(snapshot_path) as stream:
        snapshot = json.loads(stream.readall())
    forgotten: list[str] = []
    for entry in snapshot["trial_data"]:
        metadata, dropped = _without_missing(fs, experiment_path, entry[1])
        if dropped:
            entry[1] = metadata
            forgotten.extend(dropped)
    if forgotten:
        _write_atomically(fs, snapshot_path, json.dumps(snapshot).encode())
        for path in forgotten:
            logger.warning("checkpoint %s was deleted after Tune's last snapshot", redact(path))
    return forgotten


def _without_missing(fs: Any, experiment_path: str, metadata_json: str) -> tuple[str, list[str]]:
    """Return a trial's run metadata without its missing kept checkpoints, and their paths."""
    import pyarrow.fs
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    metadata = _TrainingRunMetadata.from_json_state(metadata_json)
    manager = metadata.checkpoint_manager
    if manager is None:
        return metadata_json, []
    latest = manager.latest_checkpoint_result
    kept, dropped = [], []
    for result in manager._checkpoint_results:  # Tune keeps no public setter
        if result.checkpoint is None or result is latest:
            kept.append(result)
            continue
        # The snapshot names paths where the experiment was written; it may have moved since.
        where = PurePosixPath(result.checkpoint.path)
        here = f"{experiment_path.rstrip('/')}/{where.parent.name}/{where.name}"
        if fs.get_file_info(here).type == pyarrow.fs.FileType.NotFound:
            dropped.append(here)
        else:
            kept.append(result)
    if not dropped:
        return metadata_json, []
    manager._checkpoint_results = kept
    metadata.invalidate_cache()
    return metadata.get_json_state(), dropped


def _write_atomically(fs: Any, path: str, data: bytes) -> None:
    """Write ``data`` beside ``path`` and move it over: a reader sees the old or the new file."""
    partial = f"{path}.partial"
    with fs.open_output_stream(partial) as stream:
        stream.write(data)
    fs.move(partial, path)
