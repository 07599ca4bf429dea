"""Heads on pooled RoI features: the BN-neck box regressor and the norm-aware embedding."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BNNeckBoxRegressor", "NormAwareEmbedding"]


class BNNeckBoxRegressor(nn.Module):
    """Class-specific box deltas through a BatchNorm "neck" (SeqNet's re-id head regressor).

    ``Linear(in -> 4 * num_classes)`` followed by ``BatchNorm1d``; weights drawn from
    N(0, 0.01), biases zero (methods.md section 1.1 item 6).

    Args:
        in_channels: Width of the pooled ``feat_res5`` vector.
        num_classes: Classes including background (2 for person search).
    """

    def __init__(self, *, in_channels: int, num_classes: int = 2) -> None:
        super().__init__()
        self.bbox_pred = nn.Linear(in_channels, 4 * num_classes)
        self.bn = nn.BatchNorm1d(4 * num_classes)
        nn.init.normal_(self.bbox_pred.weight, std=0.01)
        nn.init.normal_(self.bn.weight, std=0.01)
        nn.init.zeros_(self.bbox_pred.bias)
        nn.init.zeros_(self.bn.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Args: features ``[K, C]``. Returns ``[K, 4 * num_classes]`` encoded deltas."""
        return self.bn(self.bbox_pred(features.flatten(1)))


class NormAwareEmbedding(nn.Module):
    """Norm-aware embedding (NAE, Chen et al. CVPR 2020; methods.md section 1.2).

    Each pooled feature vector is projected by ``Linear -> BatchNorm1d`` to its share
    of the embedding; the concatenation is split into its L2 norm ``r`` (which,
    through a one-channel BatchNorm, is the person-vs-background logit) and its
    direction (the unit-norm re-id embedding).

    Args:
        in_channels: Widths of the input vectors, e.g. ``(1024, 2048)`` for
            (``feat_res4``, ``feat_res5``) of ResNet-50.
        dim: Embedding size (SeqNet: 256), split evenly; the last part takes the
            remainder.
        learn_shift: Learn the projection BatchNorms' bias (SeqNet: True). With False
            the bias stays zero, so the embedding has no learnable offset shared by
            every box; trained from scratch, that offset grows until it dominates every
            embedding and all identities point the same way.
    """

    def __init__(self, *, in_channels: tuple[int, ...], dim: int = 256, learn_shift: bool = True) -> None:
        super().__init__()
        if dim < len(in_channels):
            raise ValueError(f"embedding dim {dim} is smaller than the number of inputs {len(in_channels)}")
        share = dim // len(in_channels)
        parts = [share] * len(in_channels)
        parts[-1] += dim - share * len(in_channels)
        self.dim = int(dim)
        self.learn_shift = bool(learn_shift)
        self.projections = nn.ModuleList()
        for channels, width in zip(in_channels, parts, strict=True):
            linear = nn.Linear(channels, width)
            bn = nn.BatchNorm1d(width)
            for layer in (linear, bn):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)
            bn.bias.requires_grad_(learn_shift)
            self.projections.append(nn.Sequential(linear, bn))
        self.norm_bn = nn.BatchNorm1d(1, affine=True)

    def forward(self, *features: Tensor) -> tuple[Tensor, Tensor]:
        """Embed the pooled feature vectors of ``K`` RoIs.

        Args:
            *features: One ``[K, C_i]`` float tensor per entry of ``in_channels``.

        Returns:
            ``embeddings`` ``[K, dim]`` float, unit L2 norm, and ``person_logits`` ``[K]``
            float (the batch-normalised embedding norm).
        """
        if len(features) != len(self.projections):
            raise ValueError(f"NAE expects {len(self.projections)} inputs, got {len(features)}")
        joint = torch.cat(
            [proj(x.flatten(1)) for proj, x in zip(self.projections, features, strict=True)], dim=1
        )
        norms = joint.norm(dim=1, keepdim=True)
        embeddings = joint / norms.clamp_min(1e-12)
        return embeddings, self.norm_bn(norms).squeeze(1)
