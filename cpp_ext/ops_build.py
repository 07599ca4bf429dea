"""Build definition of ``personsearch_ops._C`` (imported by the repository's setup.py).

The one place the extension's sources and compiler flags live. setup.py calls
:func:`make_extension` only when torch is importable at build time.

Environment:
    FORCE_CUDA=1: build the CUDA kernels even without a visible GPU (needs CUDA_HOME or nvcc).
    TORCH_CUDA_ARCH_LIST: GPU architectures; defaults to "8.0;8.6;8.9;9.0" (A100, A10/3090,
        L4/4090, H100/H200).
    PERSONSEARCH_OPS_DEBUG=1: -O0 -g instead of -O3.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

#: Architectures built when TORCH_CUDA_ARCH_LIST is not set.
DEFAULT_CUDA_ARCH_LIST = "8.0;8.6;8.9;9.0"


def _cuda_wanted(cpp_extension: ModuleType) -> bool:
    """Return True when the CUDA kernels should be compiled.

    Args:
        cpp_extension: ``torch.utils.cpp_extension``.

    Returns:
        True if FORCE_CUDA=1, or a GPU is visible and a CUDA toolkit (CUDA_HOME) was found.
    """
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if cpp_extension.CUDA_HOME is None:
            raise RuntimeError(
                "FORCE_CUDA=1 but no CUDA toolkit was found: set CUDA_HOME to the toolkit root "
                "(for example CUDA_HOME=/usr/local/cuda)"
            )
        return True
    import torch

    return bool(torch.cuda.is_available()) and cpp_extension.CUDA_HOME is not None


def make_extension(cpp_ext_root: Path, cpp_extension: ModuleType):
    """Return the setuptools Extension for ``personsearch_ops._C``.

    Args:
        cpp_ext_root: the repository's ``cpp_ext`` folder.
        cpp_extension: ``torch.utils.cpp_extension`` (passed in so this file imports no torch
            at module level).

    Returns:
        A ``CUDAExtension`` (CPU + CUDA kernels) when CUDA is usable or forced, else a
        ``CppExtension`` (CPU kernels only).
    """
    csrc = Path(cpp_ext_root) / "personsearch_ops" / "csrc"
    # Paths relative to the setup.py folder keep the build reproducible across checkouts.
    repo = Path(cpp_ext_root).resolve().parent
    sources = sorted(csrc.glob("*.cpp")) + sorted((csrc / "cpu").glob("*.cpp"))
    debug = os.environ.get("PERSONSEARCH_OPS_DEBUG", "0") == "1"
    opt = ["-O0", "-g"] if debug else ["-O3"]
    openmp = [] if sys.platform == "darwin" else ["-fopenmp"]
    cxx_flags = [*opt, *openmp]
    extra_link = list(openmp)
    use_cuda = _cuda_wanted(cpp_extension)
    if use_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCH_LIST)
        sources += sorted((csrc / "cuda").glob("*.cu"))
        nvcc_flags = [*opt, "--expt-relaxed-constexpr"]
        factory = cpp_extension.CUDAExtension
        extra_compile_args = {"cxx": cxx_flags, "nvcc": nvcc_flags}
    else:
        factory = cpp_extension.CppExtension
        extra_compile_args = {"cxx": cxx_flags}
    rel_sources = [os.path.relpath(s, repo) for s in sources]
    return factory(
        name="personsearch_ops._C",
        sources=rel_sources,
        include_dirs=[str(csrc.resolve())],
        extra_compile_args=extra_compile_args,
        extra_link_args=extra_link,
    )
