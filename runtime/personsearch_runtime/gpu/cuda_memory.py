"""Owned CUDA device buffers and streams through cuda-python (no PyCUDA, no torch).

Every CUDA runtime call goes through ``check`` so a failure raises with the call's name
and CUDA's error string instead of a bare error code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from personsearch_runtime.errors import PersonSearchError

__all__ = ["CudaError", "DeviceBuffer", "Stream", "check", "compute_capability", "cudart"]


class CudaError(PersonSearchError):
    """A CUDA call failed (no GPU, out of memory, bad launch)."""


def cudart() -> Any:
    """Return ``cuda.bindings.runtime`` (imported on first use).

    Raises:
        CudaError: cuda-python is not installed.
    """
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise CudaError('the GPU path needs cuda-python: pip install "personsearch[gpu]"') from None
    return runtime


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python result tuple ``(err, *values)``, raising on error.

    Args:
        result: What a ``cudart.cudaXxx`` call returned.
        what: The call's name for the message.

    Returns:
        None, the single value, or the tuple of values.
    """
    rt = cudart()
    if not isinstance(result, tuple):
        result = (result,)
    err, values = result[0], result[1:]
    if int(err) != int(rt.cudaError_t.cudaSuccess):
        _, name = rt.cudaGetErrorName(err)
        _, text = rt.cudaGetErrorString(err)
        name = name.decode() if isinstance(name, bytes) else str(name)
        text = text.decode() if isinstance(text, bytes) else str(text)
        raise CudaError(f"{what} failed: {name} ({text})")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def compute_capability(device: int = 0) -> tuple[int, int]:
    """Return (major, minor) of CUDA device ``device``."""
    rt = cudart()
    major = check(
        rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute",
    )
    minor = check(
        rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor, device),
        "cudaDeviceGetAttribute",
    )
    return int(major), int(minor)


class Stream:
    """An owned CUDA stream (one per execution context)."""

    def __init__(self) -> None:
        self._rt = cudart()
        self.handle = check(self._rt.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def ptr(self) -> int:
        """The stream handle as an integer (what ``execute_async_v3`` takes)."""
        return int(self.handle)

    def synchronize(self) -> None:
        """Block until all work queued on the stream is done."""
        check(self._rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        """Destroy the stream (idempotent)."""
        if self.handle is not None:
            check(self._rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have unloaded CUDA
            pass


class DeviceBuffer:
    """Device memory that grows on demand and is freed with its owner.

    Args:
        nbytes: Initial capacity in bytes (0 allocates on first use).
    """

    def __init__(self, nbytes: int = 0) -> None:
        self._rt = cudart()
        self.ptr = 0
        self.capacity = 0
        if nbytes:
            self.reserve(nbytes)

    def reserve(self, nbytes: int) -> None:
        """Make the buffer at least ``nbytes`` long (contents are not kept)."""
        if nbytes <= self.capacity:
            return
        self.free()
        self.ptr = int(check(self._rt.cudaMalloc(max(nbytes, 256)), "cudaMalloc"))
        self.capacity = max(nbytes, 256)

    def upload(self, array: np.ndarray, stream: Stream) -> None:
        """Copy a host array into the buffer on ``stream`` (grows the buffer if needed)."""
        array = np.ascontiguousarray(array)
        self.reserve(array.nbytes)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(
            self._rt.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes, kind, stream.handle),
            "cudaMemcpyAsync(H2D)",
        )

    def download(self, out: np.ndarray, stream: Stream) -> np.ndarray:
        """Copy ``out.nbytes`` from the buffer into host array ``out`` on ``stream``."""
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        check(
            self._rt.cudaMemcpyAsync(out.ctypes.data, self.ptr, out.nbytes, kind, stream.handle),
            "cudaMemcpyAsync(D2H)",
        )
        return out

    def free(self) -> None:
        """Release the memory (idempotent)."""
        if self.ptr:
            check(self._rt.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0
            self.capacity = 0

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have unloaded CUDA
            pass
