"""Box decoding, clipping, NMS and a reference RoIAlign, written once for numpy and CuPy.

Every function takes its array module from its inputs (numpy arrays -> numpy, CuPy
arrays -> CuPy), so the split pipeline runs the same code on the CPU and on the device.
Semantics follow torchvision: ``BoxCoder.decode_single`` (with ``bbox_xform_clip``),
``clip_boxes_to_image``, ``remove_small_boxes``, ``batched_nms`` (IoU strictly greater
than the threshold suppresses) and ``roi_align`` (the reference here is numpy only; the
device uses our CUDA kernel).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from personsearch_runtime.bundle import BoxCoderSpec, RoIAlignSpec

__all__ = [
    "array_module",
    "batched_nms",
    "box_iou",
    "clip_boxes",
    "decode_boxes",
    "nms",
    "roi_align_reference",
]


def array_module(array: Any) -> Any:
    """Return ``cupy`` for CuPy arrays (already imported if one exists) and numpy otherwise."""
    if type(array).__module__.startswith("cupy") and "cupy" in sys.modules:
        return sys.modules["cupy"]
    return np


def decode_boxes(proposals: Any, deltas: Any, coder: BoxCoderSpec) -> Any:
    """Apply Faster R-CNN deltas.

    Args:
        proposals: [N, 4] float32 xyxy pixels.
        deltas: [N, 4] float32 (dx, dy, dw, dh) scaled by ``coder.weights``.
        coder: Weights and the dw/dh clip.

    Returns:
        [N, 4] float32 xyxy pixels.
    """
    xp = array_module(proposals)
    wx, wy, ww, wh = coder.weights
    widths = proposals[:, 2] - proposals[:, 0]
    heights = proposals[:, 3] - proposals[:, 1]
    cx = proposals[:, 0] + 0.5 * widths
    cy = proposals[:, 1] + 0.5 * heights
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = xp.minimum(deltas[:, 2] / ww, coder.clip)
    dh = xp.minimum(deltas[:, 3] / wh, coder.clip)
    pcx, pcy = dx * widths + cx, dy * heights + cy
    pw, ph = xp.exp(dw) * widths, xp.exp(dh) * heights
    return xp.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=1).astype(
        xp.float32
    )


def clip_boxes(boxes: Any, height: Any, width: Any) -> Any:
    """Clip [N, 4] xyxy boxes to [0, width] x [0, height].

    ``height`` and ``width`` are numbers, or [N, 1] arrays giving each box its own bounds.
    """
    xp = array_module(boxes)
    out = boxes.copy()
    out[:, 0::2] = xp.clip(out[:, 0::2], 0, width)
    out[:, 1::2] = xp.clip(out[:, 1::2], 0, height)
    return out


def box_iou(a: Any, b: Any) -> Any:
    """Pairwise IoU of [N, 4] and [M, 4] xyxy boxes -> [N, M] float32."""
    xp = array_module(a)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = xp.maximum(a[:, None, :2], b[None, :, :2])
    rb = xp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = xp.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    return (inter / xp.maximum(union, 1e-12)).astype(xp.float32)


def nms(boxes: Any, scores: Any, threshold: float) -> Any:
    """Greedy NMS; returns kept indices [K] int64 sorted by decreasing score.

    Greedy NMS is the fixed point of "a box survives unless a higher-scoring survivor
    overlaps it by more than ``threshold``". Iterating that rule from "everything
    survives" settles the first i boxes after i rounds and usually converges in a few,
    and every round is one matrix operation, so it runs on the device without a Python
    loop over boxes (one scalar is read back per round).
    """
    xp = array_module(boxes)
    n = int(boxes.shape[0])
    if n == 0:
        return xp.zeros((0,), xp.int64)
    order = xp.argsort(-scores, kind="stable") if xp is np else xp.argsort(-scores)
    sorted_boxes = boxes[order]
    over = box_iou(sorted_boxes, sorted_boxes) > threshold
    over &= xp.triu(xp.ones((n, n), dtype=bool), 1)
    keep = xp.ones((n,), dtype=bool)
    for _ in range(n):
        new_keep = ~xp.any(over & keep[:, None], axis=0)
        if bool(xp.all(new_keep == keep)):
            break
        keep = new_keep
    return order[xp.nonzero(keep)[0]].astype(xp.int64)


def batched_nms(boxes: Any, scores: Any, groups: Any, threshold: float) -> Any:
    """NMS applied independently per group (e.g. per image); kept indices sorted by score.

    Boxes of different groups are shifted apart so they never overlap (torchvision's
    coordinate trick), then one NMS runs over all of them.
    """
    xp = array_module(boxes)
    if int(boxes.shape[0]) == 0:
        return xp.zeros((0,), xp.int64)
    offset = groups.astype(xp.float32) * (boxes.max() + 1)
    return nms(boxes + offset[:, None], scores, threshold)


def _axis_weights(
    start: float, bin_size: float, grid: int, pooled: int, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear weights of every sample along one axis: ([pooled*grid, size], valid [pooled*grid])."""
    idx = np.arange(pooled * grid)
    p, i = idx // grid, idx % grid
    pos = start + p * bin_size + (i + 0.5) * bin_size / grid
    valid = (pos >= -1.0) & (pos <= size)
    pos = np.maximum(pos, 0.0)
    low = np.floor(pos).astype(np.int64)
    at_edge = low >= size - 1
    low = np.where(at_edge, size - 1, low)
    high = np.where(at_edge, size - 1, low + 1)
    pos = np.where(at_edge, low.astype(np.float64), pos)
    frac = pos - low
    weights = np.zeros((pooled * grid, size), np.float64)
    rows = np.arange(pooled * grid)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    weights[~valid] = 0.0
    return weights, valid


