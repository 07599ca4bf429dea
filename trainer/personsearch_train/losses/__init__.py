"""Losses shared by the trainer's methods."""

from personsearch_train.losses.cluster_contrast import cluster_contrastive_loss as cluster_contrastive_loss
from personsearch_train.losses.hard_negative_matching import MatchingHead as MatchingHead
from personsearch_train.losses.hard_negative_matching import (
    hard_negative_matching_loss as hard_negative_matching_loss,
)
from personsearch_train.losses.hard_negative_matching import mine_hard_negatives as mine_hard_negatives
from personsearch_train.losses.hybrid_memory import (
    hard_negative_cluster_contrastive_loss as hard_negative_cluster_contrastive_loss,
)
from personsearch_train.losses.image_text_contrastive import image_text_contrastive as image_text_contrastive
from personsearch_train.losses.instance_consistency import (
    self_instance_consistency as self_instance_consistency,
)
from personsearch_train.losses.instance_consistency import similarity_consistency as similarity_consistency
from personsearch_train.losses.masked_language import (
    CrossModalMaskedLanguageHead as CrossModalMaskedLanguageHead,
)
from personsearch_train.losses.masked_language import mask_tokens as mask_tokens
from personsearch_train.losses.masked_language import masked_language_loss as masked_language_loss
from personsearch_train.losses.multi_label import dynamic_threshold as dynamic_threshold
from personsearch_train.losses.multi_label import multi_label_loss as multi_label_loss
from personsearch_train.losses.multi_label import same_image_multilabels as same_image_multilabels
from personsearch_train.losses.oim import OIMLoss as OIMLoss
from personsearch_train.losses.ranking import semi_hard_ranking_loss as semi_hard_ranking_loss
from personsearch_train.losses.scale_invariant import scale_invariant_loss as scale_invariant_loss
from personsearch_train.losses.shared_identity import SharedIdentityClassifier as SharedIdentityClassifier
from personsearch_train.losses.similarity_distribution import (
    similarity_distribution_matching as similarity_distribution_matching,
)
from personsearch_train.losses.triplet import triplet_with_background_loss as triplet_with_background_loss

__all__ = [
    "OIMLoss",
    "cluster_contrastive_loss",
    "dynamic_threshold",
    "hard_negative_cluster_contrastive_loss",
    "multi_label_loss",
    "same_image_multilabels",
    "scale_invariant_loss",
    "self_instance_consistency",
    "similarity_consistency",
    "triplet_with_background_loss",
    "CrossModalMaskedLanguageHead",
    "MatchingHead",
    "SharedIdentityClassifier",
    "hard_negative_matching_loss",
    "image_text_contrastive",
    "mask_tokens",
    "masked_language_loss",
    "mine_hard_negatives",
    "semi_hard_ranking_loss",
    "similarity_distribution_matching",
]
