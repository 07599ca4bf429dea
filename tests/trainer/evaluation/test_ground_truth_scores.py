"""Ground-truth predictions score 1.0; random embeddings score near chance (in-memory splits)."""

from __future__ import annotations

import numpy as np
import pytest
from eval_cases import ground_truth_predictions, random_predictions, random_search_split
from personsearch_train.evaluation.evaluators import PersonSearchEvaluator
from personsearch_train.evaluation.scoring import SUMMARY_KEYS, evaluate_predictions, score_predictions


@pytest.mark.parametrize(
    ("dataset", "options"),
    [
        ("cuhk_sysu", {"gallery_size": 50}),
        ("cuhk_sysu", {"gallery_size": 100}),
        ("cuhk_sysu", {"gallery_size": -1}),
        ("prw", {}),
        ("prw", {"multi_view": True}),
    ],
)
def test_ground_truth_predictions_score_one(dataset: str, options: dict) -> None:
    split = random_search_split(np.random.default_rng(3), dataset=dataset)
    assert len(split.queries) >= 8
    scores = score_predictions(split, ground_truth_predictions(split), **options)
    assert set(scores) == set(SUMMARY_KEYS)
    assert scores["mAP"] == pytest.approx(1.0) and scores["top1"] == 1.0
    assert scores["det_ap"] == pytest.approx(1.0) and scores["det_recall"] == pytest.approx(1.0)


def _chance_top1(split) -> float:
    """Expected top-1 of a random ranking: positives / detections in the gallery (PRW all-gallery)."""
    total = sum(len(r.pids) for r in split.images)
    expected = []
    for q in split.queries:
        frames = [r for r in split.images if r.name != q.name]
        positives = sum(int(q.pid in r.pids) for r in frames)
        expected.append(positives / (total - len(next(r for r in split.images if r.name == q.name).pids)))
    return float(np.mean(expected))


def test_random_embeddings_score_near_chance() -> None:
    rng = np.random.default_rng(0)
    split = random_search_split(rng, dataset="prw", num_images=60, num_ids=15)
    top1s, maps = [], []
    for seed in range(5):
        report = evaluate_predictions(split, random_predictions(split, np.random.default_rng(seed)))
        top1s.append(report.search.top(1))
        maps.append(report.search.mean_ap)
    chance = _chance_top1(split)
    assert chance < 0.1
    assert abs(np.mean(top1s) - chance) < 0.1
    assert np.mean(maps) < 0.3
    gt = evaluate_predictions(split, ground_truth_predictions(split))
    assert gt.search.mean_ap == pytest.approx(1.0)


def test_person_search_evaluator_matches_scoring() -> None:
    split = random_search_split(np.random.default_rng(5), dataset="cuhk_sysu")
    preds = random_predictions(split, np.random.default_rng(1))
    evaluator = PersonSearchEvaluator(split, gallery_size=100)
    for g in reversed(range(preds.num_gallery)):  # any order
        rows = preds.image_slice(g)
        evaluator.process_gallery(
            str(preds.gallery_names[g]),
            preds.det_boxes[rows],
            preds.det_scores[rows],
            preds.det_embeddings[rows],
        )
    for q in range(preds.num_queries):
        evaluator.process_query(q, preds.query_embeddings[q])
    report = evaluator.evaluate()
    assert report.summary() == score_predictions(split, preds, gallery_size=100)
    evaluator.reset()
    with pytest.raises(Exception, match="not processed"):
        evaluator.evaluate()
