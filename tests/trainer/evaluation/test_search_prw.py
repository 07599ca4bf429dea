"""PRW search protocol (methods.md 2.5): all-gallery against multi-view, by hand."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from eval_cases import e, image, predictions, prw_split, query, unit_with_cosine
from personsearch_train.evaluation.person_search import evaluate_search_prw

QF = "c1s1_000001.jpg"
A = [0, 0, 40, 100]
B = [0, 0, 40, 100]
NINE = [100, 0, 140, 100]


@pytest.fixture
def case():
    images = [
        image(QF, [A, NINE], [7, 9], camera=1),
        image("c1s1_000002.jpg", [A, NINE], [7, 9], camera=1),
        # pid 7 twice: the reference uses the first box as the ground truth.
        image("c2s1_000001.jpg", [B, [300, 0, 340, 100]], [7, 7], camera=2),
        image("c2s1_000002.jpg", [[0, 0, 40, 100]], [-1], camera=2),
    ]
    split = prw_split(images, [query(QF, A, 7, camera=1), query(QF, NINE, 9, camera=1)])
    dets = {
        QF: [(A, 1.0, unit_with_cosine(0.99))],  # the query frame is never in the gallery
        "c1s1_000002.jpg": [(A, 1.0, unit_with_cosine(0.9)), (NINE, 1.0, unit_with_cosine(0.3))],
        "c2s1_000001.jpg": [
            ([300, 0, 340, 100], 1.0, unit_with_cosine(0.95)),
            (B, 1.0, unit_with_cosine(0.6)),
        ],
        "c2s1_000002.jpg": [([0, 0, 40, 100], 1.0, unit_with_cosine(0.8))],
    }
    return split, predictions(split, dets, [e(0), e(0)])


def test_all_gallery(case) -> None:
    split, preds = case
    result = evaluate_search_prw(split, preds)
    # Query 7: 0.95 F, 0.9 T, 0.8 F, 0.6 T, 0.3 F; count_gt 2 -> AP = 1/2*1/2 + 1/2*2/4 = 1/2.
    # Query 9: the only positive (0.3) is 5th of 5; count_gt 1 -> AP 1/5.
    assert result.average_precisions.tolist() == pytest.approx([0.5, 0.2])
    assert result.mean_ap == pytest.approx(0.35)
    assert result.top(1) == 0.0 and result.top(5) == 1.0
    assert result.hits[0, :4].tolist() == [False, True, True, True]
    assert result.hits[1, :5].tolist() == [False, False, False, False, True]


def test_multi_view_drops_the_query_camera(case) -> None:
    split, preds = case
    result = evaluate_search_prw(split, preds, multi_view=True)
    # Query 7, camera-2 frames only: 0.95 F, 0.8 F, 0.6 T; count_gt 1 -> AP 1/3.
    # Query 9 appears only in camera 1: no ground truth in its gallery -> skipped (our choice).
    assert result.skipped == (1,)
    assert result.mean_ap == pytest.approx(1 / 3)
    assert result.top(1) == 0.0 and result.top(3) == 1.0
    zero = evaluate_search_prw(split, preds, multi_view=True, empty_queries="zero")
    assert zero.mean_ap == pytest.approx(1 / 6) and zero.top(3) == 0.5


def test_missed_frame_lowers_recall(case) -> None:
    split, preds = case
    # Drop every detection of c1s1_000002 below det_thresh: query 7 still has count_gt 2.
    scores = preds.det_scores.copy()
    scores[preds.image_slice(1)] = 0.3
    result = evaluate_search_prw(split, replace(preds, det_scores=scores))
    # Query 7: 0.95 F, 0.8 F, 0.6 T; recall 1/2 -> AP 1/3 * 1/2.  Query 9: no tp -> 0.
    np.testing.assert_allclose(result.average_precisions, [1 / 6, 0.0])
