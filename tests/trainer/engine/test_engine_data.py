from __future__ import annotations

import numpy as np
import pytest
import torch
from personsearch_train.data.samplers import GroupedBatchSampler, global_batches
from personsearch_train.data.torch_dataset import PersonSearchTrainDataset
from personsearch_train.data.transforms import hflip


def test_hflip_hand_computed() -> None:
    image = torch.zeros(3, 4, 10)
    image[:, :, 2] = 1.0  # column 2 lights up
    out, boxes = hflip(image, torch.tensor([[2.0, 1.0, 5.0, 3.0]]))
    assert torch.equal(out[:, :, 7], torch.ones(3, 4))  # 10 - 1 - 2
    assert boxes.tolist() == [[5.0, 1.0, 8.0, 3.0]]


def test_global_batches_deterministic_grouped_complete() -> None:
    groups = np.array([0, 1] * 7 + [0])  # 8 of group 0, 7 of group 1
    a = global_batches(15, 4, seed=3, epoch=1, groups=groups)
    assert a == global_batches(15, 4, seed=3, epoch=1, groups=groups)
    assert a != global_batches(15, 4, seed=3, epoch=2, groups=groups)
    assert len(a) == 4 and all(len(b) == 4 for b in a)
    assert set(sum(a, [])) == set(range(15))
    full = [b for b in a if len({int(groups[i]) for i in b}) == 1]
    assert len(full) >= 2  # full batches come from one aspect-ratio group


def test_rank_shards_make_up_the_global_batch() -> None:
    ratios = np.linspace(0.5, 2.0, 11)
    one = GroupedBatchSampler(num_items=11, batch_size=4, seed=0, aspect_ratios=ratios)
    ranks = [
        GroupedBatchSampler(num_items=11, batch_size=2, seed=0, aspect_ratios=ratios, rank=r, world_size=2)
        for r in range(2)
    ]
    for s in [one, *ranks]:
        s.set_epoch(5)
    for whole, r0, r1 in zip(one, *ranks, strict=True):
        assert whole == r0 + r1
    one.set_epoch(5, skip=1)
    assert len(one) == len(list(one)) == 2


def test_dataset_items_and_flip_is_seeded(tiny_splits) -> None:
    train, _ = tiny_splits
    ds = PersonSearchTrainDataset(train, flip_prob=0.5, seed=1)
    image, target = ds[0]
    assert (
        image.dtype == torch.float32
        and image.shape[0] == 3
        and 0 <= float(image.min()) <= float(image.max()) <= 1
    )
    assert target["boxes"].shape == (len(train.images[0].boxes), 4)
    flips = [[ds[i][1]["flipped"] for i in range(len(ds))] for _ in range(2)]
    assert flips[0] == flips[1] and any(flips[0]) and not all(flips[0])
    ds.set_epoch(1)
    assert [ds[i][1]["flipped"] for i in range(len(ds))] != flips[0]
    no_ids = PersonSearchTrainDataset(train, use_identities=False)
    assert (no_ids[0][1]["pids"] == -1).all()
    ds.set_pseudo_labels([np.arange(len(r.boxes)) + 7 for r in ds.records])
    assert ds[0][1]["pids"].tolist()[0] == 7
    with pytest.raises(ValueError, match="pseudo labels"):
        ds.set_pseudo_labels([np.zeros(99)] * len(ds))
    assert ds.aspect_ratios().shape == (len(ds),)
