"""Checkpoints: safetensors weights, JSON metadata, and a resume-state file.

A checkpoint named ``NAME`` in a run folder is three files:

* ``NAME.safetensors``: the model's ``state_dict`` (parameters and buffers);
* ``NAME.json``: metadata: the resolved config, the model's name and every
  constructor argument, the training method's name and settings, ``label_to_pid``
  (training label -> dataset identity), library versions, epoch/iteration and metrics;
* ``NAME.state.pt`` (only for resumable checkpoints): optimiser, scheduler, gradient
  scaler and RNG states, the method's loss state (OIM tables, memory banks) and hook
  state plus the position in training, written with ``torch.save`` and read back with
  ``weights_only=True``, so loading never unpickles code.

:func:`read_checkpoint` is the one loader, for the trainer's evaluation and resume and
for the exporter: it builds the method the metadata names (``seqnet_oim`` for
checkpoints older than the method registry), lets it bring an older layout up to date
(:meth:`~personsearch_train.methods.base.TrainingMethod.upgrade_checkpoint`), builds the
model and loads its weights strictly.

The run folder keeps ``latest`` (every save) and ``best`` (the best evaluation so
far). Every file is written to a temporary name and fsynced; only then are they renamed
over the old ones, the JSON last, so a crash while writing leaves the previous
checkpoint intact. (A crash in the instant between the renames would leave files that
do not belong together; the hashes below then report the checkpoint as corrupted
instead of mixing them. The trainer holds back Ctrl-C while it saves.)

Content hashes: the JSON records the size and SHA-256 of the ``.safetensors`` file and
of the ``.state.pt`` file (key ``checksums``), and every loader (:func:`read_checkpoint`,
:func:`load_model_weights`, :func:`load_resume_state`) checks them before it reads the
file, so a damaged or truncated copy is refused as "corrupted" instead of giving wrong
weights. Checkpoints written before the hashes existed have no ``checksums`` key; they
load as before, without this check (a damaged safetensors header is still refused).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import platform
import random
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from personsearch_train.atomic_files import atomic_replace, fsync_dir, fsync_file
from personsearch_train.errors import TrainerError

if TYPE_CHECKING:
    from personsearch_train.methods.base import TrainingMethod

__all__ = [
    "CheckpointError",
    "CheckpointFiles",
    "LoadedCheckpoint",
    "capture_rng_state",
    "file_sha256",
    "find_checkpoint",
    "load_metadata",
    "load_model_from_checkpoint",
    "load_model_weights",
    "load_resume_state",
    "method_of",
    "read_checkpoint",
    "read_weights",
    "restore_rng_state",
    "save_checkpoint",
    "verify_checkpoint_file",
    "versions",
    "weight_mismatches",
]

FORMAT_VERSION = 1

#: Bytes read at a time when hashing a checkpoint file (constant memory for any size).
_HASH_CHUNK = 1 << 20

#: What to do about a damaged checkpoint file, appended to every such message.
_DAMAGED_ADVICE = "copy it again or use another checkpoint"


class CheckpointError(TrainerError):
    """A checkpoint is missing, damaged, or its weights belong to another model."""


class CheckpointFiles:
    """Paths of the files of checkpoint ``name`` inside ``folder``."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = Path(folder)
        self.name = name
        self.weights = self.folder / f"{name}.safetensors"
        self.metadata = self.folder / f"{name}.json"
        self.state = self.folder / f"{name}.state.pt"

    def exists(self) -> bool:
        """True when the weights and metadata are both present."""
        return self.weights.is_file() and self.metadata.is_file()

    def missing(self) -> list[str]:
        """File names of the weights and metadata that are not there (empty when both are)."""
        return [p.name for p in (self.weights, self.metadata) if not p.is_file()]


