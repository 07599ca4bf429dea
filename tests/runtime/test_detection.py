from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
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
    """Embeds the first 8 pooled values; box deltas per row from ``deltas`` (zeros by default)."""

    def __init__(self, deltas: np.ndarray | None = None) -> None:
        self.deltas = deltas
        self.feeds: list[dict[str, np.ndarray]] = []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.feeds.append(feed)
        x = feed["roi_features"].reshape(len(feed["roi_features"]), -1)[:, :8].astype(np.float32)
        deltas = np.zeros((len(x), 4), np.float32) if self.deltas is None else self.deltas
        return {
            "embeddings": x + 1.0,
            "person_scores": np.full(len(x), 0.5, np.float32),
            "box_deltas": deltas,
        }


def _hand_case(tiny_bundle: Path, **split_changes: object):
    manifest = Bundle.load(tiny_bundle).manifest
    post = dataclasses.replace(
        manifest.postprocessing,
        score_threshold=0.3,
        nms_threshold=0.5,
        reid_nms_threshold=0.5,
        max_detections=3,
    )
    split = dataclasses.replace(manifest.split, **split_changes)
    manifest = dataclasses.replace(manifest, postprocessing=post, split=split)
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
    return manifest, features, proposals, backbone, box_head


def test_split_two_stages_by_hand(tiny_bundle: Path) -> None:
    manifest, features, proposals, backbone, box_head = _hand_case(tiny_bundle)
    # Stage-1 survivors, in order: image 0 -> proposals 0 (.9), 2 (.7, moved to [80, 10, 120, 90]),
    # 4 (.6, [70, 50, 120, 95]: IoU 0.42 with 2, kept); image 1 -> 5 (.95), 6 (.4, widened).
    # Head-2 deltas: row 0 shifts right by 1 px (40 px wide box); row 2 turns [70, 50, 120, 95]
    # into [80, 10, 120, 90], a copy of row 1, so the *second* NMS must drop it.
    reid_deltas = np.zeros((5, 4), np.float32)
    reid_deltas[0] = [10 * 1 / 40, 0, 0, 0]
    reid_deltas[2] = [
        10 * (100 - 95) / 50,
        10 * (50 - 72.5) / 45,
        5 * math.log(40 / 50),
        5 * math.log(80 / 45),
    ]
    reid = _ReidFromPooled(reid_deltas)
    det = SplitDetector(
        manifest=manifest, stages={"backbone_rpn": backbone, "box_head": box_head, "reid_head": reid}
    )
    out = det(np.zeros((2, 3, 96, 128), np.float32))
    # Image 0: box 1 overlaps box 0 (IoU > 0.5) -> suppressed in stage 1; box 3 under threshold.
    # Stage 2 refines box 0 by +1 px and suppresses refined box 4 (IoU ~1 with box 2).
    np.testing.assert_allclose(out[0].boxes, [[11, 10, 51, 90], [80, 10, 120, 90]], atol=1e-4)
    np.testing.assert_allclose(out[0].scores, [0.9, 0.7])  # stage-1 (box head) scores
    # Image 1: box 6 widened to [60, 5, 140, 85] then clipped to the 128-px wide batch.
    np.testing.assert_allclose(out[1].boxes, [[5, 5, 45, 85], [60, 5, 128, 85]], atol=1e-4)
    np.testing.assert_allclose(out[1].scores, [0.95, 0.4])
    assert box_iou(out[1].boxes[:1], out[1].boxes[1:])[0, 0] < 0.5
    # The first RoIAlign saw every valid proposal with its image index.
    pooled = box_head.feeds[0]["roi_features"]
    rois = np.concatenate([[[0]] * 5 + [[1]] * 2, np.concatenate([proposals[0], proposals[1, :2]])], 1)
    np.testing.assert_allclose(
        pooled,
        roi_align_reference(features, rois.astype(np.float32), manifest.split.box_roi_align),
        atol=1e-6,
    )
    # The second RoIAlign saw the 5 stage-1 survivors (stage-1 boxes, not refined ones).
    assert reid.feeds[0]["roi_features"].shape[0] == 5
    # Embeddings come from the second pooling on the stage-1 boxes, L2-normalised.
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


