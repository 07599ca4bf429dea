"""Person crops for text-to-image retrieval: one way to read and resize a crop image.

Training (:mod:`personsearch_train.data.text_pairs`) and evaluation
(:mod:`personsearch_train.engine.text_inference`) both read crops here, so the model sees
the same pixels in both; the exporter's preprocessing spec describes the same resize.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from personsearch_train.data.images import read_bgr

__all__ = ["read_person_crop"]


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
