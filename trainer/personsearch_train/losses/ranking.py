"""Bidirectional ranking loss with semi-hard negatives, for UniPT's fine-tuning stage.

UniPT (Shao et al., "Unified Pre-training with Pseudo Texts for Text-To-Image Person
Re-identification", ICCV 2023, section 4.2) fine-tunes with "the bidirectional ranking
loss with margin 0.2 using the positive and a semi-hard negative", following LGUR (Shao
et al., "Learning Granularity-Unified Representations for Text-to-Image Person
Re-identification", ACM MM 2022) and ViTAA (Wang et al., ECCV 2020).

A batch holds ``B`` image-text pairs (row ``i`` of both is a matching pair); several pairs
may share a person identity. With ``S = normalize(image) @ normalize(text)^T`` (cosine
similarities) and margin ``m``:

* image anchor ``i``: positive ``s_p = S[i, i]``; candidate negatives are the texts ``j``
  with ``pids[j] != pids[i]``; term ``relu(m - s_p + s_n)``;
* text anchor ``i``: the same over the images, i.e. column ``i`` of ``S``;
* loss = (mean of the image-anchor terms) + (mean of the text-anchor terms).

The negative ``s_n`` is chosen by FaceNet's semi-hard rule (Schroff et al., CVPR 2015):
the most similar candidate that is still strictly *less* similar than the positive. If
every candidate is at least as similar as the positive, the most similar candidate
overall (the hardest) is taken instead, so the anchor still gets a gradient.

Why semi-hard rather than the hardest negative: with noisy captions (vague, or nearly
interchangeable between different people) the hardest negative of an anchor is often
indistinguishable from its positive in the text alone, and early in training it is
often ranked above the positive; pushing hardest on those pairs drives the embeddings
towards a collapsed solution (FaceNet section 3.2 reports collapse to ``f(x) = 0`` with
hardest negatives). The semi-hard negative is the closest one already ranked below the
positive: it still violates the margin whenever the ranking is not yet confident, but it
never asks the model to overturn a ranking it cannot yet resolve.

The choice of negative is made on detached similarities (it is an index, not a function
to differentiate); the loss is differentiable through ``s_p`` and ``s_n``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["semi_hard_ranking_loss"]


def _check_inputs(image: Tensor, text: Tensor, pids: Tensor, margin: float) -> None:
    if image.dim() != 2 or text.dim() != 2:
        raise ValueError(
            f"image and text must be 2-D [B, D]; got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    if image.shape != text.shape:
        raise ValueError(
            "image and text must have one shape [B, D] (same batch size and feature size); "
            f"got {tuple(image.shape)} and {tuple(text.shape)}"
        )
    if pids.shape != (image.shape[0],):
        raise ValueError(f"pids must be [B] = [{image.shape[0]}]; got {tuple(pids.shape)}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0; got {margin}")


def _semi_hard_columns(similarity: Tensor, negative: Tensor) -> Tensor:
    """Per row, the column of its semi-hard negative (or of the hardest, as a fallback).

    Args:
        similarity: ``[N, N]`` float, detached; row ``i`` = anchor ``i``, its positive at
            ``[i, i]``.
        negative: ``[N, N]`` bool, which columns are candidate negatives of each row; every
            row has at least one.

    Returns:
        ``[N]`` int64 column indices.
    """
    positive = similarity.diagonal().unsqueeze(1)
    hardest = similarity.masked_fill(~negative, float("-inf"))
    below = negative & (similarity < positive)
    semi_hard = similarity.masked_fill(~below, float("-inf"))
    # argmax of an all -inf row is meaningless; such rows (no candidate below the
    # positive) take the hardest candidate instead.
    return torch.where(below.any(dim=1), semi_hard.argmax(dim=1), hardest.argmax(dim=1))


def semi_hard_ranking_loss(image: Tensor, text: Tensor, pids: Tensor, *, margin: float = 0.2) -> Tensor:
    """Bidirectional ranking loss with one semi-hard negative per anchor (UniPT / LGUR).

    ``mean_i relu(m - S[i, i] + S[i, n_i]) + mean_i relu(m - S[i, i] + S[n'_i, i])`` with
    ``S`` the cosine-similarity matrix (images x texts), ``n_i`` the semi-hard negative
    text of image ``i`` and ``n'_i`` the semi-hard negative image of text ``i`` (see the
    module docstring for the rule and its fallback).

    Args:
        image: ``[B, D]`` float image features, not necessarily normalised (they are
            L2-normalised here); row ``i`` pairs with text row ``i``.
        text: ``[B, D]`` float text features, likewise.
        pids: ``[B]`` int64 person identities of the pairs; pairs of one identity are never
            each other's negatives.
        margin: Hinge margin ``m`` on cosine similarity (UniPT: 0.2).

    Returns:
        Scalar loss, float32 (float64 for float64 inputs), >= 0. When no anchor has a
        negative (one identity in the whole batch, or ``B == 0``) it is an exact 0 that is
        still in the graph, so ``backward`` works and gives zero gradients.

    Raises:
        ValueError: ``image``/``text`` not 2-D or of different shapes, ``pids`` not
            ``[B]``, or ``margin < 0``.
    """
    _check_inputs(image, text, pids, margin)
    # Half-precision features are upcast: fp16 cosines near 1 lose the differences the
    # semi-hard comparison and the margin act on; float64 keeps its precision.
    dtype = torch.promote_types(image.dtype, torch.float32)
    negative = pids.reshape(-1, 1) != pids.reshape(1, -1)
    # Identity is symmetric and every pair has its own pid, so an anchor has a negative
    # exactly when the batch holds two identities: it is all anchors or none.
    if not bool(negative.any()):
        return (image.sum() + text.sum()).to(dtype) * 0.0

    similarity = F.normalize(image.to(dtype), dim=1) @ F.normalize(text.to(dtype), dim=1).t()
    positive = similarity.diagonal()
    with torch.no_grad():
        detached = similarity.detach()
        text_for_image = _semi_hard_columns(detached, negative)
        # Column i of S holds text anchor i against every image; the identity mask is
        # symmetric, so the transposed problem uses the same mask.
        image_for_text = _semi_hard_columns(detached.t(), negative)

    rows = torch.arange(similarity.shape[0], device=similarity.device)
    negative_for_image = similarity[rows, text_for_image]
    negative_for_text = similarity[image_for_text, rows]
    image_anchor = F.relu(margin - positive + negative_for_image).mean()
    text_anchor = F.relu(margin - positive + negative_for_text).mean()
    return image_anchor + text_anchor
