"""Extension points for methods built on the trainer.

A method (:class:`~personsearch_train.methods.TrainingMethod`) puts its per-batch losses
in its ``build_losses`` module and the work around the loop in :class:`TrainingHook`
objects from ``build_hooks``, instead of editing the loop. A hook can

* run code before/after every epoch and after every step (feature extraction over
  the whole training set, clustering, memory re-initialisation, new pseudo labels
  via :meth:`PersonSearchTrainDataset.set_pseudo_labels`);
* own modules (memory banks, projection heads): :meth:`TrainingHook.modules` are
  moved to the training device, their parameters are optimised with the model's, and
  their ``state_dict`` travels in every resumable checkpoint;
* set per-batch model state before the forward (:meth:`TrainingHook.before_forward`);
* add losses computed on a second input path: :meth:`TrainingHook.extra_losses` is
  called inside the (DDP-wrapped) training forward, with the batch, so gradients of
  e.g. a crop branch (:func:`~personsearch_train.weak_supervision.crop_people`) are
  synchronised like the model's.

Training without identity labels is the data setting ``data.use_identities: false``
(every box gets id ``-1``); a method then supplies its own labels or losses here. The
parts such methods share (box feature extraction, clustering, memory banks, person
crops) live in :mod:`personsearch_train.weak_supervision`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from personsearch_train.engine.loop import Trainer

__all__ = ["TrainingHook"]


class TrainingHook:
    """Base class of per-run callbacks; every method is optional."""

    def modules(self) -> dict[str, nn.Module]:
        """Named modules this hook owns (saved with resume checkpoints, optimised if trainable)."""
        return {}

    def before_train(self, trainer: Trainer) -> None:
        """Called once after set-up (and after a resume has restored state)."""

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Called before each epoch's first step (also when resuming mid-epoch)."""

    def before_forward(
        self, model: nn.Module, images: list[torch.Tensor], targets: list[dict[str, Any]]
    ) -> None:
        """Called inside the training forward, before the model runs on the batch.

        For per-batch model state that the batch decides, such as which data source's
        normalisation statistics are active (hybrid pre-training's alignment module).

        Args:
            model: The unwrapped model.
            images: ``[3, H, W]`` float RGB tensors on the training device.
            targets: The batch's target dicts (with ``source`` when ``data.mix`` is set).
        """

    def extra_losses(
        self, model: nn.Module, images: list[torch.Tensor], targets: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor]:
        """Additional weighted loss terms for this batch (summed with the model's).

        Args:
            model: The unwrapped model (so a method can reuse its backbone).
            images: ``[3, H, W]`` float RGB tensors on the training device.
            targets: Per image ``boxes [M, 4] float32 xyxy`` and ``pids [M] int64``.
        """
        return {}

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        """Called after every optimiser step with the step's (rank-averaged) losses."""

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Called after each epoch, before evaluation and checkpointing."""

    def state_dict(self) -> dict[str, Any]:
        """Extra non-module state to resume (tensors, numbers, strings, lists, dicts)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
