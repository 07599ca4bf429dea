"""``rsiamnet``: weakly supervised person search from boxes alone (R-SiamNet, Han et al., ICCV 2021).

The model is the one-step SeqNet detector (its detection losses unchanged); no identity
label is read. Each annotated person is embedded twice with shared weights:

* the *search path* pools the person from the scene's res4 map with RoIAlign and runs
  head 2 on it (``f^a``, :attr:`TrainingOutputs.gt_embeddings`);
* the *instance path* cuts the person out of the image, resizes it (192x64 in the paper)
  and runs the same trunk and head 2 on the crop (``f^b``, :meth:`SeqNet.encode_crops`).

Three losses tie them together (paper section 3): self-instance consistency ``L_ins``
(Eq. 1) pulls ``f^a`` and ``f^b`` of a person together; inter-instance similarity
consistency ``L_int`` (Eq. 2) makes the in-batch similarity distributions of the two
paths agree; the cluster-level contrastive loss ``L_clu`` (Eq. 3, scale ``gamma``)
compares ``f = mean(f^a, f^b)`` with a memory of every training person's embedding,
the positives being the people of its pseudo identity. Pseudo identities come from a
parameter-free first-neighbour clustering at the start of every epoch (section 3.3;
:func:`~personsearch_train.weak_supervision.first_neighbour_clusters`). Inference uses
the search path only, so checkpoints export as any SeqNet does.

Choices the paper leaves open, and ours:

* **The similarity distribution of Eq. 2**: a softmax over the other people of the
  batch at temperature ``int_temperature`` (0.1), diagonal left out; see
  :func:`~personsearch_train.losses.similarity_consistency` for why.
* **What the memory holds**: one entry per training person (``M in R^{N x d}``, as the
  paper says), set at the start of an epoch from freshly extracted features and updated
  after every step with ``M_t <- lambda M_t + (1 - lambda) f`` then re-normalised (the
  paper writes no normalisation, but Eq. 3 uses cosine similarities, and an
  un-normalised running mean shrinks). ``f`` is the L2-normalised mean of the paths.
* **Which features are clustered**: the paper extracts every person's features at the
  start of each epoch (``cluster_features: extract``, the default): the mean of both
  paths, in eval mode and without flips. ``cluster_features: memory`` extracts once,
  before the first epoch, and clusters the momentum memory afterwards; the steps refresh
  the entry of every person whose image the epoch visits (all of them, unless
  ``train.max_iters_per_epoch`` cuts epochs short), so it tracks the model closely at a
  fraction of the cost, which the 2-core synthetic recipe needs.
* **Instance recognition** (the baseline of the paper's Table 2, ``pseudo_labels:
  instance``) is Eq. 3 with every person its own pseudo identity, i.e. one positive: its
  own memory entry. This keeps the loss, memory and schedule identical across the
  ablation rows, so only the labels differ.
* **The single-path rows of Table 2** (``paths: search`` / ``instance``) train the
  embedding on that path alone (and skip the other path's forward); detection is always
  trained on the scene.
* **BatchNorm on crops**: the crops run in training mode (batch statistics of the crop
  batch), but the running statistics are left untouched by them, since inference only ever
  sees scenes (their statistics differ from tight crops). A batch of a single crop (one
  image of one person on a process) is normalised with the running statistics instead.
* **Memory updates across processes**: every rank's rows and features are all-gathered
  before the update, so the memories of all ranks stay equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.errors import ConfigError, TrainerError, require_choice
from personsearch_train.losses.cluster_contrast import cluster_contrastive_loss
from personsearch_train.losses.instance_consistency import self_instance_consistency, similarity_consistency
from personsearch_train.losses.oim import gather_across_ranks
from personsearch_train.methods.base import (
    MethodLosses,
    TrainingData,
    TrainingMethod,
    refuse_identity_supervision,
)
from personsearch_train.methods.pseudo_label_hook import PseudoLabelHook
from personsearch_train.methods.registry import register_method
from personsearch_train.models.structures import TrainingOutputs
from personsearch_train.weak_supervision.clustering import first_neighbour_clusters
from personsearch_train.weak_supervision.crops import crop_people, embed_person_crops, require_crop_encoder
from personsearch_train.weak_supervision.features import extract_box_features
from personsearch_train.weak_supervision.memory_bank import MemoryBank
from personsearch_train.weak_supervision.person_rows import box_counts, hidden_identities, rows_of_targets

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.engine.loop import Trainer

__all__ = ["RSiamNet", "RSiamNetArgs", "RSiamNetHook", "RSiamNetLosses"]

PATHS = ("both", "search", "instance")
PSEUDO_LABELS = ("first_neighbour", "instance")
CLUSTER_FEATURES = ("extract", "memory")


@dataclass(frozen=True)
class RSiamNetArgs:
    """Settings of ``rsiamnet`` (``method_args`` in a recipe).

    Attributes:
        crop_height: Height of the instance path's person crops (paper: 192).
        crop_width: Their width (paper: 64).
        paths: ``both`` (R-SiamNet), or one path alone for Table 2's first rows:
            ``search`` (RoIAlign features only) or ``instance`` (crops only).
        pseudo_labels: ``first_neighbour`` (per-epoch clustering, the full method) or
            ``instance`` (instance recognition: every person its own class).
        ins_weight: Weight of ``L_ins`` (0 leaves it out; needs ``paths: both``).
        int_weight: Weight of ``L_int`` (0 leaves it out; needs ``paths: both``).
        int_temperature: Softmax temperature turning a similarity row into a distribution.
        cluster_weight: Weight of the contrastive loss ``L_clu`` (or of IR).
        scale: ``gamma`` of Eq. 3 (16).
        momentum: ``lambda``, the old entry's weight in a memory update (0.2).
        cluster_features: ``extract`` (re-embed every person each epoch, the paper) or
            ``memory`` (cluster the momentum memory; one extraction before epoch 1).
        extract_batch_size: Scenes per forward when extracting features.
    """

    crop_height: int = 192
    crop_width: int = 64
    paths: str = "both"
    pseudo_labels: str = "first_neighbour"
    ins_weight: float = 1.0
    int_weight: float = 1.0
    int_temperature: float = 0.1
    cluster_weight: float = 1.0
    scale: float = 16.0
    momentum: float = 0.2
    cluster_features: str = "extract"
    extract_batch_size: int = 4

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("paths", self.paths, PATHS),
            ("pseudo_labels", self.pseudo_labels, PSEUDO_LABELS),
            ("cluster_features", self.cluster_features, CLUSTER_FEATURES),
        ):
            require_choice(f"method_args.{key}", value, allowed)
        if self.crop_height <= 0 or self.crop_width <= 0:
            raise ConfigError(
                "method_args.crop_height/crop_width must be positive, "
                f"got {self.crop_height}x{self.crop_width}"
            )
        if self.paths != "both" and (self.ins_weight or self.int_weight):
            raise ConfigError(
                f"method_args.paths is {self.paths!r}: L_ins and L_int compare the two paths; "
                "set method_args.ins_weight and int_weight to 0, or paths: both"
            )
        if not self.int_temperature > 0:
            raise ConfigError(f"method_args.int_temperature must be > 0, got {self.int_temperature}")
        if not self.scale > 0:
            raise ConfigError(f"method_args.scale must be > 0, got {self.scale}")
        if not 0.0 <= self.momentum < 1.0:
            raise ConfigError(f"method_args.momentum must be in [0, 1), got {self.momentum}")
        if min(self.ins_weight, self.int_weight, self.cluster_weight) < 0:
            raise ConfigError("method_args.ins_weight, int_weight and cluster_weight must be >= 0")
        if self.extract_batch_size <= 0:
            raise ConfigError(f"method_args.extract_batch_size must be > 0, got {self.extract_batch_size}")


class RSiamNetLosses(MethodLosses):
    """``loss_ins``, ``loss_int`` and ``loss_cluster`` of one batch, and the person memory.

    Args:
        boxes_per_item: ``[I]`` int64 annotated people of each training item, in dataset
            order; memory row of person ``m`` of item ``i`` is ``sum(boxes_per_item[:i]) + m``.
        dim: Embedding size ``D``.
        args: The method's settings.

    Attributes:
        memory: ``MemoryBank`` of ``N = sum(boxes_per_item)`` rows, with pseudo labels.
        row_offsets: ``[I]`` int64 buffer, first memory row of each item.
    """

    def __init__(self, *, boxes_per_item: np.ndarray, dim: int, args: RSiamNetArgs) -> None:
        super().__init__()
        self.args = args
        counts = torch.as_tensor(np.asarray(boxes_per_item, dtype=np.int64))
        self.memory = MemoryBank(size=int(counts.sum()), dim=dim, momentum=args.momentum)
        self.register_buffer("row_offsets", torch.cumsum(counts, 0) - counts)

    def rows_of(self, targets: list[dict[str, Any]]) -> Tensor:
        """``[sum M_b]`` int64 memory rows of the batch's people, in image then box order."""
        return rows_of_targets(self.row_offsets, targets)

    def path_embeddings(
        self, model: nn.Module, outputs: TrainingOutputs, images: list[Tensor], targets: list[dict[str, Any]]
    ) -> tuple[Tensor | None, Tensor | None]:
        """``(f^a, f^b)``: ``[P, D]`` embeddings of the batch's people by path (None when off)."""
        search = outputs.gt_embeddings if self.args.paths in ("both", "search") else None
        if self.args.paths in ("both", "search") and search is None:
            raise TrainerError(
                "rsiamnet needs the model to embed ground-truth boxes (model.embed_ground_truth)"
            )
        instance = None
        if self.args.paths in ("both", "instance"):
            instance = embed_person_crops(
                model,
                images,
                [t["boxes"] for t in targets],
                output_size=(self.args.crop_height, self.args.crop_width),
            )
        return search, instance

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """The weighted terms; the memory rows of the batch's people are updated after."""
        search, instance = self.path_embeddings(model, outputs, images, targets)
        paths = [f.float() for f in (search, instance) if f is not None]
        fused = F.normalize(torch.stack(paths).mean(0), dim=1)
        rows = self.rows_of(targets)
        terms: dict[str, Tensor] = {}
        if self.args.paths == "both":
            terms["loss_ins"] = self.args.ins_weight * self_instance_consistency(search, instance)
            terms["loss_int"] = self.args.int_weight * similarity_consistency(
                search, instance, temperature=self.args.int_temperature
            )
        # A copy: the update below changes the memory in place, which autograd would
        # otherwise see as a modified input of this step's graph.
        memory = self.memory.features.clone()
        terms["loss_cluster"] = self.args.cluster_weight * cluster_contrastive_loss(
            fused, memory, self.memory.labels, self.memory.labels[rows], scale=self.args.scale
        )
        gathered_features, gathered_rows = gather_across_ranks(fused.detach(), rows)
        self.memory.update(gathered_rows, gathered_features)
        return terms


