"""Person crops for text-to-image retrieval: one way to read, cut and resize a crop image.

Training (:mod:`personsearch_train.data.text_pairs`) and evaluation
(:mod:`personsearch_train.engine.text_inference`) both read crops here, so the model sees
the same pixels in both; the exporter's preprocessing spec describes the same resize.
Sentence search in full images cuts the detected people out of the scene with
:func:`crop_person_boxes`, whose rounding rule the torch-free runtime implements too.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from personsearch_train.data.images import read_bgr

__all__ = ["crop_person_boxes", "read_person_crop"]


def read_person_crop(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a person crop and resize it to the model's input size.

    Args:
        path: Image file.
        size: ``(height, width)`` in pixels (IRRA: ``(384, 128)``).

    Returns:
        ``[3, height, width]`` float32 RGB in ``[0, 1]`` (bilinear resize, no
        aspect-preserving padding, as IRRA's ``T.Resize((384, 128))``).

    Raises:
        DatasetFormatError: The file is missing or cannot be decoded.
    """
    height, width = int(size[0]), int(size[1])
    bgr = read_bgr(path)
    if bgr.shape[:2] != (height, width):
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def crop_person_boxes(image_bgr: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cut people out of a scene image and resize them for a crop encoder.

    Each box is rounded outwards to whole pixels and clipped to the image, keeping at
    least one pixel: ``x1 = floor(clip(x1, 0, W - 1))``, ``y1 = floor(clip(y1, 0, H - 1))``,
    ``x2 = max(ceil(clip(x2, 0, W)), x1 + 1)``, ``y2 = max(ceil(clip(y2, 0, H)), y1 + 1)``;
    the crop ``image[y1:y2, x1:x2]`` is resized bilinearly (OpenCV ``INTER_LINEAR``) to
    ``size``, turned to RGB and scaled to ``[0, 1]``. The torch-free runtime's crop
    encoder input follows exactly this rule, so both embed the same pixels.

    Args:
        image_bgr: ``[H, W, 3]`` uint8 BGR scene image.
        boxes: ``[M, 4]`` float32 ``xyxy`` pixels of the image (any values: boxes
            reaching outside the image are clipped).
        size: ``(height, width)`` of the crops (the text model's ``image_size``).

    Returns:
        ``[M, 3, height, width]`` float32 RGB in ``[0, 1]`` (``[0, 3, height, width]``
        for no boxes).

    Raises:
        ValueError: An image that is not ``[H, W, 3]`` uint8, boxes that are not
            ``[M, 4]`` finite numbers, or a size below one pixel.
    """
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"crop size must be (height, width) of at least 1 pixel, got {tuple(size)}")
    image = np.asarray(image_bgr)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise ValueError(f"image_bgr must be [H, W, 3] uint8, got {image.dtype} {image.shape}")
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 3, height, width), dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 4 or not np.all(np.isfinite(array)):
        raise ValueError(f"boxes must be [M, 4] finite xyxy pixels, got shape {array.shape}")
    image_h, image_w = image.shape[:2]
    # float64 floor/ceil of the float32 values: the same integers the runtime computes.
    x1 = np.floor(np.clip(array[:, 0], 0, image_w - 1)).astype(np.int64)
    y1 = np.floor(np.clip(array[:, 1], 0, image_h - 1)).astype(np.int64)
    x2 = np.maximum(np.ceil(np.clip(array[:, 2], 0, image_w)).astype(np.int64), x1 + 1)
    y2 = np.maximum(np.ceil(np.clip(array[:, 3], 0, image_h)).astype(np.int64), y1 + 1)
    out = np.empty((len(array), 3, height, width), dtype=np.float32)
    for i in range(len(array)):
        crop = image[y1[i] : y2[i], x1[i] : x2[i]]
        resized = cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        out[i] = rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return out
