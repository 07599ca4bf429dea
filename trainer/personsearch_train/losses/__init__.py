"""Losses shared by the trainer's methods."""

from personsearch_train.losses.cluster_contrast import cluster_contrastive_loss as cluster_contrastive_loss
from personsearch_train.losses.instance_consistency import (
    self_instance_consistency as self_instance_consistency,
)
from personsearch_train.losses.instance_consistency import similarity_consistency as similarity_consistency
from personsearch_train.losses.oim import OIMLoss as OIMLoss

__all__ = ["OIMLoss", "cluster_contrastive_loss", "self_instance_consistency", "similarity_consistency"]
