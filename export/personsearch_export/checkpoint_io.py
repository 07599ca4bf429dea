"""Load a trainer checkpoint for export, refusing corrupt files and mismatched weights clearly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from personsearch_runtime.bundle import file_sha256

from personsearch_export.errors import CheckpointError

__all__ = ["LoadedCheckpoint", "load_checkpoint"]


@dataclass
class LoadedCheckpoint:
    """A checkpoint ready to export.

    Attributes:
        model: The model, eval mode, CPU, float32.
        metadata: The checkpoint's JSON metadata.
        model_name: Registered model name (``metadata["model"]["name"]``).
        weights_path: The ``.safetensors`` file.
        weights_sha256: Its SHA-256 (the bundle's model identity).
    """

    model: torch.nn.Module
    metadata: dict[str, Any]
    model_name: str
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
            a model the exporter cannot export, or weights that belong to another model.
    """
    from personsearch_train.engine.checkpoint import find_checkpoint, load_metadata, weight_mismatches
    from personsearch_train.errors import TrainerError
    from personsearch_train.models import SeqNet, create_model
    from safetensors.torch import load_file

    try:
        files = find_checkpoint(path)
        meta = load_metadata(files)
    except TrainerError as exc:
        raise CheckpointError(str(exc)) from None
    spec = meta.get("model")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise CheckpointError(f"{files.metadata}: key 'model' must be {{'name': ..., 'kwargs': {{...}}}}")
    name, kwargs = spec["name"], spec.get("kwargs") or {}
    try:
        model = create_model(name, **kwargs)
    except TrainerError as exc:
        raise CheckpointError(f"{files.metadata}: {exc}") from None
    if not isinstance(model, SeqNet):
        raise CheckpointError(
            f"{files.metadata}: model {name!r} is not a SeqNet; the exporter supports SeqNet models"
        )
    try:
        state = load_file(str(files.weights))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(
            f"{files.weights} is not a readable safetensors file ({exc}); the checkpoint is corrupt or "
            "truncated - copy it again or re-save it from training"
        ) from None
    details = weight_mismatches(model.state_dict(), state)
    if details:
        raise CheckpointError(
            f"{files.weights}: the weights do not belong to model {name!r} "
            f"described in {files.metadata.name} "
            f"({'; '.join(details)}). The weights file comes from a different model; pass the matching "
            ".safetensors/.json pair."
        )
    model.load_state_dict(state, strict=True)
    model.eval().float()
    return LoadedCheckpoint(
        model=model,
        metadata=meta,
        model_name=name,
        weights_path=files.weights,
        weights_sha256=file_sha256(files.weights),
    )
