"""R-SiamNet's cluster-level contrastive loss (Han et al., ICCV 2021, Eq. 3).

Every person of the batch is compared with every entry of an instance memory (one
entry per training person, :class:`~personsearch_train.weak_supervision.MemoryBank`):
entries carrying the person's pseudo label are positives, all others negatives, and the
loss asks every positive to beat every negative,

    ``L = log(1 + sum_i sum_j exp(gamma * (s_n^j - s_p^i)))``,

the pair-wise form of Sun et al.'s unified loss (Circle Loss, CVPR 2020, ref. [30] of
the paper) with scale ``gamma`` (16). The double sum factorises,
``sum_i sum_j exp(g s_n^j - g s_p^i) = exp(LSE_j(g s_n^j) + LSE_i(-g s_p^i))``, so the loss
is ``softplus(LSE_j(g s_n^j) + LSE_i(-g s_p^i))``: linear in the memory size and stable.
With every person its own label (instance recognition) the one positive is the
person's own memory entry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["cluster_contrastive_loss"]


def cluster_contrastive_loss(
    features: Tensor, memory: Tensor, memory_labels: Tensor, labels: Tensor, *, scale: float = 16.0
) -> Tensor:
    """Eq. 3 averaged over the batch.

    Args:
        features: ``[B, D]`` float embeddings ``f`` (normalised here: the paper's ``s``
            are cosine similarities).
        memory: ``[N, D]`` float unit-norm memory entries (no gradient flows into them).
        memory_labels: ``[N]`` int64 pseudo label of each entry.
        labels: ``[B]`` int64 pseudo label of each person of the batch; each must occur
            in ``memory_labels``.
        scale: ``gamma``.

    Returns:
        Scalar float32; 0 (in the graph) for an empty batch. A person whose label
        covers the whole memory has no negative and contributes ``log 1 = 0``.

    Raises:
        ValueError: Shapes disagree, or a label has no entry in the memory.
    """
    if features.dim() != 2 or memory.dim() != 2 or features.shape[1] != memory.shape[1]:
        raise ValueError(
            f"features [B, D] and memory [N, D] expected, got {tuple(features.shape)}, {tuple(memory.shape)}"
        )
    if memory_labels.shape != (memory.shape[0],) or labels.shape != (features.shape[0],):
        raise ValueError("memory_labels must be [N] and labels [B]")
    if features.shape[0] == 0:
        return features.sum().float() * 0.0
    similarities = F.normalize(features.float(), dim=1) @ memory.detach().float().t()
    positive = labels[:, None] == memory_labels[None, :]
    if not bool(positive.any(dim=1).all()):
        raise ValueError("a person's pseudo label has no entry in the memory; re-cluster before this step")
    negative_inf = torch.finfo(similarities.dtype).min
    positive_term = torch.logsumexp((-scale * similarities).masked_fill(~positive, negative_inf), dim=1)
    negative_term = torch.logsumexp((scale * similarities).masked_fill(positive, negative_inf), dim=1)
    has_negative = (~positive).any(dim=1)
    loss = F.softplus(positive_term + negative_term)
    return torch.where(has_negative, loss, torch.zeros_like(loss)).mean()
