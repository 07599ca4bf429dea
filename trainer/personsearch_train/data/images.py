"""Reading dataset image files: one decoder (OpenCV) and one error for every reader of pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from personsearch_train.errors import DatasetFormatError

__all__ = ["read_bgr"]


def read_bgr(path: str | Path) -> np.ndarray:
    """Decode an image file as OpenCV does (and as the runtime does).

    Args:
        path: Image file.

    Returns:
        ``[H, W, 3]`` uint8 BGR.

    Raises:
        DatasetFormatError: The file is missing or cannot be decoded.
    """
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetFormatError(f"{path}: image is missing or cannot be decoded; check the dataset folder")
    return image
