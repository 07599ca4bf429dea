"""Text-to-image metrics (methods.md 5.3) and mSD (5.5), hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from personsearch_train.evaluation.text_retrieval import evaluate_text_to_image, mean_similarity_distribution


def _pad(similarity: np.ndarray, pids: list[int], extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Append ``extra`` far-away gallery images of other identities (so R@10 is defined)."""
    sim = np.concatenate([similarity, np.full((similarity.shape[0], extra), -0.9)], axis=1)
    return sim, np.asarray(pids + [1000 + i for i in range(extra)])


def test_worked_example() -> None:
    # Query of pid 1 ("a"); gallery ranked b, a, a.
    sim, gallery = _pad(np.array([[0.9, 0.8, 0.7]]), [2, 1, 1], extra=0)
    result = evaluate_text_to_image(sim, np.array([1]), gallery)
    assert result.r1 == 0.0 and result.r5 == 1.0 and result.r10 == 1.0
    assert result.mean_ap == pytest.approx((1 / 2 + 2 / 3) / 2)  # 0.5833
    assert result.mean_inp == pytest.approx(2 / 3)


def test_several_queries_and_gallery_order_does_not_matter() -> None:
    # Query 0 (pid 1): ranked a, b, ..., a at rank 12 -> AP (1 + 2/12)/2, INP 2/12, R@1 1.
    # Query 1 (pid 2): its single image at rank 2 -> AP 1/2, INP 1/2, R@1 0, R@5 1.
    g = 12
    pids = [1, 2] + [100 + i for i in range(g - 3)] + [1]
    sim = np.zeros((2, g))
    sim[0] = np.linspace(1.0, 0.0, g)  # gallery order = rank order for query 0
    sim[1] = -np.linspace(0.0, 1.0, g)
    sim[1, 1], sim[1, 5] = 0.5, 0.9  # pid 2's image second
    perm = np.random.default_rng(0).permutation(g)
    result = evaluate_text_to_image(sim[:, perm], np.array([1, 2]), np.asarray(pids)[perm])
    assert result.r1 == pytest.approx(0.5) and result.r5 == 1.0 and result.r10 == 1.0
    assert result.average_precisions.tolist() == pytest.approx([(1 + 2 / 12) / 2, 0.5])
    assert result.inverse_negative_penalties.tolist() == pytest.approx([2 / 12, 0.5])
    assert result.cmc[:2].tolist() == [0.5, 1.0]


def test_query_without_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="no gallery image of their identity"):
        evaluate_text_to_image(np.zeros((1, 3)), np.array([5]), np.array([1, 2, 3]))


# Gallery order: pids [a, b, a] with mapped similarities s' = [0.5, 0.9, 0.7].
MSD_SIM = np.array([[0.0, 0.8, 0.4]])  # s = 2 s' - 1
MSD_Q, MSD_G = np.array([1]), np.array([1, 2, 1])


def test_msd_rank_ordered_by_hand() -> None:
    # Rank order b (0.9), a (0.7), a (0.5); m = [0, 1, 1].
    pn = 1 - math.exp(-(0.6 / 0.9))
    sd = pn * ((0.7 / 1.6) + (1.2 / 2.1)) / 2
    assert mean_similarity_distribution(MSD_SIM, MSD_Q, MSD_G) == pytest.approx(sd)


def test_msd_literal_script_differs() -> None:
    # The script multiplies gallery-order s' [0.5, 0.9, 0.7] by the rank-order mask [0, 1, 1]:
    # "positive" mass [0, 0.9, 0.7] -> mean 0.8, negative 0.5; cumsums in gallery order.
    pn = 1 - math.exp(-(0.8 / 0.5))
    sd = pn * ((0.9 / 1.4) + (1.6 / 2.1)) / 2
    literal = mean_similarity_distribution(MSD_SIM, MSD_Q, MSD_G, literal_ufinebench=True)
    assert literal == pytest.approx(sd)
    assert literal != pytest.approx(mean_similarity_distribution(MSD_SIM, MSD_Q, MSD_G))


def test_msd_agrees_when_gallery_is_already_rank_ordered() -> None:
    sim = np.array([[0.8, 0.4, 0.0, -0.5]])
    q, g = np.array([1]), np.array([1, 2, 1, 3])
    assert mean_similarity_distribution(sim, q, g) == pytest.approx(
        mean_similarity_distribution(sim, q, g, literal_ufinebench=True)
    )
