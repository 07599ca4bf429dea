"""Training-time image transforms that keep boxes consistent with the pixels.

Images are ``[3, H, W]`` float RGB tensors in ``[0, 1]``; boxes are ``[M, 4]``
float32 ``xyxy`` pixels (the SDK's convention). Resizing is the model's job (its
input transform), so the data pipeline only applies geometric augmentation.
"""

from __future__ import annotations

import torch

__all__ = ["hflip", "random_hflip"]


def hflip(image: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror an image left-right and its boxes with it.

    Args:
        image: ``[C, H, W]`` tensor.
        boxes: ``[M, 4]`` float32 ``xyxy`` pixels.

    Returns:
        ``(flipped image [C, H, W], flipped boxes [M, 4])``; a box ``x1..x2`` becomes
        ``W - x2 .. W - x1``.
    """
    width = image.shape[-1]
    flipped = boxes.clone()
    flipped[:, 0] = width - boxes[:, 2]
    flipped[:, 2] = width - boxes[:, 0]
    return image.flip(-1), flipped


def random_hflip(
    image: torch.Tensor, boxes: torch.Tensor, *, prob: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Flip with probability ``prob``, drawing from ``generator`` (not the global RNG).

    Using a per-sample generator keeps the augmentation identical across resume,
    worker counts and process counts.

    Returns:
        ``(image, boxes, flipped)``.
    """
    if prob > 0 and float(torch.rand((), generator=generator)) < prob:
        image, boxes = hflip(image, boxes)
        return image, boxes, True
    return image, boxes, False
