"""Extension points for methods built on the trainer.

A method customises training with :class:`TrainingHook` objects instead of editing the
loop. A hook can

* run code before/after every epoch and after every step (feature extraction over
  the whole training set, clustering, memory re-initialisation, new pseudo labels
  via :meth:`PersonSearchTrainDataset.set_pseudo_labels`);
* own modules (memory banks, projection heads): :meth:`TrainingHook.modules` are
  moved to the training device, their parameters are optimised with the model's, and
  their ``state_dict`` travels in every resumable checkpoint;
* add losses computed on a second input path: :meth:`TrainingHook.extra_losses` is
  called inside the (DDP-wrapped) training forward, with the batch, so gradients of
  e.g. a crop branch (:func:`crop_people`) are synchronised like the model's.

Training without identity labels is the data setting ``data.use_identities: false``
(every box gets id ``-1``); a method then supplies its own labels or losses here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torchvision.ops import roi_align

if TYPE_CHECKING:
    from personsearch_train.engine.loop import Trainer

__all__ = [
    "BoxFeatures",
    "MemoryBank",
    "TrainingHook",
    "cluster_features",
    "crop_people",
    "extract_box_features",
]


class TrainingHook:
    """Base class of per-run callbacks; every method is optional."""

    def modules(self) -> dict[str, nn.Module]:
        """Named modules this hook owns (saved with resume checkpoints, optimised if trainable)."""
        return {}

    def before_train(self, trainer: Trainer) -> None:
        """Called once after set-up (and after a resume has restored state)."""

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Called before each epoch's first step (also when resuming mid-epoch)."""

    def extra_losses(
        self, model: nn.Module, images: list[torch.Tensor], targets: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor]:
        """Additional weighted loss terms for this batch (summed with the model's).

        Args:
            model: The unwrapped model (so a method can reuse its backbone).
            images: ``[3, H, W]`` float RGB tensors on the training device.
            targets: Per image ``boxes [M, 4] float32 xyxy`` and ``pids [M] int64``.
        """
        return {}

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """Called after every optimiser step with the step's (rank-averaged) losses."""

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Called after each epoch, before evaluation and checkpointing."""

    def state_dict(self) -> dict[str, Any]:
        """Extra non-module state to resume (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class MemoryBank(nn.Module):
    """A feature memory with momentum updates, kept as buffers so checkpoints hold it.

    Args:
        size: Number of entries ``N``.
        dim: Feature dimension ``D``.
        momentum: Weight of the old entry in an update
            (``m <- momentum * m + (1 - momentum) * x``, then L2-normalised).
    """

    def __init__(self, *, size: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("features", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.int64))

    @torch.no_grad()
    def reinitialise(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        """Replace every entry.

        Args:
            features: ``[N, D]`` float features (normalised here).
            labels: ``[N]`` int64 labels, or None to keep the old ones.
        """
        if features.shape != self.features.shape:
            raise ValueError(f"memory bank holds {tuple(self.features.shape)}, got {tuple(features.shape)}")
        self.features.copy_(nn.functional.normalize(features.to(self.features), dim=1))
        if labels is not None:
            self.labels.copy_(labels.to(self.labels))

    @torch.no_grad()
    def update(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Momentum-update entries ``indices`` ([K] int64) with ``features`` ([K, D])."""
        mixed = self.momentum * self.features[indices] + (1.0 - self.momentum) * features.to(self.features)
        self.features[indices] = nn.functional.normalize(mixed, dim=1)

    def similarities(self, features: torch.Tensor) -> torch.Tensor:
        """``[K, N]`` inner products of ``features`` ([K, D]) with every entry."""
        return features @ self.features.t()


@dataclass(frozen=True)
class BoxFeatures:
    """Embeddings of every ground-truth box of a training set.

    Attributes:
        features: ``[N, D]`` float32, L2-normalised.
        image_index: ``[N]`` int64 dataset item of each box.
        box_index: ``[N]`` int64 position of the box within its image.
    """

    features: torch.Tensor
    image_index: torch.Tensor
    box_index: torch.Tensor


@torch.no_grad()
def extract_box_features(
    model: nn.Module, dataset: torch.utils.data.Dataset, *, device: torch.device, batch_size: int = 2
) -> BoxFeatures:
    """Embed every ground-truth box of a training dataset with ``model.embed_boxes``.

    Augmentation is switched off for the pass (no flip), and the model is returned to
    its previous train/eval mode afterwards.
    """
    was_training = model.training
    model.eval()
    saved_flip = getattr(dataset, "flip_prob", 0.0)
    if hasattr(dataset, "flip_prob"):
        dataset.flip_prob = 0.0
    feats, image_index, box_index = [], [], []
    try:
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            images = [img.to(device) for img, _ in items]
            boxes = [t["boxes"].to(device) for _, t in items]
            for (_, target), emb in zip(items, model.embed_boxes(images, boxes), strict=True):
                feats.append(nn.functional.normalize(emb.float().cpu(), dim=1))
                image_index.append(torch.full((len(emb),), target["image_index"], dtype=torch.int64))
                box_index.append(torch.arange(len(emb), dtype=torch.int64))
    finally:
        if hasattr(dataset, "flip_prob"):
            dataset.flip_prob = saved_flip
        model.train(was_training)
    return BoxFeatures(torch.cat(feats), torch.cat(image_index), torch.cat(box_index))


def cluster_features(features: torch.Tensor, *, eps: float = 0.5, min_samples: int = 2) -> np.ndarray:
    """DBSCAN on cosine distances; outliers become singleton clusters.

    Args:
        features: ``[N, D]`` float, L2-normalised.
        eps: DBSCAN neighbourhood radius in cosine distance.
        min_samples: DBSCAN core-point size.

    Returns:
        ``[N]`` int64 cluster labels ``0..C-1`` (every sample has one).
    """
    from sklearn.cluster import DBSCAN

    x = features.detach().cpu().double().numpy()
    distance = np.clip(1.0 - x @ x.T, 0.0, 2.0)
    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distance)
    next_label = int(labels.max()) + 1 if len(labels) else 0
    for i in np.flatnonzero(labels < 0):
        labels[i] = next_label
        next_label += 1
    return labels.astype(np.int64)


def crop_people(
    images: list[torch.Tensor], boxes: list[torch.Tensor], *, output_size: tuple[int, int] = (256, 128)
) -> torch.Tensor:
    """Cut every box out of its image and resize it: the input of a crop branch.

    Args:
        images: ``[3, H_i, W_i]`` float tensors.
        boxes: ``[M_i, 4]`` float32 ``xyxy`` pixels, one tensor per image.
        output_size: ``(height, width)`` of the crops.

    Returns:
        ``[sum M_i, 3, height, width]`` crops in image order, bilinearly sampled
        (RoIAlign with ``aligned=True``, so pixel centres line up with the boxes).
    """
    crops = []
    for image, image_boxes in zip(images, boxes, strict=True):
        if len(image_boxes) == 0:
            continue
        rois = torch.cat([torch.zeros(len(image_boxes), 1, device=image.device), image_boxes.float()], dim=1)
        crops.append(roi_align(image[None], rois, output_size=output_size, spatial_scale=1.0, aligned=True))
    if not crops:
        channels = images[0].shape[0] if images else 3
        return torch.zeros(0, channels, *output_size)
    return torch.cat(crops)
