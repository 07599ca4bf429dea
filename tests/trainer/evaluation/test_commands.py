"""``personsearch eval`` and the colour-histogram baseline, on in-memory data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from eval_cases import (
    e,
    image,
    predictions,
    prw_split,
    query,
    random_predictions,
    random_search_split,
    unit_with_cosine,
)
from personsearch_runtime.cli import main
from personsearch_train.baselines.color_histogram import ColorHistogramEmbedder, histogram_predictions
from personsearch_train.commands import evaluate as evaluate_command
from personsearch_train.data.structures import ImageRecord, PersonSearchSplit, QueryRecord
from personsearch_train.errors import DatasetFormatError, TrainerError
from personsearch_train.evaluation.scoring import EvalOptions, score_predictions


@pytest.fixture
def prw_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    split = random_search_split(np.random.default_rng(2), dataset="prw")
    monkeypatch.setattr(evaluate_command, "load_split", lambda dataset, root, which: split)
    path = random_predictions(split, np.random.default_rng(4)).save(tmp_path / "p.npz")
    return split, path


def test_eval_writes_json_and_table(prw_case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split, path = prw_case
    out = tmp_path / "out" / "scores.json"
    args = [
        "eval",
        "--dataset",
        "prw",
        "--root",
        str(tmp_path),
        "--predictions",
        str(path),
        "--json",
        str(out),
    ]
    assert main([*args, "--multi-view"]) == 0
    written = json.loads(out.read_text())
    from personsearch_train.evaluation.predictions import SearchPredictions

    assert written == pytest.approx(score_predictions(split, SearchPredictions.load(path), multi_view=True))
    assert all(0.0 <= v <= 1.0 for v in written.values())
    printed = capsys.readouterr().out
    assert "prw multi-view" in printed and "mAP" in printed and f"{100 * written['mAP']:.2f}" in printed
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.json"]


def test_eval_user_errors_exit_2(prw_case, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, path = prw_case
    base = ["eval", "--dataset", "prw", "--root", str(tmp_path)]
    assert main([*base, "--predictions", str(path), "--gallery-size", "50"]) == 2
    assert "--gallery-size is a CUHK-SYSU option" in capsys.readouterr().err
    assert main([*base, "--predictions", str(tmp_path / "none.npz")]) == 2
    assert "predictions file not found" in capsys.readouterr().err
    assert main([*base, "--predictions", str(path), "--cbgm"]) == 2
    assert "query_context" in capsys.readouterr().err


def test_no_cws_ranks_by_cosine_and_the_default_by_score_weighted_similarity(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The query person (pid 1) is in frame b, detected with score 0.6 and cosine 0.9; frame c
    # holds someone else, score 1.0 and cosine 0.8.
    split = prw_split(
        [
            image("c1s1_000001.jpg", [[0, 0, 30, 80]], [1], camera=1),
            image("c2s1_000002.jpg", [[0, 0, 30, 80]], [1], camera=2),
            image("c3s1_000003.jpg", [[50, 0, 80, 80]], [2], camera=3),
        ],
        [query("c1s1_000001.jpg", [0, 0, 30, 80], 1, camera=1)],
    )
    preds = predictions(
        split,
        {
            "c2s1_000002.jpg": [([0, 0, 30, 80], 0.6, unit_with_cosine(0.9))],
            "c3s1_000003.jpg": [([50, 0, 80, 80], 1.0, unit_with_cosine(0.8, axis=2))],
        },
        [e(0)],
    )
    path = preds.save(tmp_path / "p.npz")
    monkeypatch.setattr(evaluate_command, "load_split", lambda dataset, root, which: split)
    base = ["eval", "--dataset", "prw", "--root", str(tmp_path), "--predictions", str(path)]

    assert main([*base, "--json", str(tmp_path / "cws.json")]) == 0
    cws = json.loads((tmp_path / "cws.json").read_text())
    # CWS: b scores 0.6 x 0.9 = 0.54 < c's 1.0 x 0.8, so the match is ranked second:
    # AP = precision at its rank (1/2) x recall (1/1) = 0.5, top-1 misses, top-5 hits.
    assert (cws["mAP"], cws["top1"], cws["top5"]) == pytest.approx((0.5, 0.0, 1.0))
    assert "without CWS" not in capsys.readouterr().out

    assert main([*base, "--no-cws", "--json", str(tmp_path / "cos.json")]) == 0
    cosine = json.loads((tmp_path / "cos.json").read_text())
    # Cosine alone: 0.9 > 0.8, the match is first: AP 1, top-1 hits.
    assert (cosine["mAP"], cosine["top1"], cosine["top5"]) == pytest.approx((1.0, 1.0, 1.0))
    assert "cosine without CWS" in capsys.readouterr().out
    assert cosine == pytest.approx(score_predictions(split, preds, cws=False))
    assert cws == pytest.approx(score_predictions(split, preds))


def test_eval_options_refuse_options_the_protocol_lacks() -> None:
    assert EvalOptions("prw").cws and EvalOptions("cuhk_sysu", gallery_size=-1).gallery_size == -1
    with pytest.raises(TrainerError, match="--gallery-size is a CUHK-SYSU option"):
        EvalOptions("prw", gallery_size=50)
    with pytest.raises(TrainerError, match="--multi-view is a PRW option"):
        EvalOptions("cuhk_sysu", multi_view=True)
    with pytest.raises(TrainerError, match="--empty-queries"):
        EvalOptions("prw", empty_queries="drop")  # type: ignore[arg-type]


def _two_colour_image(top_bgr, bottom_bgr) -> np.ndarray:
    image = np.zeros((100, 60, 3), np.uint8)
    image[:50] = top_bgr
    image[50:] = bottom_bgr
    return image


def test_histogram_descriptor_separates_upper_and_lower_colours() -> None:
    embedder = ColorHistogramEmbedder()
    box = np.array([[0, 0, 60, 100]], np.float32)
    red_blue = embedder.embed(_two_colour_image((0, 0, 255), (255, 0, 0)), box)
    blue_red = embedder.embed(_two_colour_image((255, 0, 0), (0, 0, 255)), box)
    again = embedder.embed(_two_colour_image((0, 0, 255), (255, 0, 0)), box)
    assert red_blue.shape == (1, embedder.dim) and red_blue.dtype == np.float32
    assert np.linalg.norm(red_blue) == pytest.approx(1.0, abs=1e-6)
    assert float(red_blue[0] @ again[0]) == pytest.approx(1.0, abs=1e-6)
    # Same colours, swapped stripes: the stripes are described separately, so they do not match.
    assert float(red_blue[0] @ blue_red[0]) < 0.1
    # Boxes partly outside the image are clipped, not refused.
    assert np.isfinite(embedder.embed(_two_colour_image(0, 0), np.array([[-20, -5, 90, 130]]))).all()


def test_histogram_predictions_on_files(tmp_path: Path) -> None:
    names = ["a.jpg", "b.jpg"]
    colours = [((0, 0, 255), (255, 0, 0)), ((0, 255, 0), (255, 0, 0))]
    records = []
    for name, (top, bottom) in zip(names, colours, strict=True):
        cv2.imwrite(str(tmp_path / name), _two_colour_image(top, bottom))
        records.append(
            ImageRecord(name, tmp_path / name, np.array([[0, 0, 60, 100]], np.float32), np.array([0]))
        )
    split = PersonSearchSplit(
        dataset="prw",
        split="test",
        root=tmp_path,
        images=tuple(records),
        queries=(QueryRecord("a.jpg", tmp_path / "a.jpg", np.array([0, 0, 60, 100]), 0),),
    )
    preds = histogram_predictions(split)
    assert preds.det_offsets.tolist() == [0, 1, 2] and preds.det_scores.tolist() == [1.0, 1.0]
    # The query is the gallery box of a.jpg: identical descriptor; b.jpg shares only the lower stripe.
    np.testing.assert_allclose(preds.query_embeddings[0], preds.det_embeddings[0], atol=1e-6)
    assert 0.4 < float(preds.query_embeddings[0] @ preds.det_embeddings[1]) < 0.6  # ~1/2 up to JPEG noise


def test_histogram_baseline_names_a_missing_image() -> None:
    split = prw_split([image("c1s1_000001.jpg", [[0, 0, 30, 80]], [1])], [])
    with pytest.raises(DatasetFormatError, match="c1s1_000001.jpg: image is missing or cannot be decoded"):
        histogram_predictions(split)


def test_plots_write_images(tmp_path: Path) -> None:
    from personsearch_train.evaluation.plots import plot_cmc, plot_gallery_size_curve

    cmc = plot_cmc({"a": np.linspace(0.3, 1.0, 20)}, tmp_path / "cmc.png")
    curve = plot_gallery_size_curve([50, 100, 500], [0.9, 0.8, 0.6], [0.95, 0.9, 0.7], tmp_path / "g.png")
    assert cmc.read_bytes()[:4] == b"\x89PNG" and curve.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmc.png", "g.png"]
    with pytest.raises(ValueError, match="equal length"):
        plot_gallery_size_curve([50], [0.9, 0.8], [0.9], tmp_path / "bad.png")
