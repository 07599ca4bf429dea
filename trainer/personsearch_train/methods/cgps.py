"""``cgps``: weakly supervised person search by context-guided cluster contrast (Yan et al., AAAI 2022).

The model is the one-step SeqNet detector with its detection losses; no identity label
is read. Every annotated person of the training set is its own *instance*, with one row
in a momentum memory (the "hybrid memory" CGPS takes from SpCL):

* **Memory initialisation** before the first step: every ground-truth box of the
  training set is embedded by the model as built (CGPS runs its ImageNet-initialised
  detector on the boxes) and the rows are set to those embeddings.
* **Pseudo identities** before every epoch, from the memory
  (:func:`~personsearch_train.weak_supervision.self_paced_clusters`): k-reciprocal
  Jaccard distance (k1 30, k2 6), DBSCAN at eps 0.68 / 0.70 / 0.72, SpCL's reliability
  criterion, and the scene-context rule that two people of one image are never one
  identity (the duplicate closest to its cluster's centre keeps the label).
* **Losses** on head 2's sampled RoIs that matched a person (each RoI takes its
  person's memory row and label): the cluster contrastive loss with hard-negative
  filtering (temperature 0.05, negatives up to 60 % of the probability mass;
  :func:`~personsearch_train.losses.hard_negative_cluster_contrastive_loss`) and the
  triplet loss whose second term ranks background RoIs below the hardest positive
  (margin 0.3, weight 0.25; :func:`~personsearch_train.losses.triplet_with_background_loss`).

Choices where the code and our trainer differ, and ours:

* **Detector**: CGPS trains an MMDetection C4 Faster R-CNN with a 256-d embedding of
  res4 and res5 RoI features; here the recipe's SeqNet (its NAE embedding on head 2) is
  trained, so the weakly supervised methods of this package share one model and export.
* **Memory updates**: CGPS updates a row once per RoI inside a step; here the RoIs of a
  person in one step are averaged first and the row updated once
  (``m <- 0.2 m + 0.8 mean(x)``, re-normalised), which does not depend on RoI order and
  gives every person of the step one update, as the all-gathered multi-process case
  needs anyway.
* **Clustered features**: the memory (as CGPS), not a fresh extraction, so an epoch
  costs one clustering of ``N`` rows and no extra forward passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.losses.hybrid_memory import hard_negative_cluster_contrastive_loss
from personsearch_train.losses.oim import gather_across_ranks
from personsearch_train.losses.triplet import triplet_with_background_loss
from personsearch_train.methods.base import (
    MethodLosses,
    TrainingData,
    TrainingMethod,
    refuse_identity_supervision,
)
from personsearch_train.methods.pseudo_label_hook import PseudoLabelHook
from personsearch_train.methods.registry import register_method
from personsearch_train.models.structures import TrainingOutputs
from personsearch_train.weak_supervision.features import extract_box_features
from personsearch_train.weak_supervision.memory_bank import MemoryBank
from personsearch_train.weak_supervision.person_rows import PersonRows, box_counts, hidden_identities
from personsearch_train.weak_supervision.self_paced_clustering import self_paced_clusters

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.engine.loop import Trainer

__all__ = [
    "CGPS",
    "CGPSArgs",
    "CGPSLosses",
    "ClusteringSettings",
    "SelfPacedClusterHook",
    "contrast_top_percent",
]


@dataclass(frozen=True)
class ClusteringSettings:
    """The self-paced DBSCAN clustering both CGPS and SSL relabel their memories with.

    Attributes:
        eps: DBSCAN radii of the tight, normal and loose clusterings (Jaccard distance).
        min_samples: DBSCAN core-point size.
        k1: k-reciprocal neighbours of the Jaccard distance.
        k2: Neighbours averaged in its local query expansion.
        independence_quantile: Position in the sorted per-cluster independence scores
            that sets the reliability threshold at the first clustering.
        instance_epochs: Epochs before the first clustering in which every person is
            its own pseudo identity. 0 in the papers, whose models start from ImageNet
            weights; a model trained from scratch embeds everyone alike at first, and
            DBSCAN then joins thousands of people into a few clusters it never recovers
            from (measured on the synthetic CUHK-SYSU-format set: pair precision 0.002 at
            the first clustering). Instance discrimination first gives clustering
            features to work with.
    """

    eps: list[float] = field(default_factory=lambda: [0.68, 0.70, 0.72])
    min_samples: int = 4
    k1: int = 30
    k2: int = 6
    independence_quantile: float = 0.9
    instance_epochs: int = 0

    def __post_init__(self) -> None:
        eps = [float(e) for e in self.eps]
        if len(eps) != 3 or not 0 < eps[0] <= eps[1] <= eps[2]:
            raise ConfigError(
                f"method_args.clustering.eps must be three increasing positive radii, got {self.eps!r}"
            )
        object.__setattr__(self, "eps", eps)
        if self.instance_epochs < 0:
            raise ConfigError(
                f"method_args.clustering.instance_epochs must be >= 0, got {self.instance_epochs}"
            )
        if self.min_samples < 1 or self.k1 < 1 or self.k2 < 1:
            raise ConfigError("method_args.clustering.min_samples, k1 and k2 must be >= 1")
        if not 0.0 < self.independence_quantile <= 1.0:
            raise ConfigError(
                "method_args.clustering.independence_quantile must be in (0, 1], "
                f"got {self.independence_quantile}"
            )


@dataclass(frozen=True)
class CGPSArgs:
    """Settings of ``cgps`` (``method_args`` in a recipe); defaults are the paper's.

    Attributes:
        temperature: Softmax temperature of the cluster contrastive loss (0.05).
        top_percent: Share of the negative clusters' probability mass kept (0.6).
        contrast_weight: Weight of the cluster contrastive loss.
        triplet_weight: Weight of the triplet loss (1).
        margin: Triplet margin (0.3).
        background_weight: Weight of the background ranking term inside it (0.25).
        momentum: Old row's weight in a memory update (0.2).
        clustering: The per-epoch clustering.
        extract_batch_size: Scenes per forward when the memory is initialised.
    """

    temperature: float = 0.05
    top_percent: float = 0.6
    contrast_weight: float = 1.0
    triplet_weight: float = 1.0
    margin: float = 0.3
    background_weight: float = 0.25
    momentum: float = 0.2
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)
    extract_batch_size: int = 4

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"method_args.temperature must be > 0, got {self.temperature}")
        if not 0.0 < self.top_percent <= 1.0:
            raise ConfigError(f"method_args.top_percent must be in (0, 1], got {self.top_percent}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"method_args.momentum must be in [0, 1), got {self.momentum}")
        if min(self.contrast_weight, self.triplet_weight, self.background_weight, self.margin) < 0:
            raise ConfigError(
                "method_args.contrast_weight, triplet_weight, background_weight and margin must be >= 0"
            )
        if self.extract_batch_size <= 0:
            raise ConfigError(f"method_args.extract_batch_size must be > 0, got {self.extract_batch_size}")


def update_memory_by_row(memory: MemoryBank, rows: Tensor, features: Tensor) -> None:
    """Momentum-update ``memory`` with the mean feature of each row (all ranks' rows).

    Args:
        memory: The memory.
        rows: ``[K]`` int64 row of each feature (repeats allowed).
        features: ``[K, D]`` float unit-norm features (detached here).
    """
    features, rows = gather_across_ranks(features.detach().float(), rows)
    if rows.numel() == 0:
        return
    unique, inverse = torch.unique(rows, return_inverse=True)
    sums = features.new_zeros((len(unique), features.shape[1])).index_add_(0, inverse, features)
    memory.update(unique, F.normalize(sums, dim=1))


def contrast_top_percent(top_percent: float, *, instance_only: bool) -> float:
    """The negative mass the cluster contrast keeps: all of it while every person is its own cluster.

    Hard-negative filtering keeps the instances most similar to a person; before any
    clustering those are, more often than not, the same person seen in other images,
    and pushing them away would teach the opposite of re-identification. Measured on
    the synthetic CUHK-SYSU-format set: two instance epochs with the filter on left the
    nearest other-image neighbour of a person the same identity 2.2 % of the time, below
    the untrained model's 3.1 %.
    """
    return 1.0 if instance_only else top_percent


class CGPSLosses(MethodLosses):
    """CGPS's cluster contrastive and triplet losses on the batch's person RoIs, and its memory.

    Args:
        boxes_per_item: ``[I]`` int64 annotated people of each training item.
        dim: Embedding size ``D``.
        args: The method's settings.

    Attributes:
        rows: Memory row of each training person.
        memory: ``N x D`` instance memory with each row's pseudo label.
    """

    def __init__(self, *, boxes_per_item: np.ndarray, dim: int, args: CGPSArgs) -> None:
        super().__init__()
        self.args = args
        self.rows = PersonRows(boxes_per_item)
        self.memory = MemoryBank(size=self.rows.size, dim=dim, momentum=args.momentum)
        self.instance_only = False

    def set_epoch(self, epoch: int) -> None:
        """Note whether ``epoch`` is an instance epoch (``clustering.instance_epochs``)."""
        self.instance_only = epoch < self.args.clustering.instance_epochs

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """``loss_cluster`` and ``loss_triplet``; the memory rows of the RoIs' people are updated after."""
        if outputs.background_embeddings is None:
            raise TrainerError("cgps needs the model's background RoI embeddings (SeqNet provides them)")
        features = outputs.person_embeddings.float()
        rows = self.rows.of_rois(outputs, targets)
        labels = self.memory.labels[rows]
        # A copy: the update below changes the memory in place, which autograd would
        # otherwise see as a modified input of this step's graph.
        memory = self.memory.features.clone()
        terms = {
            "loss_cluster": self.args.contrast_weight
            * hard_negative_cluster_contrastive_loss(
                features,
                memory,
                self.memory.labels,
                labels,
                temperature=self.args.temperature,
                top_percent=contrast_top_percent(self.args.top_percent, instance_only=self.instance_only),
            ),
            "loss_triplet": self.args.triplet_weight
            * triplet_with_background_loss(
                features,
                labels,
                outputs.background_embeddings.float(),
                margin=self.args.margin,
                background_weight=self.args.background_weight,
            ),
        }
        update_memory_by_row(self.memory, rows, features)
        return terms


class SelfPacedClusterHook(PseudoLabelHook):
    """Initialise a memory from the model before training, relabel it by clustering every epoch.

    Runs before every epoch's first step; a run resumed inside an epoch keeps the labels
    its checkpoint holds. The reliability threshold set at the first clustering is kept
    (and saved) for the later ones, as SpCL does. Each epoch's clusters are reported in
    ``pseudo_labels.jsonl`` and ``plots/pseudo_labels.png`` of the run folder.

    Args:
        memory: The memory whose ``labels`` are set.
        image_of_row: ``[N]`` int64 training item of each row (the same-image rule).
        initialise: Called with the trainer before the first epoch to fill the memories.
        cluster_source: Returns the ``[N, D]`` features to cluster (the memory itself for
            CGPS, SSL's mean of two memories).
        settings: The clustering settings.
        hidden_identities: ``[N]`` int64 identities for the report only (``-1``
            unlabelled), or None.
        title: The method's name on the report's plot.
        on_epoch: Called with the epoch before anything else (SSL's threshold schedule).
        extra_scores: Returns more scores for the epoch's report row, after the labels
            are set (SSL's multi-label precision and recall).
    """

    def __init__(
        self,
        *,
        memory: MemoryBank,
        image_of_row: Tensor,
        initialise: Callable[[Trainer], None],
        cluster_source: Callable[[], Tensor],
        settings: ClusteringSettings,
        hidden_identities: np.ndarray | None,
        title: str,
        on_epoch: Callable[[int], None] | None = None,
        extra_scores: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        super().__init__(title=title, hidden_identities=hidden_identities)
        self.memory = memory
        self.image_of_row = image_of_row
        self.initialise = initialise
        self.cluster_source = cluster_source
        self.settings = settings
        self.on_epoch = on_epoch
        self.extra_scores = extra_scores
        self.independence_threshold: float | None = None

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Fill the memory before the first epoch, then cluster (unless resumed labels are this epoch's)."""
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        if self.clustered_epoch == epoch:
            return
        if self.clustered_epoch < 0:
            self.initialise(trainer)
        self.assign_labels(epoch, log=trainer.dist.is_main)

    def assign_labels(self, epoch: int, *, log: bool = False) -> np.ndarray:
        """Cluster (or, in the instance epochs, one identity per person), label the memory's rows and report.

        Returns:
            The ``[N]`` int64 labels.
        """
        s = self.settings
        if epoch < s.instance_epochs:
            labels = np.arange(self.memory.labels.numel(), dtype=np.int64)
            detail = "instance epoch: every person its own identity"
        else:
            result = self_paced_clusters(
                self.cluster_source(),
                self.image_of_row,
                eps=(s.eps[0], s.eps[1], s.eps[2]),
                min_samples=s.min_samples,
                k1=s.k1,
                k2=s.k2,
                independence_threshold=self.independence_threshold,
                independence_quantile=s.independence_quantile,
            )
            self.independence_threshold = float(result.independence_threshold)
            labels = result.labels
            detail = (
                f"{result.outliers} outliers, {result.unreliable} unreliable, "
                f"{result.split_same_image} split from a same-image duplicate"
            )
        self.memory.labels.copy_(torch.from_numpy(labels))
        extra = self.extra_scores() if self.extra_scores is not None else None
        self.record(epoch, labels, log=log, detail=detail, extra=extra)
        return labels

    def state_dict(self) -> dict[str, Any]:
        """The epoch the labels are for, the reliability threshold and the report so far."""
        return {**super().state_dict(), "independence_threshold": self.independence_threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        super().load_state_dict(state)
        threshold = state["independence_threshold"]
        self.independence_threshold = None if threshold is None else float(threshold)


@register_method
class CGPS(TrainingMethod):
    """CGPS: instance memory, self-paced DBSCAN pseudo identities, hard-negative cluster contrast."""

    name = "cgps"
    summary = "weakly supervised (boxes only): CGPS context-guided cluster contrast with a hybrid memory"
    Args = CGPSArgs
    reads_identities = False

    def __init__(self, args: CGPSArgs) -> None:
        super().__init__(args)
        self._losses: CGPSLosses | None = None

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Refuse identity labels and mixed sources.

        Raises:
            ConfigError: Naming the key.
        """
        super().check_config(cfg)
        refuse_identity_supervision(self.name, cfg)

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> CGPSLosses:
        """The losses with a memory row per training person."""
        self._losses = CGPSLosses(
            boxes_per_item=box_counts(data.dataset.records), dim=int(model.embedding_dim), args=self.args
        )
        return self._losses

    def build_hooks(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> list[TrainingHook]:
        """Memory initialisation and per-epoch clustering (after :meth:`build_losses`)."""
        losses = self._losses
        if losses is None:
            raise TrainerError("cgps: build_losses must run before build_hooks")

        def initialise(trainer: Trainer) -> None:
            features = extract_box_features(
                trainer.model,
                trainer.dataset,
                device=trainer.device,
                batch_size=self.args.extract_batch_size,
                progress=trainer.progress and trainer.dist.is_main,
            ).features
            losses.memory.reinitialise(features)

        return [
            SelfPacedClusterHook(
                memory=losses.memory,
                image_of_row=losses.rows.image_of_row.cpu(),
                initialise=initialise,
                cluster_source=lambda: losses.memory.features,
                settings=self.args.clustering,
                hidden_identities=hidden_identities(data.dataset.records),
                title="CGPS",
                on_epoch=losses.set_epoch,
            )
        ]
