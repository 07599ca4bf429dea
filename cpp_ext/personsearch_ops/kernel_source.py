"""Where the torch-free CUDA RoIAlign source lives, and the names of its entry points.

This module imports nothing but the standard library. The runtime does not import it (it
does not import personsearch_ops at all); it locates the same file at the fixed path
``<personsearch_ops package dir>/csrc/cuda/roi_align_kernels.cuh``, e.g. with
``importlib.util.find_spec("personsearch_ops").submodule_search_locations[0]`` (which does not
execute the package), and compiles it with NVRTC using the options of :func:`nvrtc_options`.
The header comment of the source documents every entry point's argument list.
"""

from __future__ import annotations

from pathlib import Path

#: Kernel source, relative to the personsearch_ops package directory (stable interface).
KERNEL_SOURCE_PACKAGE_PATH = "csrc/cuda/roi_align_kernels.cuh"

#: Feature dtype name -> entry-point suffix.
DTYPE_SUFFIXES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "float64": "f64"}


def kernel_source_path() -> Path:
    """Return the absolute path of ``roi_align_kernels.cuh`` inside this installed package.

    Returns:
        Path to the plain CUDA C++ kernel source (no torch includes).

    Raises:
        FileNotFoundError: if the package was installed without its package data.
    """
    path = Path(__file__).resolve().parent / KERNEL_SOURCE_PACKAGE_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: personsearch_ops was installed without its CUDA source; "
            "reinstall the package (the file is listed in setup.py's package_data)"
        )
    return path


def kernel_entry_point(*, direction: str, layout: str, dtype: str, multi_level: bool) -> str:
    """Return the ``extern "C"`` name of one kernel in the source.

    Args:
        direction: "fwd" or "bwd".
        layout: "nchw" (features [N, C, H, W], output [K, C, PH, PW]) or "nhwc" (channels-last
            features [N, H, W, C], output [K, PH, PW, C]).
        dtype: feature dtype name: "float32", "float16", "bfloat16" or "float64".
        multi_level: the fused pyramid variant (level table argument) instead of one map.

    Returns:
        The entry-point name, e.g. "ps_roi_align_fwd_nhwc_f16".

    Raises:
        ValueError: for an unknown direction, layout or dtype.
    """
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    if layout not in ("nchw", "nhwc"):
        raise ValueError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    if dtype not in DTYPE_SUFFIXES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_SUFFIXES)}, got {dtype!r}")
    stem = "ps_multi_level_roi_align" if multi_level else "ps_roi_align"
    return f"{stem}_{direction}_{layout}_{DTYPE_SUFFIXES[dtype]}"


def nvrtc_options(*, cuda_include_dir: str | Path, compute_capability: tuple[int, int]) -> list[str]:
    """Return the NVRTC options the source needs.

    Args:
        cuda_include_dir: a directory holding ``cuda_fp16.h`` and ``cuda_bf16.h`` (the CUDA
            toolkit's ``include`` or the nvidia-cuda-runtime wheel's include folder).
        compute_capability: (major, minor) of the target GPU, e.g. (9, 0).

    Returns:
        Option strings for ``nvrtcCompileProgram``.
    """
    major, minor = compute_capability
    return ["-std=c++17", f"-I{cuda_include_dir}", f"--gpu-architecture=sm_{major}{minor}"]
