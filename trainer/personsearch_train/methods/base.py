"""What a training method is: its settings as a dataclass, plus the builders the engine calls.

A method describes one published recipe for training a person-search model: which model
it trains, which losses it adds to the model's own, which callbacks run around the loop,
which data it trains on (and which labels of it it may read), how it is evaluated and what
the exporter turns it into. The engine (:class:`~personsearch_train.engine.loop.Trainer`)
calls these builders in a fixed order, as detectron2's ``DefaultTrainer`` calls its
``build_*`` methods, and never looks inside a method; so adding one is one module (a
:class:`TrainingMethod` subclass with its ``Args`` dataclass, registered with
:func:`~personsearch_train.methods.registry.register_method`) and one recipe.

The defaults here are those of one-step person search on a CUHK-SYSU/PRW-style dataset:
the registered model named by ``model.name``, the ``data.dataset`` training split (plus any
``data.mix`` sources, mixed by ratio), the exact person-search protocol on its test split,
and the SeqNet export family. A method overrides only what it changes; at the least
:meth:`TrainingMethod.build_losses`, because the re-id objective is what tells methods apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor, nn

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import ConfigError
from personsearch_train.models.structures import TrainingOutputs

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.engine.hooks import TrainingHook
    from personsearch_train.evaluation.scoring import EvalOptions

__all__ = [
    "Evaluator",
    "ExportDescription",
    "MethodLosses",
    "NoArgs",
    "TrainingData",
    "TrainingMethod",
    "eval_options",
    "refuse_identity_supervision",
]


@dataclass(frozen=True)
class NoArgs:
    """Settings of a method that has none (``method_args`` must then be empty)."""


@dataclass
class TrainingData:
    """What a method trains on, as the engine iterates it.

    Attributes:
        dataset: Map-style dataset whose items are ``(image [3, H, W] float32 RGB in
            [0, 1], target)``; a target holds at least ``boxes`` ``[M, 4]`` float32 xyxy
            and ``pids`` ``[M]`` int64 (``-1`` unlabelled) and ``image_index``.
        sampler: Batch sampler of this rank's indices with ``set_epoch(epoch, *, skip)``
            (batches depend only on seed and epoch, so a resumed epoch skips ``skip``
            batches and continues with the same ones) and ``batches_per_epoch()``.
        collate: Turns a list of items into ``(images, targets)`` lists.
        splits: The splits read, the primary (``data.dataset``) first.
        num_identities: Contiguous identity labels ``0..K-1`` the method may see
            (0 when it reads no identities).
        label_to_pid: ``[K]`` int64 original person id of each label (saved with
            checkpoints).
    """

    dataset: torch.utils.data.Dataset
    sampler: Any
    collate: Callable[[list[Any]], tuple[list[Tensor], list[dict[str, Any]]]]
    splits: tuple[PersonSearchSplit, ...]
    num_identities: int
    label_to_pid: np.ndarray


@runtime_checkable
class Evaluator(Protocol):
    """The foundation's evaluator protocol, as the engine uses it.

    ``reset()`` forgets what was processed, ``process(outputs)`` takes one item of what
    :meth:`TrainingMethod.inference` yields, ``evaluate()`` returns the scores (floats by
    name; ``eval.best_metric`` picks one of them).
    """

    def reset(self) -> None:
        """Forget everything processed so far."""

    def process(self, outputs: Any) -> None:
        """Add one item of inference output."""

    def evaluate(self) -> dict[str, float]:
        """Scores of what was processed since the last reset."""


class MethodLosses(nn.Module):
    """A method's losses on top of the model's: ``forward`` returns weighted scalar terms.

    Subclasses own whatever state their losses need (OIM tables, memory banks,
    projection heads) as submodules and buffers: the engine moves them to the device,
    optimises their parameters with the model's, runs them inside the (DDP-wrapped)
    training forward and saves their ``state_dict`` in every resumable checkpoint.
    """

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """Loss terms of one batch.

        Args:
            model: The unwrapped model (to run a second path through it, e.g.
                ``model.encode_boxes``).
            outputs: What ``model.forward_train`` returned for this batch.
            images: ``B`` tensors ``[3, H, W]`` float32 on the training device.
            targets: ``B`` dicts (``boxes`` ``[M, 4]`` float32, ``pids`` ``[M]`` int64, ...).

        Returns:
            Weighted scalar tensors by name; the engine adds them to ``outputs.losses``
            (a name already there is an error).
        """
        return {}


@dataclass(frozen=True)
class ExportDescription:
    """What the exporter makes of a method's checkpoints.

    Attributes:
        family: Export family registered in ``personsearch_export.families`` that knows
            how to trace the model (``"seqnet"``: one-step detector + re-id models with
            ``predict``/``embed_boxes``).
        graphs: Which graphs of the family to write, by bundle role (for ``seqnet``:
            ``detector``, ``query_encoder`` and the ``split`` graphs around RoIAlign).
    """

    family: str = "seqnet"
    graphs: tuple[str, ...] = ("detector", "query_encoder", "split")


def eval_options(cfg: ExperimentConfig) -> EvalOptions:
    """The person-search protocol choices of a recipe's ``eval`` section.

    ``eval.gallery_size`` is a CUHK-SYSU setting and is not passed on for other datasets,
    whose protocol has no gallery size (``eval.multi_view`` is checked up front instead,
    by :meth:`TrainingMethod.check_config`).
    """
    from personsearch_train.evaluation.scoring import DEFAULT_GALLERY_SIZE, EvalOptions

    is_cuhk = cfg.data.dataset == "cuhk_sysu"
    return EvalOptions(
        dataset=cfg.data.dataset,
        gallery_size=cfg.eval.gallery_size if is_cuhk else DEFAULT_GALLERY_SIZE,
        multi_view=cfg.eval.multi_view,
        cbgm=cfg.eval.cbgm,
        cws=cfg.eval.cws,
    )


def refuse_identity_supervision(name: str, cfg: ExperimentConfig) -> None:
    """Stop a weakly supervised method from training with identity labels or mixed sources.

    Raises:
        ConfigError: Naming the key.
    """
    if cfg.data.use_identities:
        raise ConfigError(
            f"data.use_identities: true, but {name} is weakly supervised and trains without identity "
            "labels; set data.use_identities: false (labels are then read only to score pseudo labels)"
        )
    if cfg.data.mix:
        raise ConfigError(
            f"data.mix: {name} clusters the people of one training set; train on data.dataset alone"
        )


class TrainingMethod:
    """Base class of training methods; one instance per run, holding its typed settings.

    Class attributes a subclass sets:

    * ``name``: registry key, used as ``method: NAME`` in recipes;
    * ``summary``: one line for ``personsearch train --list-methods``;
    * ``Args``: frozen dataclass of the method's settings with their defaults (a recipe's
      ``method_args`` are checked against its fields and types);
    * ``reads_identities``: whether the method may see identity labels; False makes every
      training box unlabelled (``-1``) whatever ``data.use_identities`` says, so a
      weakly supervised method cannot read labels by mistake;
    * ``dataset_kinds``: reader kinds (``personsearch_train.data.registry``) its
      ``data.dataset`` may name.

    Args:
        args: The resolved settings (an ``Args`` instance).
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Args: ClassVar[type] = NoArgs
    reads_identities: ClassVar[bool] = True
    dataset_kinds: ClassVar[tuple[str, ...]] = ("person_search",)

    def __init__(self, args: Any) -> None:
        if not isinstance(args, self.Args):
            raise TypeError(f"{type(self).__name__} takes {self.Args.__name__}, got {type(args).__name__}")
        self.args = args

    # ------------------------------------------------------------- recipes
    @classmethod
    def migrate_recipe(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrite an older recipe layout into the current one before it is checked.

        Args:
            data: The parsed recipe (a copy the method may change).

        Returns:
            The recipe in the current layout.
        """
        return data

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Refuse settings this method cannot train with, before anything is loaded.

        Raises:
            ConfigError: Naming the key and what would work.
        """
        from personsearch_train.data.registry import available_readers, get_reader

        names = tuple(n for kind in self.dataset_kinds for n in available_readers(kind))
        for key, dataset in [("data.dataset", cfg.data.dataset)] + [
            (f"data.mix[{i}].dataset", source.dataset) for i, source in enumerate(cfg.data.mix)
        ]:
            if dataset not in names:
                raise ConfigError(
                    f"{key}: method {self.name!r} trains on {' or '.join(self.dataset_kinds)} datasets; "
                    f"{dataset!r} is not one of {', '.join(names)}"
                )
        reader = get_reader(cfg.data.dataset)
        if cfg.eval.every > 0 and reader.kind == "person_search" and not reader.has_test_split:
            # Caught here, not after the first epoch's training, when evaluation would fail.
            raise ConfigError(
                f"data.dataset: {cfg.data.dataset!r} is a pre-training source without a test split; "
                "list it under data.mix next to a person-search dataset, or set eval.every: 0"
            )
        if cfg.eval.multi_view and cfg.data.dataset != "prw":
            raise ConfigError(f"eval.multi_view is a PRW protocol; data.dataset is {cfg.data.dataset!r}")

    def settings(self) -> dict[str, Any]:
        """The method's settings as JSON types (stored in checkpoint metadata)."""
        return dataclasses.asdict(self.args)

    # --------------------------------------------------------------- data
    def build_train_data(
        self,
        cfg: ExperimentConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        train_split: PersonSearchSplit | None = None,
    ) -> TrainingData:
        """The training dataset and this rank's batch sampler.

        Args:
            cfg: The experiment config.
            rank: This process's rank.
            world_size: Number of processes (``train.batch_size`` is split over them).
            train_split: A ready primary split (tests); read from ``cfg.data`` when None.

        Returns:
            The data the loop iterates.
        """
        from personsearch_train.data.mixing import MixedTrainDataset, RatioBatchSampler
        from personsearch_train.data.registry import load_split
        from personsearch_train.data.samplers import GroupedBatchSampler
        from personsearch_train.data.torch_dataset import PersonSearchTrainDataset, collate_batch

        use_identities = cfg.data.use_identities and self.reads_identities
        primary = (
            train_split if train_split is not None else load_split(cfg.data.dataset, cfg.data.root, "train")
        )
        per_rank = cfg.train.batch_size // world_size

        def dataset_of(split: PersonSearchSplit) -> PersonSearchTrainDataset:
            return PersonSearchTrainDataset(
                split, flip_prob=cfg.data.flip_prob, seed=cfg.train.seed, use_identities=use_identities
            )

        if not cfg.data.mix:
            dataset = dataset_of(primary)
            sampler = GroupedBatchSampler(
                num_items=len(dataset),
                batch_size=per_rank,
                seed=cfg.train.seed,
                aspect_ratios=dataset.aspect_ratios() if cfg.data.aspect_grouping else None,
                rank=rank,
                world_size=world_size,
                max_batches=cfg.train.max_iters_per_epoch,
            )
            splits: tuple[PersonSearchSplit, ...] = (primary,)
        else:
            # Each extra source keeps its own labels; they are offset past the primary's
            # so identities of different datasets never share a label.
            splits = (primary,) + tuple(
                load_split(source.dataset, source.root, "train") for source in cfg.data.mix
            )
            members: list[Any] = [dataset_of(primary)]
            offset = primary.num_identities
            for split in splits[1:]:
                members.append(_OffsetIdentities(dataset_of(split), offset))
                offset += split.num_identities
            dataset = MixedTrainDataset(members, names=[cfg.data.dataset] + [s.dataset for s in cfg.data.mix])
            sampler = RatioBatchSampler(
                [len(m) for m in members],
                [cfg.data.ratio] + [s.ratio for s in cfg.data.mix],
                batch_size=per_rank,
                seed=cfg.train.seed,
                rank=rank,
                world_size=world_size,
                max_batches=cfg.train.max_iters_per_epoch,
                aspect_ratios=dataset.member_aspect_ratios() if cfg.data.aspect_grouping else None,
            )
        num_ids = sum(s.num_identities for s in splits) if use_identities else 0
        label_to_pid = (
            np.concatenate([s.label_to_pid for s in splits]).astype(np.int64)
            if use_identities
            else np.zeros(0, np.int64)
        )
        return TrainingData(
            dataset=dataset,
            sampler=sampler,
            collate=collate_batch,
            splits=splits,
            num_identities=num_ids,
            label_to_pid=label_to_pid,
        )

    # -------------------------------------------------------------- model
    def model_arguments(self, cfg: ExperimentConfig, data: TrainingData) -> dict[str, Any]:
        """Constructor overrides of the registered model ``cfg.model.name``."""
        return dict(cfg.model.overrides)

    def build_model(self, cfg: ExperimentConfig, data: TrainingData) -> nn.Module:
        """The model to train: ``create_model(cfg.model.name, **model_arguments)``.

        Backbone weights from ``model.backbone_weights`` (a local file) are loaded here.
        """
        from personsearch_train.models import create_model, load_backbone_weights

        model = create_model(cfg.model.name, **self.model_arguments(cfg, data))
        if cfg.model.backbone_weights:
            load_backbone_weights(model, Path(cfg.model.backbone_weights).expanduser())
        return model

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> MethodLosses:
        """The method's losses on the model's outputs (none by default)."""
        return MethodLosses()

    def build_hooks(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> list[TrainingHook]:
        """Callbacks around the loop (pseudo labels, memories); none by default."""
        return []

    def parameter_groups(
        self, cfg: ExperimentConfig, modules: Mapping[str, nn.Module]
    ) -> list[dict[str, Any]] | None:
        """Optimiser parameter groups with their own learning rates, or None for one group.

        Args:
            cfg: The experiment config (``optim.lr`` / ``optim.weight_decay`` are the base values).
            modules: ``{"model": ..., "losses": ..., "hooks": ...}``: everything the
                optimiser updates.

        Returns:
            Groups as torch optimisers take them (``params`` plus any ``lr`` /
            ``weight_decay``); None optimises every parameter with the base settings.
        """
        return None

    # --------------------------------------------------------- evaluation
    def build_test_data(self, cfg: ExperimentConfig) -> PersonSearchSplit:
        """The evaluation data: the test split of ``data.dataset``."""
        from personsearch_train.data.registry import load_split

        return load_split(cfg.data.dataset, cfg.data.root, "test")

    def build_evaluator(self, cfg: ExperimentConfig, test_data: Any) -> Evaluator:
        """The evaluator of ``eval`` settings on the test data (the exact person-search protocol)."""
        from personsearch_train.engine.evaluation import SearchSplitEvaluator

        return SearchSplitEvaluator(test_data, eval_options(cfg))

    def inference(
        self, model: nn.Module, test_data: Any, cfg: ExperimentConfig, *, device: torch.device, progress: bool
    ) -> Iterable[Any]:
        """Run the model over the test data; yields what the evaluator's ``process`` takes.

        The default yields one :class:`~personsearch_train.evaluation.predictions.SearchPredictions`
        of the whole split (CBGM needs every query's context at once).
        """
        from personsearch_train.engine.inference import predict_split

        yield predict_split(
            model,
            test_data,
            device=device,
            batch_size=cfg.eval.batch_size,
            query_context=cfg.eval.cbgm,
            progress=progress,
        )

    # ------------------------------------------------------ checkpoints
    def export_description(self) -> ExportDescription:
        """Which export family and graphs the exporter writes for this method's checkpoints."""
        return ExportDescription()

    def upgrade_checkpoint(
        self, metadata: Mapping[str, Any], weights: dict[str, Tensor]
    ) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
        """Bring a checkpoint saved by an older version into the current layout.

        Args:
            metadata: The checkpoint's JSON metadata.
            weights: Its tensors by name, as saved.

        Returns:
            ``(metadata, model_weights, loss_state)``: the model's constructor arguments
            in ``metadata["model"]["kwargs"]`` as today's model takes them, the tensors
            of the model, and any tensors that now belong to the method's losses (their
            ``state_dict``; empty when the checkpoint has none).
        """
        return dict(metadata), dict(weights), {}

    @classmethod
    def describe_args(cls) -> list[tuple[str, str, Any]]:
        """``(name, type, default)`` of each setting, for listings."""
        rows = []
        for f in dataclasses.fields(cls.Args):
            default = f.default if f.default is not dataclasses.MISSING else None
            if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                default = f.default_factory()  # type: ignore[misc]
            rows.append((f.name, str(f.type), default))
        return rows


class _OffsetIdentities(torch.utils.data.Dataset):
    """A training dataset whose identity labels start at ``offset`` (``-1`` stays ``-1``)."""

    def __init__(self, dataset: Any, offset: int) -> None:
        self.dataset = dataset
        self.offset = int(offset)

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def aspect_ratios(self) -> np.ndarray:
        return self.dataset.aspect_ratios()

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        image, target = self.dataset[index]
        pids = target["pids"]
        return image, {**target, "pids": torch.where(pids >= 0, pids + self.offset, pids)}
