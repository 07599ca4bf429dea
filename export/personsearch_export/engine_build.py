"""TensorRT engines from a bundle: a thin layer over the TensorRT Python API.

What is ours (and tested without TensorRT): optimization profiles from the manifest's
min/opt/max, the timing-cache file name per GPU and TensorRT version, the network flags
for 10.x vs 11.x, and the engine *sidecar* (plan and ONNX hashes, TensorRT version,
compute capability, profiles, TF32) that is checked before a plan is deserialised,
because plans are locked to the TensorRT version and GPU architecture that built them. The sidecar schema
and the check are the runtime's (``personsearch_runtime.backends.engine_sidecar``).

TensorRT facts (deployment digest, section 3): 10.x needs ``STRONGLY_TYPED`` for the
graph's types to decide precision; 11.x is always strongly typed (the flag is
deprecated) and has no ``BuilderFlag.FP16``. ``VERSION_COMPATIBLE`` plans need
``runtime.engine_host_code_allowed = True`` to load.

Two builder defaults are overridden. TensorRT's standard plugins are registered
(``init_libnvinfer_plugins``) before parsing, because the parser maps ``RoiAlign`` to the
``ROIAlign_TRT`` plugin. ``BuilderFlag.TF32`` is on by default, which lets fp32
convolutions and matrix products run with a 10-bit mantissa; it is cleared unless the
caller asks for TF32, so an fp32 bundle gives an fp32 engine (and the fp32 parts kept in
fp16 graphs, kept for accuracy, stay fp32 too). Whether TF32 was allowed is recorded in
the sidecar.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.backends.engine_sidecar import (
    EngineSidecar,
    ProfileRange,
    check_plan_bytes,
    check_sidecar,
    sidecar_path,
)
from personsearch_runtime.backends.tensorrt_engine import init_trt_plugins, trt_logger
from personsearch_runtime.bundle import ModelSpec, file_sha256

from personsearch_export.errors import ExportError

__all__ = [
    "GpuInfo",
    "build_engine",
    "current_gpu",
    "load_engine",
    "make_sidecar",
    "model_profile",
    "network_flags",
    "timing_cache_path",
    "trt_major",
    "write_json_atomic",
]

Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def model_profile(spec: ModelSpec) -> Profile:
    """Return one optimization profile for a bundle model.

    Args:
        spec: The model's manifest entry.

    Returns:
        Input name -> (min, opt, max) concrete shapes, from the model's ``dims`` ranges.
    """
    return {t.name: spec.profile_shapes(t) for t in spec.inputs}


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for.

    Attributes:
        name: Device name, e.g. ``"NVIDIA H100 80GB HBM3"``.
        compute_capability: ``"major.minor"``, e.g. ``"9.0"``.
    """

    name: str
    compute_capability: str


def current_gpu(device: int = 0) -> GpuInfo:
    """Describe CUDA device ``device`` (through torch, which the exporter depends on).

    Raises:
        ExportError: When no CUDA device is usable.
    """
    import torch

    if not torch.cuda.is_available():
        raise ExportError("building TensorRT engines needs a CUDA GPU; none is usable here")
    major, minor = torch.cuda.get_device_capability(device)
    return GpuInfo(torch.cuda.get_device_name(device), f"{major}.{minor}")


def trt_major(version: str) -> int:
    """Return the major number of a TensorRT version string ("10.16.1" -> 10)."""
    match = re.match(r"(\d+)", version)
    if not match:
        raise ExportError(f"cannot read a TensorRT version from {version!r}")
    return int(match.group(1))


def timing_cache_path(cache_dir: str | Path, gpu: GpuInfo, trt_version: str) -> Path:
    """Return the timing-cache file for this GPU model and TensorRT version.

    Timing caches are only valid for the GPU and TensorRT version that measured them, so
    the name carries both: ``<dir>/trt<version>_sm<cc>_<gpu-name>.cache``.
    """
    gpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", gpu.name).strip("-").lower() or "gpu"
    cc = gpu.compute_capability.replace(".", "")
    return Path(cache_dir) / f"trt{trt_version}_sm{cc}_{gpu_slug}.cache"


