"""Batch samplers: aspect-ratio grouping, deterministic per seed and epoch, sharded by rank.

A *global* batch has ``batch_size * world_size`` images; rank ``r`` takes images
``r*batch_size .. (r+1)*batch_size`` of it. The global batches depend only on
``(seed, epoch)``, so a 1-process run with batch ``B`` and a ``k``-process run with
batch ``B/k`` each see the same images at every step, and a resumed run can skip the
steps it already did.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["GroupedBatchSampler", "global_batches"]


def global_batches(
    num_items: int, global_batch: int, *, seed: int, epoch: int, groups: Sequence[int] | None = None
) -> list[list[int]]:
    """All global batches of one epoch.

    Items are shuffled with a generator seeded by ``(seed, epoch)``; a batch is filled
    from one group (e.g. portrait vs landscape) in shuffled order; what is left of the
    groups is merged, and the last batch is completed by wrapping around the shuffled
    order, so every batch has exactly ``global_batch`` items.

    Args:
        num_items: Dataset length.
        global_batch: Images per step over all processes.
        seed: Base seed.
        epoch: Epoch number.
        groups: ``[num_items]`` group id per item; None = one group.

    Returns:
        ``ceil``-many lists of item indices, each of length ``global_batch``.
    """
    if num_items <= 0:
        return []
    generator = torch.Generator().manual_seed(int(seed) * 100_003 + int(epoch))
    order = torch.randperm(num_items, generator=generator).tolist()
    group_of = np.zeros(num_items, dtype=np.int64) if groups is None else np.asarray(groups)
    buckets: dict[int, list[int]] = {}
    batches: list[list[int]] = []
    for index in order:
        bucket = buckets.setdefault(int(group_of[index]), [])
        bucket.append(index)
        if len(bucket) == global_batch:
            batches.append(bucket)
            buckets[int(group_of[index])] = []
    left = {i for bucket in buckets.values() for i in bucket}
    leftovers = [i for i in order if i in left]
    for start in range(0, len(leftovers), global_batch):
        batch = leftovers[start : start + global_batch]
        wrap = 0
        while len(batch) < global_batch:
            batch.append(order[wrap % num_items])
            wrap += 1
        batches.append(batch)
    return batches


class GroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields this rank's share of each global batch.

    Args:
        aspect_ratios: ``[N]`` width / height per item; None disables grouping.
        batch_size: Images per rank per step.
        seed: Base seed.
        rank: This process's rank.
        world_size: Number of processes.
        max_batches: If > 0, stop each epoch after this many batches.
    """

    def __init__(
        self,
        *,
        num_items: int,
        batch_size: int,
        seed: int,
        aspect_ratios: np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
        max_batches: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.max_batches = int(max_batches)
        self.groups = None if aspect_ratios is None else (np.asarray(aspect_ratios) >= 1.0).astype(np.int64)
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Select the epoch's batches and skip the first ``skip`` of them (resume)."""
        self.epoch = int(epoch)
        self.skip = int(skip)

    def _batches(self) -> list[list[int]]:
        batches = global_batches(
            self.num_items,
            self.batch_size * self.world_size,
            seed=self.seed,
            epoch=self.epoch,
            groups=self.groups,
        )
        if self.max_batches > 0:
            batches = batches[: self.max_batches]
        return batches

    def batches_per_epoch(self) -> int:
        """Steps in a full epoch (before any skip)."""
        count = -(-self.num_items // (self.batch_size * self.world_size))
        return min(count, self.max_batches) if self.max_batches > 0 else count

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.skip)

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.batch_size
        for batch in self._batches()[self.skip :]:
            yield batch[lo : lo + self.batch_size]
