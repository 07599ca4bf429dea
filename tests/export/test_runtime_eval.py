"""``personsearch eval --bundle``: the runtime's predictions score exactly as the checkpoint's.

The slow tests train the instant recipe on the tiny synthetic set, export it, and
score the test split through the runtime (ONNX Runtime, CPU) and through the trainer's
PyTorch model. Both must give the same mAP and top-1 (within 0.001) and, so that the
check is not vacuous while the instant model still scores ~0 mAP, the same
per-image detection counts, boxes within 0.01 px and embeddings with cosine >= 0.9999.
The model is trained with a low box score threshold (0.05) so every image has detections
to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from personsearch_export.commands import evaluate as eval_cmd


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="personsearch eval")
    eval_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def _cli(*argv: str) -> None:
    subprocess.run([sys.executable, "-m", "personsearch_runtime", *argv], check=True, capture_output=True)


def test_bundle_joins_the_source_group(tmp_path: Path) -> None:
    args = _parse("--dataset", "prw", "--root", str(tmp_path), "--bundle", str(tmp_path / "b"))
    assert args.bundle == tmp_path / "b" and args.checkpoint is None and args.predictions is None
    assert args.backend == "ort"
    for extra in (["--checkpoint", "run"], ["--predictions", "p.npz"]):
        with pytest.raises(SystemExit):
            _parse("--dataset", "prw", "--root", str(tmp_path), "--bundle", "b", *extra)
    with pytest.raises(SystemExit):  # a source is still required
        _parse("--dataset", "prw", "--root", str(tmp_path))
    assert _parse("--dataset", "prw", "--root", "r", "--predictions", "p.npz").predictions == Path("p.npz")


def test_backend_without_bundle_is_refused(tmp_path: Path) -> None:
    from personsearch_train.errors import TrainerError

    args = _parse("--dataset", "prw", "--root", str(tmp_path), "--checkpoint", "run", "--backend", "trt")
    with pytest.raises(TrainerError, match="--backend"):
        eval_cmd.run(args)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "prw", "--gallery-size", "50"], "--gallery-size is a CUHK-SYSU option"),
        (["--dataset", "cuhk_sysu", "--multi-view"], "--multi-view is a PRW option"),
        (["--dataset", "prw", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
@pytest.mark.parametrize("source", [["--bundle", "b"], ["--checkpoint", "run"]])
def test_every_source_is_checked_by_the_same_validation(
    tmp_path: Path, source: list[str], extra: list[str], message: str
) -> None:
    from personsearch_train.errors import TrainerError

    # The dataset folder does not exist: the options are refused before anything is read.
    args = _parse("--root", str(tmp_path / "missing"), *source, *extra)
    with pytest.raises(TrainerError, match=message):
        eval_cmd.run(args)


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("runtime_eval")
    data, run, bundle = root / "data", root / "run", root / "bundle"
    _cli("synth", "--out", str(data), "--preset", "tiny")
    _cli(
        "train",
        "--recipe",
        "synthetic_instant",
        "--data-root",
        str(data),
        "--out",
        str(run),
        "--set",
        "model.overrides.box_score_thresh=0.05",
    )
    _cli("export", "--checkpoint", str(run), "--out", str(bundle))
    return data, run, bundle


def _evaluate(source: list[str], dataset: str, root: Path, out: Path, extra: list[str]) -> tuple[dict, dict]:
    args = _parse(
        "--dataset",
        dataset,
        "--root",
        str(root),
        *source,
        "--device",
        "cpu",
        "--json",
        str(out / "metrics.json"),
        "--save-predictions",
        str(out / "predictions.npz"),
        *extra,
    )
    assert eval_cmd.run(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with np.load(out / "predictions.npz") as arrays:
        return metrics, {key: arrays[key] for key in arrays.files}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("dataset", "folder", "extra"),
    [("cuhk_sysu", "CUHK-SYSU", []), ("prw", "PRW", []), ("cuhk_sysu", "CUHK-SYSU", ["--cbgm"])],
    ids=["cuhk_sysu", "prw", "cuhk_sysu-cbgm"],
)
def test_runtime_eval_matches_checkpoint_eval(
    trained_bundle: tuple[Path, Path, Path], tmp_path: Path, dataset: str, folder: str, extra: list[str]
) -> None:
    data, run, bundle = trained_bundle
    (tmp_path / "rt").mkdir()
    (tmp_path / "pt").mkdir()
    rt_metrics, rt = _evaluate(["--bundle", str(bundle)], dataset, data / folder, tmp_path / "rt", extra)
    pt_metrics, pt = _evaluate(["--checkpoint", str(run)], dataset, data / folder, tmp_path / "pt", extra)

    for key in ("mAP", "top1"):
        assert abs(rt_metrics[key] - pt_metrics[key]) <= 1e-3, (key, rt_metrics[key], pt_metrics[key])

    # The predictions themselves, so the check means something even at mAP ~ 0.
    assert list(rt["gallery_names"]) == list(pt["gallery_names"])
    np.testing.assert_array_equal(rt["det_offsets"], pt["det_offsets"])
    assert rt["det_boxes"].shape[0] >= len(rt["gallery_names"]), "expected detections in most images"
    np.testing.assert_allclose(rt["det_boxes"], pt["det_boxes"], atol=0.01, rtol=0)
    np.testing.assert_allclose(rt["det_scores"], pt["det_scores"], atol=1e-4, rtol=0)
    assert np.min(np.sum(rt["det_embeddings"] * pt["det_embeddings"], axis=1)) >= 0.9999
    assert rt["query_embeddings"].shape == pt["query_embeddings"].shape
    assert np.min(np.sum(rt["query_embeddings"] * pt["query_embeddings"], axis=1)) >= 0.9999
    assert set(rt) == set(pt)
    if "--cbgm" in extra:
        context = [key for key in rt if key.startswith("query_context")]
        assert context, "CBGM predictions carry the query context"
        for key in context:
            assert rt[key].shape == pt[key].shape, key
