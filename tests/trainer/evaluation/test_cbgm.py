"""CBGM (methods.md 1.6) on cases solved by hand."""

from __future__ import annotations

import numpy as np
import pytest
from eval_cases import cuhk_split, e, image, predictions, query
from personsearch_train.errors import PredictionsFormatError
from personsearch_train.evaluation.cbgm import apply_cbgm, match_context
from personsearch_train.evaluation.person_search import evaluate_search_cuhk


def vec(a: float, b: float, axis: int) -> np.ndarray:
    """Unit vector with dot a with e0, b with e1, rest on ``axis``."""
    v = np.zeros(8, np.float32)
    v[0], v[1], v[axis] = a, b, np.sqrt(1 - a * a - b * b)
    return v


D = vec(0.6, 0.7, 2)  # distractor: like the query (0.6), very like the companion (0.7)
T = vec(0.5, 0.1, 3)  # target: 0.5 with the query, 0.1 with the companion
CONTEXT = np.stack([e(0), e(1)])


def test_match_context_uses_whole_assignment_and_max_edge() -> None:
    # Weights [[q.D, q.T], [c.D, c.T]] = [[0.6, 0.5], [0.7, 0.1]]: q->D + c->T = 0.7 < q->T + c->D = 1.2,
    # so the query is matched to T and the value is the largest matched edge, 0.7 (not the sum 1.2).
    match = match_context(CONTEXT, np.stack([D, T]))
    assert match.query_partner == 1
    assert match.max_value == pytest.approx(0.7)


def test_query_node_can_stay_unmatched() -> None:
    # One gallery detection, two context people: the companion (0.9) wins it over the query (0.3).
    g = vec(0.3, 0.9, 2)
    match = match_context(CONTEXT, g[None])
    assert match.query_partner is None and match.max_value == pytest.approx(0.9)
    sims = np.array([0.3], np.float32)
    out = apply_cbgm(sims, np.array([0]), np.array([1]), g[None], CONTEXT, k1=10, k2=3)
    assert out.tolist() == pytest.approx([0.3])


def test_apply_cbgm_k1_and_k2() -> None:
    b = vec(0.65, 0.0, 4)
    gallery = np.stack([D, T, b])
    sims = gallery @ e(0)  # [0.6, 0.5, 0.65]
    starts, lengths = np.array([0, 2]), np.array([2, 1])
    # k1 = 1: only image 2 (holding the top similarity 0.65) is re-scored; its single detection goes to
    # the query (0.65 > 0.0) and keeps 0.65. The target stays at 0.5.
    out = apply_cbgm(sims, starts, lengths, gallery, CONTEXT, k1=1, k2=3)
    np.testing.assert_allclose(out, [0.6, 0.5, 0.65], rtol=1e-6)
    # k1 = 3: image 1 is re-scored too and the target gets 0.7.
    out = apply_cbgm(sims, starts, lengths, gallery, CONTEXT, k1=3, k2=3)
    np.testing.assert_allclose(out, [0.6, 0.7, 0.65], rtol=1e-6)
    # k2 = 1: no context beyond the query, which takes its best match D (0.6): nothing changes.
    out = apply_cbgm(sims, starts, lengths, gallery, CONTEXT, k1=3, k2=1)
    np.testing.assert_allclose(out, [0.6, 0.5, 0.65], rtol=1e-6)
    assert sims.tolist() == pytest.approx([0.6, 0.5, 0.65])  # input untouched


Q0 = [0, 0, 40, 100]
COMPANION = [100, 0, 140, 100]


def _cbgm_case(context_first_box=Q0):
    images = [image("q.jpg", [Q0, COMPANION], [0, -1]), image("g.jpg", [[0, 0, 40, 100], COMPANION], [0, -1])]
    split = cuhk_split(images, [query("q.jpg", Q0, 0)], {50: [[("g.jpg", [0, 0, 40, 100])]]})
    dets = {"g.jpg": [(COMPANION, 1.0, D), ([0, 0, 40, 100], 1.0, T)]}
    preds = predictions(
        split,
        dets,
        [e(0)],
        query_context_boxes=[np.array([context_first_box, COMPANION], np.float32)],
        query_context_embeddings=[CONTEXT],
    )
    return split, preds


def test_cbgm_end_to_end_lifts_the_target() -> None:
    split, preds = _cbgm_case()
    plain = evaluate_search_cuhk(split, preds, gallery_size=50)
    # Distractor 0.6 F, target 0.5 T -> AP 1/2, top-1 0.
    assert plain.mean_ap == pytest.approx(0.5) and plain.top(1) == 0.0
    rescored = evaluate_search_cuhk(split, preds, gallery_size=50, cbgm=True)
    # Target 0.7 > distractor 0.6.
    assert rescored.mean_ap == pytest.approx(1.0) and rescored.top(1) == 1.0


def test_cbgm_checks_the_context() -> None:
    split, preds = _cbgm_case(context_first_box=COMPANION)
    with pytest.raises(PredictionsFormatError, match="forced first"):
        evaluate_search_cuhk(split, preds, gallery_size=50, cbgm=True)
    images = [image("q.jpg", [Q0], [0]), image("g.jpg", [Q0], [0])]
    split = cuhk_split(images, [query("q.jpg", Q0, 0)], {50: [[("g.jpg", Q0)]]})
    preds = predictions(split, {"g.jpg": [(Q0, 1.0, T)]}, [e(0)])
    with pytest.raises(PredictionsFormatError, match="query_context"):
        evaluate_search_cuhk(split, preds, gallery_size=50, cbgm=True)
