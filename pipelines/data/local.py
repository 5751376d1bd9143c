"""A trial's batches straight from the prepared arrays, without Ray: for one-step dry runs.

The same transform as a sweep's Ray Data step (:func:`~pipelines.data.sweep_data.transform_batch`:
the trial's augmentation, then featurising), on the first ``rows`` rows only, so
``tunepipe validate`` and the check a sweep of the user's code makes before Ray starts see
exactly the inputs a trial would, in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pipelines.augment.policy import AugmentPolicy
from pipelines.data.preprocess import Prepared
from pipelines.data.sweep_data import rebatch, transform_batch
from trainables.protocol import Batch


@dataclass(frozen=True)
class LocalBatches:
    """A :class:`~trainables.protocol.TrialBatches` over the first ``rows`` prepared rows.

    Attributes:
        prepared: The prepared splits.
        policy: The trial's augmentation policy.
        rows: How many rows of each split to use.
        seed: The trial's seed.
        trial: The trial's index.

    """

    prepared: Prepared
    policy: AugmentPolicy
    rows: int
    seed: int = 0
    trial: int = 0

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        """Return one epoch of the rows, augmented and featurised as a trial's."""
        rows = min(self.rows, len(self.prepared.y_train))
        block = transform_batch(
            {
                "x": self.prepared.x_train[:rows],
                "y": self.prepared.y_train[:rows],
                "idx": np.arange(rows),
            },
            policy=self.policy,
            featurizer=self.prepared.featurizer,
            seed=self.seed,
            trial=self.trial,
            epoch=epoch,
            synonyms=self.prepared.synonym_table(),
        )
        return rebatch([block], batch_size)

    def val_batches(self) -> Iterator[Batch]:
        """Return the validation rows in one batch."""
        rows = min(self.rows, len(self.prepared.y_val))
        yield {"x": self.prepared.x_val[:rows], "y": self.prepared.y_val[:rows]}

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return the rows of both splits, featurised and without augmentation."""
        rows = min(self.rows, len(self.prepared.y_train))
        x_train = self.prepared.featurizer(self.prepared.x_train[:rows])
        (val,) = self.val_batches()
        return x_train, self.prepared.y_train[:rows], val["x"], val["y"]
