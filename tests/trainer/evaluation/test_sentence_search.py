"""Sentence search in full images (TBPS): crops, the prediction loop, scoring, and ``personsearch eval``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import scipy.io
import torch
from eval_cases import image, prw_split, query, random_predictions, random_search_split
from personsearch_runtime.cli import main
from personsearch_train.data.person_crops import crop_person_boxes
from personsearch_train.data.tbps import SentenceQueries, sentence_query_split
from personsearch_train.engine.checkpoint import save_checkpoint
from personsearch_train.evaluation.person_search import evaluate_search, evaluate_search_cuhk
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.sentence_search import CheckpointSentencePredictor, predict_sentence_search
from personsearch_train.models.registry import list_models, register_model
from personsearch_train.models.structures import Detections
from test_text_evaluator import COLOURS, FakeDualEncoder
from torch import nn

# ------------------------------------------------------------------------------- crops


def _ramp(height: int = 6, width: int = 8) -> np.ndarray:
    """A BGR image whose every pixel is distinct: B = 10 x + y, G = 100 + y, R = 200 - x."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([10 * x + y, 100 + y, 200 - x], axis=2).astype(np.uint8)


def _as_chw_rgb(bgr: np.ndarray) -> np.ndarray:
    return bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


@pytest.mark.parametrize(
    ("box", "rows", "cols"),
    [
        ([1.7, 2.7, 4.1, 5.0], (2, 5), (1, 5)),  # floor the start, ceil the end
        ([2.0, 1.0, 5.0, 3.0], (1, 3), (2, 5)),  # whole pixels stay
        ([-5.0, -3.0, 100.0, 100.0], (0, 6), (0, 8)),  # clipped to the image
        ([3.2, 1.1, 3.4, 1.3], (1, 2), (3, 4)),  # sub-pixel: one pixel
        ([20.0, 20.0, 30.0, 30.0], (5, 6), (7, 8)),  # beyond the image: its last pixel
        ([5.0, 2.0, 3.0, 4.0], (2, 4), (5, 6)),  # x2 < x1: one column from x1
        ([-9.0, -9.0, -1.0, -1.0], (0, 1), (0, 1)),  # before the image: its first pixel
    ],
)
def test_crop_rounding_and_clipping(box: list[float], rows: tuple[int, int], cols: tuple[int, int]) -> None:
    bgr = _ramp()
    expected = bgr[rows[0] : rows[1], cols[0] : cols[1]]
    size = expected.shape[:2]
    # At the crop's own size the resize keeps every pixel, so the cut itself is checked exactly.
    got = crop_person_boxes(bgr, np.asarray([box], np.float32), size)
    assert got.dtype == np.float32 and got.shape == (1, 3, *size)
    np.testing.assert_array_equal(got[0], _as_chw_rgb(expected))