def extract_person_features(
    model: nn.Module,
    dataset: Any,
    *,
    paths: str,
    crop_size: tuple[int, int],
    device: torch.device,
    batch_size: int,
    progress: bool = False,
) -> Tensor:
    """Embed every annotated person of the training set as training fuses the paths.

    :func:`~personsearch_train.weak_supervision.extract_box_features` with the paths of
    ``paths`` averaged per person (eval mode, no flip; the model's mode and the dataset's
    flip probability are restored).

    Args:
        model: A SeqNet (``embed_boxes`` and ``encode_crops``).
        dataset: The training dataset (items ``(image, target)``, attribute ``flip_prob``).
        paths: ``both`` (normalised mean of the paths), ``search`` or ``instance``.
        crop_size: ``(height, width)`` of the instance path's crops.
        device: Where the model runs.
        batch_size: Scenes per forward.
        progress: Show a progress bar.

    Returns:
        ``[N, D]`` float32 unit-norm features on the CPU, in memory-row order.
    """

    def fused(images: list[Tensor], targets: list[dict[str, Any]]) -> list[Tensor]:
        boxes = [t["boxes"] for t in targets]
        views = []
        if paths in ("both", "search"):
            views.append(torch.cat(model.embed_boxes(images, boxes)).float())
        if paths in ("both", "instance"):
            views.append(model.encode_crops(crop_people(images, boxes, output_size=crop_size)).float())
        return list(torch.stack(views).mean(0).split([len(b) for b in boxes]))

    return extract_box_features(
        model, dataset, device=device, batch_size=batch_size, embed=fused, progress=progress
    ).features


