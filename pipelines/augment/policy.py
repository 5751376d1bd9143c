"""The augmentation policy: which transforms apply to a trial's data, how often and how strongly.

A policy is resolved per trial from flat hyperparameters, so every strength can be searched:

- ``aug_<name>``: the strength of transform ``<name>`` (its meaning and range are in
  :data:`TRANSFORMS`);
- ``aug_<name>_p``: the probability that a row gets the transform at all (default 1).

The config's ``data.augment`` section lists transforms with fixed values; they reach trials as the
same hyperparameters (see :func:`pipelines.validate.plan_sweep`), so MLflow records them per trial
whether they were searched or fixed. Names, ranges and modality are checked before a sweep
starts; an unknown name or an out-of-range strength is a :class:`~pipelines.errors.ConfigError`.

Randomness: each transform of each batch draws from its own stream, seeded by
``(seed, trial, epoch, first row index, transform)``. The same trial and epoch therefore see the
same augmented rows however Ray schedules the blocks, a new epoch sees fresh draws, and turning
one transform on or off does not change what the others draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.errors import ConfigError


@dataclass(frozen=True)
class TransformSpec:
    """What one transform's strength means and which values are allowed.

    Attributes:
        name: The name used in configs (``aug_<name>`` as a hyperparameter).
        modality: ``"image"``, ``"text"`` or ``"audio"``.
        meaning: The strength's meaning and unit, for error messages and the README.
        low: Smallest allowed strength.
        high: Largest allowed strength.
        integer: Whether the strength is a whole number (pixels).
        identity: The strength that leaves data unchanged, or None when no value does.

    """

    name: str
    modality: str
    meaning: str
    low: float
    high: float
    integer: bool = False
    identity: float | None = 0.0


def _spec(name: str, modality: str, meaning: str, low: float, high: float, **kw: Any) -> Any:
    return name, TransformSpec(name, modality, meaning, low, high, **kw)


#: Every transform, in a fixed order: the position is also the transform's random stream id.
TRANSFORMS: dict[str, TransformSpec] = dict(
    [
        _spec("rotate", "image", "largest rotation angle in degrees", 0, 180),
        _spec("translate", "image", "largest shift in pixels", 0, 16, integer=True),
        _spec("hflip", "image", "probability of a left-right mirror", 0, 1),
        _spec("vflip", "image", "probability of a top-bottom mirror", 0, 1),
        _spec("zoom", "image", "largest relative change of scale", 0, 0.5),
        _spec("crop", "image", "padding in pixels before a random crop", 0, 16, integer=True),
        _spec("brightness", "image", "largest brightness shift (normalised units)", 0, 3),
        _spec("contrast", "image", "largest relative change of contrast", 0, 0.95),
        _spec("noise", "image", "Gaussian noise std (normalised units)", 0, 2),
        _spec("cutout", "image", "side of the erased square in pixels", 0, 32, integer=True),
        _spec("synonym", "text", "probability per word of a synonym replacement", 0, 1),
        _spec("insert", "text", "probability per word of inserting a synonym", 0, 1),
        _spec("swap", "text", "swaps per word (fraction of the sentence length)", 0, 1),
        _spec("delete", "text", "probability per word of deleting it", 0, 0.9),
        _spec("pitch", "audio", "largest pitch shift in semitones", 0, 12),
        _spec("speed", "audio", "largest relative change of playback speed", 0, 0.5),
        _spec(
            "snr_db", "audio", "signal-to-noise ratio of added noise in dB", -10, 60, identity=None
        ),
        _spec("time_shift", "audio", "largest shift as a fraction of the clip", 0, 0.5),
    ]
)
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


Transform = Callable[..., np.ndarray]


def _functions(modality: str) -> dict[str, Transform]:
    # Imported here so that a policy can be checked without loading every modality's code.
    if modality == "image":
        from pipelines.augment.image import IMAGE_TRANSFORMS

        return dict(IMAGE_TRANSFORMS)
    if modality == "text":
        from pipelines.augment.text import TEXT_TRANSFORMS

        return dict(TEXT_TRANSFORMS)
    from pipelines.augment.audio import AUDIO_TRANSFORMS

    return dict(AUDIO_TRANSFORMS)


def step_rng(
    seed: int, trial: int, epoch: int, first_index: int, name: str
) -> np.random.Generator:
    """Return the random stream of one transform on one batch of one trial's epoch."""
    stream = list(TRANSFORMS).index(name)
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
    functions = _functions(policy.modality)
    for step in policy.steps:
        rng = step_rng(seed, trial, epoch, first_index, step.name)
        function = functions[step.name]
        if step.probability >= 1.0:
            x = function(x, step.strength, rng, **context)
            continue
        chosen = rng.random(len(x)) < step.probability
        if chosen.any():
            x = x.copy()
            x[chosen] = function(x[chosen], step.strength, rng, **context)
    return x
