"""Detection AP/recall (methods.md 2.3), hand-computed."""

from __future__ import annotations

import numpy as np
import pytest
from personsearch_train.evaluation.detection import (
    DetectionResult,
    box_iou,
    evaluate_detection,
    match_detections,
)
from personsearch_train.evaluation.evaluators import DetectionEvaluator


def test_box_iou_is_plain_without_plus_one() -> None:
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 5], [20, 20, 30, 30], [5, 0, 15, 10]]))
    # 50/100; disjoint; 50/(100+100-50)
    np.testing.assert_allclose(iou, [[0.5, 0.0, 50 / 150]])


def test_matching_is_argmax_by_iou_not_by_score() -> None:
    gt = np.array([[0, 0, 10, 10]], np.float32)
    # A high-scoring, slightly worse box (IoU 0.8) and a low-scoring exact box (IoU 1).
    dets = np.array([[0, 0, 10, 8], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.6], np.float32)
    matched = match_detections(gt, dets)
    assert matched.tolist() == [[False, True]]
    result = evaluate_detection([gt], [dets], [scores])
    # Ranked: 0.9 (false), 0.6 (true) -> sklearn AP = precision at the positive = 1/2; recall 1.
    # Greedy VOC matching by score would give AP 1.0 here.
    assert result.recall == pytest.approx(1.0)
    assert result.ap == pytest.approx(0.5)
    assert (result.count_gt, result.count_tp, result.num_detections) == (1, 1, 2)


def test_detection_argmax_per_detection_then_per_gt() -> None:
    # Two GT boxes; det 0 overlaps both (IoU 0.818 with gt0, 0.43 with gt1), det 1 matches gt1 well.
    gt = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    dets = np.array([[1, 0, 11, 10], [5, 0, 15, 10]], np.float32)
    matched = match_detections(gt, dets)
    assert matched.tolist() == [[True, False], [False, True]]
    # Two detections on one box: only the box's arg-max-IoU detection (IoU 0.9) is matched.
    gt2 = np.array([[0, 0, 10, 10]], np.float32)
    dets2 = np.array([[0, 0, 10, 9], [0, 0, 10, 8]], np.float32)  # IoU 0.9 and 0.8 with the single box
    assert match_detections(gt2, dets2).tolist() == [[True, False]]


def test_missed_image_counts_its_ground_truth_and_threshold_drops_detections() -> None:
    gt_a = np.array([[0, 0, 10, 10]], np.float32)
    gt_b = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    dets_a = np.array([[0, 0, 10, 10], [40, 40, 50, 50]], np.float32)
    scores_a = np.array([0.8, 0.9], np.float32)
    # Image b only has a detection below det_thresh (0.01): it is dropped, b adds 2 GT and nothing else.
    dets_b = np.array([[0, 0, 10, 10]], np.float32)
    scores_b = np.array([0.005], np.float32)
    result = evaluate_detection([gt_a, gt_b], [dets_a, dets_b], [scores_a, scores_b])
    assert result.count_gt == 3 and result.count_tp == 1 and result.num_detections == 2
    assert result.recall == pytest.approx(1 / 3)
    # Ranked 0.9 (false), 0.8 (true): AP 0.5, times recall 1/3.
    assert result.ap == pytest.approx(0.5 / 3)
    # With det_thresh 0.001 the low-score detection counts and matches: 2 of 3 found.
    relaxed = evaluate_detection([gt_a, gt_b], [dets_a, dets_b], [scores_a, scores_b], det_thresh=0.001)
    assert relaxed.count_tp == 2 and relaxed.recall == pytest.approx(2 / 3)
    # Ranked 0.9 F, 0.8 T, 0.005 T: AP = (1/2)*(1/2) + (1/2)*(2/3) = 7/12, times recall 2/3.
    assert relaxed.ap == pytest.approx(7 / 12 * 2 / 3)


def test_labeled_only_skips_images_without_labels() -> None:
    gt = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), np.array([[0, 0, 10, 10]], np.float32)]
    pids = [np.array([3, -1]), np.array([-1])]
    dets = [np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32), np.array([[0, 0, 10, 10]], np.float32)]
    scores = [np.array([0.9, 0.8], np.float32), np.array([0.95], np.float32)]
    everyone = evaluate_detection(gt, dets, scores)
    assert everyone.recall == pytest.approx(1.0) and everyone.ap == pytest.approx(1.0)
    labelled = evaluate_detection(gt, dets, scores, gt_pids=pids, labeled_only=True)
    # Image 2 is skipped entirely; in image 1 only the labelled box counts (the 0.8 detection is false).
    assert labelled.count_gt == 1 and labelled.num_detections == 2
    assert labelled.ap == pytest.approx(1.0)  # the positive (0.9) ranks first


def test_no_match_gives_zero_ap_and_evaluator_agrees() -> None:
    gt = [np.array([[0, 0, 10, 10]], np.float32)]
    dets = [np.array([[50, 50, 60, 60]], np.float32)]
    scores = [np.array([0.9], np.float32)]
    assert evaluate_detection(gt, dets, scores) == DetectionResult(0.0, 0.0, 1, 0, 1)
    evaluator = DetectionEvaluator()
    evaluator.process(gt[0], np.array([-1]), dets[0], scores[0])
    assert evaluator.evaluate() == DetectionResult(0.0, 0.0, 1, 0, 1)
    evaluator.reset()
    evaluator.process(gt[0], np.array([-1]), gt[0], np.array([0.7], np.float32))
    assert evaluator.evaluate().ap == pytest.approx(1.0)


def test_no_ground_truth_is_an_error() -> None:
    with pytest.raises(ValueError, match="no ground-truth"):
        evaluate_detection([np.zeros((0, 4))], [np.zeros((0, 4))], [np.zeros(0)])
