"""Export families: how the exporter turns one kind of model into bundle graphs.

A training method's checkpoint says which family exports it and which of the family's
graphs to write (:class:`personsearch_train.methods.ExportDescription`); the exporter
looks the family up here and never inspects the model itself. A new model family is one
module that defines an :class:`ExportFamily` and registers it, without editing
``exporter.py``. ``seqnet`` (:mod:`personsearch_export.seqnet_family`) covers one-step
detector + re-id models with SeqNet's surface.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from personsearch_runtime.bundle import EmbeddingSpec, ModelSpec, Postprocessing, Preprocessing, SplitSpec

from personsearch_export.errors import ExportError
from personsearch_export.image_profile import ImageProfile

__all__ = [
    "ExportFamily",
    "ExportRequest",
    "FamilyGraphs",
    "available_families",
    "get_export_family",
    "register_export_family",
]


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked the exporter for, as a family receives it.

    Attributes:
        roles: Graphs to write, by bundle role (the method's export description).
        opset: ONNX opset (>= 16).
        max_detections: Fixed top-K of detection graphs; None for the model's own.
        profile: Fed image sizes; None for the family's default for the model.
        max_batch: Largest batch of batched graphs.
        convert: Applied to each written graph before it is hashed (the fp16 pass), or None.
        rpn_pre_nms_top_n: For families whose graphs run a region proposal network: the
            anchors kept before its NMS (the K of a ``TopK``). None for the family's
            default, which must keep the graphs buildable by TensorRT (K < 3840).
    """

    roles: tuple[str, ...]
    opset: int
    max_detections: int | None = None
    profile: ImageProfile | None = None
    max_batch: int = 4
    convert: Callable[[Path], object] | None = None
    rpn_pre_nms_top_n: int | None = None


@dataclass(frozen=True)
class FamilyGraphs:
    """What a family wrote into a bundle folder: everything the manifest needs but provenance.

    Attributes:
        models: Bundle role -> model spec (file, hash, inputs, outputs, dimension ranges).
        preprocessing: How the runtime prepares images for the graphs.
        postprocessing: Score and NMS thresholds and the fixed top-K.
        embedding: Embedding size and normalisation.
        split: The split graphs' contract, or None when they were not written.
    """

    models: dict[str, ModelSpec]
    preprocessing: Preprocessing
    postprocessing: Postprocessing
    embedding: EmbeddingSpec
    split: SplitSpec | None


class ExportFamily(Protocol):
    """The exporter's view of one kind of model.

    Attributes:
        name: Registry key (the ``family`` of an export description).
        roles: Graphs the family can write, by bundle role.
        required_roles: Roles every export of this family includes (the parity check
            runs on them).
    """

    name: str
    roles: tuple[str, ...]
    required_roles: tuple[str, ...]

    def check_model(self, model: torch.nn.Module, where: str) -> None:
        """Raise :class:`ExportError` (naming ``where``) when the model is not of this family."""

    def write_graphs(self, model: torch.nn.Module, folder: Path, request: ExportRequest) -> FamilyGraphs:
        """Trace and write the requested graphs into ``folder``."""

    def parity(
        self, folder: Path, model: torch.nn.Module, *, scenes: Sequence[np.ndarray], random_cases: int
    ) -> dict[str, Any]:
        """Compare the written bundle with the PyTorch model; the report ``parity.json`` holds."""


_FAMILIES: dict[str, ExportFamily] = {}


def register_export_family(family: ExportFamily) -> ExportFamily:
    """Add a family under its ``name``.

    Raises:
        ValueError: The name is taken.
    """
    if family.name in _FAMILIES:
        raise ValueError(f"an export family named {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def available_families() -> tuple[str, ...]:
    """Registered family names, sorted."""
    _load_builtin()
    return tuple(sorted(_FAMILIES))


def get_export_family(name: str) -> ExportFamily:
    """The family registered as ``name``.

    Raises:
        ExportError: Unknown name; the message lists the registered ones.
    """
    _load_builtin()
    if name not in _FAMILIES:
        raise ExportError(
            f"no export family {name!r} is registered (known: {', '.join(sorted(_FAMILIES))}); "
            "import the module that registers it before exporting"
        )
    return _FAMILIES[name]


def _load_builtin() -> None:
    from personsearch_export import seqnet_family  # noqa: F401  (registers "seqnet")
