"""``predict_search_split`` with a fake numpy predictor that records how it is driven."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from eval_cases import image, prw_split, query
from personsearch_train.evaluation.split_prediction import predict_search_split

DIM = 6


def _unit(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def _box_embedding(name: str, box) -> np.ndarray:
    """What the fake embeds a box to: a function of the image and the box only."""
    x1, y1, x2, y2 = (float(c) for c in box)
    return _unit([x1 + 1, y1 + 1, x2, y2, len(name), float(name[-5])])


class FakePredictor:
    """Images are their file names; detections come from a table; every call is recorded."""

    def __init__(self, detections: dict[str, list[tuple[list[float], float]]] | None = None) -> None:
        self.detections = detections or {}
        self.embedding_dim = DIM
        self.loaded: list[str] = []
        self.detect_calls: list[list[str]] = []
        self.embed_calls: list[list[tuple[str, int]]] = []

    def load_image(self, path: Path) -> str:
        self.loaded.append(path.name)
        return path.name

    def detect(self, images: list[str]) -> list:
        self.detect_calls.append(list(images))
        out = []
        for name in images:
            dets = self.detections.get(name, [])
            boxes = np.asarray([d[0] for d in dets], np.float32).reshape(-1, 4)
            scores = np.asarray([d[1] for d in dets], np.float32)
            emb = np.asarray([_box_embedding(name, b) for b in boxes], np.float32).reshape(-1, DIM)
            # Any object with the three array attributes will do, not only ImageDetections.
            out.append(SimpleNamespace(boxes=boxes, scores=scores, embeddings=emb))
        return out

    def embed_boxes(self, images: list[str], boxes: list[np.ndarray]) -> list[np.ndarray]:
        self.embed_calls.append([(name, len(b)) for name, b in zip(images, boxes, strict=True)])
        return [
            np.asarray([_box_embedding(name, box) for box in b], np.float32).reshape(-1, DIM)
            for name, b in zip(images, boxes, strict=True)
        ]


def _split():
    """Five gallery frames (f3 empty); four queries, two of them sharing f2, listed out of image order."""
    images = [
        image("f0.jpg", [[0, 0, 10, 20]], [1]),
        image("f1.jpg", [[5, 5, 15, 30], [20, 0, 30, 25]], [2, -1]),
        image("f2.jpg", [[1, 2, 11, 22], [40, 0, 50, 30]], [1, 2]),
        image("f3.jpg"),
        image("f4.jpg", [[3, 3, 13, 33]], [3]),
    ]
    queries = [
        query("f2.jpg", [40, 0, 50, 30], 2),
        query("f0.jpg", [0, 0, 10, 20], 1),
        query("f2.jpg", [1, 2, 11, 22], 1),
        query("f4.jpg", [3, 3, 13, 33], 3),
    ]
    return prw_split(images, queries)


DETECTIONS = {
    "f0.jpg": [([0, 0, 10, 21], 0.9)],
    "f1.jpg": [([5, 5, 15, 31], 0.4), ([20, 0, 30, 26], 0.8)],
    "f2.jpg": [([40, 1, 50, 30], 0.7), ([1, 2, 11, 23], 0.95), ([60, 0, 70, 9], 0.7)],
    "f4.jpg": [([3, 3, 13, 34], 0.6)],
}


@pytest.mark.parametrize(("batch_size", "groups"), [(1, 5), (2, 3), (3, 2), (8, 1)])
def test_gallery_goes_to_detect_in_consecutive_groups(batch_size: int, groups: int) -> None:
    split = _split()
    fake = FakePredictor(DETECTIONS)
    preds = predict_search_split(fake, split, batch_size=batch_size, progress=False)
    names = [r.name for r in split.images]
    assert fake.detect_calls == [names[i : i + batch_size] for i in range(0, len(names), batch_size)]
    assert len(fake.detect_calls) == groups
    assert list(preds.gallery_names) == names
    for g, name in enumerate(names):
        rows = preds.image_slice(g)
        expected = DETECTIONS.get(name, [])
        np.testing.assert_array_equal(
            preds.det_boxes[rows], np.asarray([d[0] for d in expected]).reshape(-1, 4)
        )
        np.testing.assert_array_equal(
            preds.det_scores[rows], np.asarray([d[1] for d in expected], np.float32)
        )
        for box, emb in zip(preds.det_boxes[rows], preds.det_embeddings[rows], strict=True):
            np.testing.assert_array_equal(emb, _box_embedding(name, box))
    assert preds.image_slice(3) == slice(6, 6)  # f3: no detections, zero rows
    assert not preds.has_query_context


def test_query_rows_follow_the_split_order_when_queries_share_images() -> None:
    split = _split()
    fake = FakePredictor(DETECTIONS)
    preds = predict_search_split(fake, split, batch_size=2, progress=False)
    # All boxes of one image in one call; images in order of their first query, two per call.
    assert fake.embed_calls == [[("f2.jpg", 2), ("f0.jpg", 1)], [("f4.jpg", 1)]]
    assert preds.query_embeddings.shape == (4, DIM) and preds.query_embeddings.dtype == np.float32
    for q, record in enumerate(split.queries):
        np.testing.assert_array_equal(preds.query_embeddings[q], _box_embedding(record.name, record.box))
    assert fake.loaded.count("f2.jpg") == 2  # once for the gallery, once for its two queries


def test_ground_truth_box_mode_embeds_the_annotations_with_score_one() -> None:
    split = _split()
    fake = FakePredictor()
    preds = predict_search_split(fake, split, batch_size=2, ground_truth_boxes=True, progress=False)
    assert fake.detect_calls == []
    assert fake.embed_calls[:3] == [
        [("f0.jpg", 1), ("f1.jpg", 2)],
        [("f2.jpg", 2), ("f3.jpg", 0)],
        [("f4.jpg", 1)],
    ]
    for g, record in enumerate(split.images):
        rows = preds.image_slice(g)
        np.testing.assert_array_equal(preds.det_boxes[rows], record.boxes)
        np.testing.assert_array_equal(preds.det_scores[rows], np.ones(len(record.boxes), np.float32))
        expected = [_box_embedding(record.name, b) for b in record.boxes]
        np.testing.assert_array_equal(preds.det_embeddings[rows], np.asarray(expected).reshape(-1, DIM))
    assert preds.image_slice(3) == slice(5, 5)  # the empty frame keeps its place with zero rows
    for q, record in enumerate(split.queries):
        np.testing.assert_array_equal(preds.query_embeddings[q], _box_embedding(record.name, record.box))


def test_cbgm_context_is_the_query_box_then_detections_by_descending_score() -> None:
    base = _split()
    # A query whose frame is not a gallery frame: detected on its own.
    extra = query("x9.jpg", [2, 2, 12, 22], 7)
    split = prw_split(base.images, (*base.queries, extra))
    detections = {**DETECTIONS, "x9.jpg": [([0, 0, 5, 5], 0.2), ([6, 6, 9, 9], 0.9)]}
    fake = FakePredictor(detections)
    preds = predict_search_split(fake, split, batch_size=2, query_context=True, progress=False)
    assert fake.detect_calls[-1] == ["x9.jpg"] and len(fake.detect_calls) == 4
    # f2: scores 0.7, 0.95, 0.7 -> 0.95 first, then the two 0.7 in the detector's order.
    boxes, embeddings = preds.query_context(0)
    np.testing.assert_array_equal(
        boxes, np.asarray([[40, 0, 50, 30], [1, 2, 11, 23], [40, 1, 50, 30], [60, 0, 70, 9]], np.float32)
    )
    np.testing.assert_array_equal(embeddings[0], preds.query_embeddings[0])
    np.testing.assert_array_equal(embeddings[1], _box_embedding("f2.jpg", [1, 2, 11, 23]))
    boxes, _ = preds.query_context(2)  # the other query of f2: its own box first, same detections after
    np.testing.assert_array_equal(boxes[0], [1, 2, 11, 22])
    np.testing.assert_array_equal(boxes[1:], preds.query_context(0)[0][1:])
    boxes, _ = preds.query_context(4)
    np.testing.assert_array_equal(boxes, np.asarray([[2, 2, 12, 22], [6, 6, 9, 9], [0, 0, 5, 5]], np.float32))


def test_no_queries_and_empty_images_give_well_shaped_arrays() -> None:
    split = prw_split([image("f0.jpg"), image("f1.jpg")], [])
    preds = predict_search_split(FakePredictor(), split, batch_size=2, progress=False)
    assert preds.det_offsets.tolist() == [0, 0, 0]
    assert preds.query_embeddings.shape == (0, DIM) and preds.det_embeddings.shape == (0, DIM)


class _WrongCount(FakePredictor):
    def detect(self, images):
        return super().detect(images)[:-1]


def test_refusals() -> None:
    split = _split()
    with pytest.raises(ValueError, match="CBGM"):
        predict_search_split(
            FakePredictor(), split, batch_size=1, ground_truth_boxes=True, query_context=True
        )
    with pytest.raises(ValueError, match="batch_size"):
        predict_search_split(FakePredictor(), split, batch_size=0)
    with pytest.raises(ValueError, match="returned 1 results for 2 images"):
        predict_search_split(_WrongCount(DETECTIONS), split, batch_size=2, progress=False)


def test_the_split_loop_and_the_baseline_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import personsearch_train.evaluation.split_prediction\n"
        "import personsearch_train.baselines.color_histogram\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
