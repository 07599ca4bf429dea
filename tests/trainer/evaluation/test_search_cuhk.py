"""CUHK-SYSU search protocol (methods.md 2.4) on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from eval_cases import cuhk_split, e, image, predictions, query, unit_with_cosine
from personsearch_train.errors import TrainerError
from personsearch_train.evaluation.person_search import evaluate_search_cuhk

P1 = [10, 10, 50, 110]  # w 40, h 100 -> IoU threshold 0.5
P3 = [0, 0, 30, 60]
Q0 = [0, 0, 40, 100]


def _base_case(gallery_list=None):
    images = [
        image("q.jpg", [Q0, [100, 0, 140, 100]], [0, -1]),
        image("g1.jpg", [P1, [200, 0, 240, 100]], [0, -1]),
        image("g2.jpg", [[0, 0, 40, 100]], [-1]),
        image("g3.jpg", [P3], [0]),
        image("g4.jpg", [[0, 0, 40, 100]], [-1]),
    ]
    if gallery_list is None:
        gallery_list = [("g1.jpg", P1), ("g3.jpg", P3), ("g2.jpg", None)]
    split = cuhk_split(images, [query("q.jpg", Q0, 0)], {50: [gallery_list]})
    dets = {
        "q.jpg": [(Q0, 1.0, unit_with_cosine(0.95))],  # the query image: never scored
        "g1.jpg": [(P1, 1.0, unit_with_cosine(0.8)), ([200, 0, 240, 100], 0.6, unit_with_cosine(0.9))],
        "g2.jpg": [([0, 0, 40, 100], 1.0, unit_with_cosine(0.5))],
        "g3.jpg": [(P3, 0.4, unit_with_cosine(0.99))],  # below det_thresh 0.5: g3 counts as missed
        "g4.jpg": [([0, 0, 40, 100], 1.0, unit_with_cosine(0.85))],  # only in the full set
    }
    return split, predictions(split, dets, [e(0)])


def test_count_gt_before_detection_check_and_cws() -> None:
    split, preds = _base_case()
    # CWS: sims a = 0.8 (positive), b = 0.6*0.9 = 0.54, c = 0.5. g3 holds the person but has no
    # kept detection: count_gt = 2, count_tp = 1. Ranking T, F, F -> sklearn AP 1, times recall 1/2.
    result = evaluate_search_cuhk(split, preds, gallery_size=50)
    assert result.mean_ap == pytest.approx(0.5)
    assert result.top(1) == 1.0
    # Without CWS b = 0.9 ranks first: precision 1/2 at the positive -> AP 1/2 * 1/2.
    plain = evaluate_search_cuhk(split, preds, gallery_size=50, cws=False)
    assert plain.mean_ap == pytest.approx(0.25)
    assert plain.top(1) == 0.0 and plain.top(5) == 1.0 and plain.top(10) == 1.0


def test_full_set_appends_other_pool_images_as_negatives() -> None:
    split, preds = _base_case()
    result = evaluate_search_cuhk(split, preds, gallery_size=-1)
    # g4 (0.85) joins as a negative, the query image (0.95) does not: F(0.85) T(0.8) F F
    # -> AP 1/2 * recall 1/2.
    assert result.mean_ap == pytest.approx(0.25)
    assert result.top(1) == 0.0 and result.top(5) == 1.0
    with pytest.raises(TrainerError, match="CBGM"):
        evaluate_search_cuhk(split, preds, gallery_size=-1, cbgm=True)
    with pytest.raises(TrainerError, match="gallery size 100"):
        evaluate_search_cuhk(split, preds, gallery_size=100)


def test_duplicate_gallery_entries_count_twice_but_score_once() -> None:
    split, preds = _base_case([("g1.jpg", P1), ("g1.jpg", P1), ("g2.jpg", None)])
    result = evaluate_search_cuhk(split, preds, gallery_size=50)
    # count_gt = 2 (the reference counts before its duplicate check), count_tp = 1.
    assert result.mean_ap == pytest.approx(0.5)


def _single_image_case(gt_box, dets):
    images = [image("q.jpg", [Q0], [0]), image("g.jpg", [gt_box], [0])]
    split = cuhk_split(images, [query("q.jpg", Q0, 0)], {100: [[("g.jpg", gt_box)]]})
    return split, predictions(split, {"g.jpg": dets}, [e(0)])


def test_small_box_iou_threshold_accepts_looser_match() -> None:
    # GT 10 x 20 -> threshold 200/(20*30) = 1/3; the detection has IoU 80/200 = 0.4.
    split, preds = _single_image_case([0, 0, 10, 20], [([0, 0, 10, 8], 1.0, unit_with_cosine(0.7))])
    result = evaluate_search_cuhk(split, preds)
    assert result.mean_ap == pytest.approx(1.0) and result.top(1) == 1.0


def test_large_box_needs_half_iou_and_no_tp_gives_zero() -> None:
    # GT 100 x 200 -> threshold 0.5; IoU 0.4 is not enough: count_tp = 0 -> AP 0, top-k 0.
    split, preds = _single_image_case([0, 0, 100, 200], [([0, 0, 100, 80], 1.0, unit_with_cosine(0.7))])
    result = evaluate_search_cuhk(split, preds)
    assert result.mean_ap == 0.0 and result.top(10) == 0.0


def test_only_first_matching_detection_by_similarity_is_positive() -> None:
    # Both detections match the GT; the exact one has the lower similarity and becomes a negative.
    split, preds = _single_image_case(
        [0, 0, 40, 100],
        [([0, 0, 40, 100], 1.0, unit_with_cosine(0.6)), ([0, 0, 40, 80], 1.0, unit_with_cosine(0.7))],
    )
    result = evaluate_search_cuhk(split, preds)
    # Ranked 0.7 (T), 0.6 (F): AP 1. Choosing by IoU instead would give 1/2.
    assert result.mean_ap == pytest.approx(1.0) and result.top(1) == 1.0
    np.testing.assert_allclose(result.average_precisions, [1.0])


def test_query_without_ground_truth_is_skipped_or_zero() -> None:
    images = [image("q.jpg", [Q0], [0]), image("g.jpg", [Q0], [0]), image("h.jpg", [Q0], [-1])]
    split = cuhk_split(
        images,
        [query("q.jpg", Q0, 0), query("q.jpg", Q0, 0)],
        {50: [[("g.jpg", Q0)], [("h.jpg", None)]]},
    )
    dets = {"g.jpg": [(Q0, 1.0, unit_with_cosine(0.9))], "h.jpg": [(Q0, 1.0, unit_with_cosine(0.9))]}
    preds = predictions(split, dets, [e(0), e(0)])
    skipped = evaluate_search_cuhk(split, preds, gallery_size=50)
    assert skipped.skipped == (1,) and skipped.num_scored == 1
    assert skipped.mean_ap == pytest.approx(1.0) and skipped.top(1) == 1.0
    assert np.isnan(skipped.average_precisions[1])
    zero = evaluate_search_cuhk(split, preds, gallery_size=50, empty_queries="zero")
    assert zero.skipped == () and zero.mean_ap == pytest.approx(0.5) and zero.top(1) == 0.5