class RSiamNetHook(PseudoLabelHook):
    """Per-epoch pseudo identities: extract (or read the memory), cluster, label the memory.

    Runs before every epoch's first step; a run resumed inside an epoch keeps the labels
    and memory its checkpoint holds (so it continues exactly as it would have). Each
    epoch's clustering is reported (clusters, singletons, and pair precision/recall
    against the hidden identities where the data has them, read for the report only)
    in ``pseudo_labels.jsonl`` and ``plots/pseudo_labels.png`` of the run folder.

    Args:
        losses: The method's losses (their memory is labelled here).
        args: The method's settings.
        image_of_row: ``[N]`` int64 training item of each memory row.
        hidden_identities: ``[N]`` int64 identity of each person for the report (``-1``
            unlabelled), or None.
    """

    def __init__(
        self,
        *,
        losses: RSiamNetLosses,
        args: RSiamNetArgs,
        image_of_row: Tensor,
        hidden_identities: np.ndarray | None,
    ) -> None:
        super().__init__(title="R-SiamNet", hidden_identities=hidden_identities)
        self.losses = losses
        self.args = args
        self.image_of_row = image_of_row

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Cluster for ``epoch`` unless the checkpoint resumed already holds its labels."""
        if self.clustered_epoch == epoch:
            return
        memory = self.losses.memory
        if epoch == 0 or self.args.cluster_features == "extract":
            features = extract_person_features(
                trainer.model,
                trainer.dataset,
                paths=self.args.paths,
                crop_size=(self.args.crop_height, self.args.crop_width),
                device=trainer.device,
                batch_size=self.args.extract_batch_size,
                progress=trainer.progress and trainer.dist.is_main,
            )
            memory.reinitialise(features)
        self.assign_labels(epoch, log=trainer.dist.is_main)

    def assign_labels(self, epoch: int, *, log: bool = False) -> np.ndarray:
        """Cluster the memory's features, label its rows and report; returns the ``[N]`` labels."""
        memory = self.losses.memory
        if self.args.pseudo_labels == "first_neighbour":
            labels = first_neighbour_clusters(memory.features, self.image_of_row)
        else:
            labels = np.arange(memory.features.shape[0], dtype=np.int64)
        memory.labels.copy_(torch.from_numpy(labels))
        self.record(epoch, labels, log=log)
        return labels


