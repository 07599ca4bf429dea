"""Models shipped with the SDK, addressed as ``pretrained:NAME`` wherever a checkpoint is asked for.

No weights can be downloaded at run time, so the few models the SDK ships live in the
source tree next to the recipes (``trainer/pretrained/NAME/``): a weights-only
checkpoint (``model.safetensors`` + ``model.json``, the layout of
:mod:`personsearch_train.engine.checkpoint`) with a ``README.md`` that gives the
commands, seed and data that produced it and the metrics it reached. The SHA-256 of
each weights file is pinned here, in code, so a shipped file that was damaged or
swapped is refused before anything is built from it (the checkpoint's own metadata
hash could be swapped along with the file; this one cannot).

``personsearch eval --checkpoint pretrained:seqnet_small_synthetic`` and ``personsearch
export --checkpoint pretrained:seqnet_small_synthetic`` use the shipped model; so does
the demo, for everything after its instant-training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personsearch_train.errors import TrainerError

__all__ = [
    "PRETRAINED_DIR",
    "PRETRAINED_PREFIX",
    "SHIPPED_MODELS",
    "ShippedModel",
    "package_checkpoint",
    "is_pretrained_reference",
    "shipped_checkpoint",
]

#: Folder holding the shipped models (``trainer/pretrained`` in a source checkout).
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"

#: What a checkpoint argument starts with to name a shipped model.
PRETRAINED_PREFIX = "pretrained:"


@dataclass(frozen=True)
class ShippedModel:
    """One model shipped in ``trainer/pretrained``.

    Attributes:
        name: What follows ``pretrained:`` on the command line, and its folder's name.
        summary: One line: architecture, recipe and data it was trained on.
        weights_sha256: SHA-256 (hex) of ``model.safetensors``.
    """

    name: str
    summary: str
    weights_sha256: str

    @property
    def folder(self) -> Path:
        """The model's folder."""
        return PRETRAINED_DIR / self.name

    @property
    def weights(self) -> Path:
        """The model's ``.safetensors`` file."""
        return self.folder / "model.safetensors"


SHIPPED_MODELS: dict[str, ShippedModel] = {
    model.name: model
    for model in (
        ShippedModel(
            name="seqnet_small_synthetic",
            summary=(
                "seqnet_small (res4 stride 8) trained by the synthetic_small recipe on the CUHK-SYSU-format "
                "training set of `personsearch synth --preset small --seed 0`"
            ),
            weights_sha256="0d870dec0cc2bac55d33d5103455bd7a175ec60c8c0cc03df3a9f5a96fc7f9bb",
        ),
    )
}


def is_pretrained_reference(value: str | Path) -> bool:
    """True when a checkpoint argument names a shipped model (``pretrained:NAME``)."""
    return str(value).startswith(PRETRAINED_PREFIX)


def shipped_checkpoint(reference: str) -> Path:
    """Resolve ``pretrained:NAME`` (or ``NAME``) to the shipped model's weights file, verified.

    Args:
        reference: ``"pretrained:seqnet_small_synthetic"`` or the bare name.

    Returns:
        Path of the model's ``model.safetensors`` (its ``model.json`` lies beside it).

    Raises:
        TrainerError: The name is not a shipped model (the message lists them), its files
            are missing (an install without the source tree), or the weights' SHA-256
            differs from the pinned one (the file is damaged or was replaced).
    """
    name = reference.removeprefix(PRETRAINED_PREFIX)
    model = SHIPPED_MODELS.get(name)
    if model is None:
        raise TrainerError(
            f"{reference!r}: no shipped model named {name!r}; shipped models: "
            + ", ".join(f"pretrained:{n}" for n in SHIPPED_MODELS)
        )
    if not model.weights.is_file() or not model.weights.with_suffix(".json").is_file():
        raise TrainerError(
            f"{reference}: the shipped model's files are not in {model.folder}; shipped models come with a "
            "source checkout of personsearch (git clone, then pip install -e .)"
        )
    from personsearch_train.engine.checkpoint import file_sha256

    found = file_sha256(model.weights)
    if found != model.weights_sha256:
        raise TrainerError(
            f"{model.weights} is corrupted (SHA-256 {found}, expected {model.weights_sha256}); restore it "
            f"with `git checkout -- {model.weights}`"
        )
    return model.weights


def package_checkpoint(source: str | Path, out_folder: str | Path, *, provenance: dict[str, Any]) -> Path:
    """Write a run's checkpoint as a weights-only checkpoint to ship (``OUT/model.*``).

    The optimiser, schedule and loss state stay behind (a shipped model is for
    evaluation, export and fine-tuning, not for resuming someone else's run); the
    metadata keeps the model's constructor arguments, the training method and config,
    the metrics, and gains ``provenance``.

    Args:
        source: Run folder or checkpoint file (its ``best`` checkpoint for a folder).
        out_folder: Folder to write ``model.safetensors`` and ``model.json`` into.
        provenance: JSON-serialisable facts about how the model was made (commands,
            seeds, data, machine, commit), stored under ``metadata["provenance"]``.

    Returns:
        Path of the written ``model.safetensors``; pin its SHA-256 in
        :data:`SHIPPED_MODELS`.
    """
    from personsearch_train.engine.checkpoint import read_checkpoint, save_checkpoint

    loaded = read_checkpoint(source)
    metadata = {k: v for k, v in loaded.metadata.items() if k not in ("checksums", "resumable")}
    metadata["provenance"] = provenance
    out = Path(out_folder)
    out.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(out, "model", model=loaded.model, metadata=metadata).weights
