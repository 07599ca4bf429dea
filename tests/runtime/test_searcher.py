from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from personsearch_runtime.errors import PersonSearchError
from personsearch_runtime.gallery import GalleryIndex
from personsearch_runtime.searcher import NoPersonFoundError, PersonSearcher
from scene_files import PALETTE, crop_of, scene_layout, write_scenes
from tiny_bundle import embed_colour, scene

QUADS = np.array([[0, 0, 64, 48], [64, 0, 128, 48], [0, 48, 64, 96], [64, 48, 128, 96]], np.float32)


def test_detections_are_in_original_pixels(tiny_bundle: Path) -> None:
    searcher = PersonSearcher(bundle=tiny_bundle, pipeline="detector")
    small = scene([PALETTE[0], None, PALETTE[1], None], 96, 128)
    big = cv2.resize(small, (256, 192), interpolation=cv2.INTER_NEAREST)  # fed at 96x128, mapped back x2
    d_small, d_big = searcher.detect([small, big])
    assert len(d_small) == 2 and len(d_big) == 2
    np.testing.assert_allclose(sorted(d_small.boxes.tolist()), sorted(QUADS[[0, 2]].tolist()), atol=1e-3)
    np.testing.assert_allclose(sorted(d_big.boxes.tolist()), sorted((QUADS[[0, 2]] * 2).tolist()), atol=1e-3)
    assert d_big.image_size == (192, 256)
    expected = embed_colour(np.array([PALETTE[0], PALETTE[1]]))
    assert np.max(d_small.embeddings @ expected.T, axis=0).min() > 0.999


def test_split_pipeline_reproduces_the_detector(tiny_bundle: Path) -> None:
    one = PersonSearcher(bundle=tiny_bundle, pipeline="detector", batch_size=3)
    split = PersonSearcher(bundle=tiny_bundle, pipeline="split", batch_size=3)
    images = [scene(scene_layout(i)) for i in range(5)]
    for a, b in zip(one.detect(images), split.detect(images), strict=True):
        assert len(a) == len(b) == 3
        ia, ib = np.lexsort(a.boxes.T), np.lexsort(b.boxes.T)
        np.testing.assert_allclose(a.boxes[ia], b.boxes[ib], atol=1e-3)
        np.testing.assert_allclose(a.scores[ia], b.scores[ib], atol=1e-5)
        np.testing.assert_allclose(np.sum(a.embeddings[ia] * b.embeddings[ib], axis=1), 1.0, atol=1e-5)


def test_query_encoder_agrees_with_detector(tiny_bundle: Path) -> None:
    searcher = PersonSearcher(bundle=tiny_bundle)
    image = scene(scene_layout(1))
    det = searcher.detect([image])[0]
    emb = searcher.embed_boxes(image, det.boxes)
    np.testing.assert_allclose(np.sum(emb * det.embeddings, axis=1), 1.0, atol=1e-5)
    with pytest.raises(PersonSearchError, match="empty or outside"):
        searcher.embed_boxes(image, np.array([[10, 10, 5, 20]], np.float32))


def test_search_by_crop_and_by_box(tiny_bundle: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "imgs", 6)
    searcher = PersonSearcher(bundle=tiny_bundle, batch_size=4)
    with GalleryIndex.open_for_bundle(tmp_path / "g", searcher.bundle) as gallery:
        summary = searcher.index(gallery, [tmp_path / "imgs"])
        assert summary.frames == 6 and summary.detections == 18 and not summary.skipped
        colour = PALETTE[2]
        hits = searcher.search_crop(gallery, crop_of(colour), top_k=3)
        assert [h.rank for h in hits] == [1, 2, 3]
        assert all(h.similarity > 0.999 for h in hits)  # scenes 0, 1, 2 and 3 hold blue; 3 is the best 3 of 4
        for h in hits:
            i = int(Path(h.source).stem.split("_")[1])
            q = [tuple(b) for b in QUADS.tolist()].index(tuple(round(v) for v in h.box))
            assert scene_layout(i)[q] == colour
        frame = scene(scene_layout(4))
        hits_box = searcher.search_box(gallery, frame, QUADS[1].tolist(), top_k=1)
        assert hits_box[0].similarity > 0.999
        with pytest.raises(NoPersonFoundError):
            searcher.search_crop(gallery, np.zeros((40, 20, 3), np.uint8))
