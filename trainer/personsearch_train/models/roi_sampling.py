"""Training-time RoI selection: match candidates to ground truth and sample a balanced set.

Standard Fast R-CNN sampling as SeqNet configures it for both of its heads
(methods.md section 1.4): the ground-truth boxes are added to the candidates, each
candidate takes the ground-truth box it overlaps most, IoU >= ``fg_iou_thresh`` makes
it a person and IoU < ``bg_iou_thresh`` background (in between: ignored), then up to
``batch_size * positive_fraction`` people and the rest background are drawn at random.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.ops import box_iou

from personsearch_train.models.box_coding import BoxCoder

__all__ = ["RoISampler", "SampledRoIs"]


@dataclass(frozen=True)
class SampledRoIs:
    """RoIs drawn from one image for a training step.

    Attributes:
        boxes: ``[S, 4]`` float xyxy candidate boxes.
        is_person: ``[S]`` bool, True where the RoI matched a ground-truth person.
        pids: ``[S]`` int64 label of the matched person (``-1`` unlabelled); only
            meaningful where ``is_person``.
        regression_targets: ``[S, 4]`` float encoded deltas to the matched box
            (zeros for background).
        gt_index: ``[S]`` int64 index of the matched ground-truth box; only
            meaningful where ``is_person``.
    """

    boxes: Tensor
    is_person: Tensor
    pids: Tensor
    regression_targets: Tensor
    gt_index: Tensor


class RoISampler:
    """Match-and-sample rule shared by SeqNet's two heads.

    Args:
        fg_iou_thresh: IoU at or above which a candidate is a person (SeqNet: 0.5).
        bg_iou_thresh: IoU below which a candidate is background (SeqNet: 0.5).
        batch_size_per_image: RoIs drawn per image (SeqNet: 128).
        positive_fraction: Largest share of people among them (SeqNet: 0.5).
        box_coder: Encodes the regression targets.
    """

    def __init__(
        self,
        *,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        batch_size_per_image: int,
        positive_fraction: float,
        box_coder: BoxCoder,
    ) -> None:
        if bg_iou_thresh > fg_iou_thresh:
            raise ValueError(f"bg_iou_thresh {bg_iou_thresh} must not exceed fg_iou_thresh {fg_iou_thresh}")
        self.fg_iou_thresh = fg_iou_thresh
        self.bg_iou_thresh = bg_iou_thresh
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.box_coder = box_coder

    def __call__(self, candidates: Tensor, gt_boxes: Tensor, gt_pids: Tensor) -> SampledRoIs:
        """Sample RoIs of one image.

        Args:
            candidates: ``[P, 4]`` float xyxy proposals (detached).
            gt_boxes: ``[M, 4]`` float xyxy ground truth (M may be 0).
            gt_pids: ``[M]`` int64 labels, ``-1`` unlabelled.

        Returns:
            The sampled RoIs (at most ``batch_size_per_image``).
        """
        boxes = torch.cat([candidates, gt_boxes.to(candidates.dtype)], dim=0)
        num = boxes.shape[0]
        if gt_boxes.shape[0] == 0:
            matched = torch.zeros(num, dtype=torch.long, device=boxes.device)
            best_iou = torch.zeros(num, dtype=boxes.dtype, device=boxes.device)
            # Any box works as a placeholder target: background rows are never regressed.
            gt_for_encoding = boxes.new_tensor([[0.0, 0.0, 1.0, 1.0]])
            pids_for_matching = gt_pids.new_full((1,), -1)
        else:
            best_iou, matched = box_iou(gt_boxes.to(boxes.dtype), boxes).max(dim=0)
            gt_for_encoding = gt_boxes.to(boxes.dtype)
            pids_for_matching = gt_pids
        foreground = torch.nonzero(best_iou >= self.fg_iou_thresh).squeeze(1)
        background = torch.nonzero(best_iou < self.bg_iou_thresh).squeeze(1)
        num_pos = min(int(self.batch_size_per_image * self.positive_fraction), foreground.numel())
        num_neg = min(self.batch_size_per_image - num_pos, background.numel())
        pos = foreground[torch.randperm(foreground.numel(), device=boxes.device)[:num_pos]]
        neg = background[torch.randperm(background.numel(), device=boxes.device)[:num_neg]]
        keep = torch.cat([pos, neg])
        is_person = torch.zeros(keep.numel(), dtype=torch.bool, device=boxes.device)
        is_person[:num_pos] = True
        sampled = boxes[keep]
        targets = self.box_coder.encode(gt_for_encoding[matched[keep]], sampled)
        targets = torch.where(is_person[:, None], targets, torch.zeros_like(targets))
        return SampledRoIs(sampled, is_person, pids_for_matching[matched[keep]], targets, matched[keep])
