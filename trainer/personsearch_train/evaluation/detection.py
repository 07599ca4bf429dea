"""Person detection AP and recall with the reference semantics (methods.md section 2.3).

This mirrors ``eval_detection`` of SeqNet (same logic as the original OIM code):

* detections below ``det_thresh`` are dropped (SeqNet's evaluation calls it with
  0.01, our default; the model itself already keeps only scores above 0.5);
* an image with no detection left adds its ground-truth count to ``count_gt``;
* a detection is a true positive if its IoU with a ground-truth box is at least
  ``iou_thresh`` *and* that box is the detection's arg-max-IoU box *and* the
  detection is that box's arg-max-IoU detection. Matching is by IoU, never by
  score: this is not VOC's greedy matching, and a high-scoring duplicate can
  lose to a lower-scoring, better-placed detection;
* ``recall = count_tp / count_gt`` and ``AP = average_precision_score × recall``
  (sklearn's step-wise AP, ties grouped, over all kept detections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score

from personsearch_train.data.structures import UNLABELLED

__all__ = ["DEFAULT_DET_THRESH", "DetectionResult", "box_iou", "evaluate_detection", "match_detections"]

#: Score threshold SeqNet's evaluation passes to its detection metric.
DEFAULT_DET_THRESH = 0.01


@dataclass(frozen=True)
class DetectionResult:
    """Detection metrics over a gallery.

    Attributes:
        ap: Average precision scaled by recall, in [0, 1].
        recall: ``count_tp / count_gt``, in [0, 1].
        count_gt: Ground-truth boxes considered.
        count_tp: Matched detections.
        num_detections: Detections kept after the score threshold.
    """

    ap: float
    recall: float
    count_gt: int
    count_tp: int
    num_detections: int


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain IoU of every box in ``a`` with every box in ``b`` (no ``+1`` in widths).

    Args:
        a: ``[N, 4]`` ``xyxy`` boxes.
        b: ``[M, 4]`` ``xyxy`` boxes.

    Returns:
        ``[N, M]`` float64 IoU; a pair whose union is empty gets 0.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return iou


def match_detections(gt_boxes: np.ndarray, det_boxes: np.ndarray, iou_thresh: float = 0.5) -> np.ndarray:
    """Which detections match a ground-truth box, by the reference's arg-max-IoU rule.

    Args:
        gt_boxes: ``[M, 4]`` ``xyxy`` ground truth.
        det_boxes: ``[N, 4]`` ``xyxy`` detections (their order is irrelevant: scores
            play no part in matching).
        iou_thresh: Minimum IoU of a match.

    Returns:
        ``[M, N]`` bool: ``True`` where box ``i`` and detection ``j`` are matched. At most
        one ``True`` per row and per column.
    """
    num_gt, num_det = len(gt_boxes), len(det_boxes)
    if num_gt == 0 or num_det == 0:
        return np.zeros((num_gt, num_det), dtype=bool)
    # The reference stores IoUs in float32 before thresholding and arg-maxing.
    ious = box_iou(gt_boxes, det_boxes).astype(np.float32)
    matched = ious >= iou_thresh
    cols = np.arange(num_det)
    keep_col = np.zeros_like(matched)
    keep_col[np.argmax(ious, axis=0), cols] = True
    keep_row = np.zeros_like(matched)
    keep_row[np.arange(num_gt), np.argmax(ious, axis=1)] = True
    return matched & keep_col & keep_row


def evaluate_detection(
    gt_boxes: Sequence[np.ndarray],
    det_boxes: Sequence[np.ndarray],
    det_scores: Sequence[np.ndarray],
    *,
    gt_pids: Sequence[np.ndarray] | None = None,
    labeled_only: bool = False,
    det_thresh: float = DEFAULT_DET_THRESH,
    iou_thresh: float = 0.5,
) -> DetectionResult:
    """Detection AP and recall over a gallery, reference semantics.

    Args:
        gt_boxes: Per image ``[M_i, 4]`` ``xyxy`` ground-truth boxes (all people).
        det_boxes: Per image ``[N_i, 4]`` ``xyxy`` detections.
        det_scores: Per image ``[N_i]`` detection scores.
        gt_pids: Per image ``[M_i]`` int64 person ids; needed for ``labeled_only``.
        labeled_only: Score only labelled people; images without any are skipped
            entirely (they add neither ground truth nor detections), as in the reference.
        det_thresh: Detections scoring below this are dropped.
        iou_thresh: Minimum IoU of a match.

    Returns:
        The :class:`DetectionResult`. AP is 0 when nothing is matched.

    Raises:
        ValueError: If the per-image lists differ in length or there is no ground truth.
    """
    if not (len(gt_boxes) == len(det_boxes) == len(det_scores)):
        raise ValueError(
            f"{len(gt_boxes)} ground-truth images, {len(det_boxes)} detection box lists and "
            f"{len(det_scores)} score lists; give one of each per image"
        )
    if labeled_only and gt_pids is None:
        raise ValueError("labeled_only=True needs gt_pids")
    y_true: list[np.ndarray] = []
    y_score: list[np.ndarray] = []
    count_gt = count_tp = 0
    for i, (gt, boxes, scores) in enumerate(zip(gt_boxes, det_boxes, det_scores, strict=True)):
        gt = np.asarray(gt, dtype=np.float32).reshape(-1, 4)
        if labeled_only:
            gt = gt[np.asarray(gt_pids[i]).reshape(-1) != UNLABELLED]
            if len(gt) == 0:
                continue
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        keep = scores >= det_thresh
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)[keep]
        scores = scores[keep]
        if len(scores) == 0:
            count_gt += len(gt)
            continue
        matched = match_detections(gt, boxes, iou_thresh)
        y_true.append(matched.any(axis=0))
        y_score.append(scores)
        count_tp += int(matched.sum())
        count_gt += len(gt)
    if count_gt == 0:
        raise ValueError("the gallery has no ground-truth boxes; detection recall is undefined")
    recall = count_tp / count_gt
    num_dets = int(sum(len(s) for s in y_score))
    if count_tp == 0:
        ap = 0.0
    else:
        ap = float(average_precision_score(np.concatenate(y_true), np.concatenate(y_score))) * recall
    return DetectionResult(
        ap=ap, recall=float(recall), count_gt=count_gt, count_tp=count_tp, num_detections=num_dets
    )
