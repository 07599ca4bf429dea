"""Triton Inference Server model repository from a bundle.

Layout written (Triton docs, model_repository.md / model_configuration.md)::

    REPO/<model>/config.pbtxt
    REPO/<model>/1/model.onnx        (--backend onnxruntime)
    REPO/<model>/1/model.plan        (--backend tensorrt; cc_model_filenames names it per GPU)

``max_batch_size``: when every input and output of a model starts with the same symbolic
dimension (the batch, or the RoI count of the split heads), Triton may batch requests
along it: ``max_batch_size`` is that symbol's ``max`` from the manifest and ``dims`` omit
it (a tensor that is only ``[batch]`` is written ``dims: [1]`` + ``reshape: { shape: [] }``).
Otherwise ``max_batch_size: 0`` and ``dims`` are the full shapes (``-1`` for symbols).
Dynamic batching is enabled without preferred sizes (Triton's guidance).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from personsearch_runtime.bundle import Bundle, ModelSpec, TensorSpec

from personsearch_export.bundle_folder import ENGINE_DIR, new_bundle_folder
from personsearch_export.errors import ExportError

__all__ = ["BACKENDS", "TritonModelConfig", "model_config", "write_repository"]

BACKENDS = ("onnxruntime", "tensorrt")
_PLATFORM = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
_FILENAME = {"onnxruntime": "model.onnx", "tensorrt": "model.plan"}
_TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}


@dataclass(frozen=True)
class TritonModelConfig:
    """What goes into one ``config.pbtxt``.

    Attributes:
        name: Model name (the folder name).
        platform: ``onnxruntime_onnx`` or ``tensorrt_plan``.
        max_batch_size: 0 (no Triton batching) or the largest batch.
        inputs: (name, TYPE_*, dims) per input; dims exclude the batch when batching.
        outputs: Same for outputs.
        instance_kind: ``KIND_GPU`` or ``KIND_CPU``.
        instance_count: Instances per device.
        max_queue_delay_us: Dynamic-batcher delay.
        cc_model_filenames: Compute capability -> plan file (TensorRT only).
    """

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    instance_kind: str
    instance_count: int
    max_queue_delay_us: int = 100
    cc_model_filenames: tuple[tuple[str, str], ...] = ()

    def to_pbtxt(self) -> str:
        """Render the protobuf text format Triton reads."""

        def tensors(kind: str, items: Sequence[tuple[str, str, tuple[int, ...]]]) -> list[str]:
            out = [f"{kind} ["]
            for i, (name, dtype, dims) in enumerate(items):
                sep = "," if i < len(items) - 1 else ""
                out += ["  {", f'    name: "{name}"', f"    data_type: {dtype}"]
                if dims:
                    out.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
                else:
                    # A per-item scalar (shape [batch]): Triton wants dims [1] reshaped to [].
                    out += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
                out.append(f"  }}{sep}")
            out.append("]")
            return out

        lines = [
            f'name: "{self.name}"',
            f'platform: "{self.platform}"',
            f"max_batch_size: {self.max_batch_size}",
        ]
        lines += tensors("input", self.inputs)
        lines += tensors("output", self.outputs)
        lines += [
            "instance_group [",
            "  {",
            f"    count: {self.instance_count}",
            f"    kind: {self.instance_kind}",
            "  }",
            "]",
        ]
        if self.max_batch_size > 0:
            lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {self.max_queue_delay_us}", "}"]
        for cc, filename in self.cc_model_filenames:
            lines += ["cc_model_filenames {", f'  key: "{cc}"', f'  value: "{filename}"', "}"]
        return "\n".join(lines) + "\n"


def _batch_symbol(spec: ModelSpec) -> str | None:
    """The symbol every input and output starts with, if there is one."""
    firsts = {t.shape[0] if t.shape else None for t in (*spec.inputs, *spec.outputs)}
    if len(firsts) == 1:
        (first,) = firsts
        if isinstance(first, str):
            return first
    return None


def _dims(tensor: TensorSpec, drop_first: bool) -> tuple[int, ...]:
    shape = tensor.shape[1:] if drop_first else tensor.shape
    return tuple(d if isinstance(d, int) else -1 for d in shape)


def model_config(
    spec: ModelSpec,
    *,
    name: str,
    backend: str,
    instance_kind: str,
    instance_count: int = 1,
    max_queue_delay_us: int = 100,
    cc_model_filenames: Mapping[str, str] | None = None,
) -> TritonModelConfig:
    """Derive the Triton config of one bundle model.

    Args:
        spec: The model's manifest entry.
        name: Triton model name.
        backend: ``"onnxruntime"`` or ``"tensorrt"``.
        instance_kind: ``"KIND_GPU"`` or ``"KIND_CPU"``.
        instance_count: Instances per device.
        max_queue_delay_us: Dynamic batching delay.
        cc_model_filenames: Compute capability -> plan file name (TensorRT).

    Returns:
        The config.
    """
    symbol = _batch_symbol(spec)
    max_batch = spec.dim(symbol).max if symbol is not None else 0
    batched = max_batch > 0

    def convert(tensors: Sequence[TensorSpec]) -> tuple[tuple[str, str, tuple[int, ...]], ...]:
        return tuple((t.name, _TRITON_TYPES[t.dtype], _dims(t, batched)) for t in tensors)

    return TritonModelConfig(
        name=name,
        platform=_PLATFORM[backend],
        max_batch_size=max_batch,
        inputs=convert(spec.inputs),
        outputs=convert(spec.outputs),
        instance_kind=instance_kind,
        instance_count=instance_count,
        max_queue_delay_us=max_queue_delay_us,
        cc_model_filenames=tuple(sorted((cc_model_filenames or {}).items())),
    )


def _engine_for(engine_dir: Path, role: str) -> tuple[Path, str]:
    """Find ``<role>.plan`` and its compute capability from the sidecar."""
    from personsearch_runtime.backends.engine_sidecar import EngineSidecar, sidecar_path

    plan = engine_dir / f"{role}.plan"
    if not plan.is_file():
        raise ExportError(
            f"{plan} is missing; build the engines first "
            f"('personsearch build-engine BUNDLE --out {engine_dir}')"
        )
    return plan, EngineSidecar.load(sidecar_path(plan)).compute_capability


def write_repository(
    bundle: Bundle,
    out: str | Path,
    *,
    backend: str = "onnxruntime",
    engine_dir: str | Path | None = None,
    roles: Sequence[str] | None = None,
    instance_kind: str | None = None,
    instance_count: int = 1,
    max_queue_delay_us: int = 100,
    prefix: str = "personsearch_",
) -> dict[str, TritonModelConfig]:
    """Write a Triton model repository for a bundle.

    The repository is assembled in a temporary folder next to ``out`` and renamed into
    place, so an interrupted run leaves nothing half-written.
    A bundle's ``text_encoder`` model folder also gets the bundle's ``tokenizer.json``:
    Triton serves token ids, and clients must tokenise as the graph was exported.

    Args:
        bundle: The loaded bundle.
        out: Repository directory to create (must not exist, or be empty).
        backend: ``"onnxruntime"`` or ``"tensorrt"``.
        engine_dir: Where ``<role>.plan`` + sidecars are (TensorRT backend); default
            ``BUNDLE/engines``.
        roles: Models to include; default all models of the bundle.
        instance_kind: ``"KIND_GPU"``/``"KIND_CPU"``; default GPU for TensorRT, CPU for ORT.
        instance_count: Instances per device.
        max_queue_delay_us: Dynamic-batching delay.
        prefix: Prepended to each role to form the Triton model name.

    Returns:
        Triton model name -> config written.

    Raises:
        ExportError: Unknown backend/role, an ``out`` that is a file or a non-empty folder,
            fewer than one instance, a negative queue delay, missing engines.
    """
    if backend not in BACKENDS:
        raise ExportError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if instance_count < 1:
        raise ExportError(
            f"--instances must be >= 1 (Triton needs an instance per device), got {instance_count}"
        )
    if max_queue_delay_us < 0:
        raise ExportError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a new folder for the model repository")
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new --out folder")
    models = bundle.manifest.models
    roles = list(roles) if roles else list(models)
    unknown = [r for r in roles if r not in models]
    if unknown:
        raise ExportError(f"the bundle has no model {unknown[0]!r} (present: {', '.join(models)})")
    kind = instance_kind or ("KIND_GPU" if backend == "tensorrt" else "KIND_CPU")
    if kind not in ("KIND_GPU", "KIND_CPU"):
        raise ExportError(f"instance kind must be KIND_GPU or KIND_CPU, got {kind!r}")
    engines = Path(engine_dir) if engine_dir is not None else bundle.root / ENGINE_DIR
    tmp = new_bundle_folder(out)  # makes out's parents
    configs: dict[str, TritonModelConfig] = {}
    try:
        for role in roles:
            name = f"{prefix}{role}"
            version_dir = tmp / name / "1"
            version_dir.mkdir(parents=True)
            cc_files: dict[str, str] = {}
            if backend == "onnxruntime":
                shutil.copy2(bundle.model_path(role), version_dir / _FILENAME[backend])
            else:
                plan, cc = _engine_for(engines, role)
                filename = f"model_sm{cc.replace('.', '')}.plan"
                shutil.copy2(plan, version_dir / filename)
                cc_files[cc] = filename
            config = model_config(
                models[role],
                name=name,
                backend=backend,
                instance_kind=kind,
                instance_count=instance_count,
                max_queue_delay_us=max_queue_delay_us,
                cc_model_filenames=cc_files,
            )
            (tmp / name / "config.pbtxt").write_text(config.to_pbtxt(), encoding="utf-8")
            if role == "text_encoder" and bundle.manifest.tokenizer is not None:
                # Triton serves token ids; clients tokenise with the file the graph was
                # exported with (Triton ignores files beside the version folders).
                shutil.copy2(bundle.root / bundle.manifest.tokenizer.file, tmp / name / "tokenizer.json")
            configs[name] = config
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return configs
