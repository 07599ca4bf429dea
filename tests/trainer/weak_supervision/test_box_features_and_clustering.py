"""``extract_box_features`` and ``cluster_features``: the per-epoch pseudo-label pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from personsearch_train.weak_supervision import BoxFeatures, cluster_features, extract_box_features
from torch import nn


class _BoxCoordinateModel(nn.Module):
    """Embeds a box as (x1, y1, 1): the features say which box they came from."""

    def __init__(self) -> None:
        super().__init__()
        self.modes_seen: list[bool] = []

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        self.modes_seen.append(self.training)
        return [torch.cat([b[:, :2], torch.ones(len(b), 1)], dim=1) for b in boxes]


class _Dataset(torch.utils.data.Dataset):
    """Three images with 2, 0 and 3 boxes; records the flip probability it is read with."""

    def __init__(self) -> None:
        self.flip_prob = 0.5
        self.flips_seen: list[float] = []
        self.boxes = [
            torch.tensor([[1.0, 2.0, 5.0, 9.0], [3.0, 0.0, 8.0, 6.0]]),
            torch.zeros(0, 4),
            torch.tensor([[0.0, 4.0, 2.0, 8.0], [6.0, 6.0, 9.0, 9.0], [2.0, 1.0, 4.0, 5.0]]),
        ]

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        self.flips_seen.append(self.flip_prob)
        return torch.zeros(3, 10, 10), {"boxes": self.boxes[i], "image_index": 10 + i}


def test_extract_box_features_embeds_every_box_in_order_without_flips() -> None:
    model, dataset = _BoxCoordinateModel(), _Dataset()
    model.train()
    feats = extract_box_features(model, dataset, device=torch.device("cpu"), batch_size=2)
    assert isinstance(feats, BoxFeatures)
    assert feats.image_index.tolist() == [10, 10, 12, 12, 12]
    assert feats.box_index.tolist() == [0, 1, 0, 1, 2]
    raw = torch.cat([torch.cat([b[:, :2], torch.ones(len(b), 1)], 1) for b in dataset.boxes])
    torch.testing.assert_close(feats.features, raw / raw.norm(dim=1, keepdim=True))
    assert feats.features.dtype == torch.float32
    assert dataset.flips_seen == [0.0, 0.0, 0.0] and dataset.flip_prob == 0.5  # restored
    assert model.modes_seen == [False, False] and model.training  # eval for the pass, then back


def test_extract_box_features_restores_state_when_the_model_fails() -> None:
    class Broken(_BoxCoordinateModel):
        def embed_boxes(self, images, boxes):  # noqa: ANN001, ANN201
            raise RuntimeError("boom")

    model, dataset = Broken(), _Dataset()
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        extract_box_features(model, dataset, device=torch.device("cpu"))
    assert dataset.flip_prob == 0.5 and model.training


def test_cluster_features_groups_neighbours_and_makes_outliers_singletons() -> None:
    torch.manual_seed(0)
    centres = torch.eye(4)[:3]
    features = torch.cat(
        [
            centres[0] + 0.01 * torch.randn(3, 4),
            centres[1] + 0.01 * torch.randn(3, 4),
            centres[2:3],  # alone: DBSCAN calls it noise
            torch.tensor([[0.0, 0.0, 0.0, 1.0]]),  # another outlier
        ]
    )
    features = nn.functional.normalize(features, dim=1)
    labels = cluster_features(features, eps=0.1, min_samples=2)
    assert labels.dtype == np.int64 and labels.shape == (8,)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:6])) == 1 and labels[0] != labels[3]
    assert labels[6] != labels[7] and not {labels[6], labels[7]} & {labels[0], labels[3]}
    assert sorted(set(labels.tolist())) == list(range(4))  # contiguous 0..C-1, no -1
