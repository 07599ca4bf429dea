"""Optimisers and per-iteration learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from personsearch_train.engine.config import OptimConfig, ScheduleConfig

__all__ = ["WarmupSchedule", "build_optimizer", "build_scheduler"]


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | list[dict[str, Any]], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """Create the optimiser named by ``cfg.name`` over the trainable parameters.

    Args:
        params: Parameters to optimise, or parameter groups (dicts with ``params`` and
            any per-group ``lr`` / ``weight_decay``, as torch optimisers take them);
            parameters with ``requires_grad=False`` are skipped, and groups left empty
            are dropped.
        cfg: Optimiser settings (the defaults of every group).
    """
    items = list(params)
    trainable: list[Any]
    if items and isinstance(items[0], dict):
        trainable = [
            {**group, "params": kept}
            for group in items
            if (kept := [p for p in group["params"] if p.requires_grad])
        ]
    else:
        trainable = [p for p in items if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(
            trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
        )
    betas = (float(cfg.betas[0]), float(cfg.betas[1]))
    if cfg.name == "adam":
        return torch.optim.Adam(trainable, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            trainable, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimiser {cfg.name!r}")


class WarmupSchedule:
    """Learning-rate factor per global iteration: linear warm-up, then step or cosine.

    The warm-up ramps the factor linearly from ``warmup_factor`` at iteration 0 to 1
    at ``warmup_iters`` (as in SeqNet's ``warmup_lr_scheduler``). ``multistep`` then
    multiplies by ``gamma`` at the start of each milestone epoch; ``cosine`` decays
    from 1 to ``min_lr_factor`` over the iterations after the warm-up.

    Args:
        cfg: Schedule settings.
        iters_per_epoch: Optimiser steps per epoch.
        epochs: Total epochs.
    """

    def __init__(self, *, cfg: ScheduleConfig, iters_per_epoch: int, epochs: int) -> None:
        self.kind = cfg.kind
        self.iters_per_epoch = max(1, int(iters_per_epoch))
        self.total_iters = self.iters_per_epoch * int(epochs)
        self.warmup_iters = int(round(cfg.warmup_epochs * self.iters_per_epoch))
        self.warmup_factor = float(cfg.warmup_factor)
        self.milestones = [int(m) * self.iters_per_epoch for m in cfg.milestones]
        self.gamma = float(cfg.gamma)
        self.min_lr_factor = float(cfg.min_lr_factor)

    def __call__(self, iteration: int) -> float:
        """Factor applied to the base learning rate at global ``iteration`` (0-based)."""
        factor = 1.0
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            factor = self.warmup_factor * (1.0 - alpha) + alpha
        if self.kind == "multistep":
            passed = sum(1 for m in self.milestones if iteration >= m)
            return factor * self.gamma**passed
        span = max(1, self.total_iters - self.warmup_iters)
        progress = min(1.0, max(0.0, (iteration - self.warmup_iters) / span))
        cosine = self.min_lr_factor + (1.0 - self.min_lr_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return factor * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, iters_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler to step once per optimiser step (not per epoch).

    Its ``state_dict`` holds only numbers (the iteration counter and base rates), so
    it round-trips through ``torch.load(weights_only=True)``.
    """
    schedule = WarmupSchedule(cfg=cfg, iters_per_epoch=iters_per_epoch, epochs=epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedule)
