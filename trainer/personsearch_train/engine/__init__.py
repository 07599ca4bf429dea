"""The training engine: config, optimisers and schedules, checkpoints, DDP, hooks and the loop.

The parts weakly supervised methods share (memory banks, clustering, crops) are in
:mod:`personsearch_train.weak_supervision`, not here.

Example:
    >>> from personsearch_train.engine import Trainer, load_config
    >>> cfg = load_config("synthetic_instant", data_root="synthetic/")  # doctest: +SKIP
    >>> Trainer(cfg, run_dir="runs/instant").fit()  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from personsearch_train.engine.checkpoint import load_model_from_checkpoint, read_checkpoint
    from personsearch_train.engine.config import ExperimentConfig, load_config
    from personsearch_train.engine.hooks import TrainingHook
    from personsearch_train.engine.inference import predict_split
    from personsearch_train.engine.loop import Trainer, TrainResult

#: Public name -> submodule. Loaded on first use (PEP 562), so that reading a recipe or a
#: setting (``engine.config``) does not import torch: ``personsearch eval --bundle`` runs
#: the torch-free runtime and needs only the config helpers and the protocols.
_EXPORTS = {
    "ExperimentConfig": "config",
    "TrainResult": "loop",
    "Trainer": "loop",
    "TrainingHook": "hooks",
    "load_config": "config",
    "load_model_from_checkpoint": "checkpoint",
    "predict_split": "inference",
    "read_checkpoint": "checkpoint",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "ExperimentConfig",
    "TrainResult",
    "Trainer",
    "TrainingHook",
    "load_config",
    "load_model_from_checkpoint",
    "predict_split",
    "read_checkpoint",
]
