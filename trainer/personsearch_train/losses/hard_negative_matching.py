"""Image-text matching with hard negatives: our reading of CFAM's "hard negative match mechanism".

UFineBench (Zuo et al., CVPR 2024) names a hard negative match mechanism for its CFAM
model but publishes neither code nor formulas (methods.md section 5.5), so the design here
is ours, after ALBEF's image-text matching (ITM) loss (Li et al., "Align before Fuse",
NeurIPS 2021):

* for each image pick one caption of *another* person that the dual encoder finds
  similar, and for each caption one image of another person (:func:`mine_hard_negatives`);
* a small fusion module (:class:`MatchingHead`) reads a caption against an image and
  says "match" or "no match";
* the loss is cross-entropy over the ``B`` true pairs and the mined negative pairs
  (:func:`hard_negative_matching_loss`).

Unlike ALBEF, which excludes only the diagonal (or same image id), negatives are defined
by person identity: another caption of the same person is a correct match in
person retrieval, so it must never be served as a negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personsearch_train.text.transformer_blocks import pre_norm_decoder_layer

__all__ = ["MatchingHead", "hard_negative_matching_loss", "mine_hard_negatives"]


def _pick_negatives(
    scores: Tensor, negative: Tensor, generator: torch.Generator | None, sample: bool
) -> Tensor:
    """Per row, one column among ``negative``: sampled from the masked softmax, or the arg-max."""
    masked = scores.masked_fill(~negative, float("-inf"))
    if sample:
        # Gumbel-max: argmax(s + Gumbel noise) is an exact draw from softmax(s), and a -inf
        # (positive) entry can never win, which torch.multinomial does not promise on
        # every backend.
        uniform = torch.rand(scores.shape, generator=generator, device=scores.device, dtype=scores.dtype)
        tiny = torch.finfo(scores.dtype).tiny
        gumbel = -torch.log(-torch.log(uniform.clamp(min=tiny, max=1.0 - torch.finfo(scores.dtype).eps)))
        masked = masked + gumbel
    chosen = masked.argmax(dim=1)
    return torch.where(negative.any(dim=1), chosen, torch.full_like(chosen, -1))


def mine_hard_negatives(
    similarity: Tensor,
    pids: Tensor,
    *,
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> tuple[Tensor, Tensor]:
    """One hard negative caption per image and one hard negative image per caption.

    A negative of image ``i`` is a text ``j`` with ``pids[j] != pids[i]`` (and likewise for
    texts). ``sample=True`` draws it with probability ``softmax(similarity_i)`` restricted
    to the negatives (ALBEF), so harder negatives are likelier but easy ones still appear;
    ``sample=False`` takes the most similar negative.

    Args:
        similarity: ``[B, B]`` float, row ``i`` = image ``i``, column ``j`` = text ``j``;
            used as softmax logits, so pass a scaled similarity (e.g. ``50 * cosine``) when
            sampling. Not differentiated through.
        pids: ``[B]`` int64 identities of the pairs.
        generator: RNG on ``similarity.device`` for sampling; ``None`` uses the global RNG.
        sample: Sample (True) or take the hardest negative (False).

    Returns:
        ``(negative_text_for_image, negative_image_for_text)``, both ``[B]`` int64; ``-1``
        where a row has no negative (every pair of the batch is the same person).

    Raises:
        ValueError: Shapes disagree.
    """
    count = pids.shape[0] if pids.dim() == 1 else -1
    if similarity.shape != (count, count):
        raise ValueError(
            f"similarity must be [B, B] and pids [B]; got {tuple(similarity.shape)}, {tuple(pids.shape)}"
        )
    scores = similarity.detach().to(torch.promote_types(similarity.dtype, torch.float32))
    negative = pids.reshape(-1, 1) != pids.reshape(1, -1)
    text_for_image = _pick_negatives(scores, negative, generator, sample)
    image_for_text = _pick_negatives(scores.t(), negative.t(), generator, sample)
    return text_for_image, image_for_text


class MatchingHead(nn.Module):
    """Binary image-text matching classifier on fused tokens.

    ``depth`` pre-norm ``nn.TransformerDecoderLayer`` blocks (text self-attention, text ->
    image cross-attention, feed-forward 4W, GELU, no dropout) -> ``LayerNorm`` -> mean over
    the real text tokens -> ``Linear(W, 2)``. Logit index 1 means "match". ALBEF reads
    its fused ``[CLS]`` token instead; mean pooling does not assume the caption encoder
    has one.

    Args:
        width: ``W``, width of both token sequences.
        heads: Attention heads.
        depth: Number of fusion layers.
    """

    def __init__(self, *, width: int, heads: int = 8, depth: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(pre_norm_decoder_layer(width, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.classifier = nn.Linear(width, 2)

    def forward(
        self, text_tokens: Tensor, image_tokens: Tensor, text_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Score each (caption, image) pair of the batch.

        Args:
            text_tokens: ``[B, L, W]`` float caption token features.
            image_tokens: ``[B, T, W]`` float image token features.
            text_padding_mask: ``[B, L]`` bool, True at padding; ``None`` if nothing is
                padded. Each row needs one real token.

        Returns:
            ``[B, 2]`` logits (no-match, match) in the dtype of the module.
        """
        if text_tokens.dim() != 3 or image_tokens.dim() != 3 or text_tokens.shape[0] != image_tokens.shape[0]:
            raise ValueError(
                "text_tokens must be [B, L, W] and image_tokens [B, T, W]; got "
                f"{tuple(text_tokens.shape)} and {tuple(image_tokens.shape)}"
            )
        fused = text_tokens
        for layer in self.layers:
            fused = layer(fused, image_tokens, tgt_key_padding_mask=text_padding_mask)
        fused = self.norm(fused)
        if text_padding_mask is None:
            pooled = fused.mean(dim=1)
        else:
            valid = (~text_padding_mask).to(fused.dtype).unsqueeze(-1)
            pooled = (fused * valid).sum(dim=1) / valid.sum(dim=1).clamp(min=1.0)
        return self.classifier(pooled)


