"""CFAM's shared cross-modal granularity decoder (UFineBench, Zuo et al., CVPR 2024).

The paper's abstract names "a shared cross-modal granularity decoder"; its body and code
are not public, so the design below is ours.

A set of learnable *granularity queries* attends to the tokens of either modality
(image patches or words) through a small transformer decoder: self-attention among the
queries, cross-attention to the tokens, an MLP. The **same weights serve both
modalities**, so query ``k`` asks the same question of an image and of a sentence
("what is the upper body like?"), and the answers can be compared directly.

* ``num_fine`` queries give the **fine-granularity** embeddings ``[B, K, D]``: each is
  free to specialise on one part or attribute; images and texts are compared query by
  query, the fine similarity being the mean over ``k`` of the per-query cosines.
* one extra query gives the **coarse-granularity** embedding ``[B, D]``: one summary
  vector per sample, compared by cosine.

:func:`combine_embeddings` folds the global, coarse and fine embeddings into one
L2-normalised vector whose inner product is the weighted mean of the three cosines, so
retrieval still is one matrix product and the exporter still writes one embedding per
tower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personsearch_train.text.transformer_blocks import pre_norm_decoder_layer

__all__ = ["GranularityDecoder", "GranularityEmbeddings", "combine_embeddings", "concatenated_parts"]


@dataclass(frozen=True)
class GranularityEmbeddings:
    """The decoder's answers for one modality.

    Attributes:
        fine: ``[B, K, D]`` float, L2-normalised per query.
        coarse: ``[B, D]`` float, L2-normalised.
    """

    fine: Tensor
    coarse: Tensor


class GranularityDecoder(nn.Module):
    """Learnable granularity queries decoding either modality's tokens, one set of weights.

    Args:
        width: Token width ``D`` of both towers.
        num_fine: Number of fine-granularity queries ``K``.
        heads: Attention heads.
        layers: Decoder layers.
    """

    def __init__(self, *, width: int, num_fine: int = 4, heads: int = 8, layers: int = 2) -> None:
        super().__init__()
        if num_fine < 1:
            raise ValueError(f"num_fine must be at least 1, got {num_fine}")
        self.num_fine = int(num_fine)
        self.queries = nn.Parameter(torch.randn(num_fine + 1, width) * width**-0.5)
        layer = pre_norm_decoder_layer(width, heads)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None) -> GranularityEmbeddings:
        """Decode one modality's tokens.

        Args:
            tokens: ``[B, L, D]`` float token features (image patches or words).
            padding_mask: ``[B, L]`` bool, True where a token is padding; None for none.

        Returns:
            Fine ``[B, K, D]`` and coarse ``[B, D]`` embeddings, L2-normalised.
        """
        queries = self.queries.to(tokens.dtype).unsqueeze(0).expand(tokens.shape[0], -1, -1)
        answers = self.norm(self.decoder(queries, tokens, memory_key_padding_mask=padding_mask))
        answers = F.normalize(answers.float(), dim=-1)
        return GranularityEmbeddings(fine=answers[:, : self.num_fine], coarse=answers[:, self.num_fine])


def concatenated_parts(fine: Tensor) -> Tensor:
    """Fine embeddings as one unit vector per sample whose inner products average the parts.

    Args:
        fine: ``[B, K, D]`` float, unit-norm per query.

    Returns:
        ``[B, K*D]`` float, unit-norm; ``a @ b.T`` is the mean over ``k`` of the per-query
        cosines.
    """
    return fine.flatten(1) / math.sqrt(fine.shape[1])


def combine_embeddings(
    global_embedding: Tensor,
    granularity: GranularityEmbeddings | None,
    *,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Tensor:
    """One retrieval vector per sample from the global, coarse and fine embeddings.

    With weights ``(w_g, w_c, w_f)`` the inner product of two combined vectors is
    ``(w_g cos_g + w_c cos_c + w_f mean_k cos_k) / (w_g + w_c + w_f)``.

    Args:
        global_embedding: ``[B, D]`` float, unit-norm.
        granularity: The decoder's embeddings, or None (returns ``global_embedding``).
        weights: Non-negative ``(global, coarse, fine)`` weights, not all zero.

    Returns:
        ``[B, D]`` (no decoder) or ``[B, (K + 2) * D]`` float32, unit-norm.
    """
    if granularity is None:
        return global_embedding
    w_global, w_coarse, w_fine = (float(w) for w in weights)
    if min(weights) < 0 or w_global + w_coarse + w_fine <= 0:
        raise ValueError(f"embedding weights must be non-negative and not all zero, got {weights}")
    total = w_global + w_coarse + w_fine
    parts = [
        global_embedding.float() * math.sqrt(w_global / total),
        granularity.coarse * math.sqrt(w_coarse / total),
        concatenated_parts(granularity.fine) * math.sqrt(w_fine / total),
    ]
    return torch.cat(parts, dim=1)
