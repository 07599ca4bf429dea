"""Shared parts of the weakly supervised methods (R-SiamNet, SSL, CGPS, PPS).

These methods train without identity labels (``data.use_identities: false``) and
build their own supervision each epoch from the same pieces:

* :func:`extract_box_features`: embed every ground-truth box of the training set;
* :func:`cluster_features`: group those embeddings into pseudo identities (DBSCAN);
* :func:`first_neighbour_clusters`: R-SiamNet's parameter-free first-neighbour clustering;
* :class:`PseudoLabelReport`: per-epoch pair precision/recall of pseudo labels against
  identities training never sees, written to the run folder and plotted;
* :class:`MemoryBank`: a momentum feature memory the contrastive losses compare with;
* :func:`crop_people`: cut the boxes out of the scene images for an instance (crop)
  branch that is trained through, so its gradients reach the images.

A method wires them together in its :class:`~personsearch_train.engine.hooks.TrainingHook`.
"""

from personsearch_train.weak_supervision.clustering import cluster_features as cluster_features
from personsearch_train.weak_supervision.clustering import (
    first_neighbour_clusters as first_neighbour_clusters,
)
from personsearch_train.weak_supervision.crops import crop_people as crop_people
from personsearch_train.weak_supervision.features import BoxFeatures as BoxFeatures
from personsearch_train.weak_supervision.features import extract_box_features as extract_box_features
from personsearch_train.weak_supervision.memory_bank import MemoryBank as MemoryBank
from personsearch_train.weak_supervision.pseudo_label_quality import PairScores as PairScores
from personsearch_train.weak_supervision.pseudo_label_quality import PseudoLabelReport as PseudoLabelReport
from personsearch_train.weak_supervision.pseudo_label_quality import (
    pair_precision_recall as pair_precision_recall,
)

__all__ = [
    "BoxFeatures",
    "MemoryBank",
    "PairScores",
    "PseudoLabelReport",
    "cluster_features",
    "crop_people",
    "extract_box_features",
    "first_neighbour_clusters",
    "pair_precision_recall",
]
