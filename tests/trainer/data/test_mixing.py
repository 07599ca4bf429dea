"""MixedTrainDataset and RatioBatchSampler on tiny fake datasets (no image files)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from personsearch_train.data.mixing import MixedTrainDataset, RatioBatchSampler
from personsearch_train.data.torch_dataset import collate_batch


class FakeDataset(torch.utils.data.Dataset):
    """``size`` items; item ``i`` is a [3, 2, 2] image filled with ``tag + i``."""

    def __init__(self, size: int, tag: float, aspect: np.ndarray | None = None) -> None:
        self.size = size
        self.tag = tag
        self.epoch = 0
        self._aspect = aspect

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def aspect_ratios(self) -> np.ndarray:
        return np.ones(self.size) if self._aspect is None else self._aspect

    def __getitem__(self, index: int):
        image = torch.full((3, 2, 2), self.tag + index, dtype=torch.float32)
        target = {
            "boxes": torch.zeros((1, 4), dtype=torch.float32),
            "pids": torch.full((1,), -1, dtype=torch.int64),
            "image_index": index,
            "epoch": self.epoch,
        }
        return image, target


class NoExtrasDataset(torch.utils.data.Dataset):
    """A member with neither set_epoch nor aspect_ratios."""

    def __len__(self) -> int:
        return 3

    def __getitem__(self, index: int):
        return torch.zeros(3, 1, 1), {"image_index": index}


def source_of_batch(batch: list[int], offsets: tuple[int, ...]) -> set[int]:
    return {int(np.searchsorted(offsets, i, side="right")) - 1 for i in batch}


# ---------------------------------------------------------------- MixedTrainDataset


def test_offsets_source_key_and_lookup() -> None:
    a, b, c = FakeDataset(5, 0.0), FakeDataset(0, 100.0), FakeDataset(3, 1000.0)
    mixed = MixedTrainDataset([a, b, c], names=["a", "empty", "c"])
    assert len(mixed) == 8
    assert mixed.offsets == (0, 5, 5, 8)
    assert mixed.dataset_sizes == (5, 0, 3)
    assert [mixed.source_of(i) for i in range(8)] == [0] * 5 + [2] * 3
    assert mixed.source_of(-1) == 2
    assert mixed.source_index("c") == 2
    for i in range(8):
        image, target = mixed[i]
        source = mixed.source_of(i)
        assert target["source"] == source and isinstance(target["source"], int)
        local = i - mixed.offsets[source]
        assert target["image_index"] == local
        assert image.shape == (3, 2, 2) and image.dtype == torch.float32
        assert image[0, 0, 0].item() == [0.0, 100.0, 1000.0][source] + local
    with pytest.raises(IndexError, match="out of range"):
        mixed[8]
    with pytest.raises(IndexError):
        mixed.source_of(-9)
    with pytest.raises(KeyError, match="no dataset named"):
        mixed.source_index("b")


def test_source_tag_does_not_mutate_member_targets() -> None:
    cached = {"image_index": 0}

    class Cached(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int):
            return torch.zeros(3, 1, 1), cached

    mixed = MixedTrainDataset([FakeDataset(2, 0.0), Cached()], names=["x", "y"])
    assert mixed[2][1]["source"] == 1
    assert "source" not in cached


def test_set_epoch_forwarded_and_aspect_ratios() -> None:
    a = FakeDataset(2, 0.0, aspect=np.array([0.5, 2.0]))
    b = FakeDataset(3, 10.0)
    mixed = MixedTrainDataset([a, b], names=["a", "b"])
    mixed.set_epoch(4)
    assert a.epoch == 4 and b.epoch == 4 and mixed[0][1]["epoch"] == 4
    np.testing.assert_array_equal(mixed.aspect_ratios(), [0.5, 2.0, 1.0, 1.0, 1.0])
    per_member = mixed.member_aspect_ratios()
    np.testing.assert_array_equal(per_member[0], [0.5, 2.0])

    partial = MixedTrainDataset([a, NoExtrasDataset()], names=["a", "plain"])
    partial.set_epoch(1)  # a member without set_epoch is skipped, not an error
    assert a.epoch == 1
    assert partial.aspect_ratios() is None
    assert partial.member_aspect_ratios()[1] is None


def test_mixed_dataset_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one dataset"):
        MixedTrainDataset([], names=[])
    with pytest.raises(ValueError, match="names has 1 entries but datasets has 2"):
        MixedTrainDataset([FakeDataset(1, 0), FakeDataset(1, 0)], names=["a"])
    with pytest.raises(ValueError, match="distinct"):
        MixedTrainDataset([FakeDataset(1, 0), FakeDataset(1, 0)], names=["a", "a"])
    with pytest.raises(ValueError, match="non-empty"):
        MixedTrainDataset([FakeDataset(1, 0)], names=[""])
    with pytest.raises(ValueError, match="aspect_ratios\\(\\) has 1 values for 2 items"):
        MixedTrainDataset([FakeDataset(2, 0, aspect=np.ones(1))], names=["a"]).aspect_ratios()


# ---------------------------------------------------------------- RatioBatchSampler


def test_source_shares_match_ratios() -> None:
    ratios = [0.5, 0.3, 0.2]
    sampler = RatioBatchSampler([40, 25, 7], ratios, batch_size=2, seed=3, batches_per_epoch=20_000)
    sources = [s for s, _ in sampler.global_batches()]
    n = len(sources)
    counts = Counter(sources)
    for s, r in enumerate(ratios):
        # Each count is Binomial(n, r); 5 standard deviations (about 0.0035 of share for
        # r = 0.5) make a false failure less likely than 1e-6 per source.
        tolerance = 5 * math.sqrt(r * (1 - r) / n)
        assert abs(counts[s] / n - r) < tolerance, (s, counts[s] / n, r, tolerance)
    # epoch_sources() is the same sequence.
    assert sampler.epoch_sources().tolist() == sources


def test_every_batch_is_single_source_and_single_aspect_group() -> None:
    aspect_a = np.where(np.arange(30) % 3 == 0, 0.75, 1.5)  # 10 portrait, 20 landscape
    aspect_b = np.full(12, 0.6)
    sampler = RatioBatchSampler(
        [30, 12], [1.0, 1.0], batch_size=4, seed=0, aspect_ratios=[aspect_a, aspect_b], batches_per_epoch=200
    )
    offsets = sampler.offsets
    all_aspects = np.concatenate([aspect_a, aspect_b])
    for source, batch in sampler.global_batches():
        assert len(batch) == 4
        assert source_of_batch(batch, offsets) == {source}
        assert len({bool(all_aspects[i] >= 1.0) for i in batch}) == 1


def test_small_aspect_group_is_merged_not_repeated() -> None:
    # 2 portrait items cannot fill a batch of 4 on their own; they join the landscape group.
    aspect = np.array([0.5, 0.5] + [2.0] * 10)
    sampler = RatioBatchSampler(
        [12], [1.0], batch_size=4, seed=1, aspect_ratios=[aspect], batches_per_epoch=30
    )
    seen = Counter(i for _, batch in sampler.global_batches() for i in batch)
    assert seen[0] > 0 and seen[1] > 0
    for _, batch in sampler.global_batches():
        assert len(set(batch)) == 4


def test_deterministic_per_seed_and_epoch_and_differs_across_epochs() -> None:
    def epoch_batches(seed: int, epoch: int) -> list[list[int]]:
        sampler = RatioBatchSampler([17, 9, 30], [1.0, 2.0, 1.5], batch_size=3, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert epoch_batches(5, 2) == epoch_batches(5, 2)
    torch.manual_seed(123)
    np.random.seed(123)
    first = epoch_batches(5, 2)
    torch.manual_seed(999)
    np.random.seed(999)
    assert epoch_batches(5, 2) == first  # global RNG state plays no part
    assert epoch_batches(5, 3) != first
    assert epoch_batches(6, 2) != first
    # Iterating the same sampler twice gives the same epoch.
    sampler = RatioBatchSampler([17, 9, 30], [1.0, 2.0, 1.5], batch_size=3, seed=5)
    sampler.set_epoch(2)
    assert list(sampler) == list(sampler) == first


def test_skip_gives_exactly_the_tail_of_the_epoch() -> None:
    sampler = RatioBatchSampler([11, 5], [1.0, 3.0], batch_size=2, seed=7, world_size=2, rank=1)
    sampler.set_epoch(4)
    full = list(sampler)
    total = sampler.batches_per_epoch()
    assert len(full) == len(sampler) == total
    for k in (0, 1, 7, total - 1, total, total + 3):
        sampler.set_epoch(4, skip=k)
        tail = list(sampler)
        assert tail == full[k:]
        assert len(sampler) == len(tail) == max(0, total - k)


def test_ddp_rank_slices_partition_the_global_batch() -> None:
    sizes, ratios = [23, 8, 40], [1.0, 1.0, 2.0]
    world_size, batch_size = 3, 2
    reference = RatioBatchSampler(sizes, ratios, batch_size=batch_size * world_size, seed=11)
    reference.set_epoch(1, skip=2)
    global_batches = list(reference)
    per_rank = []
    for rank in range(world_size):
        sampler = RatioBatchSampler(
            sizes, ratios, batch_size=batch_size, seed=11, rank=rank, world_size=world_size
        )
        sampler.set_epoch(1, skip=2)
        per_rank.append(list(sampler))
        assert len(sampler) == len(global_batches)
    for step, batch in enumerate(global_batches):
        slices = [per_rank[r][step] for r in range(world_size)]
        assert all(len(s) == batch_size for s in slices)
        # Concatenated in rank order they are the 1-process global batch ...
        assert [i for s in slices for i in s] == batch
        # ... and no index is in two ranks' slices (sources here exceed the global batch).
        assert len(set().union(*map(set, slices))) == batch_size * world_size


def test_zero_ratio_source_never_appears() -> None:
    sampler = RatioBatchSampler([10, 10, 10], [1.0, 0.0, 1e-3], batch_size=2, seed=0, batches_per_epoch=5000)
    sources = Counter(s for s, _ in sampler.global_batches())
    assert 1 not in sources
    assert sources[2] > 0  # a tiny positive ratio is still drawn
    lo, hi = sampler.offsets[1], sampler.offsets[2]
    assert not any(lo <= i < hi for batch in sampler for i in batch)


def test_empty_source_with_zero_ratio_is_allowed() -> None:
    sampler = RatioBatchSampler([0, 6], [0.0, 1.0], batch_size=2, seed=0)
    assert sampler.batches_per_epoch() == 3
    assert all(set(batch) <= set(range(6)) for batch in sampler)


def test_small_source_with_large_ratio_cycles_without_duplicates_per_pass() -> None:
    # Source 1 (6 items, ratio 9) is drawn ~90% of the time and cycles many times; 6 is
    # not a multiple of the batch size, so batches straddle passes.
    sampler = RatioBatchSampler([100, 6], [1.0, 9.0], batch_size=4, seed=2)
    # Default length: ceil(max(100/1, 6/9) * 10 / 4) = 250 batches.
    assert sampler.batches_per_epoch() == 250
    drawn = [i for s, batch in sampler.global_batches() if s == 1 for i in batch]
    assert len(drawn) // 6 > 20  # many passes
    counts = np.zeros(6, dtype=np.int64)
    for start in range(0, len(drawn), 4):
        batch = drawn[start : start + 4]
        assert len(set(batch)) == 4  # no repeat inside a batch, even across passes
        for i in batch:
            counts[i - 100] += 1
            # Without replacement per pass: at every point no item is more than one
            # pass ahead of another.
            assert counts.max() - counts.min() <= 1


def test_permutations_are_exact_when_batches_align_with_passes() -> None:
    sampler = RatioBatchSampler([8], [1.0], batch_size=4, seed=9, batches_per_epoch=12)
    stream = [i for _, batch in sampler.global_batches() for i in batch]
    passes = [stream[p : p + 8] for p in range(0, len(stream), 8)]
    assert all(sorted(p) == list(range(8)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # each pass is a fresh permutation


def test_default_epoch_covers_the_largest_size_over_ratio_source_once() -> None:
    sampler = RatioBatchSampler([1000, 100], [1.0, 1.0], batch_size=2, seed=0, world_size=2)
    assert sampler.batches_per_epoch() == 500  # 1000 items * (2/1) / global batch 4
    counts = Counter(s for s, _ in sampler.global_batches())
    assert abs(counts[0] * 4 - 1000) < 5 * math.sqrt(500 * 0.25) * 4  # ~ one pass of source 0
    # Float ratios whose sum is not exactly 1 do not add a batch.
    assert RatioBatchSampler([100, 10, 10], [0.1, 0.2, 0.7], batch_size=4, seed=0).batches_per_epoch() == 250
    capped = RatioBatchSampler([1000, 100], [1.0, 1.0], batch_size=2, seed=0, max_batches=7)
    assert capped.batches_per_epoch() == 7 and len(list(capped)) == 7


def test_source_smaller_than_global_batch_repeats_items() -> None:
    sampler = RatioBatchSampler([3], [1.0], batch_size=4, seed=0, batches_per_epoch=3)
    for batch in sampler:
        assert len(batch) == 4 and set(batch) == {0, 1, 2}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ratios": [1.0, -0.5]}, "ratios must be finite and >= 0"),
        ({"ratios": [0.0, 0.0]}, "at least one positive"),
        ({"ratios": [1.0]}, "ratios has 1 values but dataset_sizes has 2"),
        ({"ratios": [1.0, float("nan")]}, "finite"),
        ({"dataset_sizes": [4, 0]}, "source 1 is empty but has ratio 1.0"),
        ({"dataset_sizes": []}, "at least one source"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
        ({"world_size": 0}, "world_size must be >= 1"),
        ({"rank": 2, "world_size": 2}, "rank must be in \\[0, 2\\), got 2"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"batches_per_epoch": 0}, "batches_per_epoch must be >= 1"),
        ({"aspect_ratios": [None]}, "aspect_ratios has 1 entries"),
        ({"aspect_ratios": [np.ones(3), None]}, "aspect_ratios\\[0\\] has 3 values for 4 items"),
    ],
)
def test_bad_input(kwargs: dict, message: str) -> None:
    args = {"dataset_sizes": [4, 5], "ratios": [1.0, 1.0], "batch_size": 2, "seed": 0, **kwargs}
    sizes, ratios = args.pop("dataset_sizes"), args.pop("ratios")
    if not sizes:
        ratios = []
    with pytest.raises(ValueError, match=message):
        RatioBatchSampler(sizes, ratios, **args)


def test_set_epoch_bad_input() -> None:
    sampler = RatioBatchSampler([4], [1.0], batch_size=2, seed=0)
    with pytest.raises(ValueError, match="skip must be >= 0, got -1"):
        sampler.set_epoch(0, skip=-1)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        sampler.set_epoch(-1)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_works_with_dataloader_and_collate_batch(num_workers: int) -> None:
    mixed = MixedTrainDataset(
        [FakeDataset(7, 0.0), FakeDataset(5, 100.0, aspect=np.array([0.5] * 5))], names=["scenes", "crops"]
    )
    sampler = RatioBatchSampler(
        mixed.dataset_sizes,
        [1.0, 1.0],
        batch_size=3,
        seed=4,
        aspect_ratios=mixed.member_aspect_ratios(),
        batches_per_epoch=10,
    )
    mixed.set_epoch(2)
    sampler.set_epoch(2, skip=1)
    loader = torch.utils.data.DataLoader(
        mixed, batch_sampler=sampler, collate_fn=collate_batch, num_workers=num_workers
    )
    expected = list(sampler)
    steps = 0
    for (images, targets), indices in zip(loader, expected, strict=True):
        assert isinstance(images, list) and len(images) == len(targets) == 3
        assert all(img.shape == (3, 2, 2) and img.dtype == torch.float32 for img in images)
        sources = {t["source"] for t in targets}
        assert len(sources) == 1
        for t, index in zip(targets, indices, strict=True):
            assert t["source"] == mixed.source_of(index)
            assert t["image_index"] == index - mixed.offsets[t["source"]]
            assert t["epoch"] == 2
        steps += 1
    assert steps == len(sampler) == 9
