"""Batching and shuffling of training blocks, as trials receive them (no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.augment.policy import AugmentPolicy
from pipelines.data.features import Featurizer
from pipelines.data.sweep_data import block_count, rebatch, transform_batch


def _blocks(sizes: list[int]) -> list[dict[str, np.ndarray]]:
    blocks, start = [], 0
    for size in sizes:
        idx = np.arange(start, start + size)
        blocks.append({"x": idx[:, None].astype(np.float32), "y": idx % 3, "idx": idx})
        start += size
    return blocks


@pytest.mark.parametrize("sizes", [[10], [7, 7, 7], [3, 1, 1, 2, 9], [64], [5, 0, 5]])
@pytest.mark.parametrize("batch_size", [1, 4, 8, 64])
def test_rebatch_gives_exact_batches_and_every_row_once_in_order(
    sizes: list[int], batch_size: int
) -> None:
    batches = list(rebatch(_blocks(sizes), batch_size))
    total = sum(sizes)
    assert [len(b["idx"]) for b in batches[:-1]] == [batch_size] * (len(batches) - 1)
    assert 0 < len(batches[-1]["idx"]) <= batch_size
    ids = np.concatenate([b["idx"] for b in batches])
    np.testing.assert_array_equal(ids, np.arange(total))
    for batch in batches:  # columns stay aligned across block boundaries
        np.testing.assert_array_equal(batch["x"][:, 0], batch["idx"])
        np.testing.assert_array_equal(batch["y"], batch["idx"] % 3)


def test_block_shuffle_permutes_rows_alike_and_reproducibly() -> None:
    block = _blocks([500])[0]
    kwargs = {"policy": AugmentPolicy("image"), "featurizer": Featurizer(), "seed": 1, "trial": 2}
    first = transform_batch(block, epoch=1, shuffle=True, **kwargs)
    again = transform_batch(block, epoch=1, shuffle=True, **kwargs)
    other = transform_batch(block, epoch=2, shuffle=True, **kwargs)

    np.testing.assert_array_equal(first["idx"], again["idx"])
    assert not np.array_equal(first["idx"], other["idx"])
    assert not np.array_equal(first["idx"], block["idx"])
    np.testing.assert_array_equal(np.sort(first["idx"]), block["idx"])  # a permutation
    np.testing.assert_array_equal(first["x"][:, 0], first["idx"])  # rows moved whole
    np.testing.assert_array_equal(first["y"], first["idx"] % 3)


def test_blocks_follow_the_trials_cpus_and_stay_under_the_size_limit() -> None:
    small = np.zeros((4000, 1, 28, 28), np.float32)  # 12.5 MB
    assert block_count(small, 1) == 1
    assert block_count(small, 2) == 2
    big = np.zeros((60_000, 1, 28, 28), np.float32)  # 188 MB
    assert block_count(big, 1) == 3
    assert block_count(big, 2) == 4
    assert block_count(np.zeros((3, 4), np.float32), 8) == 3  # never an empty block
