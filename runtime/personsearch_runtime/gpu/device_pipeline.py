"""The GPU path: split engines with our NVRTC-compiled RoIAlign between them, all on the device.

The batch is uploaded once; ``backbone_rpn`` features and proposals, the pooled RoI
features, box decoding, NMS and the second pooling all stay in CuPy arrays on the
device, and only the final boxes, scores and embeddings come back. With TensorRT the
engines read and write CuPy memory directly (``TensorRTBackend.run_device``). Without
TensorRT, ONNX Runtime runs the graphs so the path can be checked for correctness on a
GPU machine; that variant copies each stage's inputs and outputs through the host and
is not meant to be timed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from personsearch_runtime.bundle import Manifest
from personsearch_runtime.detection import BatchDetections, SplitDetector

__all__ = ["HostStageOnDevice", "device_split_detector"]


class HostStageOnDevice:
    """Adapts a host backend (ONNX Runtime) to CuPy arrays through host copies (correctness only).

    Args:
        backend: Any backend with ``run(feed) -> dict`` on numpy arrays.
    """

    def __init__(self, backend: Any) -> None:
        import cupy

        self._cupy = cupy
        self.backend = backend

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Copy inputs to the host, run, copy outputs back."""
        cp = self._cupy
        host = {k: cp.asnumpy(v) for k, v in feed.items()}
        return {k: cp.asarray(v) for k, v in self.backend.run(host).items()}


class _EngineStage:
    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        return self.engine.run_device(feed)


def device_split_detector(*, manifest: Manifest, stages: Mapping[str, Any], device: str = "cuda") -> Any:
    """Build the device split detector.

    Args:
        manifest: Bundle manifest with split graphs.
        stages: Role -> backend (``TensorRTBackend`` runs on device memory; others go through the host).
        device: ``"cuda"`` or ``"cuda:N"``.

    Returns:
        A callable ``detect(batch [B,3,H,W] float32 numpy, image_sizes [B,2] | None = None)
        -> list[BatchDetections]`` (``image_sizes`` as for :class:`SplitDetector`).
    """
    import cupy

    from personsearch_runtime.gpu.roi_align_kernel import RoIAlignKernel

    index = int(device.split(":", 1)[1]) if ":" in device else 0
    with cupy.cuda.Device(index):
        kernel = RoIAlignKernel(index)
    wrapped = {
        role: _EngineStage(s) if hasattr(s, "run_device") else HostStageOnDevice(s)
        for role, s in stages.items()
    }
    split = SplitDetector(manifest=manifest, stages=wrapped, roi_align=kernel)

    def detect(batch: np.ndarray, image_sizes: np.ndarray | None = None) -> list[BatchDetections]:
        with cupy.cuda.Device(index):
            sizes = None if image_sizes is None else cupy.asarray(image_sizes, cupy.float32)
            return split(cupy.asarray(batch), sizes)

    return detect
