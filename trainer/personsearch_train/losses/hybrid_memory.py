"""CGPS's cluster contrastive loss with hard-negative cluster filtering (Yan et al., AAAI 2022).

CGPS (Context-Guided Person Search) trains its re-id head against an instance memory
(one unit-norm entry per training person, clustered by DBSCAN) with the hybrid-memory
loss of SpCL (Ge et al., NeurIPS 2020), restricted to the negative clusters that are
hardest for each person. Transcribed from the semantics of class
``HybridMemoryMultiFocalPercent`` in the authors' repository
(github.com/ljpadam/CGPS, ``mmdet/models/utils/hybrid_memory_loss.py``); no code is
shared with it. For a person ``x`` with cluster ``y``:

1. logits ``s_n = normalize(x) . M[n] / tau`` over the ``N`` memory entries;
2. cluster logit ``z_c`` = mean of ``s_n`` over the entries of cluster ``c``, i.e.
   ``normalize(x) . mean_c(M) / tau`` with the *un-normalised* member mean; cluster
   ids with no entry take no part;
3. ``q_c = softmax_c(z)`` over the negative clusters ``c != y`` only; sorted in
   descending order, the cumulative mass after the ``k`` most probable is closest
   (in absolute value) to ``top_percent`` for one ``k`` (``argmin |cumsum - p|``,
   the first such ``k`` on ties). The kept negatives are those with ``q_c >= q_(k)``:
   the cluster whose mass crosses ``top_percent`` is kept only when that lands nearer
   to ``top_percent`` than stopping before it, at least one negative is always kept,
   and ties with the last kept value are kept too;
4. ``L = -log(exp(z_y) / (exp(z_y) + sum_{kept c} exp(z_c)))``, a softmax over the own
   cluster and the kept negatives, averaged over the batch.

The selection is a hard mask (no gradient flows through it). CGPS adds ``1e-6`` to the
softmax denominator and inside the ``log``; they are left out here (the loss uses
``logsumexp``), which only changes values once a probability nears ``1e-6``. CGPS uses
``top_percent`` 0.6 on PRW and 0.7 on CUHK-SYSU (``configs/cgps/*.py``) with
``tau = 0.05``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["hard_negative_cluster_contrastive_loss"]


def hard_negative_cluster_contrastive_loss(
    features: Tensor,
    memory: Tensor,
    memory_labels: Tensor,
    labels: Tensor,
    *,
    temperature: float = 0.05,
    top_percent: float = 0.6,
) -> Tensor:
    """Softmax over each person's own cluster and its hardest negative clusters, averaged over the batch.

    Args:
        features: ``[B, D]`` float embeddings (normalised here).
        memory: ``[N, D]`` float unit-norm memory entries (no gradient flows into them).
        memory_labels: ``[N]`` int64 cluster id (``>= 0``) of each entry.
        labels: ``[B]`` int64 cluster id of each person; each must own an entry.
        temperature: ``tau``, dividing the cosine similarities.
        top_percent: Probability mass, among the negative clusters, of the hardest
            negatives that are kept, in ``(0, 1]``; ``1`` keeps every negative (plain
            SpCL cluster softmax).

    Returns:
        Scalar float32; 0 (in the graph) for an empty batch or when the memory holds a
        single cluster (no negative: the own cluster has probability 1).

    Raises:
        ValueError: Shapes disagree, a cluster id is negative, a person's cluster has no
            entry in the memory, or ``temperature`` / ``top_percent`` is out of range.
    """
    if features.dim() != 2 or memory.dim() != 2 or features.shape[1] != memory.shape[1]:
        raise ValueError(
            f"features [B, D] and memory [N, D] expected, got {tuple(features.shape)}, {tuple(memory.shape)}"
        )
    if memory_labels.shape != (memory.shape[0],) or labels.shape != (features.shape[0],):
        raise ValueError(
            f"memory_labels must be [N] and labels [B], got {tuple(memory_labels.shape)}, "
            f"{tuple(labels.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 < top_percent <= 1.0:
        raise ValueError(f"top_percent must be in (0, 1], got {top_percent}")
    if features.shape[0] == 0:
        return features.sum().float() * 0.0
    if memory.shape[0] == 0 or int(memory_labels.min()) < 0 or int(labels.min()) < 0:
        raise ValueError("cluster ids must be >= 0 and the memory must not be empty")
    num_clusters = int(max(int(memory_labels.max()), int(labels.max()))) + 1
    counts = torch.bincount(memory_labels, minlength=num_clusters)
    occupied = counts > 0
    if not bool(occupied[labels].all()):
        raise ValueError("a person's cluster has no entry in the memory; re-cluster before this step")

    # Mean of the member logits = dot product with the member mean: building the C
    # centroids once costs C*D instead of B*N, and the memory carries no gradient.
    memory = memory.detach().float()
    centroids = memory.new_zeros(num_clusters, memory.shape[1]).index_add_(0, memory_labels, memory)
    centroids = centroids / counts.clamp_min(1).to(centroids.dtype)[:, None]
    logits = F.normalize(features.float(), dim=1) @ centroids.t() / temperature  # [B, C]

    rows = torch.arange(labels.shape[0], device=labels.device)
    negative = occupied[None, :].expand_as(logits).clone()
    negative[rows, labels] = False
    if not bool(negative.any()):
        # A single cluster: every person's softmax is over its own cluster alone.
        return logits.sum() * 0.0
    with torch.no_grad():
        negative_probability = torch.softmax(logits.masked_fill(~negative, float("-inf")), dim=1)
        ordered, _ = negative_probability.sort(dim=1, descending=True)
        # Trailing zeros (own / empty clusters) leave the cumsum flat at 1, and argmin
        # takes the first minimum, so the cut never lands on them.
        cut = (ordered.cumsum(dim=1) - top_percent).abs().argmin(dim=1, keepdim=True)
        kept = negative & (negative_probability >= ordered.gather(1, cut))
    kept[rows, labels] = True
    kept_logits = logits.masked_fill(~kept, float("-inf"))
    return (torch.logsumexp(kept_logits, dim=1) - logits[rows, labels]).mean()
