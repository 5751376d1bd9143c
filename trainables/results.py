"""What a trial's reports mean: the keys the adapter adds to them, and a trial's index.

The adapter writes these keys into every report; the driver side (tracking, the best-trial
choice, the live progress view) reads them. Naming them once here keeps both sides in step.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping
from typing import Any, Final

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
#: What the trial computed on: "cpu" or "cuda:<index> <name>" (see trainables.usage).
DEVICE: Final = "device"
#: A data-parallel trial's Train run's placement group (hex id). A Train run dies with its
#: trial's actor when Tune ends a sweep, before it can remove the group (Ray Train's own cleaner
#: needs the dashboard's state API): the sweep removes what is left (pipelines.sweep.cluster).
PLACEMENT_GROUP: Final = "train_placement_group"


def trial_index_from_id(trial_id: str) -> int:
    """Return the number at the end of a Tune trial id (a stable hash if there is none).

    It seeds the trial's augmentation, so two trials with the same seed still draw differently,
    and a restored trial draws what it drew before.
    """
    suffix = trial_id.rsplit("_", 1)[-1]
    if suffix.isdigit():
        return int(suffix)
    return int(hashlib.sha256(trial_id.encode()).hexdigest()[:8], 16)


def is_non_finite(value: Any) -> bool:
    """Return whether ``value`` is a NaN or infinite number, whatever its numeric type.

    ``isinstance(value, float)`` alone misses numpy's float32 and float16 scalars and 0-d
    arrays (only float64 subclasses ``float``), and a trainable computing its loss in float32
    reports exactly those; anything with ``ndim == 0`` and ``item()`` (numpy, torch) is read as
    its Python value.
    """
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        value = value.item()  # stays a numpy scalar for longdouble, which has no Python twin
    if not isinstance(value, numbers.Number) or isinstance(value, numbers.Integral):
        return False  # not a number, or an exact integer (bool included): finite
    number: Any = value  # float, complex or a numpy scalar: all have != and abs()
    return bool(number != number or abs(number) == math.inf)  # NaN alone is unequal to itself


def first_non_finite(metrics: Mapping[str, Any]) -> str | None:
    """Return the name of the first NaN/inf metric, or None when all are finite."""
    return next((name for name, value in metrics.items() if is_non_finite(value)), None)
