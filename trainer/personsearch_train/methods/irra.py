"""``irra``: the IRRA-style text-to-image retrieval baseline (Jiang & Ye, CVPR 2023).

Losses on a batch of ``B`` image-caption pairs (methods.md 5.2, IRRA ``model/objectives.py``):

* **SDM**, similarity distribution matching: KL divergence between the softmax of the
  scaled image-text cosine matrix and the true matching distribution, in both directions
  (several positives per row when a batch holds several captions of one person);
* **ID**: one classifier shared by the image and the text global features;
* **ITC** (off by default, as in IRRA): symmetric InfoNCE over the diagonal;
* **MLM**, implicit relation reasoning (optional): captions are masked (15 %, 80/10/10),
  re-encoded, and a cross-modal module (text tokens attending to image tokens, then a
  4-layer transformer) predicts the masked tokens. Training only: inference and export
  are the two towers.

The temperature is fixed (0.02, logit scale 50). Optimiser settings (IRRA
``solver/build.py``): Adam, base rate for the pretrained text encoder, ``x5`` for modules
initialised here, biases ``x2`` without weight decay; see
:mod:`personsearch_train.methods.text_retrieval`.

Where we differ from IRRA, and why: the image tower is trained from scratch (no CLIP
weights can be had offline), the text tower is any Hugging Face encoder (MiniLM by
default) rather than CLIP's, and ignored MLM labels are ``-100`` (id 0 is ``[PAD]`` in
BERT vocabularies, a real token in CLIP's).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from personsearch_train.errors import ConfigError
from personsearch_train.losses.image_text_contrastive import image_text_contrastive
from personsearch_train.losses.masked_language import (
    CrossModalMaskedLanguageHead,
    mask_tokens,
    masked_language_loss,
)
from personsearch_train.losses.shared_identity import SharedIdentityClassifier
from personsearch_train.losses.similarity_distribution import similarity_distribution_matching
from personsearch_train.methods.base import MethodLosses, TrainingData
from personsearch_train.methods.registry import register_method
from personsearch_train.methods.text_retrieval import TextRetrievalMethod

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.models.dual_encoder import PairTrainingOutputs

__all__ = ["IRRA", "IRRAArgs", "IRRALosses"]


@dataclass(frozen=True)
class IRRAArgs:
    """Settings of ``irra`` (``method_args`` in a recipe).

    Attributes:
        temperature: Softmax temperature of SDM and ITC (IRRA: 0.02, fixed).
        sdm_weight: Weight of SDM.
        id_weight: Weight of the shared-classifier ID loss (0 disables it).
        itc_weight: Weight of ITC (IRRA: off).
        mlm_weight: Weight of the MLM loss (0 disables the cross-modal module).
        mlm_probability: Share of real tokens selected for masking (0.15).
        mlm_depth: Transformer layers of the cross-modal module (IRRA ``cmt_depth``: 4).
        mlm_heads: Its attention heads (8).
        augment: Flip, pad-and-crop and random erasing of the training crops.
        new_module_lr_factor: Learning-rate factor of modules initialised here (IRRA: 5).
        bias_lr_factor: Learning-rate factor of biases (IRRA: 2).
        bias_weight_decay: Weight decay of biases (IRRA: 0).
    """

    temperature: float = 0.02
    sdm_weight: float = 1.0
    id_weight: float = 1.0
    itc_weight: float = 0.0
    mlm_weight: float = 1.0
    mlm_probability: float = 0.15
    mlm_depth: int = 4
    mlm_heads: int = 8
    augment: bool = True
    new_module_lr_factor: float = 5.0
    bias_lr_factor: float = 2.0
    bias_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ConfigError(f"method_args.temperature must be positive, got {self.temperature}")
        # Every loss weight, this class's and a subclass's (CFAM adds its own).
        for name in (f.name for f in fields(self) if f.name.endswith("_weight")):
            if getattr(self, name) < 0:
                raise ConfigError(f"method_args.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.mlm_probability < 1:
            raise ConfigError(f"method_args.mlm_probability must be in (0, 1), got {self.mlm_probability}")


class IRRALosses(MethodLosses):
    """SDM + ID (+ ITC) (+ MLM) on a dual encoder's pair outputs.

    Args:
        args: The method's settings.
        feature_dim: Width of the towers' global features and tokens.
        num_classes: Training identities (the ID classifier's outputs).
        vocab_size: The tokenizer's vocabulary size (the MLM head's outputs).
        mask_token_id: The tokenizer's mask token (required when MLM is on).
        special_token_ids: Ids never masked nor drawn as random replacements.
    """

    def __init__(
        self,
        args: Any,
        *,
        feature_dim: int,
        num_classes: int,
        vocab_size: int,
        mask_token_id: int | None,
        special_token_ids: frozenset[int],
    ) -> None:
        super().__init__()
        self.args = args
        self.logit_scale = 1.0 / float(args.temperature)
        self.identity = (
            SharedIdentityClassifier(embed_dim=feature_dim, num_classes=num_classes)
            if args.id_weight > 0
            else None
        )
        self.mlm_head = None
        if args.mlm_weight > 0:
            if mask_token_id is None:
                raise ConfigError(
                    "method_args.mlm_weight > 0 but the tokenizer has no mask token; set mlm_weight: 0 "
                    "or use a tokenizer with [MASK]"
                )
            self.mlm_head = CrossModalMaskedLanguageHead(
                width=feature_dim, vocab_size=vocab_size, heads=args.mlm_heads, depth=args.mlm_depth
            )
        self.vocab_size = int(vocab_size)
        self.mask_token_id = mask_token_id
        self.special_token_ids = frozenset(int(i) for i in special_token_ids)

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: PairTrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """``loss_sdm``, ``loss_id``, ``loss_itc``, ``loss_mlm`` (those with weight > 0)."""
        args = self.args
        image_global = outputs.image.embedding.float()
        text_global = outputs.text.embedding.float()
        losses: dict[str, Tensor] = {}
        if args.sdm_weight > 0:
            losses["loss_sdm"] = args.sdm_weight * similarity_distribution_matching(
                image_global, text_global, outputs.pids, logit_scale=self.logit_scale
            )
        if args.itc_weight > 0:
            losses["loss_itc"] = args.itc_weight * image_text_contrastive(
                image_global, text_global, logit_scale=self.logit_scale
            )
        if self.identity is not None:
            losses["loss_id"] = args.id_weight * self.identity(
                outputs.image.features.float(), outputs.text.features.float(), outputs.pids
            )
        if self.mlm_head is not None:
            masked, labels = mask_tokens(
                outputs.input_ids,
                outputs.attention_mask,
                mask_token_id=int(self.mask_token_id),  # type: ignore[arg-type]
                vocab_size=self.vocab_size,
                special_token_ids=self.special_token_ids,
                probability=args.mlm_probability,
            )
            masked_text = model.text_outputs(masked, outputs.attention_mask)
            logits = self.mlm_head(masked_text.tokens, outputs.image.tokens, masked_text.padding_mask)
            losses["loss_mlm"] = args.mlm_weight * masked_language_loss(logits, labels)
        return losses


def build_irra_losses(args: Any, model: nn.Module, data: TrainingData) -> IRRALosses:
    """IRRA's losses sized by the model's tokenizer and the training identities."""
    tokenizer = model.tokenizer
    return IRRALosses(
        args,
        feature_dim=int(model.feature_dim),
        num_classes=max(1, data.num_identities),
        vocab_size=int(tokenizer.vocab_size),
        mask_token_id=tokenizer.mask_token_id,
        special_token_ids=tokenizer.special_token_ids,
    )


@register_method
class IRRA(TextRetrievalMethod):
    """Text-to-image person retrieval baseline: SDM + shared ID (+ MLM) on a dual encoder."""

    name = "irra"
    summary = "text-to-image retrieval baseline (IRRA): SDM + shared-classifier ID + optional MLM"
    Args = IRRAArgs

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> IRRALosses:
        """SDM, ID and the optional ITC / MLM terms."""
        return build_irra_losses(self.args, model, data)