def test_crops_are_resized_bilinearly_to_the_encoder_size_in_rgb() -> None:
    bgr = _ramp(40, 30)
    boxes = np.asarray([[3.5, 4.5, 17.2, 33.9], [0, 0, 1, 1]], np.float32)
    got = crop_person_boxes(bgr, boxes, (16, 8))
    assert got.shape == (2, 3, 16, 8)
    first = cv2.resize(bgr[4:34, 3:18], (8, 16), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(got[0], _as_chw_rgb(first))
    # A one-pixel crop resized is that pixel everywhere; channel 0 is red (200 - x).
    assert np.all(got[1, 0] == np.float32(200) / np.float32(255)) and np.all(got[1, 2] == 0)
    assert got.min() >= 0 and got.max() <= 1


def test_crop_refusals_and_no_boxes() -> None:
    bgr = _ramp()
    assert crop_person_boxes(bgr, np.zeros((0, 4), np.float32), (4, 2)).shape == (0, 3, 4, 2)
    with pytest.raises(ValueError, match="finite"):
        crop_person_boxes(bgr, np.asarray([[0, 0, np.nan, 2]], np.float32), (4, 2))
    with pytest.raises(ValueError, match=r"\[M, 4\]"):
        crop_person_boxes(bgr, np.zeros((2, 3), np.float32), (4, 2))
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        crop_person_boxes(bgr.astype(np.float32), np.zeros((1, 4), np.float32), (4, 2))
    with pytest.raises(ValueError, match="at least 1 pixel"):
        crop_person_boxes(bgr, np.zeros((1, 4), np.float32), (0, 2))


# ------------------------------------------------------------------ scoring the expanded split


def _vector(cos0: float, cos1: float, axis: int) -> np.ndarray:
    """A unit vector with these cosines to e0 and e1, the rest on ``axis``."""
    v = np.zeros(8, np.float32)
    v[0], v[1] = cos0, cos1
    v[axis] = np.sqrt(1.0 - cos0 * cos0 - cos1 * cos1)
    return v


def test_two_sentences_of_one_query_count_its_ap_twice() -> None:
    box = lambda x: [x, 0, x + 40, 80]  # noqa: E731
    images = [
        image("c1s1_000001.jpg", [box(0)], [1], camera=1),
        image("c1s1_000002.jpg", [box(0)], [2], camera=1),
        image("c2s1_000003.jpg", [box(0), box(50)], [1, 2], camera=2),
        image("c3s1_000004.jpg", [box(0), box(50)], [1, -1], camera=3),
    ]
    split = prw_split(images, [query(images[0].name, box(0), 1, 1), query(images[1].name, box(0), 2, 1)])
    # (cosine to sentence 0's e0, cosine to sentence 1's e1) of each detection, score 1.
    detections = {
        "c1s1_000001.jpg": [_vector(0.0, 0.6, 2)],
        "c1s1_000002.jpg": [_vector(0.8, 0.0, 3)],
        "c2s1_000003.jpg": [_vector(0.9, 0.2, 4), _vector(0.1, 0.4, 5)],
        "c3s1_000004.jpg": [_vector(0.3, 0.7, 6), _vector(0.5, 0.1, 7)],
    }
    names = [r.name for r in images]
    sentences = SentenceQueries(("q0 a", "q0 b", "q1"), np.array([0, 0, 1]))
    predictions = SearchPredictions.from_per_image(
        names,
        [r.boxes for r in images],
        [np.ones(len(r.boxes), np.float32) for r in images],
        [np.stack(detections[n]) for n in names],
        np.stack([np.eye(8, dtype=np.float32)[k] for k in (0, 0, 1)]),
    )
    result = evaluate_search(sentence_query_split(split, sentences), predictions)
    # Query 0 (gallery frames 2-4): ranked 0.9(+) 0.8 0.5 0.3(+) 0.1 -> AP = (1/1 + 2/4) / 2.
    # Query 1 (frames 1, 3, 4): ranked 0.7 0.6 0.4(+) 0.2 0.1 -> AP = 1/3, not in the top 1.
    np.testing.assert_allclose(result.average_precisions, [0.75, 0.75, 1 / 3])
    assert result.mean_ap == pytest.approx((0.75 + 0.75 + 1 / 3) / 3)
    assert result.top(1) == pytest.approx(2 / 3) and result.top(5) == 1.0


def test_expanded_cuhk_split_scores_each_sentence_as_its_query() -> None:
    split = random_search_split(np.random.default_rng(7), dataset="cuhk_sysu")
    per_query = random_predictions(split, np.random.default_rng(8))
    order = np.array([3, 0, 0, 5, 1, 1, 1, 2])
    sentences = SentenceQueries(tuple(f"s{i}" for i in range(len(order))), order)
    expanded_predictions = SearchPredictions(
        **{**vars(per_query), "query_embeddings": per_query.query_embeddings[order]}
    )
    for size in (50, 100):
        base = evaluate_search_cuhk(split, per_query, gallery_size=size)
        expanded = evaluate_search_cuhk(
            sentence_query_split(split, sentences), expanded_predictions, gallery_size=size
        )
        np.testing.assert_allclose(expanded.average_precisions, base.average_precisions[order])
        np.testing.assert_array_equal(expanded.hits, base.hits[order])


# ----------------------------------------------------------------------- prediction loop


class FakePredictor:
    """Three detections per image except for ``c1s1_000002.jpg``; embeddings from the name."""

    def __init__(self, batch_size: int = 2, dim: int = 4) -> None:
        self.batch_size = batch_size
        self.embedding_dim = dim
        self.groups: list[list[str]] = []
        self.sentence_calls: list[list[str]] = []

    def load_image(self, path: Path) -> np.ndarray:
        image = np.zeros((4, 4, 3), np.uint8)
        image[0, 0, 0] = int(path.name[5:11])  # the frame number, so detect knows the image
        return image

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        self.groups.append([int(im[0, 0, 0]) for im in images])
        out = []
        for im in images:
            frame = int(im[0, 0, 0])
            if frame == 2:
                # No people: the loop must accept shapeless empty arrays.
                out.append((np.zeros((0, 4)), np.zeros(0), np.zeros(0)))
                continue
            emb = np.zeros((3, self.embedding_dim), np.float32)
            emb[:, frame % self.embedding_dim] = 1.0
            boxes = np.asarray([[0, 0, 2, 2], [1, 1, 3, 3], [0, 1, 2, 4]], np.float64) + frame
            out.append((boxes, np.asarray([0.9, 0.6, 0.2]), emb))
        return out

    def encode_sentences(self, sentences: list[str]) -> np.ndarray:
        self.sentence_calls.append(list(sentences))
        rows = np.zeros((len(sentences), self.embedding_dim), np.float32)
        for i, sentence in enumerate(sentences):
            rows[i, len(sentence) % self.embedding_dim] = 1.0
        return rows


def _five_frame_split():
    images = [image(f"c1s1_{g:06d}.jpg", [[0, 0, 2, 2]], [g % 2]) for g in range(1, 6)]
    return prw_split(images, [query(images[0].name, [0, 0, 2, 2], 1), query(images[1].name, [0, 0, 2, 2], 0)])


def test_predict_sentence_search_with_a_fake_predictor() -> None:
    split = _five_frame_split()
    sentences = SentenceQueries(("ab", "abc", "a"), np.array([1, 0, 1]))
    fake = FakePredictor()
    predictions = predict_sentence_search(fake, split, sentences, progress=False)
    assert fake.groups == [[1, 2], [3, 4], [5]]
    assert fake.sentence_calls == [["ab", "abc", "a"]]
    assert predictions.gallery_names.tolist() == [r.name for r in split.images]
    assert np.diff(predictions.det_offsets).tolist() == [3, 0, 3, 3, 3]
    np.testing.assert_array_equal(predictions.query_embeddings, np.eye(4, dtype=np.float32)[[2, 3, 1]])
    # Gallery rows are the predictor's crop embeddings, image by image.
    np.testing.assert_array_equal(
        predictions.det_embeddings[:3], np.tile(np.eye(4, dtype=np.float32)[1], (3, 1))
    )
    assert predictions.det_boxes.dtype == np.float32 and predictions.det_boxes[3].tolist() == [3, 3, 5, 5]
    # The predictions fit the expanded split (one query row per sentence) and score.
    evaluate_search(sentence_query_split(split, sentences), predictions)


def test_predict_sentence_search_refusals() -> None:
    split = _five_frame_split()
    sentences = SentenceQueries(("a",), np.array([0]))
    with pytest.raises(ValueError, match="no sentences"):
        predict_sentence_search(
            FakePredictor(), split, SentenceQueries((), np.zeros(0, np.int64)), progress=False
        )
    with pytest.raises(ValueError, match="outside the split's 2 queries"):
        predict_sentence_search(
            FakePredictor(), split, SentenceQueries(("a",), np.array([2])), progress=False
        )
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        predict_sentence_search(FakePredictor(batch_size=0), split, sentences, progress=False)

    class WrongWidth(FakePredictor):
        def encode_sentences(self, sentences: list[str]) -> np.ndarray:
            return np.ones((len(sentences), 3), np.float32)

    with pytest.raises(ValueError, match=r"encode_sentences returned shape \(1, 3\), expected \(1, 4\)"):
        predict_sentence_search(WrongWidth(), split, sentences, progress=False)

    class Dropping(FakePredictor):
        def detect(self, images):
            return super().detect(images)[:1]

    with pytest.raises(ValueError, match="detect returned 1 results for 2 images"):
        predict_sentence_search(Dropping(), split, sentences, progress=False)


def test_the_loop_and_the_tbps_reader_do_not_import_torch() -> None:
    # The runtime's adapter drives the loop in a torch-free install.
    code = (
        "import sys\n"
        "import personsearch_train.evaluation.sentence_search\n"
        "import personsearch_train.data.tbps\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- the runtime's adapter


class FakeDetections(SimpleNamespace):
    """Stands for ``personsearch_runtime.results.Detections`` (``len`` = number of people)."""

    def __len__(self) -> int:
        return len(self.boxes)


class FakeSearcher:
    """The runtime names the adapter codes against: detect, encode_sentences, batch_size, bundle."""

    def __init__(self, *, has_text: bool = True, normalized: bool = True, dim: int = 3) -> None:
        text = SimpleNamespace(embedding_dim=dim, normalized=normalized) if has_text else None
        manifest = SimpleNamespace(has_text=has_text, text=text)
        self.bundle = SimpleNamespace(root=Path("/bundles/b"), manifest=manifest)
        self.batch_size = 2

    def detect(self, images: list[np.ndarray]) -> list[FakeDetections]:
        out = []
        for im in images:
            n = 0 if im.shape[0] == 1 else 2  # a 1-pixel-high image holds nobody
            out.append(
                FakeDetections(
                    source="frame.jpg",
                    boxes=np.tile(np.asarray([[0, 0, 2, 2]], np.float32), (n, 1)),
                    scores=np.full(n, 0.9, np.float32),
                    embeddings=np.zeros((n, 7), np.float32),
                    # The runtime may hand back an empty (0,) array for a frame without people.
                    text_embeddings=np.tile(np.asarray([[3, 0, 4]], np.float32), (n, 1))
                    if n
                    else np.zeros(0),
                )
            )
        return out

    def encode_sentences(self, sentences: list[str]) -> np.ndarray:
        return np.tile(np.asarray([[0, 2, 0]], np.float32), (len(sentences), 1))


def test_runtime_adapter_over_a_fake_searcher() -> None:
    from personsearch_export.errors import ExportError
    from personsearch_export.runtime_sentence_search import RuntimeSentencePredictor

    with pytest.raises(
        ExportError, match=r"bundle /bundles/b has no text encoder.*--text-checkpoint T2I_RUN"
    ):
        RuntimeSentencePredictor(FakeSearcher(has_text=False))
    adapter = RuntimeSentencePredictor(FakeSearcher(normalized=False))
    assert adapter.batch_size == 2 and adapter.embedding_dim == 3
    (boxes, scores, crops), (empty_boxes, _, empty_crops) = adapter.detect(
        [np.zeros((4, 4, 3), np.uint8), np.zeros((1, 1, 3), np.uint8)]
    )
    # A bundle whose graphs do not normalise is normalised by the adapter.
    np.testing.assert_allclose(crops, [[0.6, 0, 0.8]] * 2)
    np.testing.assert_allclose(adapter.encode_sentences(["a", "b"]), [[0, 1, 0]] * 2)
    assert boxes.shape == (2, 4) and scores.dtype == np.float32
    assert empty_boxes.shape == (0, 4) and empty_crops.shape == (0, 3)
    raw = RuntimeSentencePredictor(FakeSearcher(normalized=True))
    np.testing.assert_array_equal(raw.encode_sentences(["a"]), [[0, 2, 0]])

    missing = FakeSearcher()
    missing.detect = lambda images: [
        FakeDetections(source="f.jpg", boxes=np.zeros((0, 4)), text_embeddings=None)
    ]
    with pytest.raises(ExportError, match="returned no text embeddings for f.jpg"):
        RuntimeSentencePredictor(missing).detect([np.zeros((4, 4, 3), np.uint8)])


# ------------------------------------------------------------- personsearch eval, end to end

DETECTOR = "test_sentence_search_detector"
TEXT_MODEL = "test_sentence_search_dual_encoder"
# Every frame: a person on the left and one on the right (x 0-20 and 20-40, 40 high).
FRAME_BOXES = ([0, 0, 20, 40], [20, 0, 40, 40])
# Frame -> (pid, colour) of the left and the right person.
FRAMES = {
    "c1s1_000001": ((1, "red"), (2, "blue")),
    "c2s1_000002": ((2, "blue"), (3, "green")),
    "c3s1_000003": ((3, "green"), (1, "red")),
}
QUERY_LINES = ["1 0 0 20 40 c1s1_000001", "2 0 0 20 40 c2s1_000002", "3 0 0 20 40 c3s1_000003"]
SENTENCES = [
    {"pic_path": "c1s1_000001.jpg", "id": 1, "desrciption": ["a man in red", "red shirt"]},
    {"pic_path": "query_box/2_c2s1_000002.jpg", "id": 2, "desrciption": "a man in blue"},
    {"pic_path": "c3s1_000003.jpg", "id": 3, "description": ["a woman in green dress"]},
]


class FakeDetector(nn.Module):
    """Finds the two people of every synthetic frame, with random re-id embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)

    def predict(self, images: list[torch.Tensor]) -> list[Detections]:
        assert all(im.shape == (3, 40, 40) and im.dtype == torch.float32 for im in images)
        boxes = torch.tensor(FRAME_BOXES, dtype=torch.float32)
        embeddings = nn.functional.normalize(torch.ones(2, 4), dim=1)
        return [Detections(boxes, torch.tensor([0.9, 0.8]), embeddings) for _ in images]

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        raise AssertionError("sentence search never embeds query boxes")


@pytest.fixture(scope="module", autouse=True)
def _fake_models_registered() -> Iterator[None]:
    """Register the fakes for this module only (the registry is process-wide)."""
    from personsearch_train.models import registry

    for name, builder in ((DETECTOR, FakeDetector), (TEXT_MODEL, FakeDualEncoder)):
        if name not in list_models():
            register_model(name)(builder)
    yield
    for name in (DETECTOR, TEXT_MODEL):
        registry._BUILDERS.pop(name, None)


def _run(folder: Path, name: str, model: nn.Module) -> Path:
    save_checkpoint(folder, "best", model=model, metadata={"model": {"name": name, "kwargs": {}}})
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> tuple[Path, Path]:
    return _run(tmp_path / "det_run", DETECTOR, FakeDetector()), _run(
        tmp_path / "t2i_run", TEXT_MODEL, FakeDualEncoder()
    )


@pytest.fixture
def prw_tbps_root(tmp_path: Path) -> Path:
    """A PRW-TBPS folder: three frames of coloured people, three queries, their sentences."""
    root = tmp_path / "data" / "PRW"
    (root / "frames").mkdir(parents=True)
    (root / "annotations").mkdir()
    frames = np.empty((len(FRAMES), 1), dtype=object)
    for i, (frame, people) in enumerate(FRAMES.items()):
        frames[i, 0] = frame
        pixels = np.zeros((40, 40, 3), np.uint8)
        rows = []
        for (x1, y1, x2, y2), (pid, colour) in zip(FRAME_BOXES, people, strict=True):
            pixels[y1:y2, x1:x2] = COLOURS[colour]
            rows.append([pid, x1, y1, x2 - x1, y2 - y1])
        cv2.imwrite(str(root / "frames" / f"{frame}.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, 100])
        scipy.io.savemat(root / "annotations" / f"{frame}.jpg.mat", {"box_new": np.asarray(rows, np.float64)})
    scipy.io.savemat(root / "frame_test.mat", {"img_index_test": frames})
    (root / "query_info.txt").write_text("".join(line + "\r\n" for line in QUERY_LINES))
    (root / "PRW-TBPS_test").write_text(json.dumps(SENTENCES))
    return root


def test_eval_prw_tbps_end_to_end(
    runs: tuple[Path, Path], prw_tbps_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    det_run, t2i_run = runs
    out, saved = tmp_path / "out" / "m.json", tmp_path / "p.npz"
    argv = [
        "eval",
        "--dataset",
        "prw_tbps",
        "--root",
        str(prw_tbps_root.parent),
        "--checkpoint",
        str(det_run),
    ]
    argv += [
        "--text-checkpoint",
        str(t2i_run),
        "--device",
        "cpu",
        "--json",
        str(out),
        "--save-predictions",
        str(saved),
    ]
    assert main(argv) == 0
    scores = json.loads(out.read_text())
    # Every sentence names its person's colour, found in the one other frame holding them.
    assert scores["mAP"] == scores["top1"] == scores["top10"] == 1.0
    assert scores["det_ap"] == pytest.approx(1.0) and scores["det_recall"] == 1.0
    printed = capsys.readouterr().out
    assert "prw_tbps: 4 sentence queries for 3 of the 3 query persons" in printed
    assert "prw all-gallery  (prw_tbps, det_run + t2i_run, values in %)" in printed
    assert ["queries", "scored", "4"] in [line.split() for line in printed.splitlines()]
    predictions = SearchPredictions.load(saved)
    assert predictions.num_queries == 4 and predictions.embedding_dim == 3
    # A saved predictions file is scored against the same sentence queries.
    again = tmp_path / "again.json"
    argv = ["eval", "--dataset", "prw_tbps", "--root", str(prw_tbps_root), "--predictions", str(saved)]
    assert main([*argv, "--json", str(again)]) == 0
    assert json.loads(again.read_text()) == scores


def test_eval_bundle_without_text_graphs_is_refused(
    prw_tbps_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from personsearch_export.commands import evaluate as export_evaluate

    bundle = SimpleNamespace(root=Path("/bundles/plain"), manifest=SimpleNamespace(has_text=False))
    monkeypatch.setattr(export_evaluate, "open_bundle", lambda path, verify_hashes: bundle)
    argv = ["eval", "--dataset", "prw_tbps", "--root", str(prw_tbps_root), "--bundle", "/bundles/plain"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "has no text encoder" in err and "--text-checkpoint T2I_RUN" in err


def test_eval_bundle_runs_the_runtime_predictor(
    prw_tbps_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import personsearch_runtime.searcher as searcher_module
    from personsearch_export.commands import evaluate as export_evaluate

    class ColourSearcher(FakeSearcher):
        """Crop embedding = the colour at the box centre (RGB), sentence = its colour word."""

        def __init__(self, **kwargs: object) -> None:
            super().__init__()
            self.batch_size = int(kwargs["batch_size"])  # type: ignore[call-overload]

        def detect(self, images):
            out = []
            for im in images:
                boxes = np.asarray(FRAME_BOXES, np.float32)
                colours = np.stack([im[20, (int(b[0]) + int(b[2])) // 2, ::-1] for b in boxes]).astype(
                    np.float32
                )
                crops = colours / np.linalg.norm(colours, axis=1, keepdims=True)
                scores = np.full(2, 0.9, np.float32)
                out.append(FakeDetections(source="f", boxes=boxes, scores=scores, text_embeddings=crops))
            return out

        def encode_sentences(self, sentences):
            return np.stack(
                [
                    np.eye(3, dtype=np.float32)[[w in s for w in ("red", "green", "blue")].index(True)]
                    for s in sentences
                ]
            )

    bundle = SimpleNamespace(root=Path("/bundles/text"), manifest=SimpleNamespace(has_text=True))
    monkeypatch.setattr(export_evaluate, "open_bundle", lambda path, verify_hashes: bundle)
    monkeypatch.setattr(searcher_module, "PersonSearcher", lambda **kwargs: ColourSearcher(**kwargs))
    out = tmp_path / "b.json"
    argv = ["eval", "--dataset", "prw_tbps", "--root", str(prw_tbps_root), "--bundle", "/bundles/text"]
    assert main([*argv, "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == 1.0
    assert "(prw_tbps, text via runtime (ort), values in %)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--dataset", "prw", "--checkpoint", "D", "--text-checkpoint", "T"],
            "--text-checkpoint is for person search by sentence",
        ),
        (
            ["--dataset", "cuhk_pedes", "--checkpoint", "D", "--text-checkpoint", "T"],
            "--dataset cuhk_pedes does not use it",
        ),
        (
            ["--dataset", "prw_tbps", "--checkpoint", "D"],
            "with --checkpoint DET_RUN also needs --text-checkpoint T2I_RUN",
        ),
        (
            ["--dataset", "cuhk_sysu_tbps", "--predictions", "p.npz", "--text-checkpoint", "T"],
            "not used with --predictions",
        ),
        (["--dataset", "prw_tbps", "--bundle", "B", "--text-checkpoint", "T"], "not used with --bundle"),
        (
            ["--dataset", "prw_tbps", "--checkpoint", "D", "--text-checkpoint", "T", "--cbgm"],
            "--cbgm re-scores",
        ),
        (
            ["--dataset", "prw_tbps", "--checkpoint", "D", "--text-checkpoint", "T", "--gt-boxes"],
            "--gt-boxes is not available",
        ),
        (
            ["--dataset", "prw_tbps", "--checkpoint", "D", "--text-checkpoint", "T", "--gallery-size", "50"],
            "--gallery-size is a CUHK-SYSU option",
        ),
        (
            [
                "--dataset",
                "cuhk_sysu_tbps",
                "--checkpoint",
                "D",
                "--text-checkpoint",
                "T",
                "--gallery-size",
                "7",
            ],
            "--gallery-size 7 is not a CUHK-SYSU gallery size",
        ),
    ],
)
def test_eval_option_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str], message: str
) -> None:
    # Nothing exists: every refusal comes before a file is read.
    assert main(["eval", "--root", str(tmp_path / "missing"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_eval_refuses_a_detector_as_text_checkpoint(
    runs: tuple[Path, Path], prw_tbps_root: Path, capsys: pytest.CaptureFixture
) -> None:
    det_run, _ = runs
    argv = ["eval", "--dataset", "prw_tbps", "--root", str(prw_tbps_root), "--checkpoint", str(det_run)]
    assert main([*argv, "--text-checkpoint", str(det_run)]) == 2
    err = capsys.readouterr().err
    assert f"--text-checkpoint: checkpoint {det_run} holds model '{DETECTOR}'" in err
    assert "has no tokenizer, image_size, encode_images, encode_texts" in err


def test_checkpoint_predictor_embeds_crops_of_the_detections() -> None:
    text = FakeDualEncoder()
    predictor = CheckpointSentencePredictor(FakeDetector(), text, batch_size=3, encoder_batch_size=3)
    assert predictor.batch_size == 3 and not predictor.text_model.training
    frame = np.zeros((40, 40, 3), np.uint8)
    frame[:, :20] = COLOURS["red"]
    frame[:, 20:] = COLOURS["green"]
    [(boxes, scores, crops)] = predictor.detect([frame])
    np.testing.assert_array_equal(boxes, np.asarray(FRAME_BOXES, np.float32))
    np.testing.assert_allclose(scores, [0.9, 0.8])
    np.testing.assert_allclose(crops, [[1, 0, 0], [0, 1, 0]], atol=1e-6)
    sentences = predictor.encode_sentences(["red", "green", "blue", "a red and blue"])
    np.testing.assert_allclose(sentences[:3], np.eye(3), atol=1e-6)
    assert text.tokenizer.calls == [3, 1]  # encoder_batch_size sentences per call
    assert torch.is_grad_enabled()  # the no-grad regions end with the calls