def test_split_caps_stage_one_per_image(tiny_bundle: Path) -> None:
    manifest, _, _, backbone, box_head = _hand_case(tiny_bundle, first_stage_max_detections=1)
    reid = _ReidFromPooled()
    det = SplitDetector(
        manifest=manifest, stages={"backbone_rpn": backbone, "box_head": box_head, "reid_head": reid}
    )
    out = det(np.zeros((2, 3, 96, 128), np.float32))
    assert reid.feeds[0]["roi_features"].shape[0] == 2  # the best box of each image only
    np.testing.assert_allclose(out[0].boxes, [[10, 10, 50, 90]], atol=1e-4)
    np.testing.assert_allclose(out[1].scores, [0.95])


class _MustNotRun:
    """A head stage that fails the test when called (its engine profile starts at R = 1)."""

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise AssertionError(f"head called with {feed['roi_features'].shape[0]} RoIs")


def test_split_with_no_detections(tiny_bundle: Path) -> None:
    manifest = Bundle.load(tiny_bundle).manifest
    backbone = _Fixed(
        {
            "features": np.zeros((1, 3, 8, 8), np.float32),
            "proposals": np.zeros((1, 5, 4), np.float32),
            "proposal_counts": np.array([0], np.int64),
        }
    )
    det = SplitDetector(
        manifest=manifest,
        stages={"backbone_rpn": backbone, "box_head": _MustNotRun(), "reid_head": _MustNotRun()},
    )
    (out,) = det(np.zeros((1, 3, 32, 32), np.float32))
    assert out.boxes.shape == (0, 4) and out.scores.shape == (0,) and out.embeddings.shape == (0, 8)
    assert out.boxes.dtype == out.scores.dtype == out.embeddings.dtype == np.float32


class _DropProposals:
    """The real backbone_rpn with the proposal count of some images forced to zero."""

    def __init__(self, backend: object, empty: set[int]) -> None:
        self.backend, self.empty = backend, empty

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = dict(self.backend.run(feed))  # type: ignore[attr-defined]
        counts = out["proposal_counts"].copy()
        counts[sorted(self.empty)] = 0
        out["proposal_counts"] = counts
        return out


class _Recording:
    def __init__(self, backend: object) -> None:
        self.backend, self.rois = backend, []

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.rois.append(feed["roi_features"].shape[0])
        return self.backend.run(feed)  # type: ignore[attr-defined]


def test_a_frame_without_proposals_gets_no_detections_from_the_tiny_graphs(tiny_bundle: Path) -> None:
    from personsearch_runtime.backends import create_backend
    from personsearch_runtime.preprocess import batch_images, prepare_image
    from scene_files import scene_layout
    from tiny_bundle import scene

    bundle = Bundle.load(tiny_bundle)
    ort = {
        r: create_backend("ort", tiny_bundle / f"{r}.onnx") for r in ("backbone_rpn", "box_head", "reid_head")
    }
    spec = bundle.manifest.preprocessing
    batch = batch_images([prepare_image(scene(scene_layout(i)), spec) for i in range(2)], spec)
    full = SplitDetector(manifest=bundle.manifest, stages=ort)(batch)
    assert [len(d.boxes) for d in full] == [3, 3]

    # Frame 0 has no proposals: the heads see frame 1's four RoIs only, frame 1 is unchanged.
    box_head, reid_head = _Recording(ort["box_head"]), _Recording(ort["reid_head"])
    stages = {
        "backbone_rpn": _DropProposals(ort["backbone_rpn"], {0}),
        "box_head": box_head,
        "reid_head": reid_head,
    }
    empty, same = SplitDetector(manifest=bundle.manifest, stages=stages)(batch)
    assert empty.boxes.shape == (0, 4) and empty.embeddings.shape == (0, 8)
    np.testing.assert_allclose(same.boxes, full[1].boxes, atol=1e-5)
    np.testing.assert_allclose(same.embeddings, full[1].embeddings, atol=1e-6)
    assert box_head.rois == [4] and reid_head.rois == [3]

    # No frame has proposals: neither head runs, every frame gets zero detections.
    stages = {
        "backbone_rpn": _DropProposals(ort["backbone_rpn"], {0, 1}),
        "box_head": _MustNotRun(),
        "reid_head": _MustNotRun(),
    }
    out = SplitDetector(manifest=bundle.manifest, stages=stages)(batch)
    assert [d.boxes.shape for d in out] == [(0, 4), (0, 4)]


