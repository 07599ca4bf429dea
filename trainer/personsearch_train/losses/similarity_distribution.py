"""IRRA's similarity distribution matching (SDM) loss for text-to-image person retrieval.

Jiang & Ye, "Cross-Modal Implicit Relation Reasoning and Aligning for Text-to-Image
Person Retrieval", CVPR 2023 (IRRA ``model/objectives.py`` ``compute_sdm``; methods.md
section 5.2). A batch holds ``B`` image-text pairs; several pairs may share a person
identity, so a row of the image-to-text similarity matrix can have several correct
columns. SDM pulls the softmax of each row, ``p``, towards the uniform distribution over
that row's correct columns, ``q``, with ``KL(p || q)``, in both retrieval directions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["similarity_distribution_matching"]


def _check_pairs(image_embeddings: Tensor, text_embeddings: Tensor) -> None:
    if image_embeddings.dim() != 2 or image_embeddings.shape != text_embeddings.shape:
        raise ValueError(
            "image and text embeddings must be [B, D] of one shape; got "
            f"{tuple(image_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    # Half-precision encoders (IRRA keeps CLIP in fp16) must not reach the softmax/log in
    # fp16; float64 inputs keep their precision.
    return torch.promote_types(tensor.dtype, torch.float32)


def similarity_distribution_matching(
    image_embeddings: Tensor,
    text_embeddings: Tensor,
    pids: Tensor,
    *,
    logit_scale: float = 50.0,
    epsilon: float = 1e-8,
) -> Tensor:
    """IRRA's SDM: ``mean_i KL(p_i2t || q) + mean_j KL(p_t2i || q)``.

    With ``s = logit_scale * image_embeddings @ text_embeddings^T``:

    * ``q_ij = 1[pid_i == pid_j] / sum_k 1[pid_i == pid_k]`` (the same for both directions
      because the identity relation is symmetric);
    * ``p^{i2t}_i = softmax(s_i)`` over texts, ``p^{t2i}_j = softmax(s^T_j)`` over images;
    * ``KL(p || q) = sum_j p_j (log p_j - log(q_j + epsilon))``; ``epsilon`` keeps the log
      finite at the zeros of ``q``, which makes every unit of probability put on a wrong
      identity cost about ``-log(epsilon)`` (18.4 at the default).

    Note this is ``KL(p || q)``, not the cross-entropy ``KL(q || p)``: with all pids
    distinct it does *not* reduce to (twice) :func:`image_text_contrastive`.

    Args:
        image_embeddings: ``[B, D]`` float image features, L2-normalised by the caller
            (row ``i`` pairs with text row ``i``); the similarity is their dot product.
        text_embeddings: ``[B, D]`` float text features, L2-normalised.
        pids: ``[B]`` int64 person identities of the pairs.
        logit_scale: Inverse temperature (IRRA: 1 / 0.02 = 50, fixed).
        epsilon: Added to ``q`` inside the log.

    Returns:
        Scalar, float32 (float64 for float64 inputs), >= 0 up to ``epsilon`` terms; 0 for an
        empty batch (still in the graph).

    Raises:
        ValueError: Shapes disagree.
    """
    _check_pairs(image_embeddings, text_embeddings)
    if pids.shape != (image_embeddings.shape[0],):
        raise ValueError(f"pids must be [B] = [{image_embeddings.shape[0]}]; got {tuple(pids.shape)}")
    dtype = _compute_dtype(image_embeddings)
    if image_embeddings.shape[0] == 0:
        return (image_embeddings.sum() + text_embeddings.sum()).to(dtype) * 0.0
    image = image_embeddings.to(dtype)
    text = text_embeddings.to(dtype)
    same = (pids.reshape(-1, 1) == pids.reshape(1, -1)).to(dtype)
    log_target = torch.log(same / same.sum(dim=1, keepdim=True) + epsilon)

    logits_i2t = logit_scale * (image @ text.t())

    def mean_kl(logits: Tensor) -> Tensor:
        log_p = F.log_softmax(logits, dim=1)
        return (log_p.exp() * (log_p - log_target)).sum(dim=1).mean()

    return mean_kl(logits_i2t) + mean_kl(logits_i2t.t())
