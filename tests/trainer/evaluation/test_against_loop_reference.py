"""The vectorised protocols against a plain loop-by-loop implementation of methods.md 2.4/2.5/1.6.

The loop version below is written from the protocol text (one query, one image, one
detection at a time; CBGM by brute force over all matchings), so any slip in the
vectorised gathering, ordering, CWS or duplicate handling shows up as a difference.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from eval_cases import random_search_split
from personsearch_train.evaluation.person_search import evaluate_search_cuhk, evaluate_search_prw
from personsearch_train.evaluation.predictions import SearchPredictions
from sklearn.metrics import average_precision_score


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_force_match(context: np.ndarray, gallery: np.ndarray):
    weights = context @ gallery.T
    k, n = weights.shape
    best, best_pairs = -np.inf, None
    if k <= n:
        for cols in itertools.permutations(range(n), k):
            pairs = list(zip(range(k), cols, strict=True))
            total = sum(weights[i, j] for i, j in pairs)
            if total > best:
                best, best_pairs = total, pairs
    else:
        for rows in itertools.permutations(range(k), n):
            pairs = list(zip(rows, range(n), strict=True))
            total = sum(weights[i, j] for i, j in pairs)
            if total > best:
                best, best_pairs = total, pairs
    partner = next((j for i, j in best_pairs if i == 0), None)
    return partner, max(weights[i, j] for i, j in best_pairs)


def _loop_reference(split, preds, galleries, *, full_set=False, cbgm=None):
    """galleries: per query a list of (name, gt xyxy or None). cbgm: (k1, k2) or None."""
    kept = {}
    for g, record in enumerate(split.images):
        rows = preds.image_slice(g)
        scores = preds.det_scores[rows]
        keep = scores >= 0.5
        if keep.any():
            kept[record.name] = (
                preds.det_boxes[rows][keep],
                preds.det_embeddings[rows][keep] * scores[keep][:, None],
            )
    aps, top1, top5 = [], [], []
    for q, gallery in enumerate(galleries):
        qe = preds.query_embeddings[q]
        count_gt, count_tp = 0, 0
        visited = {}
        for name, gt in gallery:
            count_gt += gt is not None
            if name in kept and name not in visited:
                visited[name] = [(kept[name][1] @ qe).astype(np.float32), gt]
        if count_gt == 0:
            continue
        if cbgm is not None:
            k1, k2 = cbgm
            all_sims = np.concatenate([v[0] for v in visited.values()])
            owners = [name for name, v in visited.items() for _ in v[0]]
            rows = slice(int(preds.query_context_offsets[q]), int(preds.query_context_offsets[q + 1]))
            context = preds.query_context_embeddings[rows][:k2]
            for name in {owners[i] for i in np.argsort(all_sims)[-k1:]}:
                partner, value = _brute_force_match(context, kept[name][1])
                if partner is not None:
                    visited[name][0][partner] = value
        y_true, y_score = [], []
        if full_set:
            for record in split.images:
                name = record.name
                if name in kept and name not in visited and name != split.queries[q].name:
                    sims = kept[name][1] @ qe
                    y_true += [0] * len(sims)
                    y_score += list(sims)
        for name, (sims, gt) in visited.items():
            boxes = kept[name][0]
            labels = [0] * len(sims)
            if gt is not None:
                order = np.argsort(sims)[::-1]
                sims, boxes = sims[order], boxes[order]
                w, h = gt[2] - gt[0], gt[3] - gt[1]
                threshold = min(0.5, w * h / ((w + 10) * (h + 10)))
                for j in range(len(boxes)):
                    if _iou(boxes[j], gt) >= threshold:
                        labels[j] = 1
                        count_tp += 1
                        break
            y_true += labels
            y_score += list(sims)
        y_true, y_score = np.asarray(y_true), np.asarray(y_score, np.float32)
        aps.append(0.0 if count_tp == 0 else average_precision_score(y_true, y_score) * count_tp / count_gt)
        ranked = y_true[np.argsort(y_score)[::-1]]
        top1.append(min(1, ranked[:1].sum()))
        top5.append(min(1, ranked[:5].sum()))
    return np.mean(aps), np.mean(top1), np.mean(top5)


def _noisy_predictions(split, rng: np.random.Generator, *, context: bool) -> SearchPredictions:
    dim = 24
    identity = rng.normal(size=(200, dim))

    def embed(pid: int) -> np.ndarray:
        base = identity[pid] if pid >= 0 else rng.normal(size=dim)
        v = base + rng.normal(scale=1.2, size=dim)
        return (v / np.linalg.norm(v)).astype(np.float32)

    boxes, scores, embs = [], [], []
    for record in split.images:
        b, s, e = [], [], []
        for box, pid in zip(record.boxes, record.pids, strict=True):
            for _ in range(int(rng.integers(0, 3))):  # missed, found, or found twice
                b.append(box + rng.normal(scale=4.0, size=4).clip(-6, 6) * [1, 1, 1, 1])
                s.append(rng.uniform(0.3, 1.0))
                e.append(embed(int(pid)))
        b = [np.asarray([min(x[0], x[2]), min(x[1], x[3]), max(x[0], x[2]), max(x[1], x[3])]) for x in b]
        boxes.append(np.asarray(b, np.float32).reshape(-1, 4))
        scores.append(np.asarray(s, np.float32))
        embs.append(np.asarray(e, np.float32).reshape(-1, dim))
    queries = np.stack([embed(q.pid) for q in split.queries])
    kwargs = {}
    if context:
        kwargs["query_context_boxes"] = [
            np.concatenate([q.box[None], rng.uniform(0, 100, size=(2, 4)).cumsum(1)]) for q in split.queries
        ]
        kwargs["query_context_embeddings"] = [
            np.stack([queries[i], embed(-1), embed(-1)]) for i in range(len(queries))
        ]
    return SearchPredictions.from_per_image(
        [r.name for r in split.images], boxes, scores, embs, queries, **kwargs
    )


def _cuhk_lists(split, size):
    return [
        [(entry.name, None if entry.box is None else entry.box.astype(np.float64)) for entry in lst]
        for lst in split.galleries[size]
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cuhk_matches_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    split = random_search_split(rng, dataset="cuhk_sysu", num_images=50, num_ids=14)
    preds = _noisy_predictions(split, rng, context=True)
    for size, full in ((50, False), (100, False), (-1, True)):
        result = evaluate_search_cuhk(split, preds, gallery_size=size)
        expected = _loop_reference(split, preds, _cuhk_lists(split, 50 if full else size), full_set=full)
        assert (result.mean_ap, result.top(1), result.top(5)) == pytest.approx(expected, abs=1e-9)
    result = evaluate_search_cuhk(split, preds, gallery_size=100, cbgm=True)
    expected = _loop_reference(split, preds, _cuhk_lists(split, 100), cbgm=(10, 3))
    assert (result.mean_ap, result.top(1), result.top(5)) == pytest.approx(expected, abs=1e-9)
    assert 0.05 < result.mean_ap < 0.95  # a non-degenerate case


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("multi_view", [False, True])
def test_prw_matches_loop_reference(seed: int, multi_view: bool) -> None:
    rng = np.random.default_rng(seed)
    split = random_search_split(rng, dataset="prw", num_images=50, num_ids=14)
    preds = _noisy_predictions(split, rng, context=True)
    galleries = []
    for q in split.queries:
        lst = []
        for record in split.images:
            if record.name == q.name or (multi_view and record.camera == q.camera):
                continue
            has = record.pids == q.pid
            lst.append((record.name, record.boxes[has][0].astype(np.float64) if has.any() else None))
        galleries.append(lst)
    for cbgm in (None, (30, 4)):
        result = evaluate_search_prw(split, preds, multi_view=multi_view, cbgm=cbgm is not None)
        expected = _loop_reference(split, preds, galleries, cbgm=cbgm)
        assert (result.mean_ap, result.top(1), result.top(5)) == pytest.approx(expected, abs=1e-9)
