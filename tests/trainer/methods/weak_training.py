"""Training helpers shared by the weakly supervised method tests (rsiamnet, cgps, ssl).

Each test trains seqnet_tiny for a few steps on a cut of the ``tiny`` synthetic preset,
relabels the split to prove a method never reads identities, and compares final states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
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


def assert_training_ignores_identities(make_cfg: Callable, root: Path, dataset: str, tmp_path: Path) -> None:
    """Train on the split, its identities permuted and removed: final states must be equal.

    Args:
        make_cfg: Returns the method's experiment config (a fresh one for each run).
        root: The synthetic ``tiny`` preset.
        dataset: ``cuhk_sysu`` or ``prw``.
        tmp_path: Where the three runs go.
    """
    split = train_split(root, dataset)
    rng = np.random.default_rng(0)
    permutation = rng.permutation(max(split.num_identities, 1))
    permuted = with_pids(split, lambda p: np.where(p >= 0, permutation[np.maximum(p, 0)], -1))
    removed = dataclasses.replace(
        with_pids(split, lambda p: np.full_like(p, -1)), label_to_pid=np.zeros(0, np.int64)
    )
    assert any((r.pids != q.pids).any() for r, q in zip(split.images, permuted.images, strict=True))
    states = [
        final_state(train(make_cfg(), tmp_path / name, s))
        for name, s in (("a", split), ("b", permuted), ("c", removed))
    ]
    for other in states[1:]:
        assert states[0].keys() == other.keys()
        for key, value in states[0].items():
            assert torch.equal(value, other[key]), f"{key} differs when identities change"
