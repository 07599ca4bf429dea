"""Symmetric image-text contrastive loss (InfoNCE over matched pairs), as IRRA's ITC.

IRRA ``model/objectives.py`` ``compute_itc`` (methods.md section 5.2; the CLIP
objective): row ``i`` of the image batch matches row ``i`` of the text batch and every
other row of the batch is a negative, whatever its identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from personsearch_train.losses.similarity_distribution import _check_pairs, _compute_dtype

__all__ = ["image_text_contrastive"]


def image_text_contrastive(
    image_embeddings: Tensor, text_embeddings: Tensor, *, logit_scale: float = 50.0
) -> Tensor:
    """``(CE(s, arange(B)) + CE(s^T, arange(B))) / 2`` with ``s = logit_scale * I T^T``.

    Args:
        image_embeddings: ``[B, D]`` float image features, L2-normalised by the caller.
        text_embeddings: ``[B, D]`` float text features, L2-normalised; row ``i`` is the
            caption of image ``i``.
        logit_scale: Inverse temperature (IRRA: 50).

    Returns:
        Scalar, float32 (float64 for float64 inputs); 0 for an empty batch (still in the
        graph).

    Raises:
        ValueError: Shapes disagree.
    """
    _check_pairs(image_embeddings, text_embeddings)
    dtype = _compute_dtype(image_embeddings)
    count = image_embeddings.shape[0]
    if count == 0:
        return (image_embeddings.sum() + text_embeddings.sum()).to(dtype) * 0.0
    logits = logit_scale * (image_embeddings.to(dtype) @ text_embeddings.to(dtype).t())
    targets = torch.arange(count, device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
