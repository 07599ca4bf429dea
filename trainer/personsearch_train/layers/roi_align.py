"""The one RoIAlign layer every model in the trainer pools through.

It calls our own kernel (``personsearch_ops.roi_align``) when that extension is
built and ``torchvision.ops.roi_align`` otherwise; both follow the same contract, so
swapping them changes no numbers beyond float rounding. ``aligned`` is a required
keyword because the two common defaults disagree (torchvision: ``False``,
detectron2: ``True``) and SeqNet was trained with the legacy ``False``
(methods.md section 1.1 item 4); nobody should inherit either silently.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

__all__ = ["RoIAlign", "roi_align", "uses_personsearch_ops"]


@functools.cache
def _personsearch_ops() -> Any | None:
    """Return the ``personsearch_ops`` module when its compiled kernels are usable (decided once)."""
    try:
        import personsearch_ops
    except ImportError:
        return None
    has_ops = getattr(personsearch_ops, "has_ops", None)
    if has_ops is None or not callable(getattr(personsearch_ops, "roi_align", None)):
        return None
    try:
        return personsearch_ops if has_ops() else None
    except Exception:  # a broken build must not take the trainer down; torchvision still works
        return None


def uses_personsearch_ops() -> bool:
    """Whether :func:`roi_align` runs our compiled kernel (True) or torchvision's (False)."""
    return _personsearch_ops() is not None


def _as_rois(boxes: Tensor | list[Tensor]) -> Tensor:
    """Turn per-image box lists into the ``[K, 5]`` (batch index, x1, y1, x2, y2) layout."""
    if isinstance(boxes, Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise ValueError(f"rois must be [K, 5] (batch index, x1, y1, x2, y2); got {tuple(boxes.shape)}")
        return boxes
    parts = []
    for index, image_boxes in enumerate(boxes):
        if image_boxes.dim() != 2 or image_boxes.size(1) != 4:
            raise ValueError(f"boxes of image {index} must be [L, 4] xyxy; got {tuple(image_boxes.shape)}")
        batch_index = torch.full_like(image_boxes[:, :1], float(index))
        parts.append(torch.cat([batch_index, image_boxes], dim=1))
    if not parts:
        raise ValueError("roi_align needs at least one image's boxes")
    return torch.cat(parts, dim=0)


def roi_align(
    features: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    *,
    aligned: bool,
) -> Tensor:
    """Average-pool a fixed-size grid of bilinear samples from each box.

    Args:
        features: ``[B, C, H, W]`` float feature map.
        boxes: ``[K, 5]`` float rois (batch index, x1, y1, x2, y2) or a list of ``B``
            tensors ``[L_b, 4]`` float xyxy, in input-image pixels.
        output_size: Output height and width (an int means square).
        spatial_scale: Feature-map size over input-image size (1/16 for res4).
        sampling_ratio: Samples per bin along each axis; ``<= 0`` adapts to the box.
        aligned: ``True`` shifts box coordinates by -0.5 pixel (half-pixel model);
            ``False`` is the legacy behaviour SeqNet was trained with.

    Returns:
        ``[K, C, output_h, output_w]`` pooled features, dtype of ``features``.
    """
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    # Box coordinates stay float32 whatever the feature precision: fp16 cannot hold pixel
    # positions of large images exactly (DESIGN.md section 2).
    rois = _as_rois(boxes).float()
    ops = _personsearch_ops()
    if ops is not None:
        return ops.roi_align(features, rois, size, spatial_scale, sampling_ratio, aligned=aligned)
    # torchvision's kernel wants rois in the features' dtype; pool in float32 instead (what
    # its autocast wrapper does too) and hand back the features' dtype.
    pooled = torchvision.ops.roi_align(
        features.float(),
        rois,
        output_size=size,
        spatial_scale=spatial_scale,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    )
    return pooled.to(features.dtype)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` with its settings fixed at construction.

    Args:
        output_size: Output height and width (SeqNet: 14).
        spatial_scale: Feature-map size over input-image size (res4: 1/16).
        sampling_ratio: Samples per bin along each axis (SeqNet: 2).
        aligned: Half-pixel box model when True; SeqNet uses False.
    """

    def __init__(
        self, *, output_size: int | tuple[int, int], spatial_scale: float, sampling_ratio: int, aligned: bool
    ) -> None:
        super().__init__()
        self.output_size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, features: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        """Pool ``boxes`` from ``features``; see :func:`roi_align` for shapes."""
        return roi_align(
            features, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, aligned=self.aligned
        )

    def extra_repr(self) -> str:
        """Settings shown by ``print(model)``."""
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
