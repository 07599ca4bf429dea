"""What person-search models return: ``predict``'s detections and ``forward_train``'s outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Detections", "TrainingOutputs"]


@dataclass(frozen=True)
class Detections:
    """Detected people of one image with their re-id embeddings.

    All fields share the first dimension ``N``; indexing applies to every field.

    Attributes:
        boxes: ``[N, 4]`` float32 ``xyxy`` pixels of the original image.
        scores: ``[N]`` float32 person score: the first classification score (FCS)
            of the detector head, in ``[0, 1]``.
        embeddings: ``[N, D]`` float32, L2-normalised. Confidence-weighted similarity
            (CWS) multiplies these by ``scores``; the evaluator does that, not the model.
    """

    boxes: Tensor
    scores: Tensor
    embeddings: Tensor

    def __post_init__(self) -> None:
        n = self.boxes.shape[0]
        if self.boxes.dim() != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be [N, 4], got {tuple(self.boxes.shape)}")
        if self.scores.shape != (n,):
            raise ValueError(f"scores must be [{n}], got {tuple(self.scores.shape)}")
        if self.embeddings.dim() != 2 or self.embeddings.shape[0] != n:
            raise ValueError(f"embeddings must be [{n}, D], got {tuple(self.embeddings.shape)}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: int | slice | Tensor) -> Detections:
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return Detections(self.boxes[index], self.scores[index], self.embeddings[index])

    def to(self, device: torch.device | str) -> Detections:
        """Return a copy on ``device``."""
        return Detections(self.boxes.to(device), self.scores.to(device), self.embeddings.to(device))

    @staticmethod
    def empty(embedding_dim: int, device: torch.device | str = "cpu") -> Detections:
        """Return a zero-length result with ``embedding_dim``-wide embeddings."""
        return Detections(
            torch.zeros((0, 4), device=device),
            torch.zeros((0,), device=device),
            torch.zeros((0, embedding_dim), device=device),
        )


@dataclass(frozen=True)
class TrainingOutputs:
    """What a model's ``forward_train`` gives a training method.

    The model owns detection; the re-id objective belongs to the method (OIM for the
    supervised baseline, pseudo-label contrast for weakly supervised ones), so the model
    hands over the embeddings of the RoIs it matched to people, with what it matched.

    Attributes:
        losses: Detection losses (RPN, both heads), scalar float32 tensors already
            multiplied by the model's weights; their sum is the model's own objective.
        person_embeddings: ``[K, D]`` float unit-norm embeddings of the re-id head's
            sampled RoIs that matched a ground-truth person, in image order (they carry
            gradients).
        person_labels: ``[K]`` int64 label of the matched person (the target's
            ``pids``; ``-1`` for an unlabelled person).
        person_image_index: ``[K]`` int64 position of each RoI's image in the batch.
        person_box_index: ``[K]`` int64 index of the matched ground-truth box within
            its image's target, so a method can look up per-box state (memories,
            pseudo labels) without re-matching.
        gt_embeddings: ``[sum M_b, D]`` float unit-norm head-2 embeddings of every
            ground-truth box, pooled at the box itself from the same feature map, in
            image then box order (with gradients); None unless the model was asked for
            them (``SeqNet.embed_ground_truth``), as methods that compare each annotated
            person across two input paths are (R-SiamNet's search path ``f^a``).
        background_embeddings: ``[K_bg, D]`` float unit-norm head-2 embeddings of the
            sampled RoIs that matched no person (with gradients), for losses that push
            people away from background (CGPS's triplet term); None when a model has none.
    """

    losses: dict[str, Tensor]
    person_embeddings: Tensor
    person_labels: Tensor
    person_image_index: Tensor
    person_box_index: Tensor
    gt_embeddings: Tensor | None = None
    background_embeddings: Tensor | None = None

    def __post_init__(self) -> None:
        k = self.person_embeddings.shape[0]
        for name in ("person_labels", "person_image_index", "person_box_index"):
            value = getattr(self, name)
            if value.shape != (k,):
                raise ValueError(f"{name} must be [{k}], got {tuple(value.shape)}")
