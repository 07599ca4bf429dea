"""A momentum feature memory, the reference set of cluster- and instance-contrastive losses."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MemoryBank"]


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
