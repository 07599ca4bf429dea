"""The transformer block the text-retrieval models share: pre-norm, GELU, 4x MLP, no dropout.

IRRA's cross-modal MLM module, the hard-negative matching head, CFAM's granularity
decoder and the ViT image tower all use this configuration of PyTorch's layers (the
CLIP-style block: LayerNorm before attention and MLP, ``batch_first`` sequences); one
definition keeps them the same block.
"""

from __future__ import annotations

from torch import nn

__all__ = ["pre_norm_decoder_layer", "pre_norm_encoder_layer"]


def pre_norm_encoder_layer(width: int, heads: int) -> nn.TransformerEncoderLayer:
    """A self-attention block on ``[B, L, width]`` sequences (pre-norm, GELU, MLP ``4 * width``)."""
    return nn.TransformerEncoderLayer(
        width,
        heads,
        dim_feedforward=4 * width,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )


def pre_norm_decoder_layer(width: int, heads: int) -> nn.TransformerDecoderLayer:
    """A self- then cross-attention block on ``[B, L, width]`` sequences (pre-norm, GELU, 4x MLP)."""
    return nn.TransformerDecoderLayer(
        width,
        heads,
        dim_feedforward=4 * width,
        dropout=0.0,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
