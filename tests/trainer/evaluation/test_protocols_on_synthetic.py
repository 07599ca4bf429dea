"""The exact protocols on the tiny synthetic CUHK-SYSU and PRW sets, through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_cases import ground_truth_predictions, random_predictions
from personsearch_runtime.cli import main
from personsearch_train.data.registry import load_split

FOLDERS = {"cuhk_sysu": "CUHK-SYSU", "prw": "PRW"}


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from personsearch_train.data.synthetic.generator import generate_dataset

    root = tmp_path_factory.mktemp("synthetic_tiny")
    generate_dataset(root, preset="tiny", seed=0)
    return root


def _eval(root: Path, dataset: str, predictions: Path, out: Path, *extra: str) -> dict:
    code = main(
        [
            "eval",
            "--dataset",
            dataset,
            "--root",
            str(root / FOLDERS[dataset]),
            "--predictions",
            str(predictions),
            "--json",
            str(out),
            *extra,
        ]
    )
    assert code == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    ("dataset", "extra"),
    [("cuhk_sysu", ()), ("cuhk_sysu", ("--gallery-size", "-1")), ("prw", ()), ("prw", ("--multi-view",))],
)
def test_ground_truth_predictions_score_one(
    synthetic_root: Path, tmp_path: Path, dataset: str, extra
) -> None:
    split = load_split(dataset, synthetic_root / FOLDERS[dataset], "test")
    assert len(split.queries) > 0
    num_ids = (
        int(max(max(int(r.pids.max(initial=-1)) for r in split.images), max(q.pid for q in split.queries)))
        + 1
    )
    path = ground_truth_predictions(split, num_ids=num_ids).save(tmp_path / "gt.npz")
    scores = _eval(synthetic_root, dataset, path, tmp_path / "gt.json", *extra)
    assert set(scores) == {"mAP", "top1", "top5", "top10", "det_ap", "det_recall"}
    assert scores["mAP"] == pytest.approx(1.0)
    assert scores["top1"] == pytest.approx(1.0)
    assert scores["det_ap"] == pytest.approx(1.0) and scores["det_recall"] == pytest.approx(1.0)


@pytest.mark.parametrize("dataset", ["cuhk_sysu", "prw"])
def test_random_and_histogram_baseline_are_below_ground_truth(
    synthetic_root: Path, tmp_path: Path, dataset: str
) -> None:
    split = load_split(dataset, synthetic_root / FOLDERS[dataset], "test")
    path = random_predictions(split, np.random.default_rng(0)).save(tmp_path / "random.npz")
    random_scores = _eval(synthetic_root, dataset, path, tmp_path / "random.json")
    assert random_scores["mAP"] < 0.5
    baseline = tmp_path / "hist.npz"
    root = str(synthetic_root / FOLDERS[dataset])
    assert main(["baseline-hist", "--dataset", dataset, "--root", root, "--out", str(baseline)]) == 0
    plots = tmp_path / "plots"
    hist_scores = _eval(synthetic_root, dataset, baseline, tmp_path / "hist.json", "--plot-dir", str(plots))
    assert 0.0 < hist_scores["mAP"] < 0.9
    assert hist_scores["det_ap"] == pytest.approx(1.0)  # ground-truth boxes
    assert (plots / "cmc.png").read_bytes()[:4] == b"\x89PNG"
    assert (plots / "gallery_size.png").exists() == (dataset == "cuhk_sysu")
