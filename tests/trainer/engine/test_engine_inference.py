"""``predict_split`` with ground-truth gallery boxes, and the ``eval --gt-boxes`` option checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_scenes import ToyPersonModel
from personsearch_export.commands import evaluate as eval_cmd
from personsearch_train.data.torch_dataset import read_image
from personsearch_train.engine.inference import predict_split
from personsearch_train.errors import TrainerError
from personsearch_train.evaluation.scoring import score_predictions


def test_ground_truth_boxes_are_embedded_as_annotated(tiny_splits) -> None:
    _, test = tiny_splits
    model = ToyPersonModel().eval()
    torch.manual_seed(0)
    predictions = predict_split(model, test, batch_size=3, ground_truth_boxes=True, progress=False)
    assert list(predictions.gallery_names) == [r.name for r in test.images]
    for g, record in enumerate(test.images):
        rows = predictions.image_slice(g)
        boxes, scores = predictions.det_boxes[rows], predictions.det_scores[rows]
        embeddings = predictions.det_embeddings[rows]
        np.testing.assert_array_equal(boxes, np.asarray(record.boxes, dtype=np.float32))
        np.testing.assert_array_equal(scores, np.ones(len(record.boxes), dtype=np.float32))
        expected = model.embed_boxes([read_image(record.path)], [torch.from_numpy(boxes)])[0]
        np.testing.assert_allclose(embeddings, expected.detach().numpy(), atol=1e-6)
    summary = score_predictions(test, predictions)
    assert summary["det_ap"] == pytest.approx(1.0) and summary["det_recall"] == pytest.approx(1.0)


def test_ground_truth_boxes_refuse_cbgm_context(tiny_splits) -> None:
    _, test = tiny_splits
    with pytest.raises(ValueError, match="CBGM"):
        predict_split(ToyPersonModel(), test, ground_truth_boxes=True, query_context=True, progress=False)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (["--predictions", "p.npz"], "--gt-boxes needs --checkpoint"),
        (["--bundle", "b"], "--gt-boxes is a --checkpoint option"),
        (["--checkpoint", "run", "--cbgm"], "--gt-boxes and --cbgm"),
    ],
)
def test_gt_boxes_option_is_checked_before_any_work(tmp_path: Path, source: list[str], message: str) -> None:
    args = _parse("--dataset", "prw", "--root", str(tmp_path / "missing"), "--gt-boxes", *source)
    with pytest.raises(TrainerError, match=message):
        eval_cmd.run(args)
