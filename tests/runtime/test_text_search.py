"""Sentence search in the runtime: sentence checks, tokenising, crops, text galleries, ``query --text``.

The tiny text bundle (``tiny_bundle.add_text_graphs``) embeds a sentence as the colour
its colour words name and a crop as its mean colour, in one space, so "a person in red"
must find exactly the red quadrants of the test scenes.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
from personsearch_runtime import cli
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.errors import BundleError, GalleryError, InputError
from personsearch_runtime.gallery import DB_NAME, TEXT_INDEX_NAME, GalleryIndex
from personsearch_runtime.searcher import PersonSearcher
from personsearch_runtime.text_search import (
    SentenceTokenizer,
    SentenceTruncatedWarning,
    check_sentence,
    combine_sentence_embeddings,
    crop_person_boxes,
)
from scene_files import PALETTE, crop_of, scene_layout, write_scenes
from tiny_bundle import MAX_TOKENS, TEXT_DIM, TEXT_SEED, add_text_graphs, embed_colour_text, write_tiny_bundle

RED, GREEN, BLUE = PALETTE[0], PALETTE[1], PALETTE[2]


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _colour_of(hit, scenes: list[Path]) -> tuple[float, float, float] | None:  # noqa: ANN001
    """The colour of the quadrant a hit's box covers in its test scene."""
    index = [str(p) for p in scenes].index(hit.source)
    x1, y1 = hit.box[0], hit.box[1]
    quadrant = (1 if x1 >= 64 else 0) + (2 if y1 >= 48 else 0)
    return scene_layout(index)[quadrant]


@pytest.fixture()
def text_gallery(text_bundle: Path, tmp_path: Path) -> tuple[PersonSearcher, Path, list[Path]]:
    scenes = write_scenes(tmp_path / "imgs", 6)
    searcher = PersonSearcher(bundle=text_bundle)
    with GalleryIndex.open_for_bundle(tmp_path / "g", searcher.bundle) as gallery:
        searcher.index(gallery, [tmp_path / "imgs"])
    return searcher, tmp_path / "g", scenes


