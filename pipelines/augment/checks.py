"""The augmentation settings of a config, checked against the data before a sweep starts.

Checking here, once, means a typo'd transform or a strength out of range fails before any
cluster work, with the config key; :func:`~pipelines.augment.policy.policy_from_hparams` checks
the same rules again inside a trial, where PBT or a hand-made point could still break them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.augment.policy import (
    augment_name,
    check_probability,
    check_strength,
    check_transform,
)
from pipelines.config import AugmentStepConfig
from pipelines.errors import ConfigError
from search_spaces import ParamSpec, SearchSpace


def check_augmentation(
    params: Mapping[str, Any],
    space: SearchSpace,
    augment: Mapping[str, AugmentStepConfig],
    modality: str,
) -> dict[str, float]:
    """Check the policy (``data.augment``) and every ``aug_*`` hyperparameter against the data.

    Args:
        params: The fixed hyperparameters (``trainable.params``).
        space: The search space (searched ``aug_*`` keys are checked at their range's edges).
        augment: The ``data.augment`` section.
        modality: The data's modality.

    Returns:
        The ``aug_*`` values the ``data.augment`` section fixes for every trial (they travel as
        hyperparameters, so MLflow records them per trial like searched ones).

    Raises:
        ConfigError: For an unknown transform, one for another modality, a strength or
            probability out of range, or a transform without a strength.

    """
    searched = set(space.names())
    for key in sorted(set(params) | searched):
        name = augment_name(key)
        if name is None:
            continue
        where = f"trainable.params.{key}" if key in params else "trainable.search_space"
        check_transform(name, modality, key=where)
        check = check_probability if key.endswith("_p") and key != f"aug_{name}" else None
        for value in [params[key]] if key in params else _extremes(space.params[key]):
            if check is not None:
                check(name, value, key=where)
            else:
                check_strength(name, value, key=where)
    fixed: dict[str, float] = {}
    for name, step in augment.items():
        key = f"data.augment.{name}"
        check_transform(name, modality, key=key)
        elsewhere = {f"aug_{name}", f"aug_{name}_p"} & (set(params) | searched)
        if step.strength is not None:
            if f"aug_{name}" in elsewhere:
                raise ConfigError(
                    f"the strength of {name!r} is fixed here and set as aug_{name} too",
                    key=f"{key}.strength",
                    fix="keep one of the two",
                )
            check_strength(name, step.strength, key=f"{key}.strength")
            fixed[f"aug_{name}"] = step.strength
        elif f"aug_{name}" not in elsewhere:
            raise ConfigError(
                f"augmentation {name!r} has no strength",
                key=f"{key}.strength",
                fix=f"set strength, or search aug_{name} in the search space",
            )
        if f"aug_{name}_p" not in elsewhere:
            fixed[f"aug_{name}_p"] = step.p
    return fixed


def _extremes(spec: ParamSpec) -> list[Any]:
    """Return the values at the edges of a search-space entry (what a range check needs)."""
    if hasattr(spec, "low") and hasattr(spec, "high"):
        return [spec.low, spec.high]
    if hasattr(spec, "value"):
        return [spec.value]
    return list(getattr(spec, "values", []))
