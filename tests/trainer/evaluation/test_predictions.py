"""The predictions file: round trip, atomic write and every refusal."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from eval_cases import DIM, e, image, predictions, prw_split, query, unit_with_cosine
from personsearch_train.errors import PredictionsFormatError
from personsearch_train.evaluation.predictions import SearchPredictions

BOX = [0, 0, 40, 100]


@pytest.fixture
def split():
    images = [
        image("c1s1_000001.jpg", [BOX], [1], 1),
        image("c2s1_000001.jpg", [BOX], [1], 2),
        image("c3s1_000001.jpg"),
    ]
    return prw_split(images, [query("c1s1_000001.jpg", BOX, 1, 1)])


@pytest.fixture
def preds(split):
    dets = {
        "c1s1_000001.jpg": [(BOX, 0.9, unit_with_cosine(0.3))],
        "c2s1_000001.jpg": [
            (BOX, 0.8, unit_with_cosine(0.7)),
            ([50, 0, 90, 100], 0.6, unit_with_cosine(0.1)),
        ],
    }
    return predictions(
        split,
        dets,
        [e(0)],
        query_context_boxes=[np.array([BOX], np.float32)],
        query_context_embeddings=[e(0)[None]],
    )


def test_round_trip_and_atomic_write(tmp_path: Path, preds: SearchPredictions, split) -> None:
    path = preds.save(tmp_path / "sub" / "p.npz")
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.npz"]  # no temporary file left behind
    loaded = SearchPredictions.load(path)
    for key in (
        "gallery_names",
        "det_offsets",
        "det_boxes",
        "det_scores",
        "det_embeddings",
        "query_embeddings",
    ):
        np.testing.assert_array_equal(getattr(loaded, key), getattr(preds, key))
        assert getattr(loaded, key).dtype == getattr(preds, key).dtype
    np.testing.assert_array_equal(loaded.query_context_offsets, [0, 1])
    assert loaded.det_offsets.tolist() == [0, 1, 3, 3]
    assert loaded.image_slice(1) == slice(1, 3)
    loaded.check_against(split)
    with np.load(path, allow_pickle=False) as archive:  # readable without pickles by anyone
        assert set(archive.files) >= {"gallery_names", "query_context_embeddings"}


def test_aligned_to_reorders_images(preds: SearchPredictions, split) -> None:
    order = [2, 0, 1]
    shuffled = SearchPredictions.from_per_image(
        [preds.gallery_names[g] for g in order],
        [preds.det_boxes[preds.image_slice(g)] for g in order],
        [preds.det_scores[preds.image_slice(g)] for g in order],
        [preds.det_embeddings[preds.image_slice(g)] for g in order],
        preds.query_embeddings,
    )
    aligned = shuffled.aligned_to(split)
    np.testing.assert_array_equal(aligned.gallery_names, preds.gallery_names)
    np.testing.assert_array_equal(aligned.det_offsets, preds.det_offsets)
    np.testing.assert_array_equal(aligned.det_scores, preds.det_scores)
    np.testing.assert_array_equal(aligned.det_embeddings, preds.det_embeddings)


def _save_raw(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def _arrays(preds: SearchPredictions) -> dict:
    keys = ("gallery_names", "det_offsets", "det_boxes", "det_scores", "det_embeddings", "query_embeddings")
    return {k: getattr(preds, k) for k in keys}


@pytest.mark.parametrize(
    ("change", "key", "problem"),
    [
        (lambda a: a.pop("det_scores"), "det_scores", "is missing"),
        (lambda a: a.update(det_boxes=a["det_boxes"][:, :3]), "det_boxes", "shape"),
        (lambda a: a.update(det_boxes=a["det_boxes"].astype(np.float64)), "det_boxes", "dtype float64"),
        (lambda a: a.update(det_offsets=a["det_offsets"].astype(np.int32)), "det_offsets", "dtype int32"),
        (lambda a: a.update(det_offsets=np.array([0, 1, 2, 2])), "det_offsets", "add up"),
        (lambda a: a.update(det_offsets=np.array([0, 2, 1, 3])), "det_offsets", "decrease"),
        (lambda a: a.update(det_offsets=np.array([0, 1, 3])), "det_offsets", "shape"),
        (lambda a: a.update(det_scores=np.array([0.9, np.nan, 0.6], np.float32)), "det_scores", "NaN"),
        (
            lambda a: a.update(det_embeddings=np.where(np.arange(DIM) == 0, np.inf, a["det_embeddings"])),
            "det_embeddings",
            "NaN or infinite",
        ),
        (lambda a: a.update(det_embeddings=a["det_embeddings"] * 2), "det_embeddings", "L2-normalised"),
        (
            lambda a: a.update(query_embeddings=np.eye(1, DIM + 1, dtype=np.float32)),
            "det_embeddings",
            "shape",
        ),
        (lambda a: a.update(det_boxes=a["det_boxes"][:, [2, 1, 0, 3]]), "det_boxes", "x2 < x1"),
        (
            lambda a: a.update(gallery_names=np.array(["a.jpg", "a.jpg", "b.jpg"])),
            "gallery_names",
            "more than once",
        ),
        (lambda a: a.update(det_score=a["det_scores"]), "det_score", "not a key"),
        (
            lambda a: a.update(query_context_offsets=np.array([0, 1], np.int64)),
            "query_context_boxes",
            "come together",
        ),
    ],
)
def test_load_refuses(tmp_path: Path, preds: SearchPredictions, change, key: str, problem: str) -> None:
    arrays = _arrays(preds)
    change(arrays)
    path = _save_raw(tmp_path / "bad.npz", arrays)
    with pytest.raises(PredictionsFormatError) as info:
        SearchPredictions.load(path)
    assert f"'{key}'" in str(info.value) and problem in str(info.value) and "bad.npz" in str(info.value)


def test_load_refuses_pickles_and_non_archives(tmp_path: Path, preds: SearchPredictions) -> None:
    arrays = _arrays(preds)
    arrays["gallery_names"] = np.array(list(arrays["gallery_names"]), dtype=object)
    np.savez(tmp_path / "obj.npz", **arrays)
    with pytest.raises(PredictionsFormatError, match="pickled"):
        SearchPredictions.load(tmp_path / "obj.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(PredictionsFormatError, match="not a readable"):
        SearchPredictions.load(tmp_path / "text.npz")
    with pytest.raises(PredictionsFormatError, match="not found"):
        SearchPredictions.load(tmp_path / "missing.npz")


def test_check_against_dataset(preds: SearchPredictions, split) -> None:
    renamed = replace(preds, gallery_names=np.array(["c1s1_000001.jpg", "c2s1_000001.jpg", "other.jpg"]))
    with pytest.raises(PredictionsFormatError, match="not gallery images.*'other.jpg'"):
        renamed.check_against(split)
    fewer = SearchPredictions.from_per_image(
        list(preds.gallery_names[:2]),
        [preds.det_boxes[preds.image_slice(g)] for g in range(2)],
        [preds.det_scores[preds.image_slice(g)] for g in range(2)],
        [preds.det_embeddings[preds.image_slice(g)] for g in range(2)],
        preds.query_embeddings,
    )
    with pytest.raises(PredictionsFormatError, match="lacks 1 of the 3 .*c3s1_000001.jpg"):
        fewer.check_against(split)
    two_queries = replace(
        preds,
        query_embeddings=np.stack([e(0), e(1)]),
        query_context_offsets=None,
        query_context_boxes=None,
        query_context_embeddings=None,
    )
    with pytest.raises(
        PredictionsFormatError, match="'query_embeddings' has 2 rows but prw test has 1 queries"
    ):
        two_queries.check_against(split)


def test_from_per_image_refuses_mismatched_lists() -> None:
    with pytest.raises(PredictionsFormatError, match="2 names but 1 box arrays"):
        SearchPredictions.from_per_image(
            ["a", "b"], [np.zeros((0, 4))], [np.zeros(0)], [np.zeros((0, 2))], np.eye(1, 2, dtype=np.float32)
        )
    with pytest.raises(PredictionsFormatError, match="query_context_offsets.*no rows"):
        SearchPredictions.from_per_image(
            ["a"],
            [np.zeros((0, 4))],
            [np.zeros(0)],
            [np.zeros((0, 2))],
            np.eye(1, 2, dtype=np.float32),
            query_context_boxes=[np.zeros((0, 4))],
            query_context_embeddings=[np.zeros((0, 2))],
        )
