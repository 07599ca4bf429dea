from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.errors import GalleryError
from personsearch_runtime.gallery import INDEX_NAME, GalleryIndex
from personsearch_runtime.results import Detections


def _frames(rng: np.random.Generator, count: int, per_frame: int, dim: int, source: str) -> list[Detections]:
    out = []
    for f in range(count):
        emb = rng.standard_normal((per_frame, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        boxes = np.tile(np.array([[1, 2, 30, 60]], np.float32), (per_frame, 1))
        scores = rng.uniform(0.5, 1, per_frame).astype(np.float32)
        out.append(Detections(source, f, f / 10, (96, 128), boxes, scores, emb))
    return out


def _create(path: Path, dim: int = 16, factory: str = "Flat") -> GalleryIndex:
    return GalleryIndex.create(path, embedding_dim=dim, model_hash="m" * 64, index_factory=factory)


@pytest.mark.parametrize("factory", ["Flat", "numpy"])
def test_exact_search_matches_brute_force(tmp_path: Path, factory: str) -> None:
    rng = np.random.default_rng(0)
    g = _create(tmp_path / "g", factory=factory)
    frames = _frames(rng, 20, 5, 16, "/videos/a.mp4")
    g.add(frames[:10])
    g.add(frames[10:], finished=["/videos/a.mp4"])
    emb = np.concatenate([f.embeddings for f in frames])
    q = emb[[3, 50]] + 0.1 * rng.standard_normal((2, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    results = g.search(q, top_k=5)
    for qi, hits in enumerate(results):
        expected = np.argsort(-(emb @ q[qi]))[:5] + 1  # ids start at 1 in insertion order
        assert [h.detection_id for h in hits] == expected.tolist()
        assert hits[0].source == "/videos/a.mp4" and hits[0].box == (1.0, 2.0, 30.0, 60.0)
    weighted = g.search(q[:1], top_k=5, score_weighted=True)[0]
    keys = [h.similarity * h.score for h in weighted]
    assert keys == sorted(keys, reverse=True)
    assert all(h.ranking_score == pytest.approx(h.similarity * h.score) for h in weighted)
    assert g.resume_point("/videos/a.mp4") == -1 and g.resume_point("/other") == 0


def test_ivf_factory_trains_when_large_enough_and_cache_reloads(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    g = _create(tmp_path / "g", dim=8, factory="IVF4,Flat")
    g.add(_frames(rng, 10, 10, 8, "/a"))  # 100 < 39 * 4: exact until trained
    g.refresh()
    assert type(g._spaces["reid"].index).__name__ == "IndexFlatIP"
    g.add(_frames(rng, 10, 10, 8, "/b"))
    g.refresh()
    assert "IVF" in type(g._spaces["reid"].index).__name__ and g._spaces["reid"].index.ntotal == 200
    before = g.search(np.eye(8, dtype=np.float32)[:2], top_k=3)
    g.save()
    assert (tmp_path / "g" / INDEX_NAME).is_file()
    g.close()
    reopened = GalleryIndex.open(tmp_path / "g", readonly=True)
    after = reopened.search(np.eye(8, dtype=np.float32)[:2], top_k=3)
    assert [[h.detection_id for h in r] for r in before] == [[h.detection_id for h in r] for r in after]


def test_delete_by_source_and_empty_gallery(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    g = _create(tmp_path / "g")
    with pytest.raises(GalleryError, match="empty"):
        g.search(np.ones((1, 16), np.float32))
    g.add(_frames(rng, 3, 2, 16, "/a.jpg"))
    g.add(_frames(rng, 3, 2, 16, "/b.jpg"))
    g.save()
    assert g.delete_source("/a.jpg") == 6
    hits = g.search(np.ones((1, 16), np.float32), top_k=20)[0]
    assert {h.source for h in hits} == {"/b.jpg"} and len(hits) == 6
    info = g.info()
    assert (info.num_sources, info.num_frames, info.num_detections) == (1, 3, 6)
    with pytest.raises(GalleryError, match="no source"):
        g.delete_source("/a.jpg")
    g.close()
    assert len(GalleryIndex.open(tmp_path / "g").search(np.ones((1, 16), np.float32), top_k=20)[0]) == 6


def test_mismatched_bundle_is_refused(tiny_bundle: Path, other_bundle: Path, tmp_path: Path) -> None:
    GalleryIndex.open_for_bundle(tmp_path / "g", Bundle.load(tiny_bundle)).close()
    with pytest.raises(GalleryError, match="another model"):
        GalleryIndex.open_for_bundle(tmp_path / "g", Bundle.load(other_bundle))
    g = _create(tmp_path / "g16", dim=16)
    with pytest.raises(GalleryError, match="16-d"):
        g.check_bundle(Bundle.load(tiny_bundle))


def test_create_refuses_non_empty_folder_and_bad_factory(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("hi")
    with pytest.raises(GalleryError, match="exists"):
        _create(tmp_path / "x")
    with pytest.raises(GalleryError, match="factory"):
        _create(tmp_path / "y", factory="NotAnIndex")
    with pytest.raises(GalleryError, match="not a gallery"):
        GalleryIndex.open(tmp_path / "y")


def test_readers_search_while_a_writer_adds(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    writer = _create(tmp_path / "g")
    writer.add(_frames(rng, 2, 2, 16, "/start"))
    batches = [_frames(rng, 2, 3, 16, f"/s{i}") for i in range(30)]
    errors: list[BaseException] = []
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        try:
            reader = GalleryIndex.open(tmp_path / "g", readonly=True)
            while not done.is_set():
                hits = reader.search(np.ones((1, 16), np.float32), top_k=1000)[0]
                ids = [h.detection_id for h in hits]
                assert len(ids) == len(set(ids))
                assert (len(ids) - 4) % 6 == 0  # whole committed batches only: 4 + 6k
                seen.append(len(ids))
            reader.close()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for batch in batches:
        writer.add(batch)
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors
    assert seen and max(seen) <= 4 + 6 * 30
    final = GalleryIndex.open(tmp_path / "g", readonly=True).search(np.ones((1, 16), np.float32), top_k=1000)[
        0
    ]
    assert len(final) == 4 + 6 * 30
