"""The augmentation policy: which transforms apply to a trial's data, how often and how strongly.

A policy is resolved per trial from flat hyperparameters, so every strength can be searched:

- ``aug_<name>``: the strength of transform ``<name>`` (its meaning and range are in
  :data:`TRANSFORMS`);
- ``aug_<name>_p``: the probability that a row gets the transform at all (default 1).

The config's ``data.augment`` section lists transforms with fixed values; they reach trials as
the same hyperparameters (see :mod:`pipelines.augment.checks`), so MLflow records them per trial
whether they were searched or fixed. Names, ranges and modality are checked before a sweep
starts; an unknown name or an out-of-range strength is a :class:`~pipelines.errors.ConfigError`.

Randomness: each transform of each batch draws from its own stream, seeded by
``(seed, trial, epoch, first row index, transform's stream id)``. The same trial and epoch
therefore see the same augmented rows however Ray schedules the blocks, a new epoch sees fresh
draws, and turning one transform on or off does not change what the others draw. Stream ids are
fixed per transform (:attr:`~pipelines.augment.spec.TransformSpec.stream`), not positions in a
table, so adding a transform anywhere leaves every recorded trial's draws as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.augment.audio import AUDIO_SPECS
from pipelines.augment.image import IMAGE_SPECS
from pipelines.augment.spec import TransformSpec, by_name
from pipelines.augment.text import TEXT_SPECS
from pipelines.errors import ConfigError

#: Every transform by name: image, then text, then audio, each in its module's table order (the
#: order a policy applies them). Each carries its own fixed random stream id.
TRANSFORMS: dict[str, TransformSpec] = by_name(IMAGE_SPECS, TEXT_SPECS, AUDIO_SPECS)
MODALITIES_WITH_AUGMENTATION = ("image", "text", "audio")


def hparam_keys() -> frozenset[str]:
    """Return every augmentation hyperparameter key (``aug_<name>`` and ``aug_<name>_p``)."""
    return frozenset(f"aug_{n}" for n in TRANSFORMS) | frozenset(f"aug_{n}_p" for n in TRANSFORMS)


@dataclass(frozen=True)
class Step:
    """One transform of a resolved policy."""

    name: str
    strength: float
    probability: float = 1.0


@dataclass(frozen=True)
class AugmentPolicy:
    """The transforms a trial applies, in the fixed order of :data:`TRANSFORMS`."""

    modality: str
    steps: tuple[Step, ...] = ()

    @property
    def is_identity(self) -> bool:
        """True when no step would change a batch."""
        return not self.steps

    def as_params(self) -> dict[str, float]:
        """Return the policy as flat ``aug_*`` values (what MLflow records)."""
        params: dict[str, float] = {}
        for step in self.steps:
            params[f"aug_{step.name}"] = step.strength
            params[f"aug_{step.name}_p"] = step.probability
        return params


def check_strength(name: str, strength: Any, *, key: str) -> None:
    """Raise ConfigError unless ``strength`` is allowed for transform ``name``."""
    spec = TRANSFORMS[name]
    if isinstance(strength, bool) or not isinstance(strength, int | float):
        raise ConfigError(
            f"the strength of {name!r} must be a number, got {strength!r}",
            key=key,
            fix=f"use a {spec.meaning} between {spec.low:g} and {spec.high:g}",
        )
    if not spec.low <= strength <= spec.high:
        raise ConfigError(
            f"strength {strength:g} of {name!r} is outside [{spec.low:g}, {spec.high:g}]",
            key=key,
            fix=f"use a {spec.meaning} between {spec.low:g} and {spec.high:g}",
        )
    if spec.integer and float(strength) != int(strength):
        raise ConfigError(
            f"the strength of {name!r} is a whole number of pixels, got {strength:g}",
            key=key,
            fix="use an integer",
        )


def check_probability(name: str, probability: Any, *, key: str) -> None:
    """Raise ConfigError unless ``probability`` is a number in [0, 1]."""
    valid = isinstance(probability, int | float) and not isinstance(probability, bool)
    if not valid or not 0.0 <= probability <= 1.0:
        raise ConfigError(
            f"the probability of {name!r} must be in [0, 1], got {probability!r}",
            key=key,
            fix="use a probability between 0 and 1",
        )


def check_transform(name: str, modality: str, *, key: str) -> None:
    """Raise ConfigError for an unknown transform or one that does not fit the data."""
    if name not in TRANSFORMS:
        choices = [n for n, s in TRANSFORMS.items() if s.modality == modality] or ["none"]
        raise ConfigError(
            f"unknown augmentation {name!r}",
            key=key,
            fix=f"use one of the {modality} transforms: {', '.join(choices)}",
        )
    wanted = TRANSFORMS[name].modality
    if wanted != modality:
        fitting = [n for n, s in TRANSFORMS.items() if s.modality == modality]
        raise ConfigError(
            f"{name!r} is a {wanted} augmentation but the data is {modality}",
            key=key,
            fix=f"use one of: {', '.join(fitting)}" if fitting else "remove it",
        )


def augment_name(key: str) -> str | None:
    """Return the transform named by an ``aug_<name>`` or ``aug_<name>_p`` key, else None."""
    if not key.startswith("aug_"):
        return None
    name = key[len("aug_") :]
    return name[: -len("_p")] if name.endswith("_p") and name[:-2] in TRANSFORMS else name


def policy_from_hparams(hparams: Mapping[str, Any], modality: str) -> AugmentPolicy:
    """Resolve a trial's policy from its ``aug_*`` hyperparameters.

    Raises:
        ConfigError: For an unknown transform, one of the wrong modality, or a value out of range.

    """
    names = {augment_name(key) for key in hparams} - {None}
    for name in sorted(n for n in names if n is not None):
        check_transform(name, modality, key=f"aug_{name}")
        if f"aug_{name}" not in hparams:
            raise ConfigError(
                f"aug_{name}_p is set but aug_{name} (the strength) is not",
                key=f"aug_{name}",
                fix=f"set aug_{name}: the {TRANSFORMS[name].meaning}",
            )
    steps = []
    for name, spec in TRANSFORMS.items():  # the fixed order, whatever order the keys came in
        if name not in names:
            continue
        strength, probability = hparams[f"aug_{name}"], hparams.get(f"aug_{name}_p", 1.0)
        check_strength(name, strength, key=f"aug_{name}")
        check_probability(name, probability, key=f"aug_{name}_p")
        if probability == 0 or (spec.identity is not None and strength == spec.identity):
            continue
        steps.append(Step(name, float(strength), float(probability)))
    return AugmentPolicy(modality, tuple(steps))


def step_rng(
    seed: int, trial: int, epoch: int, first_index: int, name: str
) -> np.random.Generator:
    """Return the random stream of one transform on one batch of one trial's epoch."""
    stream = TRANSFORMS[name].stream
    return np.random.default_rng([seed, trial, epoch, first_index, stream])


def apply_policy(
    x: np.ndarray,
    policy: AugmentPolicy,
    *,
    seed: int,
    trial: int,
    epoch: int,
    first_index: int,
    **context: Any,
) -> np.ndarray:
    """Apply every step of ``policy`` to the rows of ``x`` (numpy in, numpy out).

    Args:
        x: A batch of rows: images (N, C, H, W), token ids (N, L) or waveforms (N, T).
        policy: The trial's resolved policy.
        seed: The trial's seed.
        trial: The trial's index in the sweep.
        epoch: The epoch (fresh randomness each epoch).
        first_index: Dataset index of the batch's first row (independent streams per batch).
        **context: Extra inputs some transforms need (``synonyms`` for text).

    Returns:
        The augmented rows, same shape and dtype as ``x``.

    """
    if policy.is_identity or len(x) == 0:
        return x
    for step in policy.steps:
        rng = step_rng(seed, trial, epoch, first_index, step.name)
        function = TRANSFORMS[step.name].function
        if step.probability >= 1.0:
            x = function(x, step.strength, rng, **context)
            continue
        chosen = rng.random(len(x)) < step.probability
        if chosen.any():
            x = x.copy()
            x[chosen] = function(x[chosen], step.strength, rng, **context)
    return x
