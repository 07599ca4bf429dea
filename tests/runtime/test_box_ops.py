from __future__ import annotations

import math

import numpy as np
import pytest
from personsearch_runtime.box_ops import batched_nms, box_iou, decode_boxes, nms, roi_align_reference
from personsearch_runtime.bundle import BoxCoderSpec, RoIAlignSpec


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    for i in order:
        if all(box_iou(boxes[[i]], boxes[[j]])[0, 0] <= thr for j in keep):
            keep.append(int(i))
    return keep


def test_nms_matches_a_plain_greedy_loop() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 50, (40, 2))
        wh = rng.uniform(5, 30, (40, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, 40).astype(np.float32)
        assert nms(boxes, scores, 0.4).tolist() == _greedy_nms(boxes, scores, 0.4)


def test_batched_nms_keeps_groups_apart() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    groups = np.array([0, 1, 0])
    assert sorted(batched_nms(boxes, scores, groups, 0.5).tolist()) == [0, 1]


def test_decode_boxes_hand_computed() -> None:
    proposals = np.array([[10, 20, 30, 60]], np.float32)  # w 20, h 40, centre (20, 40)
    deltas = np.array([[10 * 0.5, 10 * -0.25, 5 * math.log(2), 5 * 0.0]], np.float32)
    out = decode_boxes(proposals, deltas, BoxCoderSpec(weights=(10, 10, 5, 5), clip=math.log(1000 / 16)))
    # centre (20 + 0.5*20, 40 - 0.25*40) = (30, 30); size (40, 40)
    np.testing.assert_allclose(out, [[10, 10, 50, 50]], atol=1e-4)


def test_roi_align_constant_and_ramp() -> None:
    feats = np.full((1, 2, 8, 8), 3.0, np.float32)
    rois = np.array([[0, 1, 1, 5, 5]], np.float32)
    out = roi_align_reference(feats, rois, RoIAlignSpec(output_size=2, spatial_scale=1.0, sampling_ratio=2))
    np.testing.assert_allclose(out, 3.0)
    # f(y, x) = x is linear, so every bin's mean is the x of its centre (aligned: shift by 0.5).
    ramp = np.broadcast_to(np.arange(16, dtype=np.float32), (1, 1, 16, 16)).copy()
    out = roi_align_reference(
        ramp,
        np.array([[0, 2.5, 2.5, 10.5, 10.5]], np.float32),
        RoIAlignSpec(output_size=2, spatial_scale=1.0, sampling_ratio=2, aligned=True),
    )
    np.testing.assert_allclose(out[0, 0], [[4.0, 8.0], [4.0, 8.0]], atol=1e-5)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_matches_torchvision(aligned: bool, sampling_ratio: int) -> None:
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((2, 3, 13, 17)).astype(np.float32)
    xy = rng.uniform(-20, 200, (12, 2))
    wh = rng.uniform(0, 120, (12, 2))
    rois = np.concatenate([rng.integers(0, 2, (12, 1)), xy, xy + wh], axis=1).astype(np.float32)
    rois[0, 1:] = [5, 5, 5, 5]  # degenerate
    spec = RoIAlignSpec(output_size=4, spatial_scale=1 / 8, sampling_ratio=sampling_ratio, aligned=aligned)
    ours = roi_align_reference(feats, rois, spec)
    ref = tv_ops.roi_align(
        torch.from_numpy(feats),
        torch.from_numpy(rois),
        output_size=4,
        spatial_scale=1 / 8,
        sampling_ratio=sampling_ratio,
        aligned=aligned,
    ).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
