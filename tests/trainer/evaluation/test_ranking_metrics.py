"""sklearn AP semantics (methods.md 2.6) and the per-query helpers of the search metric."""

from __future__ import annotations

import numpy as np
import pytest
from personsearch_train.evaluation.person_search import (
    gather_rows,
    query_average_precision,
    reference_integer_boxes,
    small_box_iou_threshold,
    topk_hits,
)
from sklearn.metrics import average_precision_score


def test_sklearn_groups_tied_scores_into_one_threshold() -> None:
    y_true = np.array([0, 1, 1])
    y_score = np.array([0.9, 0.9, 0.5], np.float32)
    # Thresholds 0.9 (P = 1/2, R = 1/2) and 0.5 (P = 2/3, R = 1): 1/2*1/2 + 1/2*2/3 = 7/12.
    assert average_precision_score(y_true, y_score) == pytest.approx(7 / 12)
    # Breaking the tie either way would give a different number: positive first -> 1/2*1 + 1/2*2/3.
    assert average_precision_score(y_true, np.array([0.9, 0.91, 0.5])) == pytest.approx(5 / 6)
    assert average_precision_score(y_true, np.array([0.91, 0.9, 0.5])) == pytest.approx(7 / 12)
    # ... and no interpolation: precision 1/2 then 2/3 is used as is.
    assert query_average_precision(y_true, y_score, count_tp=2, count_gt=4) == pytest.approx(7 / 12 * 0.5)


def test_query_ap_is_zero_without_true_positive() -> None:
    assert query_average_precision(np.zeros(3, int), np.array([0.3, 0.2, 0.1]), 0, 2) == 0.0


def test_topk_hits_follow_descending_similarity() -> None:
    hits = topk_hits(np.array([0, 0, 1, 0]), np.array([0.5, 0.9, 0.4, 0.1], np.float32), max_rank=6)
    # Order: 0.9 (0), 0.5 (0), 0.4 (1), 0.1 (0); padded after the 4 detections.
    assert hits.tolist() == [False, False, True, True, True, True]
    assert topk_hits(np.zeros(0, int), np.zeros(0, np.float32), 3).tolist() == [False] * 3


def test_small_box_threshold() -> None:
    assert small_box_iou_threshold(10, 20) == pytest.approx(200 / (20 * 30))
    assert small_box_iou_threshold(100, 200) == 0.5
    # The crossover: w*h/((w+10)(h+10)) = 0.5 at w = h = 10 + 10*sqrt(2) ~ 24.14
    assert small_box_iou_threshold(24, 24) < 0.5 < small_box_iou_threshold(25, 25) + 1e-9


def test_reference_integer_boxes() -> None:
    boxes = np.array([[1.7, 2.2, 12.5, 20.9]])
    # CUHK-SYSU: x=1, y=2, w=trunc(10.8)=10, h=trunc(18.7)=18 -> x2=11, y2=20.
    np.testing.assert_array_equal(reference_integer_boxes(boxes, "cuhk_sysu"), [[1, 2, 11, 20]])
    np.testing.assert_array_equal(reference_integer_boxes(boxes, "prw"), [[1, 2, 12, 20]])


def test_gather_rows() -> None:
    offsets = np.array([0, 2, 2, 5, 6])
    rows, starts, lengths = gather_rows(offsets, np.array([2, 0, 1, 3]))
    assert rows.tolist() == [2, 3, 4, 0, 1, 5]
    assert starts.tolist() == [0, 3, 5, 5] and lengths.tolist() == [3, 2, 0, 1]
