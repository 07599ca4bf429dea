"""IRRA's implicit relation reasoning: cross-modal masked language modelling (MLM).

Jiang & Ye, CVPR 2023 (IRRA ``datasets/bases.py`` ``_build_random_masked_tokens``,
``model/build.py`` ``cross_former`` / ``mlm_head``, ``model/objectives.py`` ``compute_mlm``;
methods.md section 5.2). Some caption tokens are hidden (BERT's 15 % with the 80/10/10
replacement rule); the masked caption's token features attend to the image's token
features, and the module must recover the hidden words, which it can only do by relating
the words to image regions. The module is used in training only.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personsearch_train.text.transformer_blocks import pre_norm_encoder_layer

__all__ = ["CrossModalMaskedLanguageHead", "mask_tokens", "masked_language_loss"]

#: Label of positions that carry no MLM target (PyTorch's ``cross_entropy`` default).
IGNORE_INDEX = -100


def mask_tokens(
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_token_ids: Collection[int],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Choose MLM targets and corrupt them as BERT / IRRA do.

    Candidates are the positions with ``attention_mask == 1`` whose id is not in
    ``special_token_ids``. Each candidate is selected with ``probability``; a selected
    token becomes ``mask_token_id`` with probability 0.8, a random id in
    ``[0, vocab_size)`` that is not a special id with probability 0.1, and stays as it is
    with probability 0.1. A row with candidates but no draw gets its first candidate
    selected and replaced by the mask token (IRRA forces position 1, its first word), so
    every caption has a target and something hidden.

    The labels use ``-100`` (PyTorch's ``ignore_index``) at unselected positions. IRRA
    used 0, which is a padding id in the CLIP vocabulary; in BERT vocabularies id 0 is
    ``[PAD]`` too, but -100 can never collide with any real id.

    Every random number is drawn for the whole ``[B, L]`` grid whatever the outcome, so the
    result is a deterministic function of the inputs and the generator's state.

    Args:
        input_ids: ``[B, L]`` int64 token ids.
        attention_mask: ``[B, L]`` int64 (or bool), 1 for real tokens, 0 for padding.
        mask_token_id: Id of the mask token (e.g. ``[MASK]``), in ``[0, vocab_size)``.
        vocab_size: Size of the vocabulary.
        special_token_ids: Ids never selected nor drawn as replacements: list the padding,
            start/end (``[CLS]``/``[SEP]``, SOT/EOT) and mask ids here.
        probability: Selection probability of a candidate, in ``[0, 1]``.
        generator: RNG on ``input_ids.device``; ``None`` uses the global RNG.

    Returns:
        ``(masked_ids, labels)``, both ``[B, L]`` int64: the corrupted ids, and the
        original id at selected positions, ``-100`` elsewhere.

    Raises:
        ValueError: Shapes disagree, the probability or mask id is out of range, or every
            id of the vocabulary is special.
    """
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            "input_ids and attention_mask must be [B, L] of one shape; got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id {mask_token_id} is outside [0, {vocab_size})")
    device = input_ids.device
    ids = input_ids.long()
    special = torch.tensor(sorted({int(i) for i in special_token_ids}), dtype=torch.long, device=device)
    is_special_id = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    is_special_id[special[(special >= 0) & (special < vocab_size)]] = True
    replacement_pool = torch.nonzero(~is_special_id).flatten()
    if replacement_pool.numel() == 0:
        raise ValueError("every id of the vocabulary is special: no random replacement is possible")

    candidate = (attention_mask != 0) & ~torch.isin(ids, special)
    shape = tuple(ids.shape)
    selection_draw = torch.rand(shape, generator=generator, device=device)
    action_draw = torch.rand(shape, generator=generator, device=device)
    replacement = replacement_pool[
        torch.randint(replacement_pool.numel(), shape, generator=generator, device=device)
    ]

    selected = candidate & (selection_draw < probability)
    forced = torch.zeros_like(selected)
    needs_one = candidate.any(dim=1) & ~selected.any(dim=1)
    if bool(needs_one.any()):
        # argmax returns the first maximum, i.e. the first candidate of the row.
        first = candidate.to(torch.uint8).argmax(dim=1)
        rows = torch.nonzero(needs_one).flatten()
        forced[rows, first[rows]] = True
    selected = selected | forced

    to_mask = selected & ((action_draw < 0.8) | forced)
    to_random = selected & ~forced & (action_draw >= 0.8) & (action_draw < 0.9)
    masked_ids = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked_ids = torch.where(to_random, replacement, masked_ids)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked_ids, labels


