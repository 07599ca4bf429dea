"""Our RoIAlign CUDA kernel, compiled at run time with NVRTC from the source personsearch_ops installs.

The source is found without importing ``personsearch_ops`` (which would import torch):
``importlib.util.find_spec`` gives the package folder, and the kernels live at the fixed
path ``csrc/cuda/roi_align_kernels.cuh`` inside it, a plain CUDA file with
``extern "C"`` entry points (their names and arguments are documented at its top). It
is compiled with cuda-python's NVRTC bindings for the GPU's architecture to a CUBIN,
and the CUBIN is cached on disk by (source hash, architecture, NVRTC version), so the
compile happens once per machine. Launching uses CuPy (``RawModule`` on the CUBIN).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.bundle import RoIAlignSpec
from personsearch_runtime.errors import PersonSearchError

__all__ = [
    "KERNEL_RELATIVE_PATH",
    "CompiledKernels",
    "RoIAlignKernel",
    "compile_kernels",
    "cuda_include_dir",
    "entry_point",
    "kernel_source_path",
    "load_module",
]

#: Where personsearch_ops installs the kernel source, relative to its package folder.
KERNEL_RELATIVE_PATH = Path("csrc") / "cuda" / "roi_align_kernels.cuh"
_SUFFIX = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64"}


class KernelError(PersonSearchError):
    """The RoIAlign kernel source cannot be found or compiled."""


def kernel_source_path() -> Path:
    """Return the installed kernel source file, located without importing personsearch_ops.

    Raises:
        KernelError: personsearch_ops is not installed, or the file is missing.
    """
    spec = importlib.util.find_spec("personsearch_ops")
    if spec is None or not spec.submodule_search_locations:
        raise KernelError(
            "the GPU path needs the RoIAlign source shipped with personsearch_ops, which is not "
            "installed; install the full 'personsearch' package"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / KERNEL_RELATIVE_PATH
        if path.is_file():
            return path
    raise KernelError(
        f"personsearch_ops is installed but {KERNEL_RELATIVE_PATH} is missing from it; reinstall"
    )


def cuda_include_dir() -> Path:
    """Return a CUDA include directory holding ``cuda_fp16.h`` (toolkit or pip wheels).

    Raises:
        KernelError: None found.
    """
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    try:
        from cuda import pathfinder

        found = pathfinder.find_nvidia_header_directory("cudart")
        if found:
            candidates.append(Path(found))
    except (ImportError, AttributeError, RuntimeError):
        pass
    candidates.append(Path("/usr/local/cuda/include"))
    for folder in candidates:
        if (folder / "cuda_fp16.h").is_file():
            return folder
    raise KernelError("no CUDA headers (cuda_fp16.h) found; set CUDA_HOME or pip install nvidia-cuda-runtime")


def entry_point(dtype: str, layout: str = "nchw") -> str:
    """Return the forward kernel name for a feature dtype, e.g. ``ps_roi_align_fwd_nchw_f32``."""
    if dtype not in _SUFFIX:
        raise KernelError(f"no RoIAlign kernel for feature dtype {dtype}")
    return f"ps_roi_align_fwd_{layout}_{_SUFFIX[dtype]}"


def _nvrtc() -> Any:
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        raise KernelError(
            'compiling the RoIAlign kernel needs cuda-python: pip install "personsearch[gpu]"'
        ) from None
    return nvrtc


def _nvrtc_check(result: Any, what: str, program: Any = None) -> Any:
    nvrtc = _nvrtc()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        detail = ""
        if program is not None:
            _, size = nvrtc.nvrtcGetProgramLogSize(program)
            log = bytearray(size)
            nvrtc.nvrtcGetProgramLog(program, log)
            detail = "\n" + log.decode(errors="replace")
        raise KernelError(f"NVRTC {what} failed: {err}{detail}")
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class CompiledKernels:
    """A compiled kernel image.

    Attributes:
        image: CUBIN (``arch="sm_XX"``) or PTX (``arch="compute_XX"``) bytes.
        arch: The architecture it was compiled for.
        kind: ``"cubin"`` or ``"ptx"``.
        source: The source file compiled.
    """

    image: bytes
    arch: str
    kind: str
    source: Path


def _cache_dir() -> Path:
    root = os.environ.get("PERSONSEARCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "personsearch"
    )
    return Path(root) / "kernels"


def compile_kernels(
    arch: str, *, source: Path | None = None, use_cache: bool = True, cache_name: str = "roi_align"
) -> CompiledKernels:
    """Compile a kernel file with NVRTC (the RoIAlign kernels by default).

    Args:
        arch: ``"sm_90"`` for a CUBIN for that GPU, or ``"compute_90"`` for PTX.
        source: Kernel file (the installed RoIAlign one by default).
        use_cache: Reuse / store the result under ``~/.cache/personsearch/kernels``.
        cache_name: Prefix of the cached file's name (the key is the source's hash).

    Returns:
        The compiled image.

    Raises:
        KernelError: Source or headers missing, or the compile failed (with NVRTC's log).
    """
    nvrtc = _nvrtc()
    source = source or kernel_source_path()
    text = source.read_bytes()
    kind = "cubin" if arch.startswith("sm_") else "ptx"
    version = _nvrtc_check(nvrtc.nvrtcVersion(), "nvrtcVersion")
    key = hashlib.sha256(text + f"|{arch}|{version}".encode()).hexdigest()[:24]
    cached = _cache_dir() / f"{cache_name}_{arch}_{key}.{kind}"
    if use_cache and cached.is_file():
        return CompiledKernels(cached.read_bytes(), arch, kind, source)
    include = cuda_include_dir()
    program = _nvrtc_check(
        nvrtc.nvrtcCreateProgram(text, source.name.encode(), 0, [], []), "nvrtcCreateProgram"
    )
    try:
        options = [b"-std=c++17", f"-I{include}".encode(), f"--gpu-architecture={arch}".encode()]
        _nvrtc_check(nvrtc.nvrtcCompileProgram(program, len(options), options), "compile", program)
        if kind == "cubin":
            size = _nvrtc_check(nvrtc.nvrtcGetCUBINSize(program), "nvrtcGetCUBINSize")
            image = bytearray(size)
            _nvrtc_check(nvrtc.nvrtcGetCUBIN(program, image), "nvrtcGetCUBIN")
        else:
            size = _nvrtc_check(nvrtc.nvrtcGetPTXSize(program), "nvrtcGetPTXSize")
            image = bytearray(size)
            _nvrtc_check(nvrtc.nvrtcGetPTX(program, image), "nvrtcGetPTX")
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    if use_cache:
        try:
            atomic_write_bytes(cached, image)
        except OSError:
            pass  # a read-only home only costs a recompile next time
    return CompiledKernels(bytes(image), arch, kind, source)


def load_module(compiled: CompiledKernels, name: str) -> Any:
    """Load a compiled CUBIN as a CuPy ``RawModule``.

    CuPy loads a module from a file; the file is content-addressed so concurrent
    processes share it and it is never removed while a module may still read it.

    Args:
        compiled: The CUBIN (:func:`compile_kernels` with an ``sm_XX`` architecture).
        name: Prefix of the file's name.

    Raises:
        KernelError: Neither the cache nor the temp folder can be written.
    """
    import cupy

    digest = hashlib.sha256(compiled.image).hexdigest()[:24]
    file_name = f"{name}_{compiled.arch}_{digest}.cubin"
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / "personsearch-kernels"):
        try:
            path = folder / file_name
            if not path.is_file():
                atomic_write_bytes(path, compiled.image)
            break
        except OSError:
            continue
    else:
        raise KernelError(f"cannot write the compiled {name} kernel to the cache or the temp folder")
    return cupy.RawModule(path=str(path))


class RoIAlignKernel:
    """Launches our RoIAlign forward kernel on CuPy arrays (no host round trip).

    Args:
        device: CUDA device index.
    """

    def __init__(self, device: int = 0) -> None:
        import cupy

        from personsearch_runtime.gpu.cuda_memory import compute_capability

        self._cupy = cupy
        major, minor = compute_capability(device)
        self.compiled = compile_kernels(f"sm_{major}{minor}")
        self._module = load_module(self.compiled, "roi_align")
        self._functions: dict[str, Any] = {}

    def __call__(self, features: Any, rois: Any, spec: RoIAlignSpec) -> Any:
        """Pool ``rois`` from ``features``.

        Args:
            features: [N, C, H, W] CuPy array (float32, float16, bfloat16 or float64), C-contiguous.
            rois: [K, 5] float32 CuPy array (batch_index, x1, y1, x2, y2) in image pixels.
            spec: Output size, spatial scale, sampling ratio, aligned.

        Returns:
            [K, C, S, S] CuPy array of the features' dtype.
        """
        cp = self._cupy
        features = cp.ascontiguousarray(features)
        rois = cp.ascontiguousarray(rois, dtype=cp.float32)
        n, c, h, w = (int(v) for v in features.shape)
        k, s = int(rois.shape[0]), spec.output_size
        out = cp.empty((k, c, s, s), dtype=features.dtype)
        if k == 0:
            return out
        name = entry_point(features.dtype.name)
        fn = self._functions.get(name)
        if fn is None:
            fn = self._functions[name] = self._module.get_function(name)
        total = k * c * s * s
        threads = 256
        blocks = min((total + threads - 1) // threads, 65535 * 8)
        args = (
            features,
            rois,
            out,
            cp.int32(k),
            cp.int32(n),
            cp.int32(c),
            cp.int32(h),
            cp.int32(w),
            cp.int32(s),
            cp.int32(s),
            cp.float32(spec.spatial_scale),
            cp.int32(spec.sampling_ratio),
            cp.int32(int(spec.aligned)),
        )
        fn((blocks,), (threads,), args)
        return out