def versions() -> dict[str, str]:
    """Versions of the libraries that produced a checkpoint."""
    import torchvision

    from personsearch_train import __version__

    return {
        "personsearch": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def capture_rng_state() -> dict[str, Any]:
    """Snapshot Python, NumPy, torch CPU and CUDA generators as weights-only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore generators captured by :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    nps = state["numpy"]
    keys = nps["keys"].numpy().astype(np.uint32)
    np.random.set_state((nps["kind"], keys, nps["pos"], nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path,
    name: str,
    *,
    model: torch.nn.Module,
    metadata: dict[str, Any],
    resume_state: dict[str, Any] | None = None,
) -> CheckpointFiles:
    """Write checkpoint ``name`` into ``folder`` atomically, with content hashes.

    All files are first written and fsynced under temporary names; then the weights,
    the resume state and the JSON (which holds their SHA-256) are renamed into place,
    in that order, one right after the other. An exception or a crash before the
    renames leaves the previous checkpoint untouched.

    Args:
        folder: Run folder.
        name: ``"latest"``, ``"best"`` or any file stem.
        model: The (unwrapped) model; its full ``state_dict`` is saved.
        metadata: JSON-serialisable metadata (config, model spec, pid mapping, metrics).
        resume_state: Optimiser/scheduler/RNG/progress state; written with
            ``torch.save`` and restricted to tensors and plain containers.

    Returns:
        The paths written.
    """
    files = CheckpointFiles(folder, name)
    # Clone so tensors that share storage (tied weights, views) are saved independently,
    # which safetensors requires.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = dict(metadata)
    meta["format_version"] = FORMAT_VERSION
    meta.setdefault("versions", versions())
    meta["resumable"] = resume_state is not None
    with contextlib.ExitStack() as stack:
        # Entered in reverse order: an ExitStack renames the last-entered file first,
        # so the weights land first and the JSON that vouches for them last.
        meta_tmp = stack.enter_context(atomic_replace(files.metadata, sync=False))
        state_tmp = (
            stack.enter_context(atomic_replace(files.state, sync=False)) if resume_state is not None else None
        )
        weights_tmp = stack.enter_context(atomic_replace(files.weights, sync=False))
        save_file(tensors, str(weights_tmp), metadata={"format": "pt"})
        checksums = {"weights": _content_record(weights_tmp)}
        if state_tmp is not None:
            torch.save(resume_state, state_tmp)
            checksums["state"] = _content_record(state_tmp)
        meta["checksums"] = checksums
        meta_tmp.write_bytes(json.dumps(meta, indent=2, sort_keys=True, default=_json_default).encode())
        for tmp in (weights_tmp, state_tmp, meta_tmp):
            if tmp is not None:
                fsync_file(tmp)
    fsync_dir(files.folder)
    return files


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (constant memory for any size).

    Args:
        path: The file.

    Returns:
        The hex digest (64 lowercase characters).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _content_record(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}


def verify_checkpoint_file(files: CheckpointFiles, metadata: Mapping[str, Any], part: str) -> str | None:
    """Check a checkpoint file against the size and SHA-256 its metadata records.

    Args:
        files: The checkpoint.
        metadata: Its JSON metadata (:func:`load_metadata`).
        part: ``"weights"`` (the ``.safetensors`` file) or ``"state"`` (``.state.pt``).

    Returns:
        The file's SHA-256 (hex), verified; None when the metadata records none.

    Raises:
        CheckpointError: The file is missing, or its size or hash differs from the
            record ("X is corrupted (SHA-256 mismatch: expected ..., found ...)").
            Metadata without a record for ``part`` (checkpoints written before
            content hashes) is not checked.
    """
    path = {"weights": files.weights, "state": files.state}[part]
    checksums = metadata.get("checksums")
    if checksums is None:
        return None
    record = checksums.get(part) if isinstance(checksums, Mapping) else checksums
    if record is None:
        return None
    if (
        not isinstance(record, Mapping)
        or not isinstance(record.get("sha256"), str)
        or not isinstance(record.get("bytes"), int)
    ):
        raise CheckpointError(
            f"{files.metadata}: key 'checksums.{part}' must be {{'bytes': N, 'sha256': HEX}}; "
            f"the metadata is damaged - {_DAMAGED_ADVICE}"
        )
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (checkpoint '{files.name}' in {files.folder} needs it)")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise CheckpointError(
            f"{path} is corrupted (size mismatch: expected {record['bytes']} bytes, found {size}; "
            f"cut short or altered); {_DAMAGED_ADVICE}"
        )
    found = file_sha256(path)
    if found != record["sha256"]:
        raise CheckpointError(
            f"{path} is corrupted (SHA-256 mismatch: expected {record['sha256']}, found {found}); "
            f"{_DAMAGED_ADVICE}"
        )
    return found


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray | torch.Tensor):
        return np.asarray(value).tolist()
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata")


def find_checkpoint(path: str | Path, *, prefer: str = "best") -> CheckpointFiles:
    """Resolve a checkpoint from a run folder or one of a checkpoint's files.

    Args:
        path: A run folder (``prefer`` then ``latest`` is used), a
            ``.safetensors``/``.json``/``.state.pt`` file of a checkpoint, or
            ``pretrained:NAME`` for a model shipped with the SDK
            (:mod:`personsearch_train.pretrained`, verified against its pinned hash).
        prefer: Which checkpoint of a run folder to try first.

    Raises:
        CheckpointError: When no checkpoint is found (the message names the files of
            an incomplete one).
        TrainerError: A ``pretrained:`` name that is not shipped, or whose file is damaged.
    """
    from personsearch_train.pretrained import is_pretrained_reference, shipped_checkpoint

    if is_pretrained_reference(path):
        path = shipped_checkpoint(str(path))
    path = Path(path)
    if path.is_dir():
        for name in (prefer, "latest", "best"):
            files = CheckpointFiles(path, name)
            if files.exists():
                return files
        partial = [
            f"{files.name}: {_missing_parts(files)}"
            for files in (CheckpointFiles(path, n) for n in ("best", "latest"))
            if files.weights.exists() or files.metadata.exists()
        ]
        raise CheckpointError(
            f"{path}: no checkpoint in this folder (expected best.json or latest.json + .safetensors)"
            + (f"; incomplete: {'; '.join(partial)}" if partial else "")
        )
    stem = path.name
    for suffix in (".state.pt", ".safetensors", ".json"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    files = CheckpointFiles(path.parent, stem)
    if not files.exists():
        raise CheckpointError(
            f"{path}: not a checkpoint (need {files.weights.name} and {files.metadata.name}; "
            f"{_missing_parts(files)})"
        )
    return files


def _missing_parts(files: CheckpointFiles) -> str:
    missing = files.missing()
    return f"{' and '.join(missing)} missing" if missing else "complete"


def load_metadata(files: CheckpointFiles) -> dict[str, Any]:
    """Read a checkpoint's JSON metadata.

    Raises:
        CheckpointError: The file is unreadable, truncated, not a JSON object, or
            written by a newer format.
    """
    try:
        meta = json.loads(files.metadata.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{files.metadata}: cannot read checkpoint metadata ({exc}); the file is damaged or "
            f"truncated - {_DAMAGED_ADVICE}"
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{files.metadata}: checkpoint metadata must be a JSON object, got {type(meta).__name__}; "
            f"{_DAMAGED_ADVICE}"
        )
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{files.metadata}: 'format_version' must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{files.metadata}: written by a newer personsearch; upgrade to load it")
    return meta


def weight_mismatches(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> list[str]:
    """How a state dict read from a file differs from the one a model expects.

    Args:
        expected: The model's ``state_dict()``.
        found: The tensors read from the weights file.

    Returns:
        Short phrases, one per kind of difference (keys missing from the file, keys the
        model does not have, tensors of another shape), each with a count and an
        example; empty when the file fits the model exactly.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong_shape = sorted(
        k for k in set(expected) & set(found) if tuple(expected[k].shape) != tuple(found[k].shape)
    )
    details = []
    if missing:
        details.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if wrong_shape:
        key = wrong_shape[0]
        shapes = f"file {tuple(found[key].shape)} vs model {tuple(expected[key].shape)}"
        details.append(f"{len(wrong_shape)} with other shapes (e.g. {key}: {shapes})")
    return details


def read_weights(files: CheckpointFiles) -> dict[str, torch.Tensor]:
    """Read a checkpoint's safetensors tensors.

    Raises:
        CheckpointError: The file cannot be read as safetensors (damaged or truncated).
    """
    try:
        return load_file(str(files.weights))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(
            f"{files.weights} is not a readable safetensors file ({exc}); the checkpoint is corrupt or "
            f"truncated - {_DAMAGED_ADVICE}"
        ) from None


def method_of(metadata: Mapping[str, Any]) -> TrainingMethod:
    """The training method a checkpoint's metadata names, with its saved settings.

    Checkpoints older than the method registry name none; they were trained by the
    supervised baseline, ``seqnet_oim``.

    Raises:
        TrainerError: The method is not registered (import the module that defines it
            first) or its saved settings no longer fit it.
    """
    from personsearch_train.methods import build_method

    spec = metadata.get("method") or {"name": "seqnet_oim", "args": {}}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise CheckpointError("checkpoint metadata: key 'method' must be {'name': ..., 'args': {...}}")
    return build_method(spec["name"], spec.get("args") or {})


def _check_fits(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], files: CheckpointFiles, name: str
) -> None:
    details = weight_mismatches(model.state_dict(), state)
    if details:
        raise CheckpointError(
            f"{files.weights}: the weights do not belong to model {name!r} "
            f"described in {files.metadata.name} "
            f"({'; '.join(details)}). The weights file comes from a different model, or was saved by a "
            "version whose model defaults differ: pass the matching .safetensors/.json pair, or the old "
            "sizes in the metadata's model.kwargs"
        )


