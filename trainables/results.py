"""What a trial's reports mean: the keys the adapter adds to them, and a trial's index.

The adapter writes these keys into every report; the driver side (tracking, the best-trial
choice, the live progress view) reads them. Naming them once here keeps both sides in step.
"""

from __future__ import annotations

import hashlib
from typing import Final

#: The epoch a report describes (1-based).
EPOCH: Final = "epoch"
#: 1 when a loss or metric became NaN/inf: the trial ended then and is never chosen as best.
DIVERGED: Final = "diverged"
DIVERGED_METRIC: Final = "diverged_metric"
#: 1 when early stopping ended the trial; the reason says after how many stalled epochs.
EARLY_STOPPED: Final = "early_stopped"
EARLY_STOPPING_REASON: Final = "early_stopping_reason"
#: 1 when the trial failed for good (a bad hyperparameter, a FailedTrialError): never retried.
FAILED: Final = "trial_failed"
FAILED_REASON: Final = "trial_failed_reason"
#: The Ray node the trial ran on (Tune's node_ip cannot tell apart two nodes on one machine).
NODE_ID: Final = "node_id"


def trial_index_from_id(trial_id: str) -> int:
    """Return the number at the end of a Tune trial id (a stable hash if there is none).

    It seeds the trial's augmentation, so two trials with the same seed still draw differently,
    and a restored trial draws what it drew before.
    """
    suffix = trial_id.rsplit("_", 1)[-1]
    if suffix.isdigit():
        return int(suffix)
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16)
