"""Training helpers shared by the weakly supervised method tests (rsiamnet, cgps, ssl).

Each test trains seqnet_tiny for a few steps on a cut of the ``tiny`` synthetic preset,
relabels the split to prove a method never reads identities, and compares final states.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from personsearch_train.data.registry import load_split
from personsearch_train.engine.loop import Trainer

FOLDERS = {"cuhk_sysu": "CUHK-SYSU", "prw": "PRW"}


def train_split(root: Path, dataset: str, people: int = 24):
    """The tiny training split cut to its first images holding ``people`` people (fast steps)."""
    split = load_split(dataset, root / FOLDERS[dataset], "train")
    kept, total = [], 0
    for record in split.images:
        if total >= people:
            break
        kept.append(record)
        total += len(record.boxes)
    return dataclasses.replace(split, images=tuple(kept))


def with_pids(split, relabel):
    return dataclasses.replace(
        split, images=tuple(dataclasses.replace(r, pids=relabel(r.pids)) for r in split.images)
    )


def train(cfg, run_dir: Path, split, *, max_steps: int = 0, resume: bool = False) -> Trainer:
    trainer = Trainer(cfg, run_dir=run_dir, train_split=split, progress=False)
    trainer.fit(max_steps=max_steps, resume=resume)
    return trainer


def final_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {
        **trainer.model.state_dict(),
        **{f"losses.{k}": v for k, v in trainer.losses.state_dict().items()},
    }
