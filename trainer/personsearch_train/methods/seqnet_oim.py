"""``seqnet_oim``: the supervised baseline, SeqNet's detector with the OIM re-id loss.

SeqNet (Li & Miao, AAAI 2021; methods.md section 1) trains its norm-aware embedding with
Online Instance Matching (Xiao et al., CVPR 2017; section 1.3): a lookup table of one
running feature per labelled training identity and a circular queue of recent unlabelled
people, softmax over both at scale 30. The detector and the embedding are the model's
(:class:`~personsearch_train.models.seqnet.SeqNet`); this module owns the loss and its
tables, so the model can be trained by other objectives too.

It is the default method: a recipe without ``method:`` trains it. Recipes written before
the method registry put the OIM sizes among the model's constructor arguments
(``model.overrides.queue_size``, ``num_labelled_ids``, ``oim_scale``, ``oim_momentum``) and
checkpoints stored the tables among the model's weights (``oim.lut``, ``oim.queue``,
``oim.queue_head``); both still load, translated by :meth:`SeqNetOIM.migrate_recipe` and
:meth:`SeqNetOIM.upgrade_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.losses.oim import OIMLoss
from personsearch_train.methods.base import MethodLosses, TrainingData, TrainingMethod
from personsearch_train.methods.registry import register_method
from personsearch_train.models.structures import TrainingOutputs

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig

__all__ = ["OIMReidLoss", "SeqNetOIM", "SeqNetOIMArgs", "oim_for_model"]

#: Model constructor arguments of older versions that are OIM settings now -> their name here.
LEGACY_MODEL_ARGUMENTS = {
    "num_labelled_ids": "num_labelled",
    "queue_size": "queue_size",
    "oim_scale": "scale",
    "oim_momentum": "momentum",
}

#: Prefix of the OIM tables among an older checkpoint's model weights.
_LEGACY_WEIGHT_PREFIX = "oim."


@dataclass(frozen=True)
class SeqNetOIMArgs:
    """Settings of ``seqnet_oim`` (``method_args`` in a recipe).

    Attributes:
        num_labelled: Lookup-table rows; None takes the training data's number of
            identities (CUHK-SYSU 5532, PRW 482).
        queue_size: Circular-queue rows for unlabelled people (SeqNet: 5000 on
            CUHK-SYSU, 500 on PRW).
        scale: Logit scale (30).
        momentum: Weight of the old lookup-table entry in its update (0.5).
        reid_loss_weight: Weight of ``loss_box_reid`` in the total (SeqNet ``LW_BOX_REID``: 1).
    """

    num_labelled: int | None = None
    queue_size: int = 5000
    scale: float = 30.0
    momentum: float = 0.5
    reid_loss_weight: float = 1.0


def oim_for_model(
    method: str, model: nn.Module, *, num_labelled: int, queue_size: int, scale: float, momentum: float
) -> OIMLoss:
    """An OIM loss sized for ``model``'s re-id embedding.

    Args:
        method: The method's name, for the error message.
        model: A model with an int ``embedding_dim``.
        num_labelled: Rows of the labelled lookup table.
        queue_size: Length of the unlabelled circular queue.
        scale: OIM's logit scale.
        momentum: Lookup-table update momentum.

    Raises:
        TrainerError: ``model`` has no ``embedding_dim``.
    """
    dim = getattr(model, "embedding_dim", None)
    if not isinstance(dim, int):
        raise TrainerError(
            f"{method} needs a model with an 'embedding_dim' (the re-id embedding size); "
            f"{type(model).__name__} has none. Pick a model that embeds people, or another method"
        )
    return OIMLoss(
        num_features=dim, num_labelled=num_labelled, queue_size=queue_size, scale=scale, momentum=momentum
    )


class OIMReidLoss(MethodLosses):
    """``loss_box_reid``: OIM on the embeddings of the RoIs the model matched to people.

    Args:
        oim: The OIM loss with its tables (``oim.lut`` ``[L, D]``, ``oim.queue``
            ``[Q, D]``, ``oim.queue_head``: buffers updated in backward, see
            :class:`~personsearch_train.losses.oim.OIMLoss`).
        weight: Multiplier of the loss.
    """

    def __init__(self, oim: OIMLoss, *, weight: float = 1.0) -> None:
        super().__init__()
        self.oim = oim
        self.weight = float(weight)

    def forward(  # type: ignore[override]
        self,
        model: nn.Module,
        outputs: TrainingOutputs,
        images: list[Tensor],
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """``{"loss_box_reid": weight * OIM(person_embeddings, person_labels)}``."""
        loss = self.oim(outputs.person_embeddings, outputs.person_labels)
        return {"loss_box_reid": loss.float() * self.weight}


@register_method
class SeqNetOIM(TrainingMethod):
    """The supervised one-step baseline: detection losses plus OIM re-id (SeqNet, NAE)."""

    name = "seqnet_oim"
    summary = "supervised baseline: SeqNet detector + OIM lookup table and queue (default)"
    Args = SeqNetOIMArgs
    reads_identities = True

    @classmethod
    def migrate_recipe(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Move OIM settings from ``model.overrides`` (older recipes) into ``method_args``.

        Raises:
            ConfigError: A setting given both ways with different values.
        """
        overrides = (data.get("model") or {}).get("overrides") or {}
        if not isinstance(overrides, dict):
            return data
        moved = {}
        for old, new in LEGACY_MODEL_ARGUMENTS.items():
            if old in overrides:
                moved[new] = overrides.pop(old)
        weights = overrides.get("loss_weights")
        if isinstance(weights, dict) and "loss_box_reid" in weights:
            moved["reid_loss_weight"] = weights.pop("loss_box_reid")
        if not moved:
            return data
        args = data.setdefault("method_args", {}) or {}
        if not isinstance(args, dict):
            return data
        for key, value in moved.items():
            if key in args and args[key] != value:
                raise ConfigError(
                    f"method_args.{key} is {args[key]!r} but the older model.overrides spelling sets it to "
                    f"{value!r}; keep only method_args.{key}"
                )
            args[key] = value
        data["method_args"] = args
        return data

    def build_losses(self, cfg: ExperimentConfig, model: nn.Module, data: TrainingData) -> OIMReidLoss:
        """OIM sized by the settings, the lookup table by the data when not given."""
        if self.args.num_labelled is None:
            # Resolved once, so the checkpoint records the size its tables have.
            self.args = replace(self.args, num_labelled=max(1, data.num_identities))
        oim = oim_for_model(
            self.name,
            model,
            num_labelled=int(self.args.num_labelled),
            queue_size=self.args.queue_size,
            scale=self.args.scale,
            momentum=self.args.momentum,
        )
        return OIMReidLoss(oim, weight=self.args.reid_loss_weight)

    def upgrade_checkpoint(
        self, metadata: Mapping[str, Any], weights: dict[str, Tensor]
    ) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, Tensor]]:
        """Split an older checkpoint's OIM settings and tables off the model's.

        Checkpoints written before the method registry stored the OIM sizes among the
        model's constructor arguments and the tables among its weights.
        """
        meta = dict(metadata)
        spec = dict(meta.get("model") or {})
        kwargs = dict(spec.get("kwargs") or {})
        legacy = {new: kwargs.pop(old) for old, new in LEGACY_MODEL_ARGUMENTS.items() if old in kwargs}
        loss_weights = kwargs.get("loss_weights")
        if isinstance(loss_weights, dict) and "loss_box_reid" in loss_weights:
            loss_weights = dict(loss_weights)
            legacy["reid_loss_weight"] = loss_weights.pop("loss_box_reid")
            kwargs["loss_weights"] = loss_weights
        spec["kwargs"] = kwargs
        meta["model"] = spec
        if legacy and "method" not in meta:
            meta["method"] = {"name": self.name, "args": {**SeqNetOIMArgs().__dict__, **legacy}}
        model_weights = {k: v for k, v in weights.items() if not k.startswith(_LEGACY_WEIGHT_PREFIX)}
        loss_state = {k: v for k, v in weights.items() if k.startswith(_LEGACY_WEIGHT_PREFIX)}
        return meta, model_weights, loss_state
