"""Load ImageNet-pretrained ResNet weights, in torchvision's state-dict format, from a local file.

Nothing here downloads. Get the file once, on a machine with network access, e.g.
``torch.save(torchvision.models.resnet50(weights="IMAGENET1K_V1").state_dict(), "r50.pth")``
(or a ``.safetensors`` file with the same keys), and pass its path.

Keys map as SeqNet builds its network: ``conv1``, ``bn1``, ``layer1`` ... ``layer3``
go to the res4 trunk; ``layer4`` goes to *both* res5 heads (the detector head and its
re-id copy); ``fc`` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from personsearch_train.errors import TrainerError

__all__ = ["BackboneWeightsError", "LoadedWeights", "load_backbone_weights", "read_state_dict"]

_TRUNK_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.")
_HEAD_PREFIX = "layer4."
_UNUSED_PREFIXES = ("fc.",)


class BackboneWeightsError(TrainerError):
    """A backbone weights file is missing, unreadable, or does not fit the model."""


@dataclass(frozen=True)
class LoadedWeights:
    """What :func:`load_backbone_weights` did.

    Attributes:
        path: The file read.
        num_tensors: Tensors copied into the model (``layer4`` counted once).
        ignored: Keys present in the file but not used (e.g. ``fc.weight``).
    """

    path: Path
    num_tensors: int
    ignored: tuple[str, ...]


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (tensors only).

    Args:
        path: Local file.

    Returns:
        Key -> tensor.

    Raises:
        BackboneWeightsError: if the file is missing or holds something else.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneWeightsError(
            f"backbone weights file {path} does not exist; save a torchvision ResNet state dict there "
            "(torch.save(torchvision.models.resnet50(weights=...).state_dict(), PATH)) and pass its path"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise BackboneWeightsError(
            f"cannot read backbone weights {path}: {error}. Expected a torchvision ResNet state dict "
            "written with torch.save(model.state_dict(), PATH) or safetensors.torch.save_file"
        ) from error
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a common wrapper written by training scripts
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise BackboneWeightsError(
            f"{path} does not hold a state dict of tensors (got {type(state).__name__})"
        )
    return dict(state)


def load_backbone_weights(model: nn.Module, path: str | Path) -> LoadedWeights:
    """Copy a torchvision-format ResNet state dict into a SeqNet-style model.

    The model must have ``backbone`` (res4 trunk) and ``box_head`` / ``reid_head``
    (res5 heads owning ``layer4``), as :class:`~personsearch_train.models.SeqNet` has.
    All-or-nothing: the model is changed only if every key fits.

    Args:
        model: The model to fill.
        path: Local ``.pth``/``.pt``/``.safetensors`` file with keys such as
            ``conv1.weight``, ``layer3.5.bn2.running_mean``, ``layer4.2.conv3.weight``.

    Returns:
        A summary of what was loaded.

    Raises:
        BackboneWeightsError: for a missing/unreadable file, keys the model needs but
            the file lacks, keys the model does not know, or shape mismatches (each
            message names the keys and what to do).
    """
    path = Path(path)
    state = read_state_dict(path)
    targets: dict[str, dict[str, Tensor]] = {"backbone": model.backbone.state_dict()}
    for head in ("box_head", "reid_head"):
        if hasattr(model, head):
            targets[head] = getattr(model, head).state_dict()

    updates: dict[str, dict[str, Tensor]] = {name: {} for name in targets}
    used: set[str] = set()
    mismatched: list[str] = []
    for key, value in state.items():
        if key.startswith(_TRUNK_PREFIXES):
            destinations = [("backbone", key)]
        elif key.startswith(_HEAD_PREFIX):
            destinations = [(head, key) for head in ("box_head", "reid_head") if head in targets]
        else:
            continue
        for module_name, module_key in destinations:
            expected = targets[module_name].get(module_key)
            if expected is None:
                continue
            used.add(key)
            if expected.shape != value.shape:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(expected.shape)}")
            else:
                updates[module_name][module_key] = value
    backbone_name = getattr(model, "backbone_name", "this model's backbone")
    if mismatched:
        raise BackboneWeightsError(
            f"{path} does not match {backbone_name}: {len(mismatched)} shape mismatch(es), e.g. "
            + "; ".join(mismatched[:3])
            + ". Use weights of the same ResNet depth as the model"
        )
    missing = [f"{name}.{key}" for name, sd in targets.items() for key in sd if key not in updates[name]]
    if missing:
        raise BackboneWeightsError(
            f"{path} lacks {len(missing)} tensor(s) {backbone_name} needs, e.g. {', '.join(missing[:4])}. "
            "Expected a full torchvision ResNet state dict (keys conv1.*, bn1.*, layer1.* ... layer4.*)"
        )
    unknown = [k for k in state if k not in used and not k.startswith(_UNUSED_PREFIXES)]
    if unknown:
        raise BackboneWeightsError(
            f"{path} has {len(unknown)} key(s) a torchvision ResNet state dict does not have, e.g. "
            f"{', '.join(unknown[:4])}; is it a full-model checkpoint rather than backbone weights?"
        )
    with torch.no_grad():
        for name, values in updates.items():
            getattr(model, name).load_state_dict(values, strict=True)
    ignored = tuple(sorted(k for k in state if k not in used))
    return LoadedWeights(path=path, num_tensors=len(used), ignored=ignored)
