"""``pps``: hybrid pre-training of a one-step person-search model on sub-task data (PPS).

"Divide and Conquer: Hybrid Pre-training for Person Search" (Tian et al., AAAI 2024;
methods.md section 4). What is known of the paper here is its abstract and its code
repository's README (the method section and the code were never available):

* it pre-trains the *whole* one-step person-search model using only sub-task data,
  person-detection datasets (boxes, no identities) and re-id datasets (identities, no
  scenes), because large person-search datasets do not exist;
* a **hybrid learning paradigm** handles data with different kinds of supervision in one
  training: supervised objectives where labels exist and self-supervised ones where
  they do not;
* an **intra-task alignment module** reduces the discrepancy between the datasets of the
  same sub-task "under limited resources";
* the pre-trained backbone is then fine-tuned with a person-search method (ROI-AlignPS
  in the paper; here any method, through ``model.init_from``).

Everything below that is not in that list is our design.

**Data unification.** Every source is a ``person_search`` training split mixed by
``data.mix`` (:class:`~personsearch_train.data.mixing.RatioBatchSampler`: every batch
from one source, tagged ``target["source"]``): detection-only scenes as they are
(``coco_scenes``), re-id crops composed into pseudo scenes (``market1501_scenes`` with
identities, ``luperson_scenes`` without; :mod:`personsearch_train.data.pseudo_scenes`).
Each source's identity labels are offset past the earlier sources' by the base class, so
one OIM lookup table holds every labelled identity.

**Hybrid learning: each loss gated by what the batch's source provides.** Per source one
kind of supervision is decided before training (:func:`source_supervision`):

* ``identities`` (a split with identity labels, ``data.use_identities: true``): the
  model's detection losses plus OIM (``loss_box_reid``) over its people, SeqNet's
  supervised objective (unlabelled people of that source feed OIM's queue, as in SeqNet);
* ``instances`` (people without identities whose scenes are composed from re-id crops,
  e.g. LUPerson-style crops): detection losses plus self-supervised instance
  consistency: each person is embedded twice, once from the scene (RoIAlign, the search
  path) and once from its own crop (the instance path), and R-SiamNet's two consistency
  losses tie the views together (``loss_ins``: per-person cosine, ``loss_int``: in-batch
  similarity structure; :mod:`personsearch_train.losses.instance_consistency` and
  :func:`~personsearch_train.weak_supervision.embed_person_crops`, shared with
  :mod:`.rsiamnet`);
* ``boxes`` (detection-only scenes): detection losses only. A detection set's people
  are small, crowded and partly hidden, so their crops are poor second views, and the
  detection sets are there to teach the detector. ``consistency_sources: unlabelled``
  extends the consistency losses to them (R-SiamNet trains on exactly such scenes).

A gated-off loss is left out of the batch's loss dict, not added as zero, so the logs
show which objectives a step trained. Under DDP a batch without a re-id loss leaves the
embedding layer without gradients: multi-process runs need
``train.find_unused_parameters: true`` (``pps_pretrain.yaml`` sets it).

The self-supervised losses have no negative term of their own: the consistency losses
alone are satisfied by a constant embedding. What keeps the embedding from collapsing is
that it is shared with the OIM batches of the labelled sources; a recipe without any
``identities`` source should keep ``ins_weight`` small or add one.

**Intra-task alignment** (``alignment: dataset_norm``, the default): every BatchNorm of
the model keeps running statistics per source with shared affine parameters
(:class:`~personsearch_train.layers.dataset_norm.DatasetSpecificBatchNorm`), so each
dataset's low-level statistics are normalised away before the shared layers; the
batch's source is made active before every forward (:class:`SourceAlignmentHook`). It
covers both sub-tasks' features (detection and re-id heads share the trunk, and head 2's
BatchNorms are converted too). Evaluation during pre-training uses the primary source's
(``data.dataset``'s) statistics. At the end of the last epoch the layers are folded back
into plain BatchNorms (``fold_statistics: primary``: the primary source's statistics,
the dataset closest to the fine-tuning target; ``pooled``: the mixture of all sources,
weighted by how many batches each trained), before the final ``latest`` checkpoint is
written: it is a plain model with the state-dict keys and shapes of the same model
trained by ``seqnet_oim``, which every method loads with ``model.init_from``.
``alignment: none`` trains with shared statistics (the ablation).

Limits of the alignment: a ``latest`` written before the last epoch ends (Ctrl-C,
``train.checkpoint_every``) holds the per-source statistics, so it resumes but is not a
plain model; a finished (folded) run cannot be resumed. ``model.init_from`` into a
``pps`` run loads everything but the BatchNorm running statistics (their shapes differ
once converted), which restart from the initial values for every source.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.errors import ConfigError, TrainerError, require_choice
from personsearch_train.layers.dataset_norm import (
    active_source,
    convert_to_dataset_norm,
    fold_dataset_norm,
    set_active_source,
)
from personsearch_train.losses.instance_consistency import self_instance_consistency, similarity_consistency
from personsearch_train.losses.oim import OIMLoss
from personsearch_train.methods.base import MethodLosses, TrainingData, TrainingMethod
from personsearch_train.methods.registry import register_method
from personsearch_train.methods.seqnet_oim import oim_for_model
from personsearch_train.models.structures import TrainingOutputs
from personsearch_train.weak_supervision.crops import embed_person_crops, require_crop_encoder

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.engine.loop import Trainer

__all__ = [
    "CROP_SCENE_READERS",
    "PPS",
    "PPSArgs",
    "PPSLosses",
    "SourceAlignmentHook",
    "source_supervision",
]

ALIGNMENTS = ("none", "dataset_norm")
FOLD_STATISTICS = ("primary", "pooled")
CONSISTENCY_SOURCES = ("crops", "unlabelled")
#: The kinds of supervision a source gives, from most to least.
SUPERVISION_KINDS = ("identities", "instances", "boxes")
#: Readers whose scenes are composed from re-id crops: one person per crop, so a crop is
#: a clean second view of its box.
CROP_SCENE_READERS = frozenset({"market1501_scenes", "luperson_scenes"})


@dataclass(frozen=True)
class PPSArgs:
    """Settings of ``pps`` (``method_args`` in a recipe).

    Attributes:
        num_labelled: OIM lookup-table rows; None takes every source's identities together.
        queue_size: OIM circular-queue rows for people without an identity.
        oim_scale: OIM logit scale (SeqNet: 30).
        oim_momentum: Weight of the old lookup-table entry in its update (SeqNet: 0.5).
        reid_weight: Weight of ``loss_box_reid`` (OIM on sources with identities).
        ins_weight: Weight of ``loss_ins`` (scene/crop cosine consistency; 0 leaves it out).
        int_weight: Weight of ``loss_int`` (in-batch similarity consistency; 0 leaves it out).
        int_temperature: Softmax temperature of ``loss_int``.
        consistency_sources: Which sources without identities train the consistency
            losses: ``crops`` (pseudo scenes composed from crops) or ``unlabelled``
            (also detection-only scenes).
        crop_height: Height of the instance path's person crops (pixels).
        crop_width: Their width.
        alignment: ``dataset_norm`` (per-source BatchNorm statistics, shared affine) or
            ``none`` (shared statistics).
        fold_statistics: Statistics kept when the alignment is folded away at the end:
            ``primary`` (``data.dataset``'s) or ``pooled`` (all sources').
    """

    num_labelled: int | None = None
    queue_size: int = 5000
    oim_scale: float = 30.0
    oim_momentum: float = 0.5
    reid_weight: float = 1.0
    ins_weight: float = 1.0
    int_weight: float = 1.0
    int_temperature: float = 0.1
    consistency_sources: str = "crops"
    crop_height: int = 192
    crop_width: int = 64
    alignment: str = "dataset_norm"
    fold_statistics: str = "primary"

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("alignment", self.alignment, ALIGNMENTS),
            ("fold_statistics", self.fold_statistics, FOLD_STATISTICS),
            ("consistency_sources", self.consistency_sources, CONSISTENCY_SOURCES),
        ):
            require_choice(f"method_args.{key}", value, allowed)
        for key in ("reid_weight", "ins_weight", "int_weight"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"method_args.{key} must be >= 0, got {getattr(self, key)}")
        if self.num_labelled is not None and self.num_labelled < 1:
            raise ConfigError(f"method_args.num_labelled must be >= 1 or null, got {self.num_labelled}")
        if self.queue_size < 0:
            raise ConfigError(f"method_args.queue_size must be >= 0, got {self.queue_size}")
        if not self.oim_scale > 0 or not self.int_temperature > 0:
            raise ConfigError("method_args.oim_scale and int_temperature must be > 0")
        if not 0.0 <= self.oim_momentum < 1.0:
            raise ConfigError(f"method_args.oim_momentum must be in [0, 1), got {self.oim_momentum}")
        if self.crop_height <= 0 or self.crop_width <= 0:
            raise ConfigError(
                "method_args.crop_height/crop_width must be positive, "
                f"got {self.crop_height}x{self.crop_width}"
            )


def source_supervision(split: PersonSearchSplit, *, use_identities: bool, consistency_sources: str) -> str:
    """What a training source supervises: ``identities``, ``instances`` or ``boxes``.

    Args:
        split: The source's training split (``dataset`` is its reader's name).
        use_identities: Whether identity labels are read at all (``data.use_identities``).
        consistency_sources: ``crops`` or ``unlabelled`` (see :class:`PPSArgs`).

    Returns:
        ``identities`` when the split has identity labels that are read; otherwise
        ``instances`` for crop-composed scenes (and for every scene set with
        ``consistency_sources: unlabelled``); otherwise ``boxes``.
    """
    if use_identities and split.num_identities > 0:
        return "identities"
    if consistency_sources == "unlabelled" or split.dataset in CROP_SCENE_READERS:
        return "instances"
    return "boxes"


def _batch_sources(targets: Sequence[dict[str, Any]]) -> list[int]:
    """``B`` source indices of a batch (0 for targets of an unmixed run, which have none)."""
    return [int(t.get("source", 0)) for t in targets]


class PPSLosses(MethodLosses):
    """``loss_box_reid`` and ``loss_ins``/``loss_int``, each on the images whose source gives it.

    Args:
        oim: The OIM loss with its tables (buffers updated in backward).
        supervision: Per source (``target["source"]`` index) one of
            :data:`SUPERVISION_KINDS`.
        args: The method's settings.
    """

    def __init__(self, oim: OIMLoss, supervision: Sequence[str], args: PPSArgs) -> None:
        super().__init__()
        unknown = sorted(set(supervision) - set(SUPERVISION_KINDS))
        if unknown:
            raise ValueError(f"supervision kinds must be among {SUPERVISION_KINDS}, got {unknown}")
        self.oim = oim
        self.supervision = tuple(supervision)
        self.args = args

    def images_supervised_by(self, kind: str, targets: Sequence[dict[str, Any]]) -> list[int]:
        """Positions in the batch of the images whose source gives supervision ``kind``."""
        return [i for i, s in enumerate(_batch_sources(targets)) if self.supervision[s] == kind]

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """The weighted re-id terms this batch's sources provide (none for detection-only data).

        Returns:
            ``loss_box_reid`` when some image's source has identities; ``loss_ins`` and
            ``loss_int`` (those with a positive weight) when some image's source is an
            ``instances`` source and it has people.
        """
        terms: dict[str, Tensor] = {}
        labelled = self.images_supervised_by("identities", targets)
        if labelled and self.args.reid_weight > 0:
            keep = torch.isin(
                outputs.person_image_index,
                torch.as_tensor(labelled, device=outputs.person_image_index.device),
            )
            loss = self.oim(outputs.person_embeddings[keep], outputs.person_labels[keep])
            terms["loss_box_reid"] = loss.float() * self.args.reid_weight
        instances = self.images_supervised_by("instances", targets)
        if instances and (self.args.ins_weight > 0 or self.args.int_weight > 0):
            terms.update(self._consistency(model, outputs, images, targets, instances))
        return terms

    def _consistency(
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
        chosen: list[int],
    ) -> dict[str, Tensor]:
        """``loss_ins``/``loss_int`` between the scene and crop views of the chosen images' people."""
        if outputs.gt_embeddings is None:
            raise TrainerError("pps: the model must embed ground-truth boxes (model.embed_ground_truth)")
        counts = [int(t["boxes"].shape[0]) for t in targets]
        # gt_embeddings are in image, then box order (RoIAlign over the batch's gt boxes).
        per_image = outputs.gt_embeddings.split(counts)
        search = torch.cat([per_image[i] for i in chosen])
        if search.shape[0] == 0:
            return {}
        instance = embed_person_crops(
            model,
            [images[i] for i in chosen],
            [targets[i]["boxes"] for i in chosen],
            output_size=(self.args.crop_height, self.args.crop_width),
        )
        terms: dict[str, Tensor] = {}
        if self.args.ins_weight > 0:
            terms["loss_ins"] = self.args.ins_weight * self_instance_consistency(search, instance)
        if self.args.int_weight > 0:
            terms["loss_int"] = self.args.int_weight * similarity_consistency(
                search, instance, temperature=self.args.int_temperature
            )
        return terms


