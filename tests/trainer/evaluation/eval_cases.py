"""In-memory splits and predictions for the evaluation tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from personsearch_train.data.structures import GalleryEntry, ImageRecord, PersonSearchSplit, QueryRecord
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.split_prediction import predict_search_split

DIM = 8


def unit_with_cosine(cos: float, axis: int = 1, dim: int = DIM) -> np.ndarray:
    """A unit vector whose dot product with e0 is ``cos`` (the rest on ``axis``)."""
    v = np.zeros(dim, dtype=np.float32)
    v[0] = cos
    v[axis] = np.sqrt(max(0.0, 1.0 - cos * cos))
    return v


def e(axis: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[axis] = 1.0
    return v


def image(name: str, boxes: Sequence[Sequence[float]] = (), pids: Sequence[int] = (), camera: int = -1):
    return ImageRecord(
        name=name,
        path=Path("/nonexistent") / name,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        pids=np.asarray(pids, dtype=np.int64),
        camera=camera,
    )


def query(name: str, box: Sequence[float], pid: int, camera: int = -1) -> QueryRecord:
    return QueryRecord(
        name=name, path=Path("/nonexistent") / name, box=np.asarray(box, np.float32), pid=pid, camera=camera
    )


def cuhk_split(images, queries, galleries: dict[int, list[list[tuple[str, Sequence[float] | None]]]]):
    """Galleries given as size -> per query a list of (name, xyxy box or None)."""
    converted = {
        size: tuple(
            tuple(
                GalleryEntry(name, None if box is None else np.asarray(box, np.float32)) for name, box in lst
            )
            for lst in per_query
        )
        for size, per_query in galleries.items()
    }
    return PersonSearchSplit(
        dataset="cuhk_sysu",
        split="test",
        root=Path("/nonexistent"),
        images=tuple(images),
        queries=tuple(queries),
        galleries=converted,
    )


def prw_split(images, queries):
    return PersonSearchSplit(
        dataset="prw", split="test", root=Path("/nonexistent"), images=tuple(images), queries=tuple(queries)
    )


def predictions(
    split, per_image: dict[str, list[tuple[Sequence[float], float, np.ndarray]]], query_embeddings, **kw
):
    """Predictions from name -> list of (box, score, embedding); images not listed get no detections."""
    names = [r.name for r in split.images]
    boxes, scores, embs = [], [], []
    for name in names:
        dets = per_image.get(name, [])
        boxes.append(np.asarray([d[0] for d in dets], np.float32).reshape(-1, 4))
        scores.append(np.asarray([d[1] for d in dets], np.float32))
        embs.append(np.asarray([d[2] for d in dets], np.float32).reshape(-1, DIM))
    return SearchPredictions.from_per_image(
        names, boxes, scores, embs, np.asarray(query_embeddings, np.float32), **kw
    )


def random_search_split(rng: np.random.Generator, *, dataset: str, num_images: int = 40, num_ids: int = 12):
    """A random split: people with ids 0..num_ids-1 plus unlabelled ones; one query per id."""
    images, appear = [], {}
    for g in range(num_images):
        n = int(rng.integers(1, 6))
        boxes, pids = [], []
        ids = rng.choice(num_ids, size=min(n, 3), replace=False)
        for k in range(n):
            x, y = 40.0 * k + 5, float(rng.integers(0, 50))
            boxes.append([x, y, x + 30, y + 80])
            pids.append(int(ids[k]) if k < len(ids) else -1)
        cam = int(rng.integers(1, 4))
        name = f"c{cam}s1_{g:06d}.jpg"
        images.append(image(name, boxes, pids, camera=cam))
        for b, p in zip(boxes, pids, strict=True):
            if p >= 0:
                appear.setdefault(p, []).append((g, b))
    queries, galleries = [], {50: [], 100: []}
    for pid in sorted(appear):
        if len(appear[pid]) < 2:
            continue
        qg, qbox = appear[pid][0]
        queries.append(query(images[qg].name, qbox, pid, camera=images[qg].camera))
        occ = {g: b for g, b in appear[pid][1:]}
        for size in galleries:
            others = [g for g in range(num_images) if g != qg and g not in occ]
            picked = list(rng.choice(others, size=min(len(others), 10 if size == 50 else 20), replace=False))
            lst = [(images[g].name, occ[g]) for g in occ] + [(images[g].name, None) for g in picked]
            galleries[size].append(lst)
    if dataset == "prw":
        return prw_split(images, queries)
    return cuhk_split(images, queries, galleries)


def ground_truth_predictions(split, *, num_ids: int = 64) -> SearchPredictions:
    """GT boxes, score 1, one-hot identity embeddings; unlabelled people get unique axes."""
    next_axis = num_ids
    dim = num_ids + sum(int((r.pids < 0).sum()) for r in split.images)
    names, boxes, scores, embs = [], [], [], []
    for record in split.images:
        rows = np.zeros((len(record.pids), dim), np.float32)
        for k, pid in enumerate(record.pids):
            if pid >= 0:
                rows[k, pid] = 1.0
            else:
                rows[k, next_axis] = 1.0
                next_axis += 1
        names.append(record.name)
        boxes.append(record.boxes)
        scores.append(np.ones(len(record.pids), np.float32))
        embs.append(rows)
    q = np.zeros((len(split.queries), dim), np.float32)
    for i, qr in enumerate(split.queries):
        q[i, qr.pid] = 1.0
    return SearchPredictions.from_per_image(names, boxes, scores, embs, q)


class RandomEmbedder:
    """A stand-in model for :func:`predict_search_split`: random unit embeddings of any box.

    It reads nothing (``load_image`` returns the path), so in-memory splits whose files
    do not exist work, and it has no detector: use it in ground-truth-box mode.
    """

    def __init__(self, rng: np.random.Generator, dim: int) -> None:
        self.rng = rng
        self.embedding_dim = dim

    def load_image(self, path: Path) -> Path:
        return path

    def detect(self, images):
        raise AssertionError("RandomEmbedder has no detector; use ground_truth_boxes=True")

    def embed_boxes(self, images, boxes) -> list[np.ndarray]:
        out = []
        for b in boxes:
            v = self.rng.normal(size=(len(b), self.embedding_dim)).astype(np.float32)
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        return out


def random_predictions(split, rng: np.random.Generator, dim: int = 32) -> SearchPredictions:
    """GT boxes, score 1, random unit embeddings (the shared split loop in ground-truth-box mode)."""
    return predict_search_split(
        RandomEmbedder(rng, dim), split, batch_size=1, ground_truth_boxes=True, progress=False
    )
