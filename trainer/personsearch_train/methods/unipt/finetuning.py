"""``unipt_finetune``: UniPT's fine-tuning on a text-person dataset (paper section 4.2).

``L_ft = L_id + L_rk + gamma * L_pgu`` (gamma = 1), on a batch of ``B`` image-caption pairs:

* **ID**: one classifier shared by the image and the text global features (IRRA's
  :class:`~personsearch_train.losses.shared_identity.SharedIdentityClassifier`);
* **ranking**: bidirectional hinge with margin 0.2 between each pair and a semi-hard
  negative of another identity (:func:`~personsearch_train.losses.ranking.semi_hard_ranking_loss`);
* **PGU**, prototype-based granularity unification (after LGUR): a set of learnable
  prototypes, the same for both modalities, attends to either tower's tokens and gives
  one unified feature per sample; the ID and ranking losses apply to it too.

Where the paper is silent, our choices: the prototypes are the queries of the dual
encoder's shared granularity decoder (``model.overrides.granularity_queries`` = the
number of prototypes; :mod:`personsearch_train.text.granularity_decoder`), the unified
feature is the decoder's aggregate (coarse) output, and its ID loss has its own shared
classifier applied to the unit feature scaled by ``sqrt(D)`` (a unit vector would give
logits too small for a classifier initialised at std 0.001 to learn from). The retrieval
embedding folds the global and the unified feature together (recipe
``embedding_weights: [1, 1, 0]``), so export stays two independent towers.

Optimiser (paper): Adam, the pre-trained text encoder at ``optim.lr`` (1e-5) and the
visual encoder and PGU ten times faster (``new_module_lr_factor: 10``). Start from a
UniPT pre-training run with ``--set model.init_from=RUN``: the towers load by name and
shape, the prototypes and classifiers start fresh, and the run prints the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from personsearch_train.errors import ConfigError
from personsearch_train.losses.ranking import semi_hard_ranking_loss
from personsearch_train.losses.shared_identity import SharedIdentityClassifier
from personsearch_train.methods.base import MethodLosses, TrainingData
from personsearch_train.methods.registry import register_method
from personsearch_train.methods.text_retrieval import TextRetrievalMethod

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.models.dual_encoder import PairTrainingOutputs

__all__ = ["UniPTFinetune", "UniPTFinetuneArgs", "UniPTFinetuneLosses"]


@dataclass(frozen=True)
class UniPTFinetuneArgs:
    """Settings of ``unipt_finetune`` (``method_args`` in a recipe).

    Attributes:
        id_weight: Weight of the shared-classifier ID loss on the global features.
        ranking_weight: Weight of the semi-hard ranking loss on the global embeddings.
        margin: Ranking margin ``alpha`` (paper: 0.2).
        pgu_weight: ``gamma``, weight of the PGU terms (ID + ranking on the unified
            features; paper: 1; 0 disables them, needs ``granularity_queries > 0`` otherwise).
        augment: Flip, pad-and-crop and random erasing of the training crops.
        new_module_lr_factor: Learning-rate factor of everything but the pre-trained
            text encoder (paper: 1e-4 / 1e-5 = 10).
        bias_lr_factor: Learning-rate factor of biases.
        bias_weight_decay: Weight decay of biases.
    """

    id_weight: float = 1.0
    ranking_weight: float = 1.0
    margin: float = 0.2
    pgu_weight: float = 1.0
    augment: bool = True
    new_module_lr_factor: float = 10.0
    bias_lr_factor: float = 1.0
    bias_weight_decay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("id_weight", "ranking_weight", "pgu_weight", "margin"):
            if getattr(self, name) < 0:
                raise ConfigError(f"method_args.{name} must be >= 0, got {getattr(self, name)}")
        if self.id_weight == 0 and self.ranking_weight == 0 and self.pgu_weight == 0:
            raise ConfigError("method_args: every loss weight is 0; nothing to train")


class UniPTFinetuneLosses(MethodLosses):
    """ID + ranking on the global features, and the same on the PGU features.

    Args:
        args: The method's settings.
        feature_dim: Width ``D`` of the towers' features.
        num_classes: Training identities.
    """

    def __init__(self, args: UniPTFinetuneArgs, *, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.args = args
        self.identity = SharedIdentityClassifier(embed_dim=feature_dim, num_classes=num_classes)
        self.pgu_identity = (
            SharedIdentityClassifier(embed_dim=feature_dim, num_classes=num_classes)
            if args.pgu_weight > 0
            else None
        )
        self.pgu_scale = math.sqrt(feature_dim)

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: PairTrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """``loss_id``, ``loss_rank``, ``loss_pgu_id``, ``loss_pgu_rank`` (those with weight > 0)."""
        args = self.args
        pids = outputs.pids
        losses: dict[str, Tensor] = {}
        if args.id_weight > 0:
            losses["loss_id"] = args.id_weight * self.identity(
                outputs.image.features.float(), outputs.text.features.float(), pids
            )
        if args.ranking_weight > 0:
            losses["loss_rank"] = args.ranking_weight * semi_hard_ranking_loss(
                outputs.image.embedding, outputs.text.embedding, pids, margin=args.margin
            )
        if self.pgu_identity is not None:
            image_unified = outputs.image_granularity
            text_unified = outputs.text_granularity
            if image_unified is None or text_unified is None:
                raise ConfigError(
                    "method_args.pgu_weight > 0 needs the prototypes: set "
                    "model.overrides.granularity_queries to the number of prototypes (e.g. 4), "
                    "or pgu_weight: 0"
                )
            losses["loss_pgu_id"] = args.pgu_weight * self.pgu_identity(
                image_unified.coarse * self.pgu_scale, text_unified.coarse * self.pgu_scale, pids
            )
            losses["loss_pgu_rank"] = args.pgu_weight * semi_hard_ranking_loss(
                image_unified.coarse, text_unified.coarse, pids, margin=args.margin
            )
        return losses


@register_method
class UniPTFinetune(TextRetrievalMethod):
    """UniPT fine-tuning: shared-classifier ID + semi-hard ranking + PGU on a dual encoder."""

    name = "unipt_finetune"
    summary = "UniPT fine-tuning: shared ID + semi-hard ranking (margin 0.2) + PGU prototypes"
    Args = UniPTFinetuneArgs

    def build_losses(
        self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData
    ) -> UniPTFinetuneLosses:
        """The ID classifiers sized by the training identities."""
        return UniPTFinetuneLosses(
            self.args, feature_dim=int(model.feature_dim), num_classes=max(1, data.num_identities)
        )
