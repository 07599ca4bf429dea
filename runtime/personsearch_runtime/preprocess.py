"""Image -> model input, exactly as the bundle's ``preprocessing`` spec says.

Steps: BGR uint8 (OpenCV) -> RGB float32 in [0, 1] -> resize (shorter side to
``min_size``, longer side capped at ``max_size``; bilinear) -> normalise with mean/std
unless the graph does it -> CHW. A batch pads every image bottom/right with
``pad_value`` to the largest height/width rounded up to ``pad_divisor``. Boxes found on
the fed image map back to the original with the per-axis ratios kept here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from personsearch_runtime.bundle import Preprocessing

__all__ = ["PreparedImage", "batch_images", "prepare_image", "resized_size", "to_original", "to_resized"]


def resized_size(height: int, width: int, spec: Preprocessing) -> tuple[int, int]:
    """Return the (height, width) an image is resized to.

    The scale is ``min(min_size / shorter, max_size / longer)`` and sizes are floored,
    as torchvision's ``GeneralizedRCNNTransform`` does.
    """
    if spec.resize_policy == "none":
        return height, width
    scale = min(spec.min_size / min(height, width), spec.max_size / max(height, width))
    return max(1, int(math.floor(height * scale))), max(1, int(math.floor(width * scale)))


@dataclass(frozen=True)
class PreparedImage:
    """One image ready for batching.

    Attributes:
        tensor: [3, h, w] float32, RGB, resized (and normalised unless the graph does it).
        original_size: (H, W) of the decoded image.
    """

    tensor: np.ndarray
    original_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the resized image."""
        return int(self.tensor.shape[1]), int(self.tensor.shape[2])

    @property
    def ratios(self) -> tuple[float, float]:
        """(x, y) factors from resized to original pixels."""
        (h, w), (oh, ow) = self.size, self.original_size
        return ow / w, oh / h


def prepare_image(image_bgr: np.ndarray, spec: Preprocessing) -> PreparedImage:
    """Resize and normalise one decoded image.

    Args:
        image_bgr: [H, W, 3] uint8 BGR (as ``cv2.imread`` returns) or [H, W] grayscale.
        spec: The bundle's preprocessing.

    Returns:
        The prepared image.
    """
    import cv2

    if image_bgr.ndim == 2:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    elif image_bgr.shape[2] == 4:
        image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_BGRA2BGR)
    height, width = image_bgr.shape[:2]
    h, w = resized_size(height, width, spec)
    x = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB).astype(np.float32) * np.float32(1.0 / 255.0)
    if (h, w) != (height, width):
        # Resize in float, as the trainer's transform does: a uint8 resize rounds every
        # pixel and moves boxes by ~0.2 px, enough to change which boxes pass thresholds.
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)
    if not spec.normalize_in_graph:
        x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return PreparedImage(tensor=np.ascontiguousarray(x.transpose(2, 0, 1)), original_size=(height, width))


def batch_images(images: Sequence[PreparedImage], spec: Preprocessing) -> np.ndarray:
    """Pad and stack prepared images.

    Args:
        images: One or more prepared images.
        spec: The bundle's preprocessing (padding divisor and value).

    Returns:
        [B, 3, Hp, Wp] float32.
    """
    div = spec.pad_divisor
    hp = max(i.size[0] for i in images)
    wp = max(i.size[1] for i in images)
    hp, wp = int(math.ceil(hp / div) * div), int(math.ceil(wp / div) * div)
    out = np.full((len(images), 3, hp, wp), spec.pad_value, np.float32)
    for b, image in enumerate(images):
        h, w = image.size
        out[b, :, :h, :w] = image.tensor
    return out


def to_original(boxes: np.ndarray, image: PreparedImage) -> np.ndarray:
    """Map boxes [N, 4] float32 xyxy from fed-image pixels to original pixels, clipped to the image."""
    rx, ry = image.ratios
    out = np.asarray(boxes, np.float32) * np.array([rx, ry, rx, ry], np.float32)
    oh, ow = image.original_size
    np.clip(out[:, 0::2], 0, ow, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, oh, out=out[:, 1::2])
    return out


def to_resized(boxes: np.ndarray, image: PreparedImage) -> np.ndarray:
    """Map boxes [N, 4] float32 xyxy from original pixels to fed-image pixels."""
    rx, ry = image.ratios
    return (np.asarray(boxes, np.float32) / np.array([rx, ry, rx, ry], np.float32)).astype(np.float32)
