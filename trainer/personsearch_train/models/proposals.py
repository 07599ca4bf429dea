"""Region proposals on one feature map, with NMS that stops once enough boxes are kept.

SeqNet's RPN scores every anchor of the res4 map, keeps the 12,000 best (6,000 at
inference), suppresses overlaps at IoU 0.7 and keeps the first 2,000 (300) survivors.
Greedy NMS visits boxes in decreasing score order, and whether a box survives depends
only on the boxes before it, so the survivors among the ``m`` best boxes are exactly
the first survivors of the whole list. :func:`nms_first_k` runs torchvision's NMS on a
growing prefix until it holds ``k`` survivors. The cost of greedy NMS grows with the
number of survivors times the number of boxes, so on a CPU this turns the RPN's
largest single kernel (about 0.5 s per 900x1200 image for ``seqnet_r50``, with an
untrained RPN whose proposals are spread over the image) into a small one.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import clip_boxes_to_image, nms, remove_small_boxes

__all__ = ["SingleLevelRPN", "nms_first_k"]


def nms_first_k(boxes: Tensor, scores: Tensor, iou_threshold: float, k: int) -> Tensor:
    """The first ``k`` boxes that greedy NMS keeps, best first.

    Gives the same indices as ``torchvision.ops.nms(boxes, scores, iou_threshold)[:k]``
    (both visit equal scores in index order: torchvision sorts stably too), doing less
    work when ``k`` is small next to the number of survivors.

    Args:
        boxes: ``[N, 4]`` float boxes ``(x1, y1, x2, y2)``.
        scores: ``[N]`` float scores.
        iou_threshold: Boxes overlapping a kept box by more than this IoU are dropped.
        k: How many survivors to return at most; must be positive.

    Returns:
        ``[min(k, S)]`` int64 indices into ``boxes``, by decreasing score, where ``S``
        is the number of boxes full NMS keeps.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    count = boxes.shape[0]
    order = scores.argsort(descending=True, stable=True)
    # Twice k boxes usually hold k survivors at an RPN's IoU 0.7; a prefix that holds
    # too few is grown by the survival rate seen so far.
    size = min(count, 2 * k)
    while True:
        prefix = order[:size]
        keep = nms(boxes[prefix], scores[prefix], iou_threshold)
        if keep.numel() >= k or size == count:
            return prefix[keep[:k]]
        rate = max(keep.numel(), 1) / size
        size = min(count, max(2 * size, int(1.25 * k / rate)))


class SingleLevelRPN(RegionProposalNetwork):
    """torchvision's region proposal network for a single feature map.

    Same modules, losses and arguments as
    :class:`torchvision.models.detection.rpn.RegionProposalNetwork`; only the
    proposal filtering differs, and only in speed: it ranks one level's anchors and
    runs :func:`nms_first_k` instead of a full NMS. The proposals are the ones the
    torchvision class returns.
    """

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Best ``pre_nms_top_n`` anchors per image, clipped, filtered and suppressed.

        Args:
            proposals: ``[B, A, 4]`` float decoded boxes, one row per anchor.
            objectness: ``[B * A, 1]`` float logits (gradients are not followed).
            image_shapes: ``B`` resized image sizes ``(height, width)``.
            num_anchors_per_level: ``[A]``; a single level.

        Returns:
            ``B`` tensors ``[P_b, 4]`` float boxes and ``B`` tensors ``[P_b]`` float
            probabilities, best first, ``P_b <= post_nms_top_n``.
        """
        if len(num_anchors_per_level) != 1:
            raise ValueError(
                f"SingleLevelRPN takes one feature map, got {len(num_anchors_per_level)} levels; "
                "use torchvision's RegionProposalNetwork for feature pyramids"
            )
        num_images = proposals.shape[0]
        logits = objectness.detach().reshape(num_images, -1)
        logits, index = logits.topk(min(self.pre_nms_top_n(), logits.shape[1]), dim=1)
        ranked = proposals[torch.arange(num_images, device=proposals.device)[:, None], index]
        kept_boxes, kept_scores = [], []
        for boxes, scores, shape in zip(ranked, logits.sigmoid(), image_shapes, strict=True):
            boxes = clip_boxes_to_image(boxes, shape)
            keep = remove_small_boxes(boxes, self.min_size)
            keep = keep[scores[keep] >= self.score_thresh]
            boxes, scores = boxes[keep], scores[keep]
            keep = nms_first_k(boxes, scores, self.nms_thresh, self.post_nms_top_n())
            kept_boxes.append(boxes[keep])
            kept_scores.append(scores[keep])
        return kept_boxes, kept_scores
