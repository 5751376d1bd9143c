"""Random, label-preserving augmentation as pure vectorised batch functions (numpy in, numpy out).

One module per modality (:mod:`~pipelines.augment.image`, :mod:`~pipelines.augment.text`,
:mod:`~pipelines.augment.audio`) holds the transforms; :mod:`~pipelines.augment.policy` decides
which of them a trial applies, with which probability and strength (hyperparameters
``aug_<name>`` and ``aug_<name>_p``), and draws reproducible randomness from
(seed, trial, epoch). Nothing here imports Ray, so every transform is unit-testable on arrays;
:mod:`pipelines.data.sweep_data` wires the policy into Ray Data's ``map_batches``.
"""

from pipelines.augment.policy import (
    TRANSFORMS,
    AugmentPolicy,
    Step,
    apply_policy,
    hparam_keys,
    policy_from_hparams,
)

__all__ = [
    "TRANSFORMS",
    "AugmentPolicy",
    "Step",
    "apply_policy",
    "hparam_keys",
    "policy_from_hparams",
]
