"""``cfam``: Cross-modal Fine-grained Aligning and Matching (UFineBench, Zuo et al., CVPR 2024).

What the paper's abstract says: a **shared cross-modal granularity decoder** and a **hard
negative match mechanism**, on top of a dual encoder, for ultra-fine captions. Its body
and code are not public; the design below is ours, every size and weight is a recipe
setting (``model.overrides`` for the decoder, ``method_args`` for the losses).

Model: a :class:`~personsearch_train.models.dual_encoder.DualEncoder` with
``granularity_queries = K > 0``: ``K`` fine queries and one coarse query, decoded by one
transformer decoder whose weights serve both modalities
(:mod:`personsearch_train.text.granularity_decoder`). The retrieval embedding folds the
global, coarse and fine embeddings into one vector, so inference and export stay two
independent towers.

Losses on a batch of pairs (logit scale ``1 / temperature``):

* the IRRA baseline's terms on the global embeddings: SDM and the shared ID classifier
  (MLM optional, as there; :mod:`personsearch_train.methods.irra`);
* **coarse alignment**: SDM between the coarse-query embeddings of images and captions;
* **fine alignment**: SDM on the fine similarity, the mean over queries of the
  query-to-same-query cosines, so each query must agree across modalities on its own;
* **retrieval alignment** (``retrieval_weight``, off by default): SDM on the folded
  retrieval embedding itself, the one inference ranks by. Its cosine is the weighted mean
  of the parts' cosines, so this term trains the parts to agree where they are combined,
  and at the same temperature it asks each part for a wider gap between positives and
  negatives than its own term does (a part's gap counts at its share of the fold);
* **hard-negative matching**: for each image the most similar caption of another person
  (and for each caption such an image), drawn from the batch similarity of the
  retrieval embeddings (softmax over negatives, ALBEF's sampling); a matching head
  (caption tokens attending to image tokens, training only) classifies the ``B``
  positive and ``2B`` hard negative pairs.

Setting ``model.overrides.granularity_queries: 0`` (no decoder) or
``method_args.matching_weight: 0`` removes one part, which is how
``benchmarks/cfam_ablation.py`` measures them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from personsearch_train.losses.hard_negative_matching import MatchingHead, hard_negative_matching_loss
from personsearch_train.losses.similarity_distribution import similarity_distribution_matching
from personsearch_train.methods.base import MethodLosses, TrainingData
from personsearch_train.methods.irra import IRRAArgs, IRRALosses, build_irra_losses
from personsearch_train.methods.registry import register_method
from personsearch_train.methods.text_retrieval import TextRetrievalMethod
from personsearch_train.text.granularity_decoder import concatenated_parts

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.models.dual_encoder import PairTrainingOutputs

__all__ = ["CFAM", "CFAMArgs", "CFAMLosses"]


@dataclass(frozen=True)
class CFAMArgs(IRRAArgs):
    """Settings of ``cfam`` (``method_args`` in a recipe): IRRA's (:class:`IRRAArgs`) plus its own.

    The IRRA settings apply to the global embeddings, as there; MLM is off by default.

    Attributes:
        mlm_weight: Weight of the MLM loss (0: no cross-modal MLM module).
        coarse_weight: Weight of SDM on the coarse-query embeddings.
        fine_weight: Weight of SDM on the fine (per-query) similarity.
        retrieval_weight: Weight of SDM on the folded retrieval embedding (0: off).
        matching_weight: Weight of the hard-negative matching loss (0 disables it).
        matching_depth: Cross-attention layers of the matching head.
        matching_heads: Its attention heads.
        sample_negatives: Draw hard negatives by softmax over the negatives' similarity
            (ALBEF); False takes the single hardest.
    """

    mlm_weight: float = 0.0
    coarse_weight: float = 1.0
    fine_weight: float = 1.0
    retrieval_weight: float = 0.0
    matching_weight: float = 1.0
    matching_depth: int = 1
    matching_heads: int = 8
    sample_negatives: bool = True


class CFAMLosses(MethodLosses):
    """IRRA's terms plus granularity alignment and hard-negative matching.

    Args:
        args: The method's settings.
        baseline: The IRRA terms on the global embeddings.
        feature_dim: Width of the towers' tokens (the matching head's width).
    """

    def __init__(self, args: CFAMArgs, *, baseline: IRRALosses, feature_dim: int) -> None:
        super().__init__()
        self.args = args
        self.baseline = baseline
        self.logit_scale = 1.0 / float(args.temperature)
        self.matching_head = (
            MatchingHead(width=feature_dim, heads=args.matching_heads, depth=args.matching_depth)
            if args.matching_weight > 0
            else None
        )

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: PairTrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """The baseline's terms, ``loss_coarse``, ``loss_fine``, ``loss_retrieval`` and ``loss_match``."""
        args = self.args
        losses = self.baseline(model, outputs, images, targets)
        image_parts, text_parts = outputs.image_granularity, outputs.text_granularity
        if image_parts is not None and text_parts is not None:
            if args.coarse_weight > 0:
                losses["loss_coarse"] = args.coarse_weight * similarity_distribution_matching(
                    image_parts.coarse, text_parts.coarse, outputs.pids, logit_scale=self.logit_scale
                )
            if args.fine_weight > 0:
                losses["loss_fine"] = args.fine_weight * similarity_distribution_matching(
                    concatenated_parts(image_parts.fine),
                    concatenated_parts(text_parts.fine),
                    outputs.pids,
                    logit_scale=self.logit_scale,
                )
            if args.retrieval_weight > 0:
                losses["loss_retrieval"] = args.retrieval_weight * similarity_distribution_matching(
                    outputs.image_embedding,
                    outputs.text_embedding,
                    outputs.pids,
                    logit_scale=self.logit_scale,
                )
        if self.matching_head is not None:
            # Scaled like the alignment terms: the miner samples from softmax(similarity).
            similarity = self.logit_scale * (
                outputs.image_embedding.float() @ outputs.text_embedding.float().t()
            )
            losses["loss_match"] = args.matching_weight * hard_negative_matching_loss(
                self.matching_head,
                outputs.image.tokens,
                outputs.text.tokens,
                outputs.text.padding_mask,
                similarity,
                outputs.pids,
                sample=args.sample_negatives,
            )
        return losses


@register_method
class CFAM(TextRetrievalMethod):
    """Fine-grained text-to-image retrieval: shared granularity decoder + hard-negative matching."""

    name = "cfam"
    summary = (
        "ultra-fine text-to-image retrieval (UFineBench CFAM): granularity decoder + hard-negative matching"
    )
    Args = CFAMArgs

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> CFAMLosses:
        """The IRRA terms, the granularity alignment terms and the matching head."""
        return CFAMLosses(
            self.args, baseline=build_irra_losses(self.args, model, data), feature_dim=int(model.feature_dim)
        )