@register_method
class RSiamNet(TrainingMethod):
    """R-SiamNet: search and instance paths with consistency losses and first-neighbour clusters."""

    name = "rsiamnet"
    summary = (
        "weakly supervised (boxes only): R-SiamNet search/instance paths, L_ins + L_int + cluster contrast"
    )
    Args = RSiamNetArgs
    reads_identities = False

    def __init__(self, args: RSiamNetArgs) -> None:
        super().__init__(args)
        self._losses: RSiamNetLosses | None = None

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Refuse identity labels, mixed sources and data without person boxes.

        Raises:
            ConfigError: Naming the key.
        """
        super().check_config(cfg)
        refuse_identity_supervision(self.name, cfg)

    def build_model(self, cfg: ExperimentConfig, data: TrainingData) -> nn.Module:
        """The recipe's SeqNet, asked for ground-truth embeddings when the search path is on.

        Raises:
            ConfigError: The model cannot embed crops, or the crops are too short for its head.
        """
        model = super().build_model(cfg, data)
        require_crop_encoder(
            model, method=self.name, model_name=cfg.model.name, crop_height=self.args.crop_height
        )
        model.embed_ground_truth = self.args.paths in ("both", "search")
        return model

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> RSiamNetLosses:
        """The three losses with a memory row per training person."""
        self._losses = RSiamNetLosses(
            boxes_per_item=box_counts(data.dataset.records), dim=int(model.embedding_dim), args=self.args
        )
        return self._losses

    def build_hooks(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> list[TrainingHook]:
        """The per-epoch clustering hook (after :meth:`build_losses`)."""
        if self._losses is None:
            raise TrainerError("rsiamnet: build_losses must run before build_hooks")
        records = data.dataset.records
        counts = box_counts(records)
        return [
            RSiamNetHook(
                losses=self._losses,
                args=self.args,
                image_of_row=torch.repeat_interleave(torch.arange(len(records)), torch.from_numpy(counts)),
                hidden_identities=hidden_identities(records),
            )
        ]