def network_flags(trt: ModuleType) -> int:
    """Network-creation flags: strongly typed on TensorRT 10.x, none needed on 11.x.

    Args:
        trt: The imported ``tensorrt`` module.

    Returns:
        The bit mask for ``builder.create_network``.
    """
    if trt_major(trt.__version__) >= 11:
        return 0  # strong typing is the only mode; the flag is deprecated
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path``, replacing the file in one step.

    Args:
        path: Destination file; missing folders are created.
        obj: JSON-serialisable value.
    """
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def build_engine(
    trt: ModuleType,
    *,
    role: str,
    onnx_path: str | Path,
    engine_path: str | Path,
    profile: Profile,
    gpu: GpuInfo,
    precision: str,
    workspace_mb: int = 4096,
    timing_cache: str | Path | None = None,
    version_compatible: bool = False,
    tf32: bool = False,
) -> EngineSidecar:
    """Parse an ONNX file and build a serialized engine plus its sidecar.

    Args:
        trt: The imported ``tensorrt`` module (passed in so the caller controls the import).
        role: Bundle model role.
        onnx_path: ONNX file.
        engine_path: Plan file to write.
        profile: Input -> (min, opt, max) shapes.
        gpu: The device being built for (recorded in the sidecar).
        precision: Bundle precision, recorded only (the graph's types decide).
        workspace_mb: Workspace pool limit in MiB.
        timing_cache: Timing cache file, read if present and rewritten after the build.
        version_compatible: Set ``BuilderFlag.VERSION_COMPATIBLE``.
        tf32: Leave ``BuilderFlag.TF32`` set (TensorRT's default); False clears it so fp32
            layers run in full fp32.

    Returns:
        The sidecar written next to the engine.

    Raises:
        ExportError: When parsing or building fails (parser errors are listed).
        EngineError: TensorRT's plugin library could not be initialised.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt_logger(trt)
    init_trt_plugins(trt, logger)  # before the parser resolves RoiAlign to ROIAlign_TRT
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    trt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        trt_profile.set_shape(name, lo, opt, hi)
    if config.add_optimization_profile(trt_profile) < 0:
        raise ExportError(f"{role}: TensorRT rejected the optimization profile {profile}")
    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(
            f"TensorRT failed to build {onnx_path}; run with a larger --workspace-mb or see the log"
        )
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(engine_path, bytes(plan))
    if timing_cache is not None:
        Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
    sidecar = make_sidecar(
        role=role,
        onnx_path=onnx_path,
        engine_path=engine_path,
        trt_version=trt.__version__,
        gpu=gpu,
        profile=profile,
        precision=precision,
        version_compatible=version_compatible,
        tf32=tf32,
    )
    write_json_atomic(sidecar_path(engine_path), sidecar.to_json())
    return sidecar


def make_sidecar(
    *,
    role: str,
    onnx_path: Path,
    engine_path: Path,
    trt_version: str,
    gpu: GpuInfo,
    profile: Profile,
    precision: str,
    version_compatible: bool,
    tf32: bool = False,
) -> EngineSidecar:
    """Describe a built engine in the runtime's sidecar schema (one optimization profile).

    Args:
        role: Bundle model role.
        onnx_path: ONNX file the engine was built from.
        engine_path: The written plan.
        trt_version: TensorRT version that built it.
        gpu: Build GPU.
        profile: Input -> (min, opt, max) shapes.
        precision: Bundle precision.
        version_compatible: Built with ``VERSION_COMPATIBLE``.
        tf32: Built with ``BuilderFlag.TF32`` left set.

    Returns:
        The sidecar (``personsearch_runtime.backends.engine_sidecar.EngineSidecar``).
    """
    ranges = tuple(
        ProfileRange(name, tuple(lo), tuple(opt), tuple(hi)) for name, (lo, opt, hi) in profile.items()
    )
    return EngineSidecar(
        role=role,
        engine_file=engine_path.name,
        engine_sha256=file_sha256(engine_path),
        onnx_sha256=file_sha256(onnx_path),
        tensorrt_version=trt_version,
        compute_capability=gpu.compute_capability,
        device_name=gpu.name,
        precision=precision,
        version_compatible=version_compatible,
        tf32=tf32,
        hardware_compatibility="none",
        profiles=(ranges,),
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def load_engine(
    trt: ModuleType, engine_path: str | Path, *, gpu: GpuInfo, onnx_sha256: str | None = None
) -> Any:
    """Deserialise an engine after checking its sidecar against this machine.

    Args:
        trt: The imported ``tensorrt`` module.
        engine_path: The plan file.
        gpu: This machine's GPU.
        onnx_sha256: The bundle's hash of the model's ONNX file (None skips that check).

    Returns:
        The ``ICudaEngine``.

    Raises:
        EngineError: Missing sidecar, a plan other than the one the sidecar describes, or
            built for another TensorRT version, GPU or ONNX file (checked before anything
            is deserialised).
        ExportError: Failed deserialisation.
    """
    sidecar = EngineSidecar.load(sidecar_path(engine_path))
    plan = Path(engine_path).read_bytes()
    check_plan_bytes(sidecar, plan, engine_path)
    major, minor = (int(v) for v in gpu.compute_capability.split("."))
    check_sidecar(
        sidecar, tensorrt_version=trt.__version__, compute_capability=(major, minor), onnx_sha256=onnx_sha256
    )
    logger = trt_logger(trt)
    init_trt_plugins(trt, logger)  # the plan names ROIAlign_TRT; its creator must be registered
    runtime = trt.Runtime(logger)
    if sidecar.version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportError(f"TensorRT could not deserialise {engine_path}; rebuild it")
    return engine
