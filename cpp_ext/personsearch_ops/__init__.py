"""personsearch_ops: RoIAlign operators (single- and multi-level) for the personsearch trainer.

Public API:
    roi_align: torchvision-compatible RoIAlign, our CPU and CUDA kernels.
    multi_level_roi_align: FPN RoIAlign that maps every RoI to its pyramid level in the kernel.
    map_roi_levels, pyramid_levels: torchvision's LevelMapper and level range, as functions.
    has_ops: whether the compiled extension ``personsearch_ops._C`` is loaded.
    kernel_source_path: path of the torch-free CUDA kernel source (for NVRTC).

Without the compiled extension both ops fall back to torchvision (with a one-time warning
that says how to build it). The package needs torch; the torch-free runtime does not import
it and finds the kernel source at the fixed path documented in ``kernel_source``.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in environments without torch
    raise ImportError(
        "personsearch_ops needs PyTorch, which is not installed. Install it with "
        "`pip install 'personsearch[train]'` (or torch + torchvision yourself), then rebuild the "
        "kernels with `pip install --no-build-isolation --no-deps -e .`. The torch-free runtime "
        "(personsearch_runtime) does not need this package."
    ) from exc

from personsearch_ops.extension import has_ops
from personsearch_ops.kernel_source import KERNEL_SOURCE_PACKAGE_PATH, kernel_entry_point, kernel_source_path
from personsearch_ops.multi_level import map_roi_levels, multi_level_roi_align, pyramid_levels
from personsearch_ops.roi_align import roi_align

__all__ = [
    "KERNEL_SOURCE_PACKAGE_PATH",
    "has_ops",
    "kernel_entry_point",
    "kernel_source_path",
    "map_roi_levels",
    "multi_level_roi_align",
    "pyramid_levels",
    "roi_align",
]
