"""The range of image sizes an exported image graph accepts, and its ``--image-size`` syntax."""

from __future__ import annotations

import re
from dataclasses import dataclass

from personsearch_export.errors import ExportError

__all__ = ["PAD", "ImageProfile", "parse_image_size", "round_up"]

#: Every fed image side is a multiple of this (the model's padding divisor).
PAD = 32


@dataclass(frozen=True)
class ImageProfile:
    """Fed image size range (after resize and padding), each ``(height, width)``."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]


def parse_image_size(text: str) -> ImageProfile:
    """Parse ``H,W`` (fixed) or ``h,w/h,w/h,w`` (min/opt/max).

    Raises:
        ExportError: On malformed text or an unordered range.
    """
    parts = text.split("/")
    if len(parts) not in (1, 3):
        raise ExportError(f"--image-size {text!r}: give H,W or minH,minW/optH,optW/maxH,maxW")
    sizes = []
    for part in parts:
        match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", part)
        if not match:
            raise ExportError(f"--image-size {text!r}: {part!r} is not H,W")
        sizes.append((int(match.group(1)), int(match.group(2))))
    lo, opt, hi = (sizes[0],) * 3 if len(sizes) == 1 else sizes
    for axis in (0, 1):
        if not lo[axis] <= opt[axis] <= hi[axis]:
            raise ExportError(f"--image-size {text!r}: needs min <= opt <= max in each dimension")
        if lo[axis] < PAD:
            raise ExportError(f"--image-size {text!r}: sizes must be at least {PAD}")
    return ImageProfile(lo, opt, hi)


def round_up(value: int) -> int:
    """``value`` rounded up to a multiple of :data:`PAD`."""
    return -(-value // PAD) * PAD
