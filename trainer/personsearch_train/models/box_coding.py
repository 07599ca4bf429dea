"""R-CNN box parametrisation (Girshick et al., "Rich feature hierarchies", 2014, appendix C).

A target box ``g`` relative to a reference box ``p`` is encoded as
``(wx (gx - px) / pw, wy (gy - py) / ph, ww log(gw / pw), wh log(gh / ph))`` with box
centres ``(x, y)`` and sizes ``(w, h)``; Faster R-CNN heads use weights
``(10, 10, 5, 5)``. torchvision keeps its coder in a private module, so the trainer
has its own (DESIGN.md: no private imports).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BoxCoder"]

#: Largest log size ratio decoded, so exp() cannot overflow on a wild prediction (1000/16 px).
_MAX_LOG_RATIO = math.log(1000.0 / 16)


class BoxCoder:
    """Encode boxes as deltas against reference boxes and decode them back.

    Args:
        weights: ``(wx, wy, ww, wh)`` multipliers of the four deltas.
    """

    def __init__(self, weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)) -> None:
        self.weights = tuple(float(w) for w in weights)

    @staticmethod
    def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        return boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights, widths, heights

    def encode(self, targets: Tensor, references: Tensor) -> Tensor:
        """Deltas that move each reference box onto its target.

        Args:
            targets: ``[K, 4]`` float xyxy boxes to reach.
            references: ``[K, 4]`` float xyxy boxes the deltas are relative to.

        Returns:
            ``[K, 4]`` float deltas.
        """
        wx, wy, ww, wh = self.weights
        px, py, pw, ph = self._centre_size(references)
        gx, gy, gw, gh = self._centre_size(targets)
        return torch.stack(
            [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)],
            dim=1,
        )

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """Apply per-class deltas to reference boxes.

        Args:
            deltas: ``[K, 4 * C]`` float deltas, four per class.
            references: ``[K, 4]`` float xyxy boxes.

        Returns:
            ``[K, C, 4]`` float32 xyxy boxes.
        """
        # float32 whatever the head's precision: fp16 cannot hold large pixel coordinates exactly.
        # Explicit class count: ``reshape(0, -1, 4)`` is ambiguous for an image with no boxes.
        deltas = deltas.float().reshape(deltas.shape[0], deltas.shape[1] // 4, 4)
        wx, wy, ww, wh = self.weights
        px, py, pw, ph = (v[:, None] for v in self._centre_size(references.float()))
        cx = deltas[..., 0] / wx * pw + px
        cy = deltas[..., 1] / wy * ph + py
        w = torch.exp((deltas[..., 2] / ww).clamp(max=_MAX_LOG_RATIO)) * pw
        h = torch.exp((deltas[..., 3] / wh).clamp(max=_MAX_LOG_RATIO)) * ph
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=2)