# ---- sentences ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("   \n\t", "is empty"),
        ("?!... ,;", "no letters or digits"),
        ("\u2014 \u2026 !!", "no letters or digits"),
        (b"a man in a \xff\xfe coat", "not UTF-8"),
        ("a man in a \udcff coat", "not UTF-8"),
        (42, "expected a sentence"),
    ],
)
def test_bad_sentences_are_refused_with_what_was_wrong(text: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        check_sentence(text)


def test_good_sentences_are_stripped_and_utf8_bytes_decoded() -> None:
    assert check_sentence("  a woman in a red coat \n") == "a woman in a red coat"
    assert check_sentence(b"un homme en veste bleue") == "un homme en veste bleue"
    assert check_sentence("3") == "3"
    assert check_sentence("女性") == "女性"


def test_tokenizer_pads_to_the_longest_and_matches_the_trainers_ids(text_bundle: Path) -> None:
    from personsearch_train.text.tokenization import TextTokenizer

    bundle = Bundle.load(text_bundle)
    tokenizer = SentenceTokenizer(text_bundle / "tokenizer.json", bundle.manifest.tokenizer)
    sentences = ["red", "a person in green trousers", "blue " * 40]
    tokens = tokenizer(sentences)
    assert tokens.input_ids.shape == (3, MAX_TOKENS) and tokens.input_ids.dtype == np.int64
    assert tokens.truncated.tolist() == [False, False, True]
    assert tokens.attention_mask.sum(axis=1).tolist() == [3, 7, MAX_TOKENS]
    assert (tokens.input_ids[tokens.attention_mask == 0] == 0).all()
    # The trainer pads to max_length; the real tokens must be the same ids.
    reference = TextTokenizer(tokenizer_file=text_bundle / "tokenizer.json", max_length=MAX_TOKENS)(sentences)
    np.testing.assert_array_equal(reference.input_ids * tokens.attention_mask, tokens.input_ids)
    np.testing.assert_array_equal(reference.attention_mask, tokens.attention_mask)
    short = tokenizer(["red", "green"])
    assert short.input_ids.shape == (2, 3)


def test_a_long_sentence_is_truncated_with_a_warning_and_padding_changes_nothing(text_bundle: Path) -> None:
    searcher = PersonSearcher(bundle=text_bundle)
    with pytest.warns(SentenceTruncatedWarning, match="longer than the text encoder's 12 tokens"):
        long = searcher.encode_sentences("red " + "person " * 30 + "blue")
    # Only "red" survives the cut: the embedding is red's.
    np.testing.assert_allclose(long[0], embed_colour_text(np.array([RED]))[0], atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        alone = searcher.encode_sentences("someone dressed in green")
        batched = searcher.encode_sentences(
            ["someone dressed in green", "a tall person with a bag in blue red"]
        )
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-6)


def test_several_sentences_make_one_query_weighing_each_equally() -> None:
    a = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    np.testing.assert_allclose(combine_sentence_embeddings(a), [[2**-0.5, 2**-0.5, 0.0]], atol=1e-6)
    with pytest.raises(InputError, match="expected \\[S, E\\]"):
        combine_sentence_embeddings(np.zeros((0, 3), np.float32))


# ---- crops ------------------------------------------------------------------------------------


def test_crops_round_boxes_outwards_clip_them_and_resize_bilinearly() -> None:
    import cv2

    image = np.arange(20 * 10 * 3, dtype=np.uint8).reshape(20, 10, 3)
    crops = crop_person_boxes(
        image, np.array([[1.2, 2.7, 4.1, 9.0], [-5, -5, 30, 40], [9.6, 19.5, 12, 25]]), (6, 4)
    )
    assert crops.shape == (3, 3, 6, 4) and crops.dtype == np.float32
    first = cv2.resize(image[2:9, 1:5], (4, 6), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] / 255.0
    np.testing.assert_allclose(crops[0], first.transpose(2, 0, 1), atol=1e-7)
    whole = cv2.resize(image, (4, 6), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] / 255.0
    np.testing.assert_allclose(crops[1], whole.transpose(2, 0, 1), atol=1e-7)
    # A box at the corner, past the edge, keeps one pixel: the last one.
    np.testing.assert_allclose(
        crops[2], np.broadcast_to(image[19, 9, ::-1, None, None] / 255.0, (3, 6, 4)), atol=1e-7
    )
    assert crop_person_boxes(image, np.zeros((0, 4)), (6, 4)).shape == (0, 3, 6, 4)
    with pytest.raises(InputError, match="not finite"):
        crop_person_boxes(image, np.array([[0, 0, np.nan, 5]]), (6, 4))


# ---- galleries ----------------------------------------------------------------------------------


def test_sentences_find_the_people_they_describe(text_gallery) -> None:  # noqa: ANN001
    searcher, folder, scenes = text_gallery
    with GalleryIndex.open(folder, readonly=True) as gallery:
        assert gallery.has_text and gallery.info().text_embedding_dim == TEXT_DIM
        reds = sum(1 for i in range(6) if RED in scene_layout(i))
        hits = searcher.search_text(gallery, "a person wearing red", top_k=reds + 2)
        assert [_colour_of(h, scenes) for h in hits[:reds]] == [RED] * reds
        assert all(_colour_of(h, scenes) != RED for h in hits[reds:])
        assert hits[0].similarity == pytest.approx(1.0, abs=1e-5)
        # Two sentences of one person: the mean of red and blue ranks neither first over the other.
        both = searcher.search_text(gallery, ["someone in red", "someone in blue"], top_k=3)
        expected = combine_sentence_embeddings(embed_colour_text(np.array([RED, BLUE])))[0]
        assert both[0].similarity == pytest.approx(
            float(expected @ embed_colour_text(np.array([_colour_of(both[0], scenes)]))[0]), abs=1e-5
        )


def test_each_person_has_both_embeddings_and_they_stay_in_step(text_gallery, tmp_path: Path) -> None:  # noqa: ANN001
    searcher, folder, scenes = text_gallery
    with GalleryIndex.open(folder) as gallery:
        reid_ids, _ = gallery.embeddings(space="reid")
        text_ids, text = gallery.embeddings(space="text")
        np.testing.assert_array_equal(reid_ids, text_ids)
        hits = gallery.search(
            np.ones(TEXT_DIM, np.float32) / TEXT_DIM**0.5, top_k=len(text_ids), space="text"
        )[0]
        colours = np.array([_colour_of(h, scenes) for h in sorted(hits, key=lambda h: h.detection_id)])
        np.testing.assert_allclose(text, embed_colour_text(colours), atol=1e-5)
        removed = gallery.delete_source(str(scenes[0]))
        assert removed > 0
        assert len(gallery.embeddings(space="text")[0]) == len(text_ids) - removed
        assert gallery.search(text[-1], top_k=1, space="text")[0][0].source != str(scenes[0])
        gallery.save()
    assert (folder / TEXT_INDEX_NAME).is_file()
    with GalleryIndex.open(folder, readonly=True) as gallery:  # from the saved caches
        assert len(gallery.search(text[-1], top_k=100, space="text")[0]) == len(text_ids) - removed


def test_a_text_gallery_refuses_detections_without_text_embeddings(text_gallery, tiny_bundle: Path) -> None:  # noqa: ANN001
    searcher, folder, _ = text_gallery
    plain = PersonSearcher(bundle=tiny_bundle)
    det = plain.detect([np.zeros((96, 128, 3), np.uint8) + 200])[0]
    with GalleryIndex.open(folder) as gallery:
        with pytest.raises(GalleryError, match="has no text embeddings, but gallery"):
            gallery.add([det])
        with pytest.raises(GalleryError, match="stores a text embedding for every person, but bundle"):
            plain.index(gallery, [folder])


def test_an_old_gallery_says_how_to_add_text_embeddings_and_the_backfill_resumes(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenes = write_scenes(tmp_path / "imgs", 4)
    text_bundle = add_text_graphs(write_tiny_bundle(tmp_path / "tb"))  # same detector as tiny_bundle
    code, _, _ = _run(
        capsys, "index", "--bundle", tiny_bundle, "--gallery", tmp_path / "g", tmp_path / "imgs"
    )
    assert code == 0
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        text_bundle,
        "--gallery",
        tmp_path / "g",
        "--text",
        "red",
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "has no text embeddings" in err and "--add-text-embeddings" in err
    assert not (tmp_path / "q").exists()
    # Indexing more with the text bundle would leave the old people without text: refused.
    code, _, err = _run(
        capsys, "index", "--bundle", text_bundle, "--gallery", tmp_path / "g", tmp_path / "imgs"
    )
    assert code == 2 and "--add-text-embeddings" in err

    searcher = PersonSearcher(bundle=text_bundle)
    calls = []

    with GalleryIndex.open(tmp_path / "g") as gallery:
        real = gallery.add_text_space

        def interrupted(bundle, embeddings_for, progress=None):  # noqa: ANN001, ANN202
            def failing(source, frame_index, boxes):  # noqa: ANN001, ANN202
                calls.append(frame_index)
                if len(calls) == 2:
                    raise KeyboardInterrupt
                return embeddings_for(source, frame_index, boxes)

            return real(bundle, failing, progress=progress)

        gallery.add_text_space = interrupted
        with pytest.raises(KeyboardInterrupt):
            searcher.add_text_embeddings(gallery)
        assert not gallery.has_text and len(gallery.frames_missing_text()) == 3
    code, out, _ = _run(
        capsys,
        "index",
        "--bundle",
        text_bundle,
        "--gallery",
        tmp_path / "g",
        "--add-text-embeddings",
        "--no-progress",
    )
    assert code == 0 and "added text embeddings to" in out
    with GalleryIndex.open(tmp_path / "g", readonly=True) as gallery:
        assert gallery.has_text and not gallery.frames_missing_text()
        hits = searcher.search_text(gallery, "green", top_k=1)
        assert _colour_of(hits[0], scenes) == GREEN
        backfilled = gallery.embeddings(space="text")[1]
    # The same as indexing with the text bundle from the start.
    with GalleryIndex.open_for_bundle(tmp_path / "g2", searcher.bundle) as fresh:
        searcher.index(fresh, [tmp_path / "imgs"])
        np.testing.assert_allclose(fresh.embeddings(space="text")[1], backfilled, atol=1e-6)


def test_a_schema_2_gallery_is_migrated_and_gets_a_text_space(
    text_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scenes(tmp_path / "imgs", 2)
    with GalleryIndex.create(tmp_path / "g", embedding_dim=8, model_hash=Bundle.load(text_bundle).model_hash):
        pass
    with sqlite3.connect(tmp_path / "g" / DB_NAME) as db:
        db.execute("ALTER TABLE detections DROP COLUMN text_embedding")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.close()
    code, _, _ = _run(
        capsys, "index", "--bundle", text_bundle, "--gallery", tmp_path / "g", tmp_path / "imgs"
    )
    assert code == 0
    info = json.loads(_run(capsys, "info", "--gallery", tmp_path / "g", "--json")[1])
    assert info["schema_version"] == 3 and info["text_embedding_dim"] == TEXT_DIM


def test_another_text_model_is_refused(text_gallery, tmp_path: Path) -> None:  # noqa: ANN001
    _, folder, _ = text_gallery
    other = PersonSearcher(
        bundle=add_text_graphs(write_tiny_bundle(tmp_path / "o"), text_checkpoint="b" * 64)
    )
    with GalleryIndex.open(folder, readonly=True) as gallery:
        with pytest.raises(GalleryError, match="another text model"):
            other.search_text(gallery, "red")


def test_mixed_queries_rank_by_the_documented_fusion(text_gallery) -> None:  # noqa: ANN001
    searcher, folder, scenes = text_gallery
    crop = crop_of(GREEN)
    with GalleryIndex.open(folder, readonly=True) as gallery:
        for weight in (0.0, 0.3, 1.0):
            hits = searcher.search_mixed(gallery, "red", crop_bgr=crop, text_weight=weight, top_k=50)
            ids = np.array([h.detection_id for h in hits])
            image_q = searcher.embed_crop(crop)
            text_q = searcher.encode_sentences("red")
            expected = weight * (gallery.vectors(ids, space="text") @ text_q[0]) + (1 - weight) * (
                gallery.vectors(ids, space="reid") @ image_q[0]
            )
            np.testing.assert_allclose([h.similarity for h in hits], expected, atol=1e-5)
            assert all(a.similarity >= b.similarity for a, b in zip(hits, hits[1:], strict=False))
            top = _colour_of(hits[0], scenes)
            assert top == (GREEN if weight == 0.0 else RED if weight == 1.0 else top)
        with pytest.raises(InputError, match="not both, not neither"):
            searcher.search_mixed(gallery, "red", top_k=3)
        with pytest.raises(GalleryError, match="text_weight"):
            searcher.search_mixed(gallery, "red", crop_bgr=crop, text_weight=1.5)


# ---- the command line ------------------------------------------------------------------------------


def test_query_text_writes_hits_and_the_picture(
    text_gallery, text_bundle: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    _, folder, scenes = text_gallery
    out = tmp_path / "q"
    code, stdout, _ = _run(
        capsys, "query", "--bundle", text_bundle, "--gallery", folder, "--text", "a person in blue",
        "--top-k", "3", "--json", tmp_path / "j" / "hits.json", "--out", out,
    )  # fmt: skip
    assert code == 0 and "sim 1.000" in stdout
    payload = json.loads((out / "hits.json").read_text())
    assert json.loads((tmp_path / "j" / "hits.json").read_text()) == payload
    assert payload["query"]["text"] == ["a person in blue"] and len(payload["hits"]) == 3
    assert payload["hits"][0]["source"] in {str(p) for p in scenes}
    assert (out / "hits.jpg").stat().st_size > 0
    code, _, _ = _run(
        capsys, "query", "--bundle", text_bundle, "--gallery", folder, "--text", "red", "--image",
        tmp_path / "imgs" / "scene_000.png", "--text-weight", "0.7", "--out", tmp_path / "m",
    )  # fmt: skip
    assert code == 0 and json.loads((tmp_path / "m" / "hits.json").read_text())["query"]["text_weight"] == 0.7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--text is empty"),
        ("!!! ???", "no letters or digits"),
        ("a man \udcff\udcfe in grey", "not UTF-8"),
    ],
)
def test_bad_query_text_exits_2_and_writes_nothing(
    text_gallery,
    text_bundle: Path,
    tmp_path: Path,
    capsys,
    text: str,
    message: str,  # noqa: ANN001
) -> None:
    _, folder, _ = text_gallery
    code, _, err = _run(
        capsys, "query", "--bundle", text_bundle, "--gallery", folder, "--text", text, "--out", tmp_path / "q"
    )
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "q").exists()


def test_a_long_query_is_cut_with_one_warning_line(
    text_gallery, text_bundle: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    _, folder, _ = text_gallery
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        text_bundle,
        "--gallery",
        folder,
        "--text",
        "red " * 50,
        "--out",
        tmp_path / "q",
    )
    assert code == 0 and err.startswith("personsearch query: warning: the sentence") and "12 tokens" in err


def test_text_on_a_bundle_without_the_text_encoder_exits_2(tiny_bundle: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    write_scenes(tmp_path / "imgs", 2)
    assert (
        _run(capsys, "index", "--bundle", tiny_bundle, "--gallery", tmp_path / "g", tmp_path / "imgs")[0] == 0
    )
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        tiny_bundle,
        "--gallery",
        tmp_path / "g",
        "--text",
        "red",
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "has no text encoder" in err and "--text-checkpoint" in err
    assert not (tmp_path / "q").exists()
    with pytest.raises(BundleError, match="has no text encoder"):
        PersonSearcher(bundle=tiny_bundle).encode_sentences("red")


def test_info_describes_the_text_side(text_bundle: Path, tiny_bundle: Path, capsys) -> None:  # noqa: ANN001
    code, out, _ = _run(capsys, "info", "--bundle", text_bundle)
    assert (
        code == 0
        and "sentence search: yes (tiny_colour_words trained by irra: 6-d, crops 16x8, up to 12 tokens)"
        in out
    )
    code, out, _ = _run(capsys, "info", "--bundle", tiny_bundle)
    assert "sentence search: no" in out


def test_sentence_search_never_loads_torch(text_gallery) -> None:  # noqa: ANN001
    import subprocess
    import sys
    import textwrap

    searcher, folder, _ = text_gallery
    code = f"""
        import sys
        from personsearch_runtime import GalleryIndex, PersonSearcher
        searcher = PersonSearcher(bundle={str(searcher.bundle.root)!r})
        with GalleryIndex.open({str(folder)!r}, readonly=True) as gallery:
            hits = searcher.search_text(gallery, "a person in blue", top_k=2)
        assert hits[0].similarity > 0.999, hits
        loaded = sorted(m for m in sys.modules if m.startswith(("torch", "personsearch_train")))
        assert not loaded, loaded
        print("OK")
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


def test_the_int8_text_encoder_is_used_on_the_cpu_unless_refused(tmp_path: Path) -> None:
    bundle = add_text_graphs(write_tiny_bundle(tmp_path / "b8"), int8_seed=TEXT_SEED + 1)
    float_red = embed_colour_text(np.array([RED]))[0]
    int8_red = embed_colour_text(np.array([RED]), seed=TEXT_SEED + 1)[0]
    default = PersonSearcher(bundle=bundle)
    assert default.text_int8_file == bundle / "text_encoder.int8.onnx"
    np.testing.assert_allclose(default.encode_sentences("red")[0], int8_red, atol=1e-6)
    refused = PersonSearcher(bundle=bundle, text_int8=False)
    np.testing.assert_allclose(refused.encode_sentences("red")[0], float_red, atol=1e-6)
    # Crops always go through the float crop encoder.
    crops = crop_person_boxes(crop_of(RED), np.array([[0, 0, 8, 8]]), (16, 8))
    np.testing.assert_allclose(
        default.sentence_encoder.embed_crops(crops), refused.sentence_encoder.embed_crops(crops)
    )
    with pytest.raises(InputError, match="needs a bundle exported with --text-int8"):
        PersonSearcher(bundle=add_text_graphs(write_tiny_bundle(tmp_path / "b")), text_int8=True)


def test_an_int8_file_needs_its_hash(tmp_path: Path) -> None:
    bundle = add_text_graphs(write_tiny_bundle(tmp_path / "b8"), int8_seed=TEXT_SEED + 1)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["text"]["int8_sha256"] = None
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="int8_file and int8_sha256 come together"):
        Bundle.load(bundle)


def test_the_gpu_crop_path_feeds_the_crop_encoder_the_kernels_crops(text_bundle: Path, monkeypatch) -> None:  # noqa: ANN001
    # Stand-ins: the device cropper is the kernel's numpy reference, CuPy's concatenate is numpy's.
    import sys
    import types

    from personsearch_runtime.gpu.person_crops import reference_crops
    from personsearch_runtime.sources import Frame

    calls = []

    def cropper(image, boxes, size):  # noqa: ANN001, ANN202
        calls.append(boxes.copy())
        return reference_crops(image, boxes, size)

    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(concatenate=np.concatenate))
    searcher = PersonSearcher(bundle=text_bundle)
    frames = [Frame("a", 0, None, scene_image) for scene_image in (crop_of(RED), crop_of(BLUE))]
    boxes = [
        np.array([[0.4, 0.2, 7.6, 15.0], [2.0, 2.0, 6.0, 9.0]], np.float32),
        np.zeros((0, 4), np.float32),
    ]
    host = searcher._crop_embeddings(frames, boxes)
    monkeypatch.setattr(searcher, "_gpu_cropper", lambda: cropper)
    device = searcher._crop_embeddings(frames, boxes)
    assert [c.tolist() for c in calls] == [[[0, 0, 8, 15], [2, 2, 6, 9]], []]
    assert [d.shape for d in device] == [(2, TEXT_DIM), (0, TEXT_DIM)]
    np.testing.assert_allclose(device[0], host[0], atol=1e-4)
