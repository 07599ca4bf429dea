"""Losses shared by the trainer's methods."""

from personsearch_train.losses.cluster_contrast import cluster_contrastive_loss as cluster_contrastive_loss
from personsearch_train.losses.hybrid_memory import (
    hard_negative_cluster_contrastive_loss as hard_negative_cluster_contrastive_loss,
)
from personsearch_train.losses.instance_consistency import (
    self_instance_consistency as self_instance_consistency,
)
from personsearch_train.losses.instance_consistency import similarity_consistency as similarity_consistency
from personsearch_train.losses.multi_label import dynamic_threshold as dynamic_threshold
from personsearch_train.losses.multi_label import multi_label_loss as multi_label_loss
from personsearch_train.losses.multi_label import same_image_multilabels as same_image_multilabels
from personsearch_train.losses.oim import OIMLoss as OIMLoss
from personsearch_train.losses.scale_invariant import scale_invariant_loss as scale_invariant_loss
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
]
