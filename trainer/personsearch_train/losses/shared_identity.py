"""Identity classification with one classifier shared by the image and text features.

IRRA ``model/build.py`` (``classifier``) and ``model/objectives.py`` ``compute_id``
(methods.md section 5.2); UniPT's fine-tuning ID loss is the same idea. Sharing the weight
matrix makes each identity's class vector a common anchor for both modalities, which is
what pulls image and text features of one person together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SharedIdentityClassifier"]


class SharedIdentityClassifier(nn.Module):
    """One ``Linear(embed_dim, num_classes)`` applied to both modalities; returns the ID loss.

    Initialised as IRRA: weight ``N(0, 0.001^2)``, bias 0.

    Args:
        embed_dim: ``D``, width of the global features.
        num_classes: Number of training identities; pids must lie in ``[0, num_classes)``.
    """

    def __init__(self, *, embed_dim: int, num_classes: int) -> None:
        super().__init__()
        if embed_dim <= 0 or num_classes <= 0:
            raise ValueError(f"embed_dim and num_classes must be > 0; got {embed_dim}, {num_classes}")
        self.num_classes = num_classes
        self.classifier = nn.Linear(embed_dim, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, image_features: Tensor, text_features: Tensor, pids: Tensor) -> Tensor:
        """``(CE(W x_img + b, pid) + CE(W x_txt + b, pid)) / 2``.

        Args:
            image_features: ``[B, D]`` float global image features (not normalised).
            text_features: ``[B, D]`` float global text features of the same pairs.
            pids: ``[B]`` int64 identities in ``[0, num_classes)``.

        Returns:
            Scalar float32 (float64 if the classifier is float64); 0 for an empty batch
            (still in the graph).

        Raises:
            ValueError: Shapes disagree, or a pid is outside ``[0, num_classes)``.
        """
        if image_features.dim() != 2 or image_features.shape != text_features.shape:
            raise ValueError(
                "image and text features must be [B, D] of one shape; got "
                f"{tuple(image_features.shape)} and {tuple(text_features.shape)}"
            )
        if pids.shape != (image_features.shape[0],):
            raise ValueError(f"pids must be [B] = [{image_features.shape[0]}]; got {tuple(pids.shape)}")
        # Features are cast to the classifier's dtype (IRRA keeps it in fp16) and the CE
        # is taken in at least float32.
        weight_dtype = self.classifier.weight.dtype
        loss_dtype = torch.promote_types(weight_dtype, torch.float32)
        image_logits = self.classifier(image_features.to(weight_dtype)).to(loss_dtype)
        text_logits = self.classifier(text_features.to(weight_dtype)).to(loss_dtype)
        if pids.numel() == 0:
            return (image_logits.sum() + text_logits.sum()) * 0.0
        bad = (pids < 0) | (pids >= self.num_classes)
        if bool(bad.any()):
            raise ValueError(
                f"pid {int(pids[bad][0])} is outside [0, {self.num_classes}) "
                "(the classifier has one row per training identity)"
            )
        targets = pids.long()
        return (F.cross_entropy(image_logits, targets) + F.cross_entropy(text_logits, targets)) / 2