@dataclass
class LoadedCheckpoint:
    """A checkpoint read by :func:`read_checkpoint`.

    Attributes:
        model: The model with its weights, eval mode, on the CPU.
        metadata: The JSON metadata, in the current layout (after the method's upgrade).
        method: The training method it names, with its saved settings.
        files: Where it was read from.
        loss_state: ``state_dict`` of the method's losses found among the weights of an
            older checkpoint (OIM tables); empty for current ones, which keep it in the
            resume state.
        weights_sha256: SHA-256 (hex) of the ``.safetensors`` file the weights came from
            (checked against the metadata's record where there is one).
    """

    model: torch.nn.Module
    metadata: dict[str, Any]
    method: TrainingMethod
    files: CheckpointFiles
    loss_state: dict[str, torch.Tensor]
    weights_sha256: str

    @property
    def model_name(self) -> str:
        """Registered model name."""
        return str(self.metadata["model"]["name"])


def read_checkpoint(path: str | Path, *, prefer: str = "best") -> LoadedCheckpoint:
    """Build the model a checkpoint describes and load its weights strictly.

    Args:
        path: Run folder or checkpoint file (see :func:`find_checkpoint`).
        prefer: Which checkpoint of a run folder to use first.

    Returns:
        The model (eval mode, CPU), its metadata, method and any legacy loss state.

    Raises:
        TrainerError: No checkpoint there, unreadable metadata, an unknown model or
            method, damaged weights (a content hash mismatch, or an unreadable file), or
            weights of another model (each says which).
    """
    from personsearch_train.models import create_model

    files = find_checkpoint(path, prefer=prefer)
    meta = load_metadata(files)
    # Hashed once: verified against the record, or (older checkpoints) computed for callers.
    weights_sha256 = verify_checkpoint_file(files, meta, "weights") or file_sha256(files.weights)
    spec = meta.get("model")
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("name"), str)
        or not isinstance(spec.get("kwargs") or {}, dict)
    ):
        raise CheckpointError(f"{files.metadata}: key 'model' must be {{'name': ..., 'kwargs': {{...}}}}")
    method = method_of(meta)
    meta, weights, loss_state = method.upgrade_checkpoint(meta, read_weights(files))
    try:
        model = create_model(meta["model"]["name"], **(meta["model"].get("kwargs") or {}))
    except TrainerError as exc:
        raise CheckpointError(f"{files.metadata}: {exc}") from None
    _check_fits(model, weights, files, meta["model"]["name"])
    model.load_state_dict(weights, strict=True)
    model.eval()
    return LoadedCheckpoint(
        model=model,
        metadata=meta,
        method=method,
        files=files,
        loss_state=loss_state,
        weights_sha256=weights_sha256,
    )


