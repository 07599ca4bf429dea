"""The split graphs: exported from a real SeqNet, composed by the runtime, equal to detector.onnx.

Tolerances are the export's fp32 parity tolerances (``personsearch_export.parity.TOLERANCES``):
boxes within 0.01 px, scores within 1e-4 absolute, embeddings with cosine >= 0.99999, and
the same number of detections per image.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

BOX_TOL_PX = 0.01
SCORE_TOL = 1e-4
MIN_COSINE = 0.99999


@pytest.fixture(scope="module")
def split_bundle(tmp_path_factory):
    """A seqnet_tiny export (graphs + manifest, no parity run) and tiny synthetic scenes."""
    from personsearch_export.checkpoint_io import load_checkpoint
    from personsearch_export.exporter import export_graphs
    from personsearch_export.parity import load_scene_images
    from personsearch_train.engine.checkpoint import save_checkpoint
    from personsearch_train.models import create_model

    root = tmp_path_factory.mktemp("split")
    torch.manual_seed(0)
    # Untrained, head-1 scores sit near 0.5: a 0.3 threshold gives many detections per image,
    # so both NMS stages and the top-K cut have real work to do.
    kwargs = {"box_score_thresh": 0.3}
    save_checkpoint(
        root / "ckpt",
        "best",
        model=create_model("seqnet_tiny", **kwargs).eval(),
        metadata={"model": {"name": "seqnet_tiny", "kwargs": kwargs}},
    )
    (root / "bundle").mkdir()
    manifest = export_graphs(
        load_checkpoint(root / "ckpt"),
        root / "bundle",
        opset=17,
        precision="fp32",
        max_detections=20,
        profile=None,
        max_batch=4,
    )
    return root / "bundle", manifest, load_scene_images(None, count=6)


def _fed(manifest, scenes, height: int, width: int) -> np.ndarray:
    import cv2

    prep = manifest.preprocessing
    images = np.stack([cv2.resize(s, (width, height), interpolation=cv2.INTER_LINEAR) for s in scenes])
    images = images.transpose(0, 3, 1, 2).astype(np.float32)
    mean = np.asarray(prep.mean, np.float32)[None, :, None, None]
    std = np.asarray(prep.std, np.float32)[None, :, None, None]
    return images if prep.normalize_in_graph else (images - mean) / std


def test_manifest_describes_the_split_graphs(split_bundle):
    from personsearch_runtime.bundle import Bundle

    root, _, _ = split_bundle
    manifest = Bundle.load(root).manifest
    assert set(manifest.models) == {"detector", "query_encoder", "backbone_rpn", "box_head", "reid_head"}
    split, post = manifest.split, manifest.postprocessing
    for roi in (split.box_roi_align, split.reid_roi_align):
        assert (roi.output_size, roi.spatial_scale, roi.sampling_ratio, roi.aligned) == (14, 1 / 16, 2, False)
    assert split.box_coder.weights == split.reid_box_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert split.first_stage_max_detections == 32  # seqnet_tiny's box_detections_per_img
    assert (post.score_threshold, post.nms_threshold, post.reid_nms_threshold) == (0.3, 0.4, 0.5)
    models = manifest.models
    assert [t.name for t in models["reid_head"].outputs] == ["embeddings", "person_scores", "box_deltas"]
    assert models["backbone_rpn"].outputs[1].shape == ("B", 32, 4)  # padded to the RPN's post-NMS top-N
    assert models["box_head"].inputs[0].shape[0] == models["reid_head"].inputs[0].shape[0] == "R"


def test_backbone_rpn_pads_proposals_with_zero_rows_and_clips_to_image_sizes(split_bundle):
    root, manifest, scenes = split_bundle
    sess = ort.InferenceSession(str(root / "backbone_rpn.onnx"), providers=["CPUExecutionProvider"])
    # A flat grey image gives the untrained RPN few distinct proposals, so padding shows.
    fed = _fed(manifest, [np.full((64, 96, 3), 0.5, np.float32), scenes[0]], 64, 96)
    sizes = np.array([[64, 96], [40, 56]], np.float32)  # image 1 fills only the top-left 40x56
    features, proposals, counts = sess.run(None, {"images": fed, "image_sizes": sizes})
    assert features.shape[:2] == (2, manifest.models["backbone_rpn"].outputs[0].shape[1])
    assert features.shape[2:] == (4, 6)
    assert counts.dtype == np.int64 and counts.shape == (2,)
    for b in range(2):
        assert 0 < counts[b] <= proposals.shape[1]
        assert not proposals[b, counts[b] :].any()
        real = proposals[b, : counts[b]]
        assert (real[:, 2] > real[:, 0]).all() and (real[:, 3] > real[:, 1]).all()
        assert real[:, 0::2].max() <= sizes[b, 1] and real[:, 1::2].max() <= sizes[b, 0]
    assert proposals[1, : counts[1], 2].max() == pytest.approx(56.0)  # clipping happened


class _NoRefinement:
    """The reid head with its box deltas zeroed: a single-stage (unrefined) split pipeline."""

    def __init__(self, stage) -> None:  # noqa: ANN001
        self.stage = stage

    def run(self, feed):  # noqa: ANN001, ANN201
        out = dict(self.stage.run(feed))
        out["box_deltas"] = np.zeros_like(out["box_deltas"])
        return out


def _cases(manifest, scenes):  # noqa: ANN001
    """Batches (padded images, image_sizes or None) at several sizes, one of mixed sizes."""
    cases = []
    for (height, width), picks in (((128, 192), [0, 1]), ((96, 128), [2]), ((160, 160), [3, 4, 5])):
        cases.append((_fed(manifest, [scenes[i] for i in picks], height, width), None))
    # Two images of different sizes padded into one 128x192 batch, with their real sizes.
    padded = np.zeros((2, 3, 128, 192), np.float32)
    sizes = np.array([[128, 160], [96, 192]], np.float32)
    for b, (h, w) in enumerate(sizes.astype(int)):
        padded[b, :, :h, :w] = _fed(manifest, [scenes[b + 1]], h, w)[0]
    cases.append((padded, sizes))
    return cases


def _worst(one, split, manifest, scenes):  # noqa: ANN001
    """Worst box, score, cosine differences and rows compared over the cases (None: counts differ)."""
    compared = 0
    worst_box = worst_score = 0.0
    worst_cos = 1.0
    for batch, sizes in _cases(manifest, scenes):
        for a, b in zip(one(batch, sizes), split(batch, sizes), strict=True):
            if len(a.boxes) != len(b.boxes):
                return None
            if not len(a.boxes):
                continue
            # Same order (decreasing score), so rows can be compared one to one.
            worst_box = max(worst_box, float(np.abs(a.boxes - b.boxes).max()))
            worst_score = max(worst_score, float(np.abs(a.scores - b.scores).max()))
            worst_cos = min(worst_cos, float(np.sum(a.embeddings * b.embeddings, axis=1).min()))
            compared += len(a.boxes)
    return worst_box, worst_score, worst_cos, compared


@pytest.mark.slow
def test_split_composition_reproduces_the_detector(split_bundle):
    """numpy RoIAlign + ORT heads + two-stage post-processing == detector.onnx in ORT."""
    from personsearch_runtime.backends import create_backend
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.detection import OneGraphDetector, SplitDetector

    root, _, scenes = split_bundle
    manifest = Bundle.load(root).manifest
    one = OneGraphDetector(manifest=manifest, stage=create_backend("ort", root / "detector.onnx"))
    stages = {r: create_backend("ort", root / f"{r}.onnx") for r in ("backbone_rpn", "box_head", "reid_head")}
    result = _worst(one, SplitDetector(manifest=manifest, stages=stages), manifest, scenes)
    assert result is not None, "detection counts differ"
    worst_box, worst_score, worst_cos, compared = result
    assert compared >= 20, "too few detections to compare"
    assert worst_box <= BOX_TOL_PX, worst_box
    assert worst_score <= SCORE_TOL, worst_score
    assert worst_cos >= MIN_COSINE, worst_cos
    print(
        f"split vs detector: {compared} detections, worst box {worst_box:.2e} px, "
        f"score {worst_score:.2e}, min cosine {worst_cos:.8f}"
    )
    # The comparison is sensitive to stage 2: without the reid head's refinement it fails.
    unrefined = {**stages, "reid_head": _NoRefinement(stages["reid_head"])}
    result = _worst(one, SplitDetector(manifest=manifest, stages=unrefined), manifest, scenes)
    assert result is None or result[0] > BOX_TOL_PX


@pytest.mark.needs_cuda
def test_device_split_pipeline_reproduces_the_detector(split_bundle):
    """CuPy + our NVRTC RoIAlign between the split graphs (ORT through the host) == detector.onnx."""
    pytest.importorskip("cupy")
    from personsearch_runtime.backends import create_backend
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.detection import OneGraphDetector
    from personsearch_runtime.gpu.device_pipeline import device_split_detector

    root, _, scenes = split_bundle
    manifest = Bundle.load(root).manifest
    one = OneGraphDetector(manifest=manifest, stage=create_backend("ort", root / "detector.onnx"))
    stages = {r: create_backend("ort", root / f"{r}.onnx") for r in ("backbone_rpn", "box_head", "reid_head")}
    detect = device_split_detector(manifest=manifest, stages=stages, device="cuda")
    result = _worst(one, detect, manifest, scenes)
    assert result is not None, "detection counts differ"
    worst_box, worst_score, worst_cos, compared = result
    assert compared >= 20
    assert worst_box <= BOX_TOL_PX and worst_score <= SCORE_TOL and worst_cos >= MIN_COSINE, result
