"""The per-image output of a person-search model's ``predict``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Detections"]


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
