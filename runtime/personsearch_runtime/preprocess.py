"""Image -> model input, exactly as the bundle's ``preprocessing`` spec says.

Steps: BGR uint8 (OpenCV) -> RGB float32 in [0, 1] -> resize (shorter side to
``min_size``, longer side capped at ``max_size``; bilinear) -> normalise with mean/std
unless the graph does it -> CHW. A batch pads every image bottom/right with
``pad_value`` to the largest height/width rounded up to ``pad_divisor``. Boxes found on
the fed image map back to the original with the per-axis ratios kept here.

Images are checked on the way in (``as_bgr_image``): the runtime takes decoded 8-bit
images as OpenCV gives them, and refuses anything else (``None`` from a failed
``cv2.imread``, float or 16-bit arrays, empty or oddly shaped arrays) with an
``InputError`` that says what was given and what is expected, rather than feeding the
model values it was never trained on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from personsearch_runtime.bundle import Preprocessing
from personsearch_runtime.errors import InputError

__all__ = [
    "MIN_QUERY_SIDE",
    "InputError",
    "PreparedImage",
    "as_bgr_image",
    "batch_images",
    "prepare_image",
    "resized_size",
    "to_original",
    "to_resized",
]

#: Smallest query crop or query box side, in pixels: below this no model can see a
#: person, and the upscaled blur still produced confident (meaningless) hits.
MIN_QUERY_SIDE = 8


def _describe(value: Any) -> str:
    """What the caller passed, briefly: ``float64 array of shape (4, 6, 3)`` or ``a list``."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def as_bgr_image(image: Any, name: str = "image", *, min_side: int = 1) -> np.ndarray:
    """Check a decoded image and return it as [H, W, 3] uint8 BGR.

    Args:
        image: [H, W, 3] uint8 BGR (as ``cv2.imread`` returns), [H, W] or [H, W, 1] uint8
            grayscale, or [H, W, 4] uint8 BGRA. Float images are refused rather than
            guessed at: a [0, 1] float image read as 0-255 values is almost black.
        name: The argument's name, for the message.
        min_side: Smallest accepted height and width in pixels.

    Returns:
        [H, W, 3] uint8 BGR (the input itself when it already is one).

    Raises:
        InputError: None, not an array, not uint8, wrong shape, empty, or smaller than
            ``min_side``.
    """
    expected = "a [H, W, 3] uint8 BGR image as cv2.imread returns"
    if image is None:
        raise InputError(
            f"{name} is None; expected {expected} (cv2.imread returns None when it cannot read the file: "
            "check the path and that it is an image)"
        )
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} is {_describe(image)}; expected {expected}")
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating):
            hint = "convert a float image in [0, 1] with (image * 255).round().astype(np.uint8)"
        elif image.dtype == np.uint16:
            hint = "convert a 16-bit image with (image // 257).astype(np.uint8)"
        else:
            hint = "convert it to 8-bit values 0-255 first"
        raise InputError(f"{name} is {_describe(image)}; expected {expected}, with values 0-255: {hint}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        raise InputError(
            f"{name} is {_describe(image)}; expected {expected} ([H, W] grayscale and [H, W, 4] BGRA "
            "are accepted too)"
        )
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise InputError(f"{name} is empty ({_describe(image)}); expected an image with pixels in it")
    if min(height, width) < min_side:
        raise InputError(
            f"{name} is {height}x{width} pixels (HxW); it must be at least {min_side}x{min_side} to show a "
            "person: give a larger crop"
        )
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    import cv2

    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image.reshape(height, width)), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGRA2BGR)


def resized_size(height: int, width: int, spec: Preprocessing) -> tuple[int, int]:
    """Return the (height, width) an image is resized to.

    The scale is ``min(min_size / shorter, max_size / longer)`` and sizes are floored,
    as torchvision's ``GeneralizedRCNNTransform`` does.

    Raises:
        InputError: ``height`` or ``width`` is below 1.
    """
    if height < 1 or width < 1:
        raise InputError(f"image size must be at least 1x1 pixels, got {height}x{width} (HxW)")
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


def prepare_image(image_bgr: np.ndarray, spec: Preprocessing, *, name: str = "image") -> PreparedImage:
    """Resize and normalise one decoded image.

    Args:
        image_bgr: [H, W, 3] uint8 BGR (as ``cv2.imread`` returns); [H, W] grayscale and
            [H, W, 4] BGRA uint8 are converted (see ``as_bgr_image``).
        spec: The bundle's preprocessing.
        name: The argument's name in error messages.

    Returns:
        The prepared image.

    Raises:
        InputError: The image is not an 8-bit image (see ``as_bgr_image``).
    """
    import cv2

    image_bgr = as_bgr_image(image_bgr, name)
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

    Raises:
        InputError: ``images`` is empty.
    """
    if not images:
        raise InputError("batch_images needs at least one prepared image, got none")
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
