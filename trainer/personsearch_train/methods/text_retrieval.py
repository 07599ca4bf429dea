"""What every text-to-image person retrieval method shares: data, evaluation, optimiser groups.

A text-retrieval method trains a dual encoder
(:class:`~personsearch_train.models.dual_encoder.DualEncoder`) on image-caption pairs of
a ``text_person`` dataset (CUHK-PEDES, ICFG-PEDES, RSTPReid, UFine6926) and is scored
with R@1/5/10, mAP, mINP and mSD on its test split
(:class:`~personsearch_train.evaluation.text_evaluator.TextRetrievalEvaluator`).
Subclasses (``irra``, ``cfam``) differ only in their losses.

Optimiser groups follow IRRA's ``solver/build.py``: parameters that start from
pretrained weights (the text encoder) take ``optim.lr``; everything initialised here
(projections, the image tower trained from scratch, classifiers, heads) takes
``optim.lr * new_module_lr_factor``; biases take ``bias_lr_factor`` times their
group's rate and ``bias_weight_decay``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.methods.base import Evaluator, ExportDescription, TrainingData, TrainingMethod

if TYPE_CHECKING:
    from personsearch_train.data.text_person import TextPersonSplit
    from personsearch_train.engine.config import ExperimentConfig

__all__ = ["TextRetrievalMethod"]


class TextRetrievalMethod(TrainingMethod):
    """Base of the text-to-image retrieval methods (``Args`` must have the fields used here).

    ``Args`` fields read by this class: ``augment``, ``new_module_lr_factor``,
    ``bias_lr_factor``, ``bias_weight_decay``.
    """

    dataset_kinds: ClassVar[tuple[str, ...]] = ("text_person",)
    reads_identities = True

    def check_config(self, cfg: ExperimentConfig) -> None:
        """Refuse person-search-only settings and non-dual-encoder models.

        Raises:
            ConfigError: Naming the key.
        """
        super().check_config(cfg)
        if cfg.data.mix:
            raise ConfigError(f"data.mix: {self.name} trains on one text-person dataset; remove data.mix")
        if not cfg.model.name.startswith("dual_encoder"):
            raise ConfigError(
                f"model.name {cfg.model.name!r}: {self.name} trains a dual encoder "
                "(dual_encoder_r50, dual_encoder_vit, dual_encoder_small, dual_encoder_tiny)"
            )
        if not cfg.data.use_identities:
            raise ConfigError(f"data.use_identities: false, but {self.name} learns from identity labels")

    # --------------------------------------------------------------- data
    def build_train_data(
        self,
        cfg: ExperimentConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        train_split: Any = None,
    ) -> TrainingData:
        """One item per training caption, tokenised with the model's tokenizer."""
        from personsearch_train.data.registry import load_text_split
        from personsearch_train.data.samplers import GroupedBatchSampler
        from personsearch_train.data.text_pairs import TextImagePairDataset
        from personsearch_train.data.torch_dataset import collate_batch

        split = (
            train_split
            if train_split is not None
            else load_text_split(cfg.data.dataset, cfg.data.root, "train")
        )
        self._model_for_data = self._model_for_data or self._create_model(cfg)
        model = self._model_for_data
        dataset = TextImagePairDataset(
            split,
            tokenizer=model.tokenizer,
            image_size=model.image_size,
            seed=cfg.train.seed,
            augment=self.args.augment,
            flip_prob=cfg.data.flip_prob,
        )
        sampler = GroupedBatchSampler(
            num_items=len(dataset),
            batch_size=cfg.train.batch_size // world_size,
            seed=cfg.train.seed,
            rank=rank,
            world_size=world_size,
            max_batches=cfg.train.max_iters_per_epoch,
        )
        return TrainingData(
            dataset=dataset,
            sampler=sampler,
            collate=collate_batch,
            splits=(split,),
            num_identities=split.num_identities,
            label_to_pid=split.label_to_pid,
        )

    # -------------------------------------------------------------- model
    _model_for_data: nn.Module | None = None

    def _create_model(self, cfg: ExperimentConfig) -> nn.Module:
        from personsearch_train.models import create_model

        return create_model(cfg.model.name, **dict(cfg.model.overrides))

    def build_model(self, cfg: ExperimentConfig, data: TrainingData) -> nn.Module:
        """The dual encoder (the one built for the tokenizer when the data came first)."""
        if cfg.model.backbone_weights:
            raise ConfigError(
                "model.backbone_weights loads a person-search ResNet trunk; a dual encoder's text tower "
                "loads from model.overrides.text_model_dir instead"
            )
        model = self._model_for_data or self._create_model(cfg)
        self._model_for_data = None
        return model

    def parameter_groups(
        self, cfg: ExperimentConfig, modules: Mapping[str, nn.Module]
    ) -> list[dict[str, Any]]:
        """IRRA's groups: pretrained at ``optim.lr``, new modules faster, biases apart."""
        model = modules["model"]
        names = getattr(model, "pretrained_parameter_names", None)
        pretrained = names() if callable(names) else set()
        buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for owner, module in modules.items():
            for name, param in module.named_parameters():
                if not param.requires_grad:
                    continue
                is_pretrained = owner == "model" and name in pretrained
                buckets.setdefault((is_pretrained, name.endswith("bias")), []).append(param)
        groups = []
        for (is_pretrained, is_bias), params in sorted(buckets.items()):
            lr = cfg.optim.lr * (1.0 if is_pretrained else self.args.new_module_lr_factor)
            if is_bias:
                groups.append(
                    {
                        "params": params,
                        "lr": lr * self.args.bias_lr_factor,
                        "weight_decay": self.args.bias_weight_decay,
                    }
                )
            else:
                groups.append({"params": params, "lr": lr, "weight_decay": cfg.optim.weight_decay})
        return groups

    # --------------------------------------------------------- evaluation
    def build_test_data(self, cfg: ExperimentConfig) -> TextPersonSplit:
        """The test split of ``data.dataset``."""
        from personsearch_train.data.registry import load_text_split

        return load_text_split(cfg.data.dataset, cfg.data.root, "test")

    def build_evaluator(self, cfg: ExperimentConfig, test_data: Any) -> Evaluator:
        """R@k / mAP / mINP / mSD, per source for UFine3C-style sets."""
        from personsearch_train.evaluation.text_evaluator import TextRetrievalEvaluator

        return TextRetrievalEvaluator(group_by_source=cfg.data.dataset == "ufine3c")

    def inference(
        self, model: nn.Module, test_data: Any, cfg: ExperimentConfig, *, device: torch.device, progress: bool
    ) -> Iterable[Any]:
        """Embeds every test caption and image once."""
        from personsearch_train.engine.text_inference import embed_text_split

        if not hasattr(model, "encode_texts"):
            raise TrainerError(f"{type(model).__name__} has no text tower; {self.name} needs a dual encoder")
        yield embed_text_split(
            model, test_data, device=device, batch_size=max(cfg.eval.batch_size, 1), progress=progress
        )

    def export_description(self) -> ExportDescription:
        """Two encoder graphs (text and image), each giving one L2-normalised embedding."""
        return ExportDescription(family="dual_encoder", graphs=("text_encoder", "image_encoder"))