class SourceAlignmentHook(TrainingHook):
    """Makes the batch's source active in the dataset norms, and folds them after the last epoch.

    Args:
        fold_source: Source whose statistics the folded model keeps (0: the primary),
            or None for the pooled statistics of all sources.
    """

    def __init__(self, *, fold_source: int | None) -> None:
        self.fold_source = fold_source

    def before_forward(self, model: nn.Module, images: list[Tensor], targets: list[dict[str, Any]]) -> None:
        """Activate ``targets[*]["source"]`` (one source per batch).

        Raises:
            TrainerError: The batch mixes sources (their statistics could not be kept apart).
        """
        sources = set(_batch_sources(targets))
        if len(sources) != 1:
            raise TrainerError(
                f"pps alignment: one batch holds images of sources {sorted(sources)}; dataset-specific "
                "normalisation needs single-source batches (the data.mix sampler draws them)"
            )
        set_active_source(model, sources.pop())

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Fold the dataset norms into plain BatchNorms after the last epoch, before it is saved."""
        if epoch + 1 == trainer.cfg.train.epochs:
            fold_dataset_norm(trainer.model, source=self.fold_source)


@register_method
class PPS(TrainingMethod):
    """Hybrid pre-training: detection + OIM + instance consistency, gated per source; aligned norms."""

    name = "pps"
    summary = (
        "hybrid pre-training on sub-task data (PPS): detection everywhere, OIM where identities exist, "
        "scene/crop consistency where they do not; per-source BatchNorm statistics, folded at the end"
    )
    Args = PPSArgs
    reads_identities = True

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Refuse an alignment without sources to align, or folding onto an untrained source.

        Raises:
            ConfigError: Naming the key.
        """
        super().check_config(cfg)
        if self.args.alignment == "dataset_norm":
            if not cfg.data.mix:
                raise ConfigError(
                    "method_args.alignment: dataset_norm keeps statistics per data source, but data.mix "
                    "is empty (one source); add sources under data.mix or set alignment: none"
                )
            if self.args.fold_statistics == "primary" and cfg.data.ratio <= 0:
                raise ConfigError(
                    "method_args.fold_statistics: primary keeps data.dataset's statistics, but data.ratio "
                    "is 0 so it is never trained on; give it a positive ratio or fold_statistics: pooled"
                )

    def supervision(self, cfg: ExperimentConfig, data: TrainingData) -> tuple[str, ...]:
        """Per source (in ``data.splits`` order) the supervision it gives (:func:`source_supervision`)."""
        use_identities = cfg.data.use_identities and data.num_identities > 0
        return tuple(
            source_supervision(
                split, use_identities=use_identities, consistency_sources=self.args.consistency_sources
            )
            for split in data.splits
        )

    def build_train_data(
        self,
        cfg: ExperimentConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        train_split: PersonSearchSplit | None = None,
    ) -> TrainingData:
        """The mixed sources, each checked to hold at least one person box when it is drawn.

        Raises:
            ConfigError: A source with a positive ratio has no image with a person box.
        """
        data = super().build_train_data(cfg, rank=rank, world_size=world_size, train_split=train_split)
        ratios = [cfg.data.ratio] + [source.ratio for source in cfg.data.mix]
        keys = ["data.dataset"] + [f"data.mix[{i}]" for i in range(len(cfg.data.mix))]
        for key, ratio, split in zip(keys, ratios, data.splits, strict=True):
            if ratio > 0 and not any(len(record.boxes) for record in split.images):
                raise ConfigError(
                    f"{key}: {split.dataset} at {split.root} has no usable sample (no image with a person "
                    "box); fix the folder, or give it ratio 0"
                )
        return data

    def build_model(self, cfg: ExperimentConfig, data: TrainingData) -> nn.Module:
        """The recipe's SeqNet; ground-truth embeddings when consistency is trained; norms converted.

        Converted here, before the trainer builds the optimiser from the model's
        parameters (the converted layers' affine parameters are new objects).

        Raises:
            ConfigError: An ``instances`` source needs crops the model cannot embed.
        """
        model = super().build_model(cfg, data)
        wants_consistency = "instances" in self.supervision(cfg, data) and (
            self.args.ins_weight > 0 or self.args.int_weight > 0
        )
        if wants_consistency:
            require_crop_encoder(
                model, method=self.name, model_name=cfg.model.name, crop_height=self.args.crop_height
            )
            model.embed_ground_truth = True
        if self.args.alignment == "dataset_norm":
            model = convert_to_dataset_norm(model, num_sources=len(data.splits))
        return model

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> PPSLosses:
        """OIM over every labelled source's identities, and the consistency losses."""
        if self.args.num_labelled is None:
            # Resolved once, so the checkpoint records the size its tables have.
            self.args = replace(self.args, num_labelled=max(1, data.num_identities))
        oim = oim_for_model(
            self.name,
            model,
            num_labelled=int(self.args.num_labelled),
            queue_size=self.args.queue_size,
            scale=self.args.oim_scale,
            momentum=self.args.oim_momentum,
        )
        return PPSLosses(oim, self.supervision(cfg, data), self.args)

    def build_hooks(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> list[TrainingHook]:
        """The alignment hook when ``alignment: dataset_norm``."""
        if self.args.alignment != "dataset_norm":
            return []
        return [SourceAlignmentHook(fold_source=0 if self.args.fold_statistics == "primary" else None)]

    def inference(
        self, model: nn.Module, test_data: Any, cfg: ExperimentConfig, *, device: torch.device, progress: bool
    ) -> Iterable[Any]:
        """The default inference with the primary source's statistics active (a no-op once folded)."""
        with active_source(model, 0):
            yield from super().inference(model, test_data, cfg, device=device, progress=progress)
