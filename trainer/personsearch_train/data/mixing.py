"""Multi-dataset training data: several datasets concatenated and sampled by ratios.

Hybrid pre-training and other methods train on several datasets at once (e.g. a
person-search set, a detection-only set and re-id crops composed into scenes). Two
pieces make that a drop-in for the single-dataset pipeline of ``engine/loop.py``:

* :class:`MixedTrainDataset` concatenates map-style training datasets and tags every
  target with ``target["source"]`` (the member's position), so a method can gate each
  loss by what that sample's dataset provides;
* :class:`RatioBatchSampler` yields batches of indices into it. Every *global* batch
  (``batch_size * world_size`` images, as in :class:`~personsearch_train.data.samplers.
  GroupedBatchSampler`) comes from one source and one aspect-ratio group; the source of
  each batch is drawn with probability proportional to its ratio. A small source with a
  large ratio cycles: when its permutation is used up a new one is drawn.

Determinism: the batches of an epoch are a function of ``(seed, epoch)`` and the fixed
arguments (sizes, ratios, global batch, aspect ratios, epoch length) only, never of the
rank, the global RNG or how many batches were consumed before, so
``set_epoch(epoch, skip=k)`` resumes exactly where an interrupted epoch stopped and a
1-process run with batch ``B`` sees the same images at each step as a ``k``-process run
with batch ``B/k``.

Typical use::

    mixed = MixedTrainDataset([cuhk, crowdhuman], names=["cuhk_sysu", "crowdhuman"])
    sampler = RatioBatchSampler(
        mixed.dataset_sizes, [2.0, 1.0], batch_size=4, seed=0,
        rank=rank, world_size=world_size, aspect_ratios=mixed.member_aspect_ratios(),
    )
    loader = DataLoader(mixed, batch_sampler=sampler, collate_fn=collate_batch)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["MixedTrainDataset", "RatioBatchSampler"]

# Purposes of the random streams; part of every seed key so that no two streams share
# a seed. Keys always have the same length because SeedSequence ignores trailing zeros
# ([s, e, 0] and [s, e] seed the same stream).
_SOURCE_CHOICE = 1
_GROUP_CHOICE = 2
_PERMUTATION = 3


def _rng(
    seed: int, epoch: int, purpose: int, source: int = 0, group: int = 0, pass_: int = 0
) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, purpose, source, group, pass_])


class MixedTrainDataset(torch.utils.data.Dataset):
    """Concatenation of training datasets whose targets say which dataset they came from.

    Global index ``i`` belongs to source ``s`` with ``offsets[s] <= i < offsets[s + 1]``
    and is item ``i - offsets[s]`` of ``datasets[s]``. Each item is the member's
    ``(image, target)`` (``image`` ``[3, H, W]`` float32, ``target`` a dict as
    :class:`~personsearch_train.data.torch_dataset.PersonSearchTrainDataset` returns)
    with ``target["source"] = s`` (int) added. The member's own keys are kept as they
    are, so ``target["image_index"]`` stays the index *within* the member;
    ``(source, image_index)`` identifies the item.

    Args:
        datasets: Map-style datasets with ``__len__``; empty ones are allowed (give them
            ratio 0 in :class:`RatioBatchSampler`).
        names: One distinct non-empty name per dataset (for logs and configs).

    Raises:
        ValueError: If ``datasets`` is empty, ``names`` does not match it one to one, or
            names are empty or repeated.
        TypeError: If a member has no ``__len__``.
    """

    def __init__(self, datasets: Sequence[torch.utils.data.Dataset], names: Sequence[str]) -> None:
        datasets = list(datasets)
        names = [str(n) for n in names]
        if not datasets:
            raise ValueError("datasets must hold at least one dataset, got an empty sequence")
        if len(names) != len(datasets):
            raise ValueError(f"names has {len(names)} entries but datasets has {len(datasets)}: {names!r}")
        if any(not n for n in names):
            raise ValueError(f"names must be non-empty strings, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"names must be distinct, got {names!r}")
        sizes = []
        for name, dataset in zip(names, datasets, strict=True):
            if not hasattr(dataset, "__len__"):
                raise TypeError(f"dataset {name!r} ({type(dataset).__name__}) has no __len__")
            sizes.append(len(dataset))
        self.datasets = datasets
        self.names: tuple[str, ...] = tuple(names)
        self.dataset_sizes: tuple[int, ...] = tuple(int(n) for n in sizes)
        #: ``[len(datasets) + 1]`` start of each source's global indices, then the total.
        self.offsets: tuple[int, ...] = tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)]))
        self.epoch = 0

    def __len__(self) -> int:
        return self.offsets[-1]

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` in every member that has ``set_epoch``."""
        self.epoch = int(epoch)
        for dataset in self.datasets:
            if callable(getattr(dataset, "set_epoch", None)):
                dataset.set_epoch(self.epoch)

    def source_of(self, index: int) -> int:
        """Source (member position) of global item ``index``.

        Raises:
            IndexError: If ``index`` is outside ``[-len(self), len(self))``.
        """
        return self._locate(index)[0]

    def source_index(self, name: str) -> int:
        """Position of the member called ``name``.

        Raises:
            KeyError: If no member has that name.
        """
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no dataset named {name!r}; have {list(self.names)}") from None

    def _locate(self, index: int) -> tuple[int, int]:
        total = len(self)
        index = int(index)
        if not -total <= index < total:
            raise IndexError(f"index {index} out of range for a mixed dataset of {total} items")
        if index < 0:
            index += total
        # bisect_right on the starts skips empty members, whose start equals the next one's.
        source = bisect.bisect_right(self.offsets, index) - 1
        return source, index - self.offsets[source]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        source, local = self._locate(index)
        item = self.datasets[source][local]
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], dict)):
            raise TypeError(
                f"dataset {self.names[source]!r} item {local} is not an (image, target dict) pair: "
                f"{type(item).__name__}"
            )
        image, target = item
        # A copy: a member may return a cached dict, which must not be tagged in place.
        target = {**target, "source": source}
        return image, target

    def member_aspect_ratios(self) -> list[np.ndarray | None]:
        """Per member its ``[N_s]`` float64 width / height, or None where it has no ``aspect_ratios``.

        This is the ``aspect_ratios`` argument of :class:`RatioBatchSampler`.

        Raises:
            ValueError: If a member's ``aspect_ratios()`` does not have one value per item.
        """
        out: list[np.ndarray | None] = []
        for name, size, dataset in zip(self.names, self.dataset_sizes, self.datasets, strict=True):
            method = getattr(dataset, "aspect_ratios", None)
            if not callable(method):
                out.append(None)
                continue
            ratios = np.asarray(method(), dtype=np.float64).reshape(-1)
            if len(ratios) != size:
                raise ValueError(
                    f"dataset {name!r}: aspect_ratios() has {len(ratios)} values for {size} items"
                )
            out.append(ratios)
        return out

    def aspect_ratios(self) -> np.ndarray | None:
        """``[N]`` float64 width / height of every global item, or None.

        None when a non-empty member has no ``aspect_ratios`` (a partial array would not
        line up with the global indices).
        """
        per_member = self.member_aspect_ratios()
        if any(r is None and n > 0 for r, n in zip(per_member, self.dataset_sizes, strict=True)):
            return None
        return np.concatenate([np.zeros(0) if r is None else r for r in per_member]).astype(np.float64)


