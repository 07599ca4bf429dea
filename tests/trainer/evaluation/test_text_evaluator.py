"""Text-retrieval evaluation: the evaluator on hand-built embeddings, and ``embed_text_split``.

Also home of the fake dual encoder and the on-disk text-person dataset writer that
``test_text_eval_command.py`` imports.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from personsearch_train.data.text_person import load_text_person
from personsearch_train.engine.text_inference import TextRetrievalEmbeddings, embed_text_split
from personsearch_train.errors import PredictionsFormatError
from personsearch_train.evaluation.text_evaluator import OVERALL, TextRetrievalEvaluator
from personsearch_train.evaluation.text_retrieval import evaluate_text_to_image, mean_similarity_distribution
from torch import nn

T2I_KEYS = ("R1", "R5", "R10", "mAP", "mINP", "mSD")
I2T_KEYS = ("i2t_R1", "i2t_R5", "i2t_R10", "i2t_mAP", "i2t_mINP")

# ---------------------------------------------------------------------------------------------
# A fake dual encoder whose retrieval is meaningful: an image is its mean colour (RGB), a
# caption the sum of its colour words, so "a man in red" finds the red crops.

COLOURS = {"red": (0, 0, 255), "green": (0, 255, 0), "blue": (255, 0, 0)}  # BGR, as cv2 writes
VOCABULARY = ("<pad>", "red", "green", "blue", "a", "man", "woman", "in", "dress", "shirt")


class FakeTokenizer:
    """Word -> id over :data:`VOCABULARY` (unknown words dropped), padded with id 0."""

    def __init__(self) -> None:
        self.ids = {word: index for index, word in enumerate(VOCABULARY)}
        self.calls: list[int] = []

    def __call__(self, texts: Sequence[str]) -> SimpleNamespace:
        self.calls.append(len(texts))
        rows = [[self.ids[w] for w in text.lower().split() if w in self.ids] or [0] for text in texts]
        length = max(len(r) for r in rows)
        ids = np.zeros((len(rows), length), np.int64)
        mask = np.zeros((len(rows), length), np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return SimpleNamespace(input_ids=ids, attention_mask=mask)


class FakeDualEncoder(nn.Module):
    """Mean colour per channel (projected) vs bag of token embeddings; both L2-normalised."""

    image_size = (16, 8)

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.tokenizer = FakeTokenizer()
        self.colour = nn.Linear(3, dim, bias=False)
        self.words = nn.Embedding(len(VOCABULARY), dim)
        with torch.no_grad():
            self.colour.weight.copy_(torch.eye(dim, 3))
            self.words.weight.zero_()
            for channel, word in enumerate(("red", "green", "blue")):
                self.words.weight[VOCABULARY.index(word), channel] = 1.0
        self.image_batches: list[int] = []

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, *self.image_size)
        assert not self.training and not torch.is_grad_enabled()
        self.image_batches.append(len(images))
        return nn.functional.normalize(self.colour(images.mean(dim=(2, 3))), dim=1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        assert input_ids.dtype == torch.int64 and attention_mask.dtype == torch.int64
        summed = (self.words(input_ids) * attention_mask[..., None]).sum(dim=1)
        return nn.functional.normalize(summed, dim=1)


# pid -> (colour, captions) of the test split; pid 7 has two images.
TEST_PEOPLE = {
    3: ("red", ["a man in red shirt", "red"]),
    5: ("green", ["a woman in green dress"]),
    7: ("blue", ["a man in blue", "blue shirt"]),
}


def write_text_dataset(root: Path, *, annotation: str = "UFine6926.json", sources: bool = False) -> Path:
    """Write a tiny test split in the UFineBench JSON layout (images/<n>.png under ``root``).

    Every identity has one image of its colour; pid 7 a second, larger one. With
    ``sources`` (UFine3C) pids 3 and 5 come from source "cam", and pid 7 and an extra
    green pid 9 from "web" (green is unique within each source, so retrieval stays perfect
    per source, and each source has a negative identity for mSD).
    """
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    shapes = {3: [(40, 20)], 5: [(30, 12)], 7: [(40, 20), (64, 30)], 9: [(32, 16)]}
    people = {**TEST_PEOPLE, 9: ("green", ["green shirt"])} if sources else TEST_PEOPLE
    for pid, (colour, captions) in people.items():
        for k, (h, w) in enumerate(shapes[pid]):
            name = f"images/{pid}_{k}.png"
            cv2.imwrite(str(root / name), np.full((h, w, 3), COLOURS[colour], np.uint8))
            entry = {"split": "test", "id": pid, "file_path": name, "captions": captions[k:] or captions}
            if sources:
                entry["source"] = "web" if pid in (7, 9) else "cam"
            entries.append(entry)
    # A training entry, which the test split must leave out.
    entries.append({"split": "train", "id": 1, "file_path": "images/3_0.png", "captions": ["x"]})
    (root / annotation).write_text(json.dumps(entries))
    return root


# ---------------------------------------------------------------------------------------------
# Evaluator on hand-built embeddings.


def _embeddings(texts, text_pids, images, image_pids, caption_sources=(), image_sources=()):
    return TextRetrievalEmbeddings(
        text_embeddings=np.asarray(texts, np.float32),
        text_pids=np.asarray(text_pids),
        image_embeddings=np.asarray(images, np.float32),
        image_pids=np.asarray(image_pids),
        caption_sources=tuple(caption_sources),
        image_sources=tuple(image_sources),
    )


def _random_case(rng: np.random.Generator, identities: int = 12, dim: int = 8) -> TextRetrievalEmbeddings:
    image_pids = np.repeat(np.arange(identities), 2)
    text_pids = np.concatenate([np.arange(identities), rng.integers(0, identities, identities)])
    centres = rng.normal(size=(identities, dim))
    images = centres[image_pids] + 0.8 * rng.normal(size=(len(image_pids), dim))
    texts = centres[text_pids] + 0.8 * rng.normal(size=(len(text_pids), dim))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    return _embeddings(unit(texts), text_pids, unit(images), image_pids)


def _similarity(data: TextRetrievalEmbeddings) -> np.ndarray:
    return data.text_embeddings.astype(np.float64) @ data.image_embeddings.astype(np.float64).T


def test_perfect_retrieval_scores_one_and_msd_by_hand() -> None:
    eye = np.eye(12)
    evaluator = TextRetrievalEvaluator()
    evaluator.process(_embeddings(eye[[0, 0, *range(12)]], [0, 0, *range(12)], eye, range(12)))
    scores = evaluator.evaluate()
    assert list(scores) == [*T2I_KEYS, *I2T_KEYS]
    assert all(scores[k] == 1.0 for k in (*T2I_KEYS, *I2T_KEYS) if k != "mSD")
    # Positives s' = 1, negatives (orthogonal) s' = 0.5: every SD_k = 1, pn = 1 - exp(-2).
    assert scores["mSD"] == pytest.approx(1 - math.exp(-2))
    assert evaluator.curves[OVERALL].tolist() == [1.0] * 10


def test_worked_example_of_methods_5_3() -> None:
    # Caption 0 (pid a=1) ranks the images b, a, a (cosines 0.9, 0.8, 0.7): R@1 0, AP 0.5833,
    # INP 2/3. Caption 1 (pid b=2) finds b first (AP = INP = R@1 = 1); it is there because
    # image-to-text needs a caption of every image's identity.
    images = np.zeros((3, 4))
    images[0, [0, 1]] = 0.9, math.sqrt(1 - 0.81)  # b
    images[1, [0, 2]] = 0.8, 0.6  # a
    images[2, [0, 3]] = 0.7, math.sqrt(1 - 0.49)  # a
    texts = np.eye(4)[:2]
    evaluator = TextRetrievalEvaluator()
    evaluator.process(_embeddings(texts, [1, 2], images, [2, 1, 1]))
    scores = evaluator.evaluate()
    assert scores["R1"] == pytest.approx((0 + 1) / 2)
    assert scores["R5"] == scores["R10"] == 1.0
    assert scores["mAP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1) / 2)
    assert (1 / 2 + 2 / 3) / 2 == pytest.approx(0.5833, abs=1e-4)
    assert scores["mINP"] == pytest.approx((2 / 3 + 1) / 2)


def test_image_to_text_is_the_transposed_problem() -> None:
    data = _random_case(np.random.default_rng(0))
    evaluator = TextRetrievalEvaluator()
    evaluator.process(data)
    scores = evaluator.evaluate()
    similarity = _similarity(data)
    t2i = evaluate_text_to_image(similarity, data.text_pids, data.image_pids)
    i2t = evaluate_text_to_image(similarity.T, data.image_pids, data.text_pids)
    assert {k: scores[k] for k in T2I_KEYS[:5]} == pytest.approx(t2i.as_dict())
    assert {k: scores[f"i2t_{k}"] for k in T2I_KEYS[:5]} == pytest.approx(i2t.as_dict())
    assert scores["mSD"] == pytest.approx(
        mean_similarity_distribution(similarity, data.text_pids, data.image_pids)
    )
    assert 0 < scores["R1"] < 1 and scores["i2t_R1"] != scores["R1"]  # not a degenerate case
    np.testing.assert_allclose(evaluator.curves[OVERALL], t2i.cmc)


def test_blocks_and_accumulation_give_the_full_matrix_values() -> None:
    data = _random_case(np.random.default_rng(1))
    whole = TextRetrievalEvaluator()
    whole.process(data)
    expected = whole.evaluate()
    # Blocks of 5 queries (not dividing 24 captions or 24 images evenly) and two process() calls.
    split = TextRetrievalEvaluator(chunk_size=5)
    t, i = 7, 11
    split.process(
        _embeddings(
            data.text_embeddings[:t], data.text_pids[:t], data.image_embeddings[:i], data.image_pids[:i]
        )
    )
    split.process(
        _embeddings(
            data.text_embeddings[t:], data.text_pids[t:], data.image_embeddings[i:], data.image_pids[i:]
        )
    )
    assert split.evaluate() == pytest.approx(expected)
    np.testing.assert_allclose(split.curves[OVERALL], whole.curves[OVERALL])
    split.reset()
    with pytest.raises(ValueError, match="before any process"):
        split.evaluate()


def test_unnormalised_rows_are_normalised_first() -> None:
    data = _random_case(np.random.default_rng(2))
    scaled = _embeddings(
        data.text_embeddings * 3.0, data.text_pids, data.image_embeddings * 0.5, data.image_pids
    )
    a, b = TextRetrievalEvaluator(), TextRetrievalEvaluator()
    a.process(data)
    b.process(scaled)
    assert b.evaluate() == pytest.approx(a.evaluate())


def _two_sources(rng: np.random.Generator) -> tuple[TextRetrievalEmbeddings, np.ndarray, np.ndarray]:
    data = _random_case(rng)
    # Identities 0-5 come from "cam", 6-11 from "web".
    caption_sources = np.where(data.text_pids < 6, "cam", "web")
    image_sources = np.where(data.image_pids < 6, "cam", "web")
    grouped = _embeddings(
        data.text_embeddings,
        data.text_pids,
        data.image_embeddings,
        data.image_pids,
        caption_sources.tolist(),
        image_sources.tolist(),
    )
    return grouped, caption_sources, image_sources


def test_group_by_source_scores_each_source_on_its_own() -> None:
    data, caption_sources, image_sources = _two_sources(np.random.default_rng(3))
    evaluator = TextRetrievalEvaluator(group_by_source=True)
    evaluator.process(data)
    scores = evaluator.evaluate()
    assert list(scores) == [f"{s}/{k}" for s in ("cam", "web") for k in (*T2I_KEYS, *I2T_KEYS)]
    assert sorted(evaluator.curves) == ["cam", "web"]
    q, g = caption_sources == "web", image_sources == "web"
    similarity = _similarity(data)[np.ix_(q, g)]
    direct = evaluate_text_to_image(similarity, data.text_pids[q], data.image_pids[g])
    assert {k: scores[f"web/{k}"] for k in T2I_KEYS[:5]} == pytest.approx(direct.as_dict())
    assert scores["web/mSD"] == pytest.approx(
        mean_similarity_distribution(similarity, data.text_pids[q], data.image_pids[g])
    )
    transposed = evaluate_text_to_image(similarity.T, data.image_pids[g], data.text_pids[q])
    assert scores["web/i2t_mAP"] == pytest.approx(transposed.mean_ap)
    np.testing.assert_allclose(evaluator.curves["web"], direct.cmc)
    # Without grouping the same embeddings are scored as one set.
    flat = TextRetrievalEvaluator()
    flat.process(data)
    assert set(flat.evaluate()) == {*T2I_KEYS, *I2T_KEYS} and list(flat.curves) == [OVERALL]


def test_group_by_source_without_sources_scores_the_whole_set() -> None:
    evaluator = TextRetrievalEvaluator(group_by_source=True)
    evaluator.process(_random_case(np.random.default_rng(4)))
    assert set(evaluator.evaluate()) == {*T2I_KEYS, *I2T_KEYS}


def test_queries_without_positive_in_their_subset_are_refused() -> None:
    data, caption_sources, image_sources = _two_sources(np.random.default_rng(5))
    # Two "cam" captions whose identities only have "web" images.
    moved = list(data.caption_sources)
    web_rows = np.flatnonzero(caption_sources == "web")[:2]
    for row in web_rows:
        moved[row] = "cam"
    evaluator = TextRetrievalEvaluator(group_by_source=True)
    evaluator.process(
        _embeddings(
            data.text_embeddings,
            data.text_pids,
            data.image_embeddings,
            data.image_pids,
            moved,
            image_sources.tolist(),
        )
    )
    with pytest.raises(
        ValueError, match=r"source 'cam': 2 of \d+ captions have an identity with no gallery image"
    ):
        evaluator.evaluate()
    # An image whose identity has no caption breaks image-to-text.
    lonely = TextRetrievalEvaluator()
    lonely.process(_embeddings(np.eye(3)[:2], [0, 1], np.eye(3), [0, 1, 2]))
    with pytest.raises(ValueError, match="1 of 3 images have an identity with no caption"):
        lonely.evaluate()
    mixed = list(image_sources)
    mixed[0] = ""
    half = TextRetrievalEvaluator(group_by_source=True)
    half.process(
        _embeddings(
            data.text_embeddings,
            data.text_pids,
            data.image_embeddings,
            data.image_pids,
            caption_sources.tolist(),
            mixed,
        )
    )
    with pytest.raises(ValueError, match="0 captions and 1 images have no source"):
        half.evaluate()


def test_evaluator_refuses_other_outputs_and_small_max_rank() -> None:
    with pytest.raises(TypeError, match="text_embeddings"):
        TextRetrievalEvaluator().process({"text_embeddings": np.zeros((1, 2))})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_rank"):
        TextRetrievalEvaluator(max_rank=5)


# ---------------------------------------------------------------------------------------------
# The embeddings container.


def test_embeddings_save_load_round_trip(tmp_path: Path) -> None:
    data, _, _ = _two_sources(np.random.default_rng(6))
    path = data.save(tmp_path / "sub" / "emb.npz")
    assert path == tmp_path / "sub" / "emb.npz" and sorted(p.name for p in path.parent.iterdir()) == [
        "emb.npz"
    ]
    back = TextRetrievalEmbeddings.load(path)
    for name in ("text_embeddings", "text_pids", "image_embeddings", "image_pids"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
        assert getattr(back, name).dtype == getattr(data, name).dtype
    assert back.caption_sources == data.caption_sources and back.image_sources == data.image_sources
    # Without sources: "" per row survives too.
    plain = _embeddings(np.eye(2), [0, 1], np.eye(2), [0, 1])
    assert plain.caption_sources == ("", "")
    assert TextRetrievalEmbeddings.load(plain.save(tmp_path / "plain.npz")).image_sources == ("", "")


def test_embeddings_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3-d but image embeddings 2-d"):
        _embeddings(np.eye(3), [0, 1, 2], np.eye(2), [0, 1])
    with pytest.raises(ValueError, match="2 text embeddings but 3 text pids"):
        _embeddings(np.eye(2), [0, 1, 2], np.eye(2), [0, 1])
    with pytest.raises(ValueError, match="caption_sources has 1 entries for 2 rows"):
        _embeddings(np.eye(2), [0, 1], np.eye(2), [0, 1], ["x"])
    with pytest.raises(PredictionsFormatError, match="not found"):
        TextRetrievalEmbeddings.load(tmp_path / "none.npz")
    np.savez(tmp_path / "other.npz", text_embeddings=np.zeros((1, 2)))
    with pytest.raises(PredictionsFormatError, match="'text_pids' is missing"):
        TextRetrievalEmbeddings.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(PredictionsFormatError, match="not a readable"):
        TextRetrievalEmbeddings.load(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------------------------
# embed_text_split with the fake model on an on-disk dataset.


def test_embed_text_split_on_a_dataset_on_disk(tmp_path: Path) -> None:
    split = load_text_person(write_text_dataset(tmp_path), "ufine6926", "test")
    model = FakeDualEncoder().train()
    data = embed_text_split(model, split, batch_size=3)
    assert model.training  # the mode is restored
    assert model.image_batches == [3, 1] and model.tokenizer.calls == [3, 3]
    assert data.image_embeddings.shape == (4, 3) and data.text_embeddings.shape == (6, 3)
    assert data.image_embeddings.dtype == np.float32 and data.text_pids.dtype == np.int64
    np.testing.assert_array_equal(data.image_pids, [3, 5, 7, 7])
    np.testing.assert_array_equal(data.text_pids, split.caption_pids)
    # Solid colours: red, green, blue, blue images -> one-hot RGB rows.
    np.testing.assert_allclose(data.image_embeddings, np.eye(3)[[0, 1, 2, 2]], atol=1e-6)
    assert data.caption_sources == ("",) * 6 and data.image_sources == ("",) * 4
    # The batch size changes nothing but the calls.
    one = embed_text_split(FakeDualEncoder(), split, batch_size=1)
    np.testing.assert_allclose(one.text_embeddings, data.text_embeddings, atol=1e-6)
    np.testing.assert_allclose(one.image_embeddings, data.image_embeddings, atol=1e-6)
    evaluator = TextRetrievalEvaluator()
    evaluator.process(data)
    scores = evaluator.evaluate()
    assert scores["R1"] == scores["mAP"] == scores["i2t_R1"] == 1.0


def test_embed_text_split_carries_ufine3c_sources(tmp_path: Path) -> None:
    split = load_text_person(
        write_text_dataset(tmp_path, annotation="UFine3C.json", sources=True), "ufine3c", "test"
    )
    data = embed_text_split(FakeDualEncoder(), split)
    assert data.image_sources == ("cam", "cam", "web", "web", "web")
    assert data.caption_sources == ("cam", "cam", "cam", "web", "web", "web", "web")
    evaluator = TextRetrievalEvaluator(group_by_source=True)
    evaluator.process(data)
    scores = evaluator.evaluate()
    assert scores["web/R1"] == scores["cam/R1"] == scores["web/i2t_mAP"] == 1.0
    # Scored together, the green captions of pid 9 also find pid 5's green image.
    flat = TextRetrievalEvaluator()
    flat.process(data)
    assert flat.evaluate()["mAP"] < 1.0


def test_embed_text_split_refuses_a_model_without_the_interface(tmp_path: Path) -> None:
    split = load_text_person(write_text_dataset(tmp_path), "ufine6926", "test")
    with pytest.raises(ValueError, match="no tokenizer, image_size, encode_images, encode_texts"):
        embed_text_split(nn.Linear(2, 2), split)
    with pytest.raises(ValueError, match="batch_size"):
        embed_text_split(FakeDualEncoder(), split, batch_size=0)
