"""Consistency between two views of the same people: R-SiamNet's ``L_ins`` and ``L_int``.

Han et al., "Weakly Supervised Person Search with Region Siamese Networks", ICCV 2021,
section 3.2. Each person of a batch is embedded twice, ``f^a`` from the scene (search
path) and ``f^b`` from its crop (instance path); these losses make the two agree, one
person at a time (:func:`self_instance_consistency`, Eq. 1) and as similarity structure
over the batch (:func:`similarity_consistency`, Eq. 2). Hybrid pre-training reuses them
for two augmented views of a crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["self_instance_consistency", "similarity_consistency"]


def _check_pair(first: Tensor, second: Tensor) -> None:
    if first.dim() != 2 or first.shape != second.shape:
        raise ValueError(
            f"both views must be [B, D] of one shape; got {tuple(first.shape)} and {tuple(second.shape)}"
        )


def self_instance_consistency(first: Tensor, second: Tensor) -> Tensor:
    """Eq. 1: ``mean_i (1 - cos(f_i^a, f_i^b))``.

    Args:
        first: ``[B, D]`` float embeddings of one view (need not be normalised).
        second: ``[B, D]`` float embeddings of the same people in the other view.

    Returns:
        Scalar float32 in ``[0, 2]``; 0 for an empty batch (still in the graph).
    """
    _check_pair(first, second)
    if first.shape[0] == 0:
        return (first.sum() + second.sum()).float() * 0.0
    cosine = (F.normalize(first.float(), dim=1) * F.normalize(second.float(), dim=1)).sum(dim=1)
    return (1.0 - cosine).mean()


def similarity_consistency(first: Tensor, second: Tensor, *, temperature: float = 0.1) -> Tensor:
    """Eq. 2: symmetric KL between the in-batch similarity distributions of two views.

    The paper forms ``S = F_norm F_norm^T`` per view and compares them with KL
    divergence, without saying how a row of cosine similarities becomes a probability
    distribution. Ours: row ``i`` of each view is a softmax over the *other* people of
    the batch, ``P_i(j) = softmax_j(s_ij / temperature), j != i``. The diagonal is left
    out because it is 1 in both views whatever the embeddings are; at a low temperature
    it would take nearly all the mass and hide the structure the loss is meant to align.
    The temperature sharpens cosines (which live in ``[-1, 1]``) into a distribution
    with real contrast: at 1 every row is nearly uniform and the loss vanishes.
    Each KL is averaged over the ``B`` rows; the result is ``KL(P^a||P^b) + KL(P^b||P^a)``.

    Args:
        first: ``[B, D]`` float embeddings of one view.
        second: ``[B, D]`` float embeddings of the same people in the other view.
        temperature: Softmax temperature (> 0).

    Returns:
        Scalar float32 >= 0; 0 when fewer than 3 people (a row needs two others to be a
        distribution that can differ).

    Raises:
        ValueError: Shapes differ, or the temperature is not positive.
    """
    _check_pair(first, second)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    count = first.shape[0]
    if count < 3:
        return (first.sum() + second.sum()).float() * 0.0
    off_diagonal = ~torch.eye(count, dtype=torch.bool, device=first.device)

    def log_distribution(features: Tensor) -> Tensor:
        unit = F.normalize(features.float(), dim=1)
        logits = (unit @ unit.t())[off_diagonal].reshape(count, count - 1) / temperature
        return F.log_softmax(logits, dim=1)

    log_p, log_q = log_distribution(first), log_distribution(second)
    forward = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    backward = (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()
    return forward + backward