class CrossModalMaskedLanguageHead(nn.Module):
    """IRRA's cross-modal module and MLM head: text tokens attend to image tokens.

    ``LayerNorm`` text and image tokens -> one ``MultiheadAttention`` (query = text, key /
    value = image; no residual, as IRRA) -> ``depth`` pre-norm transformer encoder layers
    -> ``LayerNorm`` -> ``Linear(W, W)`` -> GELU -> ``LayerNorm`` -> ``Linear(W, V)``.
    IRRA's blocks have no dropout and use QuickGELU (CLIP's sigmoid approximation); we use
    no dropout and exact GELU. Weights follow IRRA's ``init_cross_modal`` scheme.

    Args:
        width: ``W``, width of both token sequences.
        vocab_size: ``V``, number of output classes.
        heads: Attention heads (IRRA: ``W // 64`` = 8 at 512).
        depth: Number of transformer layers after the cross-attention (IRRA: 4).
    """

    def __init__(self, *, width: int, vocab_size: int, heads: int = 8, depth: int = 4) -> None:
        super().__init__()
        self.text_norm = nn.LayerNorm(width)
        self.image_norm = nn.LayerNorm(width)
        self.cross_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        # A plain list of layers rather than nn.TransformerEncoder: its nested-tensor fast
        # path is not used with norm_first and would warn.
        self.layers = nn.ModuleList(pre_norm_encoder_layer(width, heads) for _ in range(depth))
        self.output_norm = nn.LayerNorm(width)
        self.mlm_head = nn.Sequential(
            nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size)
        )
        self._reset_parameters(width, depth)

    def _reset_parameters(self, width: int, depth: int) -> None:
        # IRRA's init: attention inputs ~ W^-1/2, residual-branch outputs shrunk by the
        # number of residual additions (2 per layer) so the stack starts near identity.
        attn_std = width**-0.5
        proj_std = attn_std * (2 * max(depth, 1)) ** -0.5
        fc_std = (2 * width) ** -0.5
        for layer in self.layers:
            nn.init.normal_(layer.self_attn.in_proj_weight, std=attn_std)
            nn.init.normal_(layer.self_attn.out_proj.weight, std=proj_std)
            nn.init.normal_(layer.linear1.weight, std=fc_std)
            nn.init.normal_(layer.linear2.weight, std=proj_std)
        nn.init.normal_(self.cross_attention.in_proj_weight, std=attn_std)
        nn.init.normal_(self.cross_attention.out_proj.weight, std=proj_std)
        nn.init.normal_(self.mlm_head[0].weight, std=fc_std)
        nn.init.normal_(self.mlm_head[3].weight, std=proj_std)

    def forward(
        self, text_tokens: Tensor, image_tokens: Tensor, text_padding_mask: Tensor | None = None
    ) -> Tensor:
        """Predict the vocabulary distribution at every text position.

        Args:
            text_tokens: ``[B, L, W]`` float token features of the masked captions.
            image_tokens: ``[B, T, W]`` float token features of the images (CLS included).
            text_padding_mask: ``[B, L]`` bool, True at padding (ignored as keys by the
                self-attention); ``None`` if nothing is padded. Each row needs one real token.

        Returns:
            ``[B, L, V]`` logits in the dtype of the module.
        """
        if text_tokens.dim() != 3 or image_tokens.dim() != 3 or text_tokens.shape[0] != image_tokens.shape[0]:
            raise ValueError(
                "text_tokens must be [B, L, W] and image_tokens [B, T, W]; got "
                f"{tuple(text_tokens.shape)} and {tuple(image_tokens.shape)}"
            )
        image = self.image_norm(image_tokens)
        fused = self.cross_attention(self.text_norm(text_tokens), image, image, need_weights=False)[0]
        for layer in self.layers:
            fused = layer(fused, src_key_padding_mask=text_padding_mask)
        return self.mlm_head(self.output_norm(fused))


def masked_language_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over the positions whose label is not ``-100``.

    Args:
        logits: ``[B, L, V]`` float logits (any float dtype).
        labels: ``[B, L]`` int64, target ids or ``-100``, as from :func:`mask_tokens`.

    Returns:
        Scalar float32 (float64 for float64 logits): mean CE over the labelled positions;
        0 (still in the graph) if there is none, where ``F.cross_entropy`` would give NaN.

    Raises:
        ValueError: Shapes disagree.
    """
    if logits.dim() != 3 or logits.shape[:2] != labels.shape:
        raise ValueError(
            f"logits must be [B, L, V] and labels [B, L]; got {tuple(logits.shape)}, {tuple(labels.shape)}"
        )
    flat_logits = logits.reshape(-1, logits.shape[-1]).to(torch.promote_types(logits.dtype, torch.float32))
    flat_labels = labels.reshape(-1).long()
    if not bool((flat_labels != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)
