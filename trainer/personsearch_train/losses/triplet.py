"""CGPS's batch-hard triplet loss with a background ranking term (Yan et al., AAAI 2022).

CGPS calls it the "quaduplet" loss (class ``Quaduplet2Loss`` in the authors' repository,
github.com/ljpadam/CGPS, ``mmdet/models/utils/quaduplet2_loss.py``; semantics
transcribed here, no code shared). Its inputs are the re-id embeddings of the sampled
RoIs, which CGPS's head has already L2-normalised: foreground RoIs carry the pseudo
label (cluster) of the person they cover, background RoIs are the rest. With ``d`` the
(non-squared) Euclidean distance between normalised embeddings:

* batch-hard triplet (Hermans et al., 2017): for every foreground anchor ``i``,
  ``[m + max_{j: y_j = y_i} d(i, j) - min_{j: y_j != y_i} d(i, j)]_+``, mean over anchors;
* background term: ``[m + max_j d(i, j) - min_k d(i, b_k)]_+``, mean over anchors, weighted
  by ``background_weight``. As in CGPS's code, the "hardest positive" here is the
  farthest foreground RoI *of any label* (its positive mask is commented out), so
  every background RoI must be farther from the anchor than every foreground RoI.

Edge cases, following CGPS: the positive set includes the anchor itself, so an anchor
whose label occurs once has hardest positive distance 0 (CGPS: ``1e-6`` from its
clamp) and contributes ``[m - min_neg d]_+``; with fewer than two distinct labels in
the batch no anchor has a negative and the *whole* loss, background term included, is
0. Without background RoIs (CGPS would fail) the background term is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["triplet_with_background_loss"]


def _euclidean(a: Tensor, b: Tensor) -> Tensor:
    """``[n, m]`` Euclidean distances; the clamp keeps ``sqrt``'s gradient finite at 0."""
    squared = a.pow(2).sum(dim=1, keepdim=True) + b.pow(2).sum(dim=1)[None, :] - 2.0 * (a @ b.t())
    return squared.clamp_min(1e-12).sqrt()


def triplet_with_background_loss(
    features: Tensor,
    labels: Tensor,
    background: Tensor,
    *,
    margin: float = 0.3,
    background_weight: float = 0.25,
) -> Tensor:
    """Batch-hard triplet loss on foreground RoIs plus the background ranking term.

    Args:
        features: ``[B, D]`` float foreground RoI embeddings (normalised here).
        labels: ``[B]`` int64 pseudo label (cluster) of each foreground RoI.
        background: ``[K, D]`` float background RoI embeddings (normalised here); ``K``
            may be 0.
        margin: ``m`` of both hinge terms.
        background_weight: Weight of the background term.

    Returns:
        Scalar float32 ``L_triplet + background_weight * L_background``; 0 (in the graph)
        when the batch holds fewer than two distinct labels (no anchor has a negative).

    Raises:
        ValueError: Shapes disagree.
    """
    if features.dim() != 2 or background.dim() != 2 or features.shape[1] != background.shape[1]:
        raise ValueError(
            f"features [B, D] and background [K, D] expected, got {tuple(features.shape)}, "
            f"{tuple(background.shape)}"
        )
    if labels.shape != (features.shape[0],):
        raise ValueError(f"labels must be [B], got {tuple(labels.shape)} for {features.shape[0]} features")
    if labels.numel() == 0 or labels.unique().numel() < 2:
        return (features.sum() + background.sum()).float() * 0.0
    x = F.normalize(features.float(), dim=1)
    distances = _euclidean(x, x)
    # The anchor is its own positive at distance exactly 0, so take the diagonal out of
    # the rounding of the expanded form (and of its gradient).
    diagonal = torch.eye(len(x), dtype=torch.bool, device=x.device)
    distances = distances.masked_fill(diagonal, 0.0)
    same = labels[:, None] == labels[None, :]
    hardest_positive = distances.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = distances.masked_fill(same, float("inf")).amin(dim=1)
    loss = F.relu(margin + hardest_positive - hardest_negative).mean()
    if background.shape[0] == 0:
        return loss
    nearest_background = _euclidean(x, F.normalize(background.float(), dim=1)).amin(dim=1)
    farthest_foreground = distances.amax(dim=1)
    return loss + background_weight * F.relu(margin + farthest_foreground - nearest_background).mean()
