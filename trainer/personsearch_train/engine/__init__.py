"""The training engine: config, optimisers and schedules, checkpoints, DDP, hooks and the loop.

The parts weakly supervised methods share (memory banks, clustering, crops) are in
:mod:`personsearch_train.weak_supervision`, not here.

Example:
    >>> from personsearch_train.engine import Trainer, load_config
    >>> cfg = load_config("synthetic_instant", data_root="synthetic/")  # doctest: +SKIP
    >>> Trainer(cfg, run_dir="runs/instant").fit()  # doctest: +SKIP
"""

from personsearch_train.engine.checkpoint import load_model_from_checkpoint as load_model_from_checkpoint
from personsearch_train.engine.checkpoint import read_checkpoint as read_checkpoint
from personsearch_train.engine.config import ExperimentConfig as ExperimentConfig
from personsearch_train.engine.config import load_config as load_config
from personsearch_train.engine.hooks import TrainingHook as TrainingHook
from personsearch_train.engine.inference import predict_split as predict_split
from personsearch_train.engine.loop import Trainer as Trainer
from personsearch_train.engine.loop import TrainResult as TrainResult

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