def hard_negative_matching_loss(
    head: MatchingHead,
    image_tokens: Tensor,
    text_tokens: Tensor,
    text_padding_mask: Tensor,
    similarity: Tensor,
    pids: Tensor,
    *,
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> Tensor:
    """ITM cross-entropy over true pairs and hard negative pairs (ALBEF's ITM, identity-aware).

    Pairs, in this order: the ``B`` true pairs ``(image i, text i)`` labelled 1; ``(image i,
    hard negative text of i)`` labelled 0; ``(hard negative image of j, text j)`` labelled
    0; negatives of rows with none (``-1``) are dropped. The loss is the mean CE over all
    the pairs. Mining uses ``similarity`` detached, so this loss trains the head and the
    token features, not the similarity it was mined from.

    Args:
        head: The matching classifier.
        image_tokens: ``[B, T, W]`` float image token features.
        text_tokens: ``[B, L, W]`` float caption token features; row ``i`` describes image ``i``.
        text_padding_mask: ``[B, L]`` bool, True at padding.
        similarity: ``[B, B]`` float image-to-text similarity (see :func:`mine_hard_negatives`).
        pids: ``[B]`` int64 identities.
        generator: RNG for sampling negatives.
        sample: Sample negatives (True, ALBEF) or take the hardest (False).

    Returns:
        Scalar float32 (float64 for a float64 head); 0 for an empty batch (still in the graph).

    Raises:
        ValueError: Shapes disagree.
    """
    count = image_tokens.shape[0]
    if text_tokens.shape[0] != count or text_padding_mask.shape != text_tokens.shape[:2]:
        raise ValueError(
            "image_tokens [B, T, W], text_tokens [B, L, W] and text_padding_mask [B, L] must agree; got "
            f"{tuple(image_tokens.shape)}, {tuple(text_tokens.shape)}, {tuple(text_padding_mask.shape)}"
        )
    if count == 0:
        return (image_tokens.sum() + text_tokens.sum()).float() * 0.0
    text_for_image, image_for_text = mine_hard_negatives(similarity, pids, generator=generator, sample=sample)
    rows = torch.arange(count, device=image_tokens.device)
    has_text = text_for_image >= 0
    has_image = image_for_text >= 0
    image_index = torch.cat([rows, rows[has_text], image_for_text[has_image]])
    text_index = torch.cat([rows, text_for_image[has_text], rows[has_image]])
    labels = torch.zeros(image_index.shape[0], dtype=torch.long, device=image_tokens.device)
    labels[:count] = 1
    logits = head(text_tokens[text_index], image_tokens[image_index], text_padding_mask[text_index])
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)