def load_model_weights(
    model: torch.nn.Module, files: CheckpointFiles, method: TrainingMethod
) -> dict[str, torch.Tensor]:
    """Load a checkpoint's weights into an existing model (resume), through the method's upgrade.

    Returns:
        The loss state found among the weights of an older checkpoint (else empty).

    Raises:
        CheckpointError: Damaged weights (hash mismatch or unreadable), or weights that
            do not fit ``model``.
    """
    meta = load_metadata(files)
    verify_checkpoint_file(files, meta, "weights")
    meta, weights, loss_state = method.upgrade_checkpoint(meta, read_weights(files))
    _check_fits(model, weights, files, str((meta.get("model") or {}).get("name")))
    model.load_state_dict(weights, strict=True)
    return loss_state


def load_resume_state(files: CheckpointFiles) -> dict[str, Any]:
    """Read the optimiser/scheduler/RNG state with ``weights_only=True``, after checking its hash.

    Returns:
        The state :meth:`~personsearch_train.engine.loop.Trainer.save` wrote: a mapping
        of tensors and plain containers.

    Raises:
        CheckpointError: The checkpoint was saved without resume state, the file does
            not match its recorded hash, or it cannot be read (truncated or damaged).
    """
    meta = load_metadata(files)
    if meta.get("resumable") is False or not files.state.is_file():
        raise CheckpointError(
            f"{files.folder}: checkpoint '{files.name}' has no resume state ({files.state.name}), so "
            "training cannot continue exactly from it; start a new run in another --out"
        )
    verify_checkpoint_file(files, meta, "state")
    try:
        state = torch.load(files.state, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as exc:
        # torch reports a truncated or damaged archive as a RuntimeError from deep inside
        # its zip reader ("PytorchStreamReader failed ...").
        raise CheckpointError(
            f"{files.state} is not a readable resume state ({_first_sentence(exc)}); the file is "
            f"damaged or truncated - {_DAMAGED_ADVICE}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(
            f"{files.state}: resume state must be a mapping, got {type(state).__name__}; {_DAMAGED_ADVICE}"
        )
    return state


def _first_sentence(exc: BaseException) -> str:
    # torch appends a paragraph of generic advice to its reader errors; the first
    # sentence says what failed.
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".")


def load_model_from_checkpoint(
    path: str | Path, *, prefer: str = "best"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the model a checkpoint describes and load its weights (:func:`read_checkpoint`).

    Args:
        path: Run folder or checkpoint file (see :func:`find_checkpoint`).
        prefer: Which checkpoint of a run folder to use first.

    Returns:
        ``(model, metadata)``; the model is in eval mode on the CPU.
    """
    loaded = read_checkpoint(path, prefer=prefer)
    return loaded.model, loaded.metadata
