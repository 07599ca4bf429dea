"""SSL's dynamic multi-label learning (Wang et al., ICCV 2023, section 3.3, Eqs. 8-11).

Every training person owns one entry of a memory ``M [N, D]``; a person's pseudo label
is an ``N``-dim binary vector over the entries:

* Eq. 9, the threshold decays with the epoch ``e``: ``t = t_s + alpha * exp(beta * e)``
  (``t_s = 0.6``, ``alpha = 0.1``, ``beta = -0.1`` in section 4.2), strict early,
  looser as the features improve;
* Eq. 8 and 10, entries with similarity ``>= t`` are candidate positives, traversed in
  descending similarity; accepting entry ``j`` makes every other entry of ``j``'s image
  negative, because two people of one image are never the same person;
* Eq. 11, with ``f`` the normalised feature, positives ``P_i`` and negatives
  ``N_i`` (all other entries),
  ``l_i = delta / |P_i| * sum_{p in P_i} (M[p] . f - 1)^2 + 1 / |N_i| * sum_{v in N_i} (M[v] . f + 1)^2``,
  averaged over the ``c`` persons of the batch.

The memories themselves (Eqs. 5-7: momentum update, ``M = mean(M_i, M_ms)``, ``S = M M^T``)
belong to the caller, as does Eq. 12, the sum of Eq. 11 over the main-branch and
multi-scale memories with their own features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dynamic_threshold", "multi_label_loss", "same_image_multilabels"]


def dynamic_threshold(epoch: int, *, base: float = 0.6, alpha: float = 0.1, beta: float = -0.1) -> float:
    """Eq. 9, ``t = base + alpha * exp(beta * epoch)``.

    The defaults are the paper's implementation details (section 4.2), ``beta = -0.1``;
    an earlier summary of the method said ``-0.05``.

    Args:
        epoch: Current epoch ``e``, counted from 0.
        base: ``t_s``, the threshold the schedule decays towards.
        alpha: Extra threshold at epoch 0.
        beta: Decay rate (negative for a decaying threshold).

    Returns:
        The threshold: ``0.7`` at epoch 0 with the defaults.
    """
    return base + alpha * math.exp(beta * epoch)


def same_image_multilabels(
    similarities: Tensor,
    image_of_entry: Tensor,
    *,
    threshold: float,
    max_positives: int | None = None,
) -> Tensor:
    """Eqs. 8 and 10: positives over the memory, at most one per scene image.

    Traversing the candidates (similarity ``>= threshold``) in descending similarity and
    accepting an entry unless one of its image was accepted before keeps exactly the
    most similar candidate of each image, which is computed here without the traversal
    (per row and image: the candidate with the largest similarity, the lowest entry
    index among equal similarities, as a stable descending sort would visit first).

    ``max_positives`` stops that traversal after ``k`` accepted entries (not in the
    paper): features trained from scratch drift together as training goes on, so a
    threshold that accepts a handful of people early accepts dozens later at falling
    precision; a cap keeps the labels to the most similar few.

    Args:
        similarities: ``[B, N]`` float similarity of each person with each memory entry.
        image_of_entry: ``[N]`` int64 scene image id (``>= 0``) of each entry.
        threshold: ``t``.
        max_positives: At most this many positives per row (``k >= 1``; ``None``: no cap).
            Among equal similarities the lower entry index is accepted first.

    Returns:
        ``[B, N]`` bool positives; every other entry is negative. A row with no
        candidate is all False.

    Raises:
        ValueError: Shapes disagree, an image id is negative or ``max_positives < 1``.
    """
    if max_positives is not None and max_positives < 1:
        raise ValueError(f"max_positives must be >= 1 or None, got {max_positives}")
    if similarities.dim() != 2 or image_of_entry.shape != (similarities.shape[1],):
        raise ValueError(
            f"similarities [B, N] and image_of_entry [N] expected, got {tuple(similarities.shape)}, "
            f"{tuple(image_of_entry.shape)}"
        )
    rows, entries = similarities.shape
    if rows == 0 or entries == 0:
        return torch.zeros(rows, entries, dtype=torch.bool, device=similarities.device)
    if int(image_of_entry.min()) < 0:
        raise ValueError("image ids must be >= 0")
    similarities = similarities.detach()
    images = int(image_of_entry.max()) + 1
    candidate = similarities >= threshold
    groups = image_of_entry[None, :].expand(rows, entries)
    lowest = torch.finfo(similarities.dtype).min
    best = similarities.new_full((rows, images), lowest).scatter_reduce(
        1, groups, similarities.masked_fill(~candidate, lowest), reduce="amax"
    )
    at_best = candidate & (similarities == best.gather(1, groups))
    # Ties within one image: the first entry index wins.
    index = torch.arange(entries, device=similarities.device)[None, :].expand(rows, entries)
    first = torch.full((rows, images), entries, dtype=torch.int64, device=similarities.device).scatter_reduce(
        1, groups, index.masked_fill(~at_best, entries), reduce="amin"
    )
    positives = at_best & (index == first.gather(1, groups))
    if max_positives is None or max_positives >= entries:
        return positives
    # A stable descending sort visits equal similarities in entry order, as the traversal does.
    accepted = similarities.masked_fill(~positives, lowest)
    order = torch.sort(accepted, dim=1, descending=True, stable=True).indices
    kept = torch.zeros_like(positives)
    kept.scatter_(1, order[:, :max_positives], True)
    return positives & kept


def multi_label_loss(features: Tensor, memory: Tensor, positives: Tensor, *, delta: float = 5.0) -> Tensor:
    """Eq. 11 averaged over the batch.

    Args:
        features: ``[B, D]`` float features ``f`` (normalised here).
        memory: ``[N, D]`` float memory ``M`` (no gradient flows into it).
        positives: ``[B, N]`` bool pseudo labels (:func:`same_image_multilabels`); the
            other entries are the negatives.
        delta: ``delta``, weight of the positive term.

    Returns:
        Scalar float32; 0 (in the graph) for an empty batch. A row whose entries are all
        positive has a negative term of 0.

    Raises:
        ValueError: Shapes disagree or a row has no positive (the caller always makes a
            person's own entry positive).
    """
    if features.dim() != 2 or memory.dim() != 2 or features.shape[1] != memory.shape[1]:
        raise ValueError(
            f"features [B, D] and memory [N, D] expected, got {tuple(features.shape)}, {tuple(memory.shape)}"
        )
    if positives.shape != (features.shape[0], memory.shape[0]) or positives.dtype != torch.bool:
        raise ValueError(
            f"positives must be bool [B, N] = {(features.shape[0], memory.shape[0])}, got "
            f"{positives.dtype} {tuple(positives.shape)}"
        )
    if features.shape[0] == 0:
        return features.sum().float() * 0.0
    positive_count = positives.sum(dim=1)
    if not bool((positive_count > 0).all()):
        raise ValueError("every row needs a positive entry (at least the person's own)")
    similarities = F.normalize(features.float(), dim=1) @ memory.detach().float().t()
    positive_weight = positives.float()
    negative_weight = 1.0 - positive_weight
    positive_term = ((similarities - 1.0).pow(2) * positive_weight).sum(dim=1) / positive_count
    negative_count = negative_weight.sum(dim=1).clamp_min(1.0)
    negative_term = ((similarities + 1.0).pow(2) * negative_weight).sum(dim=1) / negative_count
    return (delta * positive_term + negative_term).mean()