class _ItemStream:
    """Endless stream of one (source, aspect group)'s items: permutation after permutation.

    Each pass is a fresh permutation seeded by ``(seed, epoch, source, group, pass)``,
    so every item is used once per pass. When a batch straddles two passes, items of
    the new pass that are already in the batch are moved back within that pass, so a
    batch never repeats an item while the group has at least ``global_batch`` items.
    """

    def __init__(self, items: np.ndarray, *, seed: int, epoch: int, source: int, group: int) -> None:
        self.items = items
        self.key = (seed, epoch, source, group)
        self.passes = 0
        self.order: list[int] = []
        self.pos = 0

    def _new_pass(self) -> None:
        seed, epoch, source, group = self.key
        rng = _rng(seed, epoch, _PERMUTATION, source, group, self.passes)
        self.order = self.items[rng.permutation(len(self.items))].tolist()
        self.pos = 0
        self.passes += 1

    def take(self, count: int) -> list[int]:
        batch: list[int] = []
        while len(batch) < count:
            if self.pos == len(self.order):
                self._new_pass()
                need = count - len(batch)
                if batch and len(self.items) >= count:
                    taken = set(batch)
                    head: list[int] = []
                    rest: list[int] = []
                    for item in self.order:
                        (head if len(head) < need and item not in taken else rest).append(item)
                    self.order = head + rest
            n = min(count - len(batch), len(self.order) - self.pos)
            batch.extend(self.order[self.pos : self.pos + n])
            self.pos += n
        return batch


class RatioBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Single-source batches whose sources are drawn by ratio; this rank's share of each.

    Every global batch of ``batch_size * world_size`` indices is drawn from one source
    chosen with probability ``ratios[s] / sum(ratios)`` (independently per batch), and
    from one aspect group of that source (width / height ``>= 1`` or ``< 1``, as
    :class:`~personsearch_train.data.samplers.GroupedBatchSampler` groups), the group
    chosen with probability proportional to its size so every item of a source is drawn
    at the same rate. A group with fewer than ``batch_size * world_size`` items is
    merged into the source's largest group (a pure batch could only be had by repeating
    its few items). Within a (source, group) items come from a per-epoch permutation
    without replacement; when it is used up a new seed-derived permutation starts.
    A source with fewer items than the global batch necessarily repeats items in a batch.

    Rank ``r`` receives indices ``r*batch_size .. (r+1)*batch_size`` of each global batch.
    Indices are global indices of a :class:`MixedTrainDataset` built from the same
    datasets in the same order (``offsets`` applied).

    Epoch length: ``batches_per_epoch`` if given, else the number of global batches
    after which every source is expected to have drawn each of its items at least once,
    ``ceil(max_s(size_s / ratio_s) * sum(ratios) / global_batch)`` over sources with
    ratio > 0; the source with the largest ``size / ratio`` sees its items about once,
    the others cycle. ``max_batches > 0`` caps it (like ``GroupedBatchSampler``).

    Args:
        dataset_sizes: Items per source (``MixedTrainDataset.dataset_sizes``).
        ratios: Non-negative sampling weight per source; need not sum to 1; a source with
            ratio 0 is never drawn.
        batch_size: Images per rank per step.
        seed: Non-negative base seed.
        rank: This process's rank, ``0 <= rank < world_size``.
        world_size: Number of processes.
        batches_per_epoch: Global batches per epoch; None for the default above.
        aspect_ratios: Per source an ``[N_s]`` array of width / height (or None for a
            source without grouping); None disables grouping.
        max_batches: If > 0, stop each epoch after this many batches.

    Raises:
        ValueError: On a length mismatch, a negative or non-finite ratio, all ratios zero,
            an empty source with a positive ratio, ``batch_size < 1``, a bad rank or
            world size, a negative seed, or ``batches_per_epoch < 1``.
    """

    def __init__(
        self,
        dataset_sizes: Sequence[int],
        ratios: Sequence[float],
        *,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        batches_per_epoch: int | None = None,
        aspect_ratios: Sequence[np.ndarray | None] | None = None,
        max_batches: int = 0,
    ) -> None:
        sizes = [int(n) for n in dataset_sizes]
        weights = np.asarray([float(r) for r in ratios], dtype=np.float64)
        if not sizes:
            raise ValueError("dataset_sizes must list at least one source, got an empty sequence")
        if len(weights) != len(sizes):
            raise ValueError(f"ratios has {len(weights)} values but dataset_sizes has {len(sizes)} sources")
        if any(n < 0 for n in sizes):
            raise ValueError(f"dataset_sizes must be >= 0, got {sizes}")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError(f"ratios must be finite and >= 0, got {weights.tolist()}")
        if not np.any(weights > 0):
            raise ValueError(f"ratios must have at least one positive value, got {weights.tolist()}")
        for s, (n, w) in enumerate(zip(sizes, weights, strict=True)):
            if w > 0 and n == 0:
                raise ValueError(f"source {s} is empty but has ratio {w}; give it ratio 0 or drop it")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(world_size) < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank must be in [0, {int(world_size)}), got {rank}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if batches_per_epoch is not None and int(batches_per_epoch) < 1:
            raise ValueError(f"batches_per_epoch must be >= 1 or None, got {batches_per_epoch}")
        if aspect_ratios is not None and len(aspect_ratios) != len(sizes):
            raise ValueError(
                f"aspect_ratios has {len(aspect_ratios)} entries but dataset_sizes has {len(sizes)} sources"
            )

        self.dataset_sizes: tuple[int, ...] = tuple(sizes)
        self.ratios: tuple[float, ...] = tuple(weights.tolist())
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.max_batches = int(max_batches)
        self.global_batch = self.batch_size * self.world_size
        self.offsets: tuple[int, ...] = tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)]))
        # Draw only among positive sources so a zero ratio can never win on rounding.
        self._active = np.flatnonzero(weights > 0)
        cdf = np.cumsum(weights[self._active]) / weights[self._active].sum()
        cdf[-1] = 1.0
        self._source_cdf = cdf
        self._groups = [
            self._split_groups(s, None if aspect_ratios is None else aspect_ratios[s])
            for s in range(len(sizes))
        ]
        if batches_per_epoch is None:
            total = float(weights.sum())
            need = max(sizes[s] / weights[s] for s in self._active) * total / self.global_batch
            # Rounded first so that e.g. ratios 0.1/0.2/0.7 do not add a batch to float noise.
            self._length = max(1, math.ceil(round(need, 6)))
        else:
            self._length = int(batches_per_epoch)
        self.epoch = 0
        self.skip = 0

    def _split_groups(self, source: int, ratios: np.ndarray | None) -> list[np.ndarray]:
        """Local item indices of each aspect group of ``source`` (small groups merged)."""
        size = self.dataset_sizes[source]
        if ratios is None:
            return [np.arange(size, dtype=np.int64)]
        ratios = np.asarray(ratios, dtype=np.float64).reshape(-1)
        if len(ratios) != size:
            raise ValueError(f"aspect_ratios[{source}] has {len(ratios)} values for {size} items")
        landscape = ratios >= 1.0
        groups = [np.flatnonzero(~landscape), np.flatnonzero(landscape)]
        big = [g for g in groups if len(g) >= self.global_batch]
        if len(big) < 2:
            return [np.arange(size, dtype=np.int64)]
        return big

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Select the epoch's batches and skip the first ``skip`` of them (resume).

        Raises:
            ValueError: If ``epoch`` or ``skip`` is negative.
        """
        if int(epoch) < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if int(skip) < 0:
            raise ValueError(f"skip must be >= 0, got {skip}")
        self.epoch = int(epoch)
        self.skip = int(skip)

    def batches_per_epoch(self) -> int:
        """Steps in a full epoch (before any skip)."""
        return min(self._length, self.max_batches) if self.max_batches > 0 else self._length

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.skip)

    def epoch_sources(self) -> np.ndarray:
        """``[batches_per_epoch()]`` int64 source of every global batch of the epoch (no skip)."""
        u = _rng(self.seed, self.epoch, _SOURCE_CHOICE).random(self.batches_per_epoch())
        return self._active[np.searchsorted(self._source_cdf, u, side="right")].astype(np.int64)

    def global_batches(self) -> Iterator[tuple[int, list[int]]]:
        """``(source, global indices)`` of each full global batch of the epoch after the skip.

        Skipped batches are still drawn (cheap: no data is loaded) so that the streams
        reach the same state as in an uninterrupted epoch.
        """
        streams = [
            [
                _ItemStream(g, seed=self.seed, epoch=self.epoch, source=s, group=k)
                for k, g in enumerate(self._groups[s])
            ]
            for s in range(len(self.dataset_sizes))
        ]
        group_cdfs = []
        for groups in self._groups:
            cdf = np.cumsum([len(g) for g in groups], dtype=np.float64)
            group_cdfs.append(cdf / max(cdf[-1], 1.0))
        group_rngs = [_rng(self.seed, self.epoch, _GROUP_CHOICE, s) for s in range(len(self.dataset_sizes))]
        for step, source in enumerate(self.epoch_sources().tolist()):
            cdf = group_cdfs[source]
            # Always drawn, so a source's group choices do not depend on its group count.
            u = group_rngs[source].random()
            group = min(int(np.searchsorted(cdf, u, side="right")), len(cdf) - 1)
            local = streams[source][group].take(self.global_batch)
            if step >= self.skip:
                offset = self.offsets[source]
                yield source, [offset + i for i in local]

    def __iter__(self) -> Iterator[list[int]]:
        lo = self.rank * self.batch_size
        for _, batch in self.global_batches():
            yield batch[lo : lo + self.batch_size]
