"""Slow float64 RoIAlign reference written from the definition (tests only).

Definition (torchvision / Caffe2 RoIAlign, average mode): each RoI is scaled by
spatial_scale (and shifted by -0.5 when aligned), split into PH x PW bins; each bin averages
grid_h x grid_w bilinear samples at the sample-cell centres; grid = sampling_ratio, or
ceil(roi_size / pooled_size) when sampling_ratio <= 0; without `aligned` the RoI size is at
least 1; a sample outside [-1, H] x [-1, W] counts as 0, otherwise it is clamped into the map.
"""

from __future__ import annotations

import math

import numpy as np


def _bilinear(plane: np.ndarray, y: float, x: float) -> np.ndarray:
    """plane: [C, H, W] float64 -> [C] value at (y, x)."""
    _, height, width = plane.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(plane.shape[0])
    y = max(y, 0.0)
    x = max(x, 0.0)
    y0 = int(math.floor(y))
    x0 = int(math.floor(x))
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    hy, hx = 1.0 - ly, 1.0 - lx
    return (
        hy * hx * plane[:, y0, x0]
        + hy * lx * plane[:, y0, x1]
        + ly * hx * plane[:, y1, x0]
        + ly * lx * plane[:, y1, x1]
    )


def reference_roi_align(
    features: np.ndarray,
    rois: np.ndarray,
    pooled: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> np.ndarray:
    """features [N, C, H, W], rois [K, 5] -> [K, C, PH, PW], all float64."""
    features = np.asarray(features, dtype=np.float64)
    rois = np.asarray(rois, dtype=np.float64)
    ph_n, pw_n = pooled
    out = np.zeros((rois.shape[0], features.shape[1], ph_n, pw_n))
    offset = 0.5 if aligned else 0.0
    for k, roi in enumerate(rois):
        plane = features[int(roi[0])]
        x1, y1, x2, y2 = (roi[1:] * spatial_scale) - offset
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:
            roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
        bin_h, bin_w = roi_h / ph_n, roi_w / pw_n
        grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / ph_n)
        grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / pw_n)
        count = max(grid_h * grid_w, 1)
        for i in range(ph_n):
            for j in range(pw_n):
                acc = np.zeros(features.shape[1])
                for iy in range(grid_h):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = x1 + j * bin_w + (ix + 0.5) * bin_w / grid_w
                        acc += _bilinear(plane, y, x)
                out[k, :, i, j] = acc / count
    return out


def reference_levels(boxes: np.ndarray, k_min: int, k_max: int) -> np.ndarray:
    """torchvision LevelMapper (canonical 224 / level 4, eps 1e-6) in float32 -> [K] indices."""
    boxes = np.asarray(boxes, dtype=np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    with np.errstate(divide="ignore"):
        level = np.floor(np.float32(4) + np.log2(np.sqrt(area) / np.float32(224)) + np.float32(1e-6))
    return (np.clip(level, k_min, k_max) - k_min).astype(np.int64)
