"""Shared parts of the weakly supervised methods (R-SiamNet, SSL, CGPS, PPS).

These methods train without identity labels (``data.use_identities: false``) and
build their own supervision each epoch from the same pieces:

* :func:`extract_box_features`: embed every ground-truth box of the training set;
* :func:`cluster_features`: group those embeddings into pseudo identities (DBSCAN);
* :func:`first_neighbour_clusters`: R-SiamNet's parameter-free first-neighbour clustering;
* :func:`self_paced_clusters`: CGPS's (after SpCL) k-reciprocal Jaccard DBSCAN with the
  same-image split and the cluster reliability criterion (:class:`SelfPacedClusters`);
* :class:`PseudoLabelReport`: per-epoch pair precision/recall of pseudo labels against
  identities training never sees, written to the run folder and plotted;
* :class:`MemoryBank`: a momentum feature memory the contrastive losses compare with;
* :class:`PersonRows`: where each annotated training person lives in such a memory;
* :func:`crop_people`: cut the boxes out of the scene images for an instance (crop)
  branch that is trained through, so its gradients reach the images;
* :func:`require_crop_encoder`: the check that a model can embed such crops.

A method wires them together in its hook, a
:class:`~personsearch_train.methods.pseudo_label_hook.PseudoLabelHook`.
"""

from personsearch_train.weak_supervision.clustering import cluster_features as cluster_features
from personsearch_train.weak_supervision.clustering import (
    first_neighbour_clusters as first_neighbour_clusters,
)
from personsearch_train.weak_supervision.crops import crop_people as crop_people
from personsearch_train.weak_supervision.crops import embed_person_crops as embed_person_crops
from personsearch_train.weak_supervision.crops import (
    frozen_running_statistics as frozen_running_statistics,
)
from personsearch_train.weak_supervision.crops import require_crop_encoder as require_crop_encoder
from personsearch_train.weak_supervision.features import BoxFeatures as BoxFeatures
from personsearch_train.weak_supervision.features import extract_box_features as extract_box_features
from personsearch_train.weak_supervision.memory_bank import MemoryBank as MemoryBank
from personsearch_train.weak_supervision.person_rows import PersonRows as PersonRows
from personsearch_train.weak_supervision.person_rows import box_counts as box_counts
from personsearch_train.weak_supervision.person_rows import hidden_identities as hidden_identities
from personsearch_train.weak_supervision.person_rows import rows_of_targets as rows_of_targets
from personsearch_train.weak_supervision.pseudo_label_quality import PairScores as PairScores
from personsearch_train.weak_supervision.pseudo_label_quality import PseudoLabelReport as PseudoLabelReport
from personsearch_train.weak_supervision.pseudo_label_quality import (
    pair_precision_recall as pair_precision_recall,
)
from personsearch_train.weak_supervision.self_paced_clustering import (
    SelfPacedClusters as SelfPacedClusters,
)
from personsearch_train.weak_supervision.self_paced_clustering import (
    jaccard_distance as jaccard_distance,
)
from personsearch_train.weak_supervision.self_paced_clustering import (
    reliability_filter as reliability_filter,
)
from personsearch_train.weak_supervision.self_paced_clustering import (
    self_paced_clusters as self_paced_clusters,
)
from personsearch_train.weak_supervision.self_paced_clustering import (
    split_same_image as split_same_image,
)

__all__ = [
    "BoxFeatures",
    "MemoryBank",
    "PairScores",
    "PersonRows",
    "PseudoLabelReport",
    "SelfPacedClusters",
    "cluster_features",
    "crop_people",
    "box_counts",
    "extract_box_features",
    "first_neighbour_clusters",
    "frozen_running_statistics",
    "hidden_identities",
    "jaccard_distance",
    "pair_precision_recall",
    "rows_of_targets",
    "reliability_filter",
    "require_crop_encoder",
    "self_paced_clusters",
    "split_same_image",
]
