"""Person crops for the crop encoder on the GPU: cut and resized on the device, no host round trip.

The CPU path (:func:`personsearch_runtime.text_search.crop_person_boxes`) rounds each
box outwards to whole pixels, clips it to the frame and resizes the pixels inside with
OpenCV's ``INTER_LINEAR``. On the GPU path the frame is uploaded once and our kernel
``ps_crop_resize_bgr_u8`` (``person_crops.cuh``, compiled at run time with NVRTC like the
RoIAlign kernel) does the same for every box of the frame in one launch: the same integer
boxes (:func:`integer_crop_boxes`, shared with the CPU path), OpenCV's sample positions
(``(d + 0.5) * size / crop - 0.5``, clamped inside the box), bilinear weights in float32
and the result rounded to 8-bit levels, as OpenCV's uint8 output is. OpenCV computes its
weights in 11-bit fixed point, so a value can differ from the CPU crop by one level
(1/255); :func:`reference_crops` is the kernel's arithmetic in numpy, which tests hold
against OpenCV here and against the kernel on a GPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from personsearch_runtime.gpu.roi_align_kernel import compile_kernels, load_module
from personsearch_runtime.text_search import integer_crop_boxes

__all__ = ["CROP_KERNEL", "CROP_KERNEL_SOURCE", "DeviceCropper", "integer_crop_boxes", "reference_crops"]

#: The kernel file, shipped inside this package.
CROP_KERNEL_SOURCE = Path(__file__).with_name("person_crops.cuh")
#: Its entry point.
CROP_KERNEL = "ps_crop_resize_bgr_u8"


def _sampling(size: int, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first index [crop], second index [crop], weight of the second [crop] float32) along one axis."""
    # float32 throughout, as the kernel computes it.
    step = np.float32(size) / np.float32(crop)
    f = (np.arange(crop, dtype=np.float32) + np.float32(0.5)) * step - np.float32(0.5)
    first = np.floor(f).astype(np.int64)
    weight = (f - first).astype(np.float32)
    low = first < 0
    first[low], weight[low] = 0, 0.0
    high = first >= size - 1
    first[high], weight[high] = size - 1, 0.0
    return first, np.minimum(first + 1, size - 1), weight


def reference_crops(image_bgr: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The GPU kernel's arithmetic in numpy.

    Args:
        image_bgr: [H, W, 3] uint8 BGR frame.
        boxes: [M, 4] int32 boxes from :func:`integer_crop_boxes`.
        size: ``(height, width)`` of the crops.

    Returns:
        [M, 3, height, width] float32 RGB in ``[0, 1]``.
    """
    crop_h, crop_w = int(size[0]), int(size[1])
    out = np.empty((len(boxes), 3, crop_h, crop_w), np.float32)
    for m, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, np.int64)):
        pixels = image_bgr[y1:y2, x1:x2, ::-1].astype(np.float32)
        xs0, xs1, wx = _sampling(int(x2 - x1), crop_w)
        ys0, ys1, wy = _sampling(int(y2 - y1), crop_h)
        wx, wy = wx[None, :, None], wy[:, None, None]
        top = (1 - wx) * pixels[ys0][:, xs0] + wx * pixels[ys0][:, xs1]
        bottom = (1 - wx) * pixels[ys1][:, xs0] + wx * pixels[ys1][:, xs1]
        value = np.rint((1 - wy) * top + wy * bottom)
        out[m] = (np.clip(value, 0, 255) / np.float32(255)).transpose(2, 0, 1)
    return out


class DeviceCropper:
    """Launches ``ps_crop_resize_bgr_u8`` on CuPy arrays.

    Args:
        device: CUDA device index.
    """

    def __init__(self, device: int = 0) -> None:
        import cupy

        from personsearch_runtime.gpu.cuda_memory import compute_capability

        self._cupy = cupy
        major, minor = compute_capability(device)
        compiled = compile_kernels(f"sm_{major}{minor}", source=CROP_KERNEL_SOURCE, cache_name="person_crops")
        self._function = load_module(compiled, "person_crops").get_function(CROP_KERNEL)

    def __call__(self, image_bgr: Any, boxes: np.ndarray, size: tuple[int, int]) -> Any:
        """Crop and resize every box of one frame on the device.

        Args:
            image_bgr: [H, W, 3] uint8 BGR frame, a numpy array (uploaded here) or a CuPy array.
            boxes: [M, 4] int32 boxes from :func:`integer_crop_boxes`.
            size: ``(height, width)`` of the crops.

        Returns:
            [M, 3, height, width] float32 CuPy array, RGB in ``[0, 1]``.
        """
        cp = self._cupy
        frame = cp.ascontiguousarray(cp.asarray(image_bgr, dtype=cp.uint8))
        height, width = int(frame.shape[0]), int(frame.shape[1])
        crop_h, crop_w = int(size[0]), int(size[1])
        out = cp.empty((len(boxes), 3, crop_h, crop_w), dtype=cp.float32)
        if len(boxes) == 0:
            return out
        device_boxes = cp.asarray(np.ascontiguousarray(boxes, np.int32))
        total = out.size
        threads = 256
        blocks = min((total + threads - 1) // threads, 65535 * 8)
        args = (
            frame,
            cp.int32(height),
            cp.int32(width),
            device_boxes,
            cp.int32(len(boxes)),
            cp.int32(crop_h),
            cp.int32(crop_w),
            out,
        )
        self._function((blocks,), (threads,), args)
        return out
