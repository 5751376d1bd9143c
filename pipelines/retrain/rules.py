"""The rules of a retrain: what config the re-tune runs with, and when a challenger wins."""

from __future__ import annotations

import math

from pipelines.config import ExperimentConfig


def retrain_config(config: ExperimentConfig) -> ExperimentConfig:
    """Return the re-tune's config: ``retrain.num_samples`` trials, a holdout set aside."""
    data = config.data
    if data.holdout_fraction == 0:
        data = data.model_copy(update={"holdout_fraction": config.retrain.holdout_fraction})
    search = config.search.model_copy(update={"num_samples": config.retrain.num_samples})
    tracking = config.tracking.model_copy(update={"register_model": True})
    return config.model_copy(update={"data": data, "search": search, "tracking": tracking})


def decide(
    challenger: float, champion: float | None, mode: str, margin: float, champion_problem: str = ""
) -> tuple[str, str]:
    """Return ``(decision, reason)`` for a challenger's and the champion's holdout scores.

    Only a challenger that beats the champion by more than ``margin`` is promoted, or any
    finite one when there is no champion that can be scored.
    """
    if not math.isfinite(challenger):
        return "kept", f"the challenger's holdout score is {challenger}"
    if champion is None:
        return "promoted", champion_problem or "there was no champion yet"
    gain = challenger - champion if mode == "max" else champion - challenger
    if gain > margin:
        return "promoted", f"it beats the champion by {gain:.4g} (margin {margin:g})"
    return "kept", (
        f"the challenger's improvement {gain:.4g} is not above the margin {margin:g} "
        f"({challenger:.4f} vs the champion's {champion:.4f})"
    )