def test_split_clips_to_image_sizes_when_the_graph_takes_them(tiny_bundle: Path) -> None:
    from personsearch_runtime.bundle import TensorSpec
    from personsearch_runtime.detection import image_sizes_array

    manifest, _, _, backbone, box_head = _hand_case(tiny_bundle)
    rpn = manifest.models["backbone_rpn"]
    rpn = dataclasses.replace(rpn, inputs=(*rpn.inputs, TensorSpec("image_sizes", "float32", ("B", 2))))
    manifest = dataclasses.replace(manifest, models={**manifest.models, "backbone_rpn": rpn})
    det = SplitDetector(
        manifest=manifest,
        stages={"backbone_rpn": backbone, "box_head": box_head, "reid_head": _ReidFromPooled()},
    )
    batch = np.zeros((2, 3, 96, 128), np.float32)
    sizes = np.array([[96, 128], [80, 100]])
    out = det(batch, sizes)
    np.testing.assert_array_equal(backbone.feeds[0]["image_sizes"], sizes.astype(np.float32))
    # Image 1's widened box [60, 5, 140, 85] now stops at its own 100x80 bounds.
    np.testing.assert_allclose(out[1].boxes, [[5, 5, 45, 80], [60, 5, 100, 80]], atol=1e-4)
    np.testing.assert_allclose(out[0].boxes[0], [11 - 1, 10, 51 - 1, 90], atol=1e-4)  # image 0 unchanged
    # Without sizes the graph is fed the padded size.
    det(batch)
    np.testing.assert_array_equal(backbone.feeds[1]["image_sizes"], [[96, 128], [96, 128]])
    np.testing.assert_array_equal(image_sizes_array(batch, None), [[96, 128], [96, 128]])
    with pytest.raises(ValueError, match="shape"):
        image_sizes_array(batch, np.array([96, 128]))
    with pytest.raises(ValueError, match="padded size"):
        image_sizes_array(batch, np.array([[96, 129], [10, 10]]))


def test_one_graph_detector_feeds_image_sizes(tiny_bundle: Path) -> None:
    from personsearch_runtime.bundle import TensorSpec
    from personsearch_runtime.detection import OneGraphDetector

    manifest = Bundle.load(tiny_bundle).manifest
    det_spec = manifest.models["detector"]
    det_spec = dataclasses.replace(
        det_spec, inputs=(*det_spec.inputs, TensorSpec("image_sizes", "float32", ("B", 2)))
    )
    manifest = dataclasses.replace(manifest, models={**manifest.models, "detector": det_spec})
    k, d = manifest.postprocessing.max_detections, manifest.embedding.dim
    stage = _Fixed(
        {
            "boxes": np.zeros((2, k, 4), np.float32),
            "scores": np.zeros((2, k), np.float32),
            "embeddings": np.zeros((2, k, d), np.float32),
            "valid_counts": np.zeros(2, np.int64),
        }
    )
    detector = OneGraphDetector(manifest=manifest, stage=stage)
    batch = np.zeros((2, 3, 64, 96), np.float32)
    detector(batch, np.array([[64, 80], [48, 96]]))
    detector(batch)
    np.testing.assert_array_equal(stage.feeds[0]["image_sizes"], [[64, 80], [48, 96]])
    np.testing.assert_array_equal(stage.feeds[1]["image_sizes"], [[64, 96], [64, 96]])
    assert stage.feeds[0]["image_sizes"].dtype == np.float32
