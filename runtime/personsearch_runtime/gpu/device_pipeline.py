"""The GPU path: split engines with our NVRTC-compiled RoIAlign between them, all on the device.

The batch is uploaded once; ``backbone_rpn`` features and proposals, the pooled RoI
features, box decoding, NMS and the second pooling all stay in CuPy arrays on the
device, and only the final boxes, scores and embeddings come back, in one copy. With
TensorRT the engines read and write CuPy memory directly (``TensorRTBackend.run_device``).

Every pipeline owns one non-blocking CUDA stream: the upload, each engine's
``execute_async_v3``, our kernel launches and the CuPy work between them are queued on
it, in order. Nothing calls a stream or device synchronise between the stages; the
host waits for the stream only where CuPy needs a count on the host (boolean masks,
``nonzero``) and once at the end of the batch, when the results come back in one copy.
A non-blocking stream does not serialise with the legacy default stream, which other
libraries in the process may be using, and keeps the engines off CuPy's null stream.

Without TensorRT, ONNX Runtime runs the graphs so the path can be checked for
correctness on a GPU machine; that variant copies each stage's inputs and outputs
through the host and is not meant to be timed (``choose_pipeline`` never picks it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from personsearch_runtime.bundle import Manifest, RoIAlignSpec
from personsearch_runtime.detection import BatchDetections, SplitDetector

__all__ = ["DeviceSplitDetector", "HostStageOnDevice", "device_split_detector"]


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
        """Copy inputs to the host, run, copy outputs back (on CuPy's current stream)."""
        cp = self._cupy
        host = {k: cp.asnumpy(v) for k, v in feed.items()}
        return {k: cp.asarray(v) for k, v in self.backend.run(host).items()}


class _EngineStage:
    """A device engine queued on the pipeline's stream."""

    def __init__(self, engine: Any, stream: Any) -> None:
        self.engine = engine
        self.stream = stream

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        # The handle is passed explicitly rather than read from CuPy's current stream, so
        # the engine cannot end up on the null stream if a caller leaves the context.
        return self.engine.run_device(feed, stream=self.stream.ptr)


class _KernelOnStream:
    """Our RoIAlign kernel, launched on the pipeline's stream.

    CuPy launches raw kernels on its current stream; entering the stream here makes that
    the pipeline's stream for each launch, whoever calls.
    """

    def __init__(self, kernel: Callable[[Any, Any, RoIAlignSpec], Any], stream: Any) -> None:
        self.kernel = kernel
        self.stream = stream

    def __call__(self, features: Any, rois: Any, spec: RoIAlignSpec) -> Any:
        with self.stream:
            return self.kernel(features, rois, spec)


class DeviceSplitDetector:
    """The split detector on one GPU, on a non-blocking stream it owns.

    Args:
        manifest: Bundle manifest with split graphs.
        stages: Role -> backend. Backends with ``run_device`` (``TensorRTBackend``) run on
            device memory on the pipeline's stream; others go through the host.
        device: ``"cuda"`` or ``"cuda:N"``.
        kernel: ``roi_align(features, rois, spec)`` on CuPy arrays; our NVRTC kernel
            (``RoIAlignKernel``) by default.

    Attributes:
        stream: The pipeline's ``cupy.cuda.Stream(non_blocking=True)``.
    """

    def __init__(
        self,
        *,
        manifest: Manifest,
        stages: Mapping[str, Any],
        device: str = "cuda",
        kernel: Callable[[Any, Any, RoIAlignSpec], Any] | None = None,
    ) -> None:
        import cupy

        self._cupy = cupy
        self.index = int(device.split(":", 1)[1]) if ":" in device else 0
        with cupy.cuda.Device(self.index):
            # Streams belong to the device that is current when they are created.
            self.stream = cupy.cuda.Stream(non_blocking=True)
            if kernel is None:
                from personsearch_runtime.gpu.roi_align_kernel import RoIAlignKernel

                kernel = RoIAlignKernel(self.index)
        wrapped = {
            role: _EngineStage(s, self.stream) if hasattr(s, "run_device") else HostStageOnDevice(s)
            for role, s in stages.items()
        }
        self.split = SplitDetector(
            manifest=manifest, stages=wrapped, roi_align=_KernelOnStream(kernel, self.stream)
        )

    def __call__(self, batch: np.ndarray, image_sizes: np.ndarray | None = None) -> list[BatchDetections]:
        """Detect in a host batch.

        Args:
            batch: [B, 3, H, W] float32 numpy (uploaded once, on the pipeline's stream).
            image_sizes: [B, 2] (height, width) of each image inside the padding, as for
                :class:`SplitDetector`, or None.

        Returns:
            One host ``BatchDetections`` per image.
        """
        cp = self._cupy
        with cp.cuda.Device(self.index), self.stream:
            sizes = None if image_sizes is None else cp.asarray(image_sizes, cp.float32)
            # The results' copy to the host (SplitDetector's last step) is queued on this
            # stream and waits for it: the one synchronisation of the batch.
            return self.split(cp.asarray(batch), sizes)


def device_split_detector(
    *,
    manifest: Manifest,
    stages: Mapping[str, Any],
    device: str = "cuda",
    kernel: Callable[[Any, Any, RoIAlignSpec], Any] | None = None,
) -> DeviceSplitDetector:
    """Build the device split detector (see :class:`DeviceSplitDetector`).

    Returns:
        A callable ``detect(batch [B,3,H,W] float32 numpy, image_sizes [B,2] | None = None)
        -> list[BatchDetections]``.
    """
    return DeviceSplitDetector(manifest=manifest, stages=stages, device=device, kernel=kernel)
