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
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.sweep.storage import filesystem, redact
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
