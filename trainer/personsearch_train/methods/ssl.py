"""``ssl``: self-similarity driven scale-invariant learning (Wang et al., ICCV 2023).

Weakly supervised: ground-truth boxes, no identity label. Two branches share the
SeqNet's weights:

* the **main branch** is the detector; each annotated person's embedding ``f_i`` is
  head 2 on the RoIAlign of its box (:attr:`TrainingOutputs.gt_embeddings`);
* the **multi-scale exemplar branch** (training only) cuts every person out, removes
  its background with a person mask, and embeds the crop at its own size and at ``K``
  fixed scales (:mod:`~personsearch_train.weak_supervision.exemplars`), through the
  same trunk and head (:meth:`SeqNet.encode_crops`).

Losses (paper Eq. 13, ``L = L_scale + (L_cluster + L_DML) + L_det``):

* ``loss_scale``: the scale-invariant loss (Eq. 2-4; margin 0.3, ``gamma`` 0.05):
  hardest rescaled copy of the person against the closest exemplar of another person
  of the same image, plus a pull towards the original-scale exemplar.
* ``loss_dml``: dynamic multi-label learning (Eq. 5-12). Two memories, ``M_I`` of main
  features and ``M_M`` of mean exemplar features, updated ``M <- 0.8 f + 0.2 M``; each
  step, every person's labels are the rows of ``M = mean(M_I, M_M)`` whose similarity
  reaches ``t = t_b + alpha exp(beta e)``, taken in decreasing similarity, an accepted
  row's image-mates becoming negatives; the multi-label loss (``delta`` 5) is applied
  to ``(M_I, f_i)`` and ``(M_M, f^h_i)``.
* ``loss_cluster``: the clustering compensation, CGPS's hard-negative cluster
  contrastive loss on ``M_I`` with self-paced DBSCAN clusters of ``M`` recomputed
  before every epoch (:class:`~personsearch_train.methods.cgps.SelfPacedClusterHook`).

Choices the paper leaves open, and ours:

* **Threshold schedule**: ``beta = -0.1``, the value of the paper's implementation
  details (section 4.2); our reference digest quoted -0.05. ``e`` is the 0-based epoch,
  so the threshold starts at 0.70.
* **Scales**: the paper's fixed 112x48, 224x96 and 448x192 by default;
  ``scales_from: kmeans`` picks ``K`` sizes by k-means over the training boxes, raised
  to the head's minimum height, for scenes of other sizes than the paper's 1500x900.
* **Masks**: the paper runs a human parser (SCHP); none can be downloaded here. A mask
  folder (``mask_dir``; by default ``person_masks/`` beside the dataset's images, which
  the synthetic generator writes) gives each scene's person label map; without one an
  ellipse inscribed in the box is used (stated in the log).
* **Which features**: ``f_i`` of the ground-truth boxes for all three losses (the
  scale loss compares a person with its own exemplars, which needs the box itself), and
  ``f^h_i`` the L2-normalised mean of the ``K + 1`` exemplar features.
* **A person alone in its image** has no negative exemplar; its hinge term is 0 and
  only the original-scale pull remains.
* **BatchNorm on exemplars**: batch statistics of each exemplar batch, running
  statistics untouched (inference sees scenes only); a single exemplar is normalised
  with the running statistics.
* **Capped multi-labels** (``max_positives``, off by default, not in the paper): the
  traversal of Eq. 10 stops after ``k`` accepted entries, own entry included. From a
  scratch start the memory's similarities rise as training pulls people together, so a
  nearly constant threshold that accepts about six people per person at epoch 2 accepts
  50-70 by epoch 9, at pair precision 0.07 (the committed ``ssl_synthetic_small`` runs'
  pseudo-label reports); the cap keeps the most similar few.
* **Ablation switches** (Table 1): ``exemplars: false`` drops the branch and
  ``loss_scale`` (DML then labels by ``M_I`` alone), ``dml_weight: 0`` drops DML,
  ``cluster_weight: 0`` drops the clustering compensation, ``remove_background: false``
  keeps the crops' background, and ``threshold_alpha: 0`` with ``threshold_base: 0.7``
  is the fixed-threshold multi-label baseline (Table 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.losses.hybrid_memory import hard_negative_cluster_contrastive_loss
from personsearch_train.losses.multi_label import dynamic_threshold, multi_label_loss, same_image_multilabels
from personsearch_train.losses.scale_invariant import scale_invariant_loss
from personsearch_train.methods.base import (
    MethodLosses,
    TrainingData,
    TrainingMethod,
    refuse_identity_supervision,
)
from personsearch_train.methods.cgps import (
    ClusteringSettings,
    SelfPacedClusterHook,
    contrast_top_percent,
    update_memory_by_row,
)
from personsearch_train.methods.registry import register_method
from personsearch_train.models.structures import TrainingOutputs
from personsearch_train.weak_supervision.crops import frozen_running_statistics
from personsearch_train.weak_supervision.exemplars import (
    box_scales_kmeans,
    masked_person_crops,
    multi_scale_exemplars,
)
from personsearch_train.weak_supervision.features import extract_box_features
from personsearch_train.weak_supervision.memory_bank import MemoryBank
from personsearch_train.weak_supervision.person_rows import PersonRows, box_counts, hidden_identities
from personsearch_train.weak_supervision.pseudo_label_quality import multilabel_pair_precision_recall

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.engine.hooks import TrainingHook
    from personsearch_train.engine.loop import Trainer

__all__ = ["SSL", "SSLArgs", "SSLLosses", "exemplar_features"]

SCALES_FROM = ("fixed", "kmeans")


@dataclass(frozen=True)
class SSLArgs:
    """Settings of ``ssl`` (``method_args`` in a recipe); defaults are the paper's.

    Attributes:
        exemplars: Train the multi-scale exemplar branch and ``loss_scale``.
        scales: ``K`` exemplar sizes ``[height, width]`` (used with ``scales_from: fixed``).
        scales_from: ``fixed`` (``scales``) or ``kmeans`` (``len(scales)`` sizes by
            k-means over the training boxes).
        remove_background: Multiply the crops by the person mask.
        mask_dir: Folder of per-scene person label maps (``<image stem>.png``); empty:
            ``person_masks/`` of the dataset when it exists, else the ellipse fallback.
        margin: ``m`` of the scale-invariant loss (0.3).
        gamma: Weight of its original-scale pull (0.05).
        scale_weight: Weight of ``loss_scale``.
        dml_weight: Weight of ``loss_dml`` (0 leaves dynamic multi-label learning out).
        threshold_base: ``t_b`` (0.6).
        threshold_alpha: ``alpha`` (0.1).
        threshold_beta: ``beta`` (-0.1, section 4.2).
        max_positives: At most this many multi-label positives per person, own entry
            included, the most similar first (not in the paper; 0: no cap).
        delta: ``delta`` of the multi-label loss (5).
        cluster_weight: Weight of the clustering compensation ``loss_cluster`` (0: off).
        temperature: Its softmax temperature (CGPS: 0.05).
        top_percent: Its kept share of negative probability mass (CGPS: 0.6).
        momentum: Old row's weight in a memory update (``1 - lambda`` = 0.2).
        clustering: The per-epoch clustering (CGPS's settings, as the paper says).
        extract_batch_size: Scenes per forward when the memories are initialised.
    """

    exemplars: bool = True
    scales: list[list[int]] = field(default_factory=lambda: [[112, 48], [224, 96], [448, 192]])
    scales_from: str = "fixed"
    remove_background: bool = True
    mask_dir: str = ""
    margin: float = 0.3
    gamma: float = 0.05
    scale_weight: float = 1.0
    dml_weight: float = 1.0
    threshold_base: float = 0.6
    threshold_alpha: float = 0.1
    threshold_beta: float = -0.1
    max_positives: int = 0
    delta: float = 5.0
    cluster_weight: float = 1.0
    temperature: float = 0.05
    top_percent: float = 0.6
    momentum: float = 0.2
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)
    extract_batch_size: int = 4

    def __post_init__(self) -> None:
        if self.scales_from not in SCALES_FROM:
            raise ConfigError(
                f"method_args.scales_from: {self.scales_from!r} is not one of {', '.join(SCALES_FROM)}"
            )
        if not self.scales or any(len(s) != 2 or min(s) <= 0 for s in self.scales):
            raise ConfigError(
                "method_args.scales must be a non-empty list of [height, width] positive sizes, "
                f"got {self.scales!r}"
            )
        if (
            min(self.margin, self.gamma, self.scale_weight, self.dml_weight, self.cluster_weight, self.delta)
            < 0
        ):
            raise ConfigError("method_args margin, gamma, delta and the loss weights must be >= 0")
        if not (self.dml_weight or self.cluster_weight):
            raise ConfigError(
                "method_args.dml_weight and cluster_weight are both 0: nothing would tell people apart; "
                "keep at least one"
            )
        if not self.temperature > 0 or not 0.0 < self.top_percent <= 1.0:
            raise ConfigError("method_args.temperature must be > 0 and top_percent in (0, 1]")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"method_args.momentum must be in [0, 1), got {self.momentum}")
        if self.extract_batch_size <= 0:
            raise ConfigError(f"method_args.extract_batch_size must be > 0, got {self.extract_batch_size}")
        if self.max_positives < 0:
            raise ConfigError(f"method_args.max_positives must be >= 0 (0: no cap), got {self.max_positives}")


def exemplar_features(
    model: nn.Module,
    images: list[Tensor],
    targets: list[dict[str, Any]],
    *,
    scales: list[tuple[int, int]],
    remove_background: bool,
    min_height: int,
) -> Tensor:
    """Embed every person of a batch at its own size and at each scale.

    Args:
        model: A SeqNet (``encode_crops``); its mode decides train/eval behaviour, and in
            training mode BatchNorm running statistics are left untouched.
        images: ``[3, H, W]`` float scenes.
        targets: With ``boxes`` ``[M, 4]`` and, when masks are on, ``person_masks``
            ``[H, W]`` uint8 (absent: ellipse fallback).
        scales: ``K`` ``(height, width)`` sizes.
        remove_background: Multiply crops by their masks.
        min_height: Smallest crop height the head takes.

    Returns:
        ``[P, K + 1, D]`` float unit-norm features, original scale first, people in image
        then box order.
    """
    crops = [
        crop
        for image, target in zip(images, targets, strict=True)
        for crop in masked_person_crops(
            image, target["boxes"], target.get("person_masks"), remove_background=remove_background
        )
    ]
    batches = multi_scale_exemplars(crops, scales, min_height=min_height)
    features = []
    with frozen_running_statistics(model, batch_statistics=len(crops) > 1):
        for batch in batches:
            features.append(model.encode_crops(batch.to(images[0].device)).float())
    return torch.stack(features, dim=1)


class SSLLosses(MethodLosses):
    """SSL's scale, multi-label and cluster losses, and its two person memories.

    Args:
        boxes_per_item: ``[I]`` int64 annotated people of each training item.
        dim: Embedding size ``D``.
        args: The method's settings.
        scales: The resolved exemplar sizes.
        min_height: Smallest crop height the model's head takes.

    Attributes:
        rows: Memory row of each training person.
        memory_main: ``M_I`` (its ``labels`` are the per-epoch clusters).
        memory_exemplar: ``M_M`` (zero-sized when the exemplar branch is off).
        threshold: The current epoch's multi-label threshold.
        instance_only: Whether this epoch is an instance epoch (own entry the only positive).
    """

    def __init__(
        self,
        *,
        boxes_per_item: np.ndarray,
        dim: int,
        args: SSLArgs,
        scales: list[tuple[int, int]],
        min_height: int,
    ) -> None:
        super().__init__()
        self.args = args
        self.scales = scales
        self.min_height = min_height
        self.rows = PersonRows(boxes_per_item)
        self.memory_main = MemoryBank(size=self.rows.size, dim=dim, momentum=args.momentum)
        self.memory_exemplar = MemoryBank(
            size=self.rows.size if args.exemplars else 0, dim=dim, momentum=args.momentum
        )
        self.threshold = 0.0
        self.instance_only = False
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Use epoch ``epoch``'s multi-label threshold (and own-entry labels in instance epochs)."""
        a = self.args
        self.threshold = dynamic_threshold(
            epoch, base=a.threshold_base, alpha=a.threshold_alpha, beta=a.threshold_beta
        )
        self.instance_only = epoch < a.clustering.instance_epochs

    def multilabels(self, rows: Tensor) -> Tensor:
        """``[B, N]`` bool positives of the people in memory rows ``rows`` ([B] int64).

        In the instance epochs (``clustering.instance_epochs``) a person's only positive
        is its own entry, as its only cluster is itself: a model trained from scratch
        embeds everyone alike at first, and a threshold on those similarities would
        label most of the training set positive.
        """
        if self.instance_only:
            positives = torch.zeros(len(rows), self.rows.size, dtype=torch.bool, device=rows.device)
            positives[torch.arange(len(rows), device=rows.device), rows] = True
            return positives
        label_features = self.label_features()
        return same_image_multilabels(
            label_features[rows] @ label_features.t(),
            self.rows.image_of_row,
            threshold=self.threshold,
            max_positives=self.args.max_positives or None,
        )

    @torch.no_grad()
    def multilabel_scores(self, identities: np.ndarray, *, chunk_size: int = 1024) -> dict[str, float]:
        """Pair precision/recall of every person's current multi-labels, for the report.

        Args:
            identities: ``[N]`` int64 hidden identities (``-1`` unlabelled); read for
                the report only.
            chunk_size: Rows labelled at once.

        Returns:
            ``multilabel_precision``, ``multilabel_recall``, ``multilabel_predicted_pairs``,
            ``multilabel_threshold`` and ``multilabel_positives`` (mean positives per person,
            own entry included).
        """
        rows = torch.arange(self.rows.size, device=self.rows.image_of_row.device)
        positives = torch.cat([self.multilabels(chunk).cpu() for chunk in rows.split(chunk_size)]).numpy()
        scores = multilabel_pair_precision_recall(positives, identities)
        return {
            "multilabel_precision": scores.precision,
            "multilabel_recall": scores.recall,
            "multilabel_predicted_pairs": scores.predicted_pairs,
            "multilabel_threshold": float(self.threshold),
            "multilabel_positives": float(positives.sum(axis=1).mean()) if len(positives) else 0.0,
        }

    def label_features(self) -> Tensor:
        """``[N, D]`` the features labels come from: ``M = mean(M_I, M_M)`` re-normalised (or ``M_I``)."""
        if not self.args.exemplars:
            return self.memory_main.features
        return F.normalize(self.memory_main.features + self.memory_exemplar.features, dim=1)

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """The weighted terms; both memories' rows of the batch's people are updated after."""
        if outputs.gt_embeddings is None:
            raise TrainerError("ssl needs the model to embed ground-truth boxes (model.embed_ground_truth)")
        a = self.args
        main = outputs.gt_embeddings.float()
        rows = self.rows.of_targets(targets)
        terms: dict[str, Tensor] = {}
        exemplar_mean = None
        if a.exemplars:
            exemplars = exemplar_features(
                model,
                images,
                targets,
                scales=self.scales,
                remove_background=a.remove_background,
                min_height=self.min_height,
            )
            image_of_person = torch.repeat_interleave(
                torch.arange(len(targets), device=main.device),
                torch.tensor([len(t["boxes"]) for t in targets], device=main.device),
            )
            terms["loss_scale"] = a.scale_weight * scale_invariant_loss(
                main, exemplars, image_of_person, margin=a.margin, gamma=a.gamma
            )
            exemplar_mean = F.normalize(exemplars.mean(dim=1), dim=1)
        # Copies: the updates below change the memories in place, which autograd would
        # otherwise see as modified inputs of this step's graph.
        memory_main = self.memory_main.features.clone()
        if a.cluster_weight:
            terms["loss_cluster"] = a.cluster_weight * hard_negative_cluster_contrastive_loss(
                main,
                memory_main,
                self.memory_main.labels,
                self.memory_main.labels[rows],
                temperature=a.temperature,
                top_percent=contrast_top_percent(a.top_percent, instance_only=self.instance_only),
            )
        if a.dml_weight:
            positives = self.multilabels(rows)
            loss = multi_label_loss(main, memory_main, positives, delta=a.delta)
            if exemplar_mean is not None:
                loss = loss + multi_label_loss(
                    exemplar_mean, self.memory_exemplar.features.clone(), positives, delta=a.delta
                )
            terms["loss_dml"] = a.dml_weight * loss
        update_memory_by_row(self.memory_main, rows, main)
        if exemplar_mean is not None:
            update_memory_by_row(self.memory_exemplar, rows, exemplar_mean)
        return terms


@register_method
class SSL(TrainingMethod):
    """SSL: multi-scale exemplar branch, scale-invariant loss, dynamic multi-labels, cluster compensation."""

    name = "ssl"
    summary = (
        "weakly supervised (boxes only): SSL scale-invariant exemplar branch + dynamic multi-label learning"
    )
    Args = SSLArgs
    reads_identities = False

    def __init__(self, args: SSLArgs) -> None:
        super().__init__(args)
        self._losses: SSLLosses | None = None
        self._mask_dir: Path | None = None

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Refuse identity labels and mixed sources; a named mask folder must exist.

        Raises:
            ConfigError: Naming the key.
        """
        super().check_config(cfg)
        refuse_identity_supervision(self.name, cfg)
        if self.args.mask_dir and not Path(self.args.mask_dir).expanduser().is_dir():
            raise ConfigError(
                f"method_args.mask_dir: {self.args.mask_dir} is not a folder; give the folder of per-scene "
                "person masks (<image stem>.png) or leave it empty to use person_masks/ or the ellipse "
                "fallback"
            )

    def build_train_data(
        self, cfg: ExperimentConfig, *, rank: int = 0, world_size: int = 1, train_split: Any = None
    ) -> TrainingData:
        """The base training data, its items carrying person masks when a mask folder is found."""
        from personsearch_train.data.person_masks import default_person_mask_dir

        data = super().build_train_data(cfg, rank=rank, world_size=world_size, train_split=train_split)
        if self.args.exemplars and self.args.remove_background:
            folder = (
                Path(self.args.mask_dir).expanduser()
                if self.args.mask_dir
                else default_person_mask_dir(data.splits[0])
            )
            self._mask_dir = folder
            if folder is not None:
                data.dataset.use_person_masks(folder)
            elif rank == 0:
                tqdm.write(
                    "ssl: no person masks found (method_args.mask_dir or person_masks/ beside the images); "
                    "removing background with an ellipse inscribed in each box"
                )
        return data

    def build_model(self, cfg: ExperimentConfig, data: TrainingData) -> nn.Module:
        """The recipe's SeqNet, asked for ground-truth embeddings.

        Raises:
            ConfigError: The model has no crop path, or a scale is too short for its head.
        """
        model = super().build_model(cfg, data)
        if not hasattr(model, "encode_crops"):
            raise ConfigError(f"model.name: ssl needs a SeqNet model; {cfg.model.name!r} cannot embed crops")
        model.embed_ground_truth = True
        return model

    def _scales(self, model: nn.Module, data: TrainingData, seed: int) -> tuple[list[tuple[int, int]], int]:
        min_height = 2 * model.backbone.stride * model.reid_head.stripes
        if self.args.scales_from == "kmeans":
            boxes = np.concatenate([r.boxes for r in data.dataset.records])
            return box_scales_kmeans(
                boxes, len(self.args.scales), min_height=min_height, seed=seed
            ), min_height
        scales = [(int(h), int(w)) for h, w in self.args.scales]
        short = [s for s in scales if s[0] < min_height]
        if short:
            raise ConfigError(
                f"method_args.scales: {short} are shorter than the {min_height} pixels the model's head "
                "needs; raise them or use scales_from: kmeans"
            )
        return scales, min_height

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> SSLLosses:
        """The losses with two memory rows per training person."""
        scales, min_height = self._scales(model, data, cfg.train.seed)
        if self.args.exemplars:
            tqdm.write(f"ssl: exemplar scales (h x w) {', '.join(f'{h}x{w}' for h, w in scales)}")
        self._losses = SSLLosses(
            boxes_per_item=box_counts(data.dataset.records),
            dim=int(model.embedding_dim),
            args=self.args,
            scales=scales,
            min_height=min_height,
        )
        return self._losses

    def build_hooks(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> list[TrainingHook]:
        """Memory initialisation, per-epoch threshold and clustering (after :meth:`build_losses`)."""
        losses = self._losses
        if losses is None:
            raise TrainerError("ssl: build_losses must run before build_hooks")

        def initialise(trainer: Trainer) -> None:
            def both(images: list[Tensor], targets: list[dict[str, Any]]) -> list[Tensor]:
                main = torch.cat(trainer.model.embed_boxes(images, [t["boxes"] for t in targets])).float()
                if not self.args.exemplars:
                    return list(main.split([len(t["boxes"]) for t in targets]))
                exemplar = exemplar_features(
                    trainer.model,
                    images,
                    targets,
                    scales=losses.scales,
                    remove_background=self.args.remove_background,
                    min_height=losses.min_height,
                ).mean(dim=1)
                # Both memories travel through one extraction: concatenated, split below.
                joined = torch.cat([F.normalize(main, dim=1), F.normalize(exemplar, dim=1)], dim=1)
                return list(joined.split([len(t["boxes"]) for t in targets]))

            extracted = extract_box_features(
                trainer.model,
                trainer.dataset,
                device=trainer.device,
                batch_size=self.args.extract_batch_size,
                embed=both,
                progress=trainer.progress and trainer.dist.is_main,
            ).features
            dim = losses.memory_main.features.shape[1]
            losses.memory_main.reinitialise(extracted[:, :dim])
            if self.args.exemplars:
                losses.memory_exemplar.reinitialise(extracted[:, dim:])

        identities = hidden_identities(data.dataset.records)
        return [
            SelfPacedClusterHook(
                memory=losses.memory_main,
                image_of_row=losses.rows.image_of_row.cpu(),
                initialise=initialise,
                cluster_source=losses.label_features,
                settings=self.args.clustering,
                hidden_identities=identities,
                title="SSL",
                on_epoch=losses.set_epoch,
                extra_scores=(lambda: losses.multilabel_scores(identities)) if self.args.dml_weight else None,
            )
        ]
