from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
from personsearch_runtime.box_ops import box_iou, roi_align_reference
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.detection import SplitDetector


class _Fixed:
    """A stage returning fixed outputs (and recording its inputs)."""

    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append(feed)
        return self.outputs


class _ReidFromPooled:
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feed["roi_features"].reshape(len(feed["roi_features"]), -1)[:, :8].astype(np.float32)
        return {"embeddings": x + 1.0, "person_scores": np.full(len(x), 0.5, np.float32)}


def test_split_postprocessing_by_hand(tiny_bundle: Path) -> None:
    manifest = Bundle.load(tiny_bundle).manifest
    post = dataclasses.replace(
        manifest.postprocessing, score_threshold=0.3, nms_threshold=0.5, max_detections=2
    )
    manifest = dataclasses.replace(manifest, postprocessing=post)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 3, 24, 32)).astype(np.float32)
    proposals = np.zeros((2, 5, 4), np.float32)
    proposals[0] = [[10, 10, 50, 90], [12, 10, 52, 90], [60, 10, 100, 90], [0, 0, 20, 20], [70, 50, 120, 95]]
    proposals[1, :2] = [[5, 5, 45, 85], [80, 5, 120, 85]]
    counts = np.array([5, 2], np.int64)
    # Deltas for the 7 valid proposals in order; one moves its box right by half its width.
    deltas = np.zeros((7, 4), np.float32)
    deltas[2] = [10 * 0.5, 0, 0, 0]
    deltas[6] = [0, 0, 5 * math.log(2), 0]  # doubles width around the centre
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.95, 0.4], np.float32)
    backbone = _Fixed({"features": features, "proposals": proposals, "proposal_counts": counts})
    box_head = _Fixed({"box_deltas": deltas, "box_scores": scores})
    det = SplitDetector(
        manifest=manifest,
        stages={"backbone_rpn": backbone, "box_head": box_head, "reid_head": _ReidFromPooled()},
    )
    out = det(np.zeros((2, 3, 96, 128), np.float32))
    # Image 0: box 1 overlaps box 0 (IoU > 0.5) -> suppressed; box 3 under threshold; box 2 moved
    # right by 20 px to [80, 10, 120, 90]; top-2 of {0: .9, 2: .7, 4: .6} -> boxes 0 and 2.
    np.testing.assert_allclose(out[0].boxes, [[10, 10, 50, 90], [80, 10, 120, 90]], atol=1e-4)
    np.testing.assert_allclose(out[0].scores, [0.9, 0.7])
    # Image 1: box 6 widened to [60, 5, 140, 85] then clipped to the 128-px wide batch.
    np.testing.assert_allclose(out[1].boxes, [[5, 5, 45, 85], [60, 5, 128, 85]], atol=1e-4)
    assert box_iou(out[1].boxes[:1], out[1].boxes[1:])[0, 0] < 0.5
    # The first RoIAlign saw every valid proposal with its image index.
    pooled = box_head.feeds[0]["roi_features"]
    rois = np.concatenate([[[0]] * 5 + [[1]] * 2, np.concatenate([proposals[0], proposals[1, :2]])], 1)
    np.testing.assert_allclose(
        pooled,
        roi_align_reference(features, rois.astype(np.float32), manifest.split.box_roi_align),
        atol=1e-6,
    )
    # Embeddings come from the second pooling on the final boxes, L2-normalised by the manifest rule.
    final_rois = np.array([[0, 10, 10, 50, 90], [0, 80, 10, 120, 90]], np.float32)
    expected = (
        roi_align_reference(features, final_rois, manifest.split.reid_roi_align).reshape(2, -1)[:, :8] + 1
    )
    np.testing.assert_allclose(
        out[0].embeddings
        * np.linalg.norm(expected, axis=1, keepdims=True)
        / np.linalg.norm(out[0].embeddings, axis=1, keepdims=True),
        expected,
        atol=1e-5,
    )


def test_split_with_no_detections(tiny_bundle: Path) -> None:
    manifest = Bundle.load(tiny_bundle).manifest
    backbone = _Fixed(
        {
            "features": np.zeros((1, 3, 8, 8), np.float32),
            "proposals": np.zeros((1, 5, 4), np.float32),
            "proposal_counts": np.array([0], np.int64),
        }
    )
    box_head = _Fixed({"box_deltas": np.zeros((0, 4), np.float32), "box_scores": np.zeros((0,), np.float32)})
    det = SplitDetector(
        manifest=manifest,
        stages={"backbone_rpn": backbone, "box_head": box_head, "reid_head": _ReidFromPooled()},
    )
    (out,) = det(np.zeros((1, 3, 32, 32), np.float32))
    assert out.boxes.shape == (0, 4) and out.embeddings.shape == (0, 8)
