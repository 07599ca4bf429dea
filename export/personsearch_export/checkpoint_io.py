"""Load a trainer checkpoint for export, through the trainer's one checkpoint loader.

:func:`personsearch_train.engine.checkpoint.read_checkpoint` builds the model and the
method the checkpoint names and refuses damaged files and mismatched weights; this
module adds what a bundle records (the weights' SHA-256) and turns the trainer's errors
into the exporter's :class:`~personsearch_export.errors.CheckpointError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personsearch_export.errors import CheckpointError

if TYPE_CHECKING:
    from personsearch_train.methods import TrainingMethod

__all__ = ["LoadedCheckpoint", "load_checkpoint"]


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to export.

    Attributes:
        model: The model, eval mode, CPU, float32.
        metadata: The checkpoint's JSON metadata (current layout).
        model_name: Registered model name (``metadata["model"]["name"]``).
        method: The training method the checkpoint names (its export description
            says which graphs to write).
        weights_path: The ``.safetensors`` file.
        weights_sha256: Its SHA-256 (the bundle's model identity), as the trainer's
            loader hashed and verified it.
    """

    model: torch.nn.Module
    metadata: dict[str, Any]
    model_name: str
    method: TrainingMethod
    weights_path: Path
    weights_sha256: str


def load_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Build the model a checkpoint describes and load its weights strictly.

    Args:
        path: A run folder or a checkpoint's ``.safetensors`` / ``.json`` file.

    Returns:
        The loaded checkpoint.

    Raises:
        CheckpointError: Missing files, unreadable metadata or weights (corrupt file),
            an unknown model or method, or weights that belong to another model.
    """
    from personsearch_train.engine.checkpoint import read_checkpoint
    from personsearch_train.errors import TrainerError

    try:
        loaded = read_checkpoint(path)
    except TrainerError as exc:
        raise CheckpointError(str(exc)) from None
    loaded.model.eval().float()
    return LoadedCheckpoint(
        model=loaded.model,
        metadata=loaded.metadata,
        model_name=loaded.model_name,
        method=loaded.method,
        weights_path=loaded.files.weights,
        weights_sha256=loaded.weights_sha256,
    )