def roi_align_reference(features: np.ndarray, rois: np.ndarray, spec: RoIAlignSpec) -> np.ndarray:
    """RoIAlign (mode avg) in numpy with torchvision's semantics; the CPU path and the test oracle.

    Bilinear interpolation is separable, and a sample outside the map contributes zero on
    either axis, so each RoI is two small matrix products: ``Wy @ F @ Wx.T``.

    Args:
        features: [N, C, H, W] float32.
        rois: [K, 5] float32 rows (batch_index, x1, y1, x2, y2) in image pixels.
        spec: Output size, spatial scale, sampling ratio, aligned.

    Returns:
        [K, C, S, S] float32.
    """
    n, c, height, width = features.shape
    s = spec.output_size
    out = np.zeros((len(rois), c, s, s), np.float32)
    offset = 0.5 if spec.aligned else 0.0
    feats = np.asarray(features, np.float64)
    for k, roi in enumerate(np.asarray(rois, np.float64)):
        b = int(roi[0])
        if not 0 <= b < n:
            continue
        x1, y1, x2, y2 = (roi[1:] * np.float64(np.float32(spec.spatial_scale))) - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not spec.aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_w, bin_h = roi_w / s, roi_h / s
        gh = spec.sampling_ratio if spec.sampling_ratio > 0 else int(np.ceil(roi_h / s))
        gw = spec.sampling_ratio if spec.sampling_ratio > 0 else int(np.ceil(roi_w / s))
        if gh <= 0 or gw <= 0:
            continue
        wy, _ = _axis_weights(y1, bin_h, gh, s, height)
        wx, _ = _axis_weights(x1, bin_w, gw, s, width)
        # Only the rows/columns a RoI touches carry weight: slice them out first, so the
        # cost follows the RoI's size rather than the whole feature map's.
        rows, cols = np.nonzero(wy.any(axis=0))[0], np.nonzero(wx.any(axis=0))[0]
        if not len(rows) or not len(cols):
            continue
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        samples = np.einsum(
            "yh,chw,xw->cyx", wy[:, r0:r1], feats[b, :, r0:r1, c0:c1], wx[:, c0:c1], optimize=True
        )
        pooled = samples.reshape(c, s, gh, s, gw).sum(axis=(2, 4)) / max(gh * gw, 1)
        out[k] = pooled.astype(np.float32)
    return out
