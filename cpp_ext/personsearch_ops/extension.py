"""Loading of the compiled extension ``personsearch_ops._C`` and the fallback notice."""

from __future__ import annotations

import warnings

try:
    from personsearch_ops import _C  # noqa: F401  (loading it registers the torch ops)

    _LOADED = True
    _LOAD_ERROR: str | None = None
except ImportError as exc:
    _LOADED = False
    _LOAD_ERROR = str(exc)

_warned = False

BUILD_HINT = (
    "Build it from the repository root with torch installed: "
    "`pip install --no-build-isolation --no-deps -e .` (CPU kernels), or with "
    "`CUDA_HOME=/usr/local/cuda FORCE_CUDA=1` in front for the CUDA kernels too."
)


def has_ops() -> bool:
    """Return True when the compiled kernels (``personsearch_ops._C``) are loaded."""
    return _LOADED


def warn_fallback_once(op_name: str) -> None:
    """Warn, once per process, that ``op_name`` runs on the torchvision fallback.

    Args:
        op_name: the public function that fell back, e.g. "personsearch_ops.roi_align".
    """
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"{op_name}: the compiled extension personsearch_ops._C is not available ({_LOAD_ERROR}); "
        f"falling back to torchvision's roi_align (slower, no fused multi-level kernel). {BUILD_HINT}",
        RuntimeWarning,
        stacklevel=3,
    )
