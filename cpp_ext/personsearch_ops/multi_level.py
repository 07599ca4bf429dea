"""Multi-level (FPN) RoIAlign with the level mapping done inside the kernel.

Each RoI is pooled from the pyramid level torchvision's LevelMapper assigns it, in one kernel
launch: no per-level split, gather or scatter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from personsearch_ops import extension
from personsearch_ops._validation import (
    batch_indices_checked_on_host,
    check_batch_indices,
    check_features,
    in_range_rows,
    is_channels_last,
    output_hw,
    rois_tensor,
    rois_with_safe_batch_indices,
    zero_out_of_range,
)
from personsearch_ops.roi_align import torchvision_roi_align

_OP_NAME = "personsearch_ops.multi_level_roi_align"
#: torchvision LevelMapper's epsilon (added after log2, as current torchvision does).
LEVEL_EPS = 1e-6


def pyramid_levels(spatial_scales: Sequence[float]) -> tuple[int, int]:
    """Return (k_min, k_max), the pyramid levels of consecutive power-of-two scales.

    As torchvision's MultiScaleRoIAlign: level k has scale 2**-k (stride 2**k).

    Args:
        spatial_scales: one scale per level, finest first, e.g. (1/4, 1/8, 1/16, 1/32).

    Returns:
        (k_min, k_max), e.g. (2, 5).

    Raises:
        ValueError: if a scale is not a power of two or the levels are not consecutive.
    """
    if len(spatial_scales) == 0:
        raise ValueError(f"{_OP_NAME}: needs at least one spatial scale")
    levels = []
    for scale in spatial_scales:
        if not scale > 0:
            raise ValueError(f"{_OP_NAME}: spatial scales must be positive, got {list(spatial_scales)}")
        k = -math.log2(scale)
        if abs(k - round(k)) > 1e-6:
            raise ValueError(
                f"{_OP_NAME}: spatial scale {scale} is not a power of two; the level mapping needs "
                "scales 2**-k (strides 2**k)"
            )
        levels.append(round(k))
    if levels != list(range(levels[0], levels[0] + len(levels))):
        raise ValueError(
            f"{_OP_NAME}: levels must be consecutive and finest first, got strides {[2**k for k in levels]}"
        )
    return levels[0], levels[-1]


def map_roi_levels(
    boxes: torch.Tensor,
    k_min: int,
    k_max: int,
    *,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """Assign each box a pyramid level index with torchvision's LevelMapper.

    level = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6), clamped to
    [k_min, k_max], returned as level - k_min. Computed in the boxes' dtype like torchvision:
    float64 for float64 boxes, float32 for every other dtype.

    Args:
        boxes: [K, 4] (x1, y1, x2, y2) image-pixel boxes.
        k_min: finest level present.
        k_max: coarsest level present.
        canonical_scale: box size that maps to canonical_level (ImageNet 224).
        canonical_level: level of a canonical_scale box.

    Returns:
        [K] int64 indices into the level list.
    """
    boxes = boxes.to(torch.float64 if boxes.dtype == torch.float64 else torch.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    s = torch.sqrt(area)
    levels = torch.floor(
        canonical_level + torch.log2(s / canonical_scale) + torch.tensor(LEVEL_EPS, dtype=s.dtype)
    )
    levels = torch.clamp(levels, min=k_min, max=k_max)
    return (levels.to(torch.int64) - k_min).to(torch.int64)


def multi_level_roi_align(
    features_by_level: Sequence[torch.Tensor],
    rois: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | Sequence[int],
    *,
    sampling_ratio: int,
    aligned: bool,
    spatial_scales: Sequence[float] | None = None,
    strides: Sequence[int] | None = None,
    canonical_scale: float = 224.0,
    canonical_level: int = 4,
) -> torch.Tensor:
    """RoIAlign over a feature pyramid, each RoI pooled from its own level in one kernel.

    Equivalent to torchvision's MultiScaleRoIAlign given the same scales (which it infers
    from image sizes; pass them explicitly here).

    Args:
        features_by_level: L maps [N, C, H_l, W_l], finest first, same dtype, device, N, C
            and memory format (contiguous or channels-last).
        rois: [K, 5] rows (batch_index, x1, y1, x2, y2) in image pixels, or a list of N
            [L_i, 4] tensors.
        output_size: PH = PW = output_size, or (PH, PW).
        sampling_ratio: samples per bin and axis; <= 0 adaptive.
        aligned: half-pixel shift (torchvision's MultiScaleRoIAlign uses False).
        spatial_scales: one scale per level (e.g. 1/4, 1/8, 1/16, 1/32); powers of two,
            consecutive. Give this or ``strides``.
        strides: one stride per level (e.g. 4, 8, 16, 32), instead of spatial_scales.
        canonical_scale: LevelMapper canonical box size (224).
        canonical_level: LevelMapper canonical level (4).

    Returns:
        [K, C, PH, PW] in the features' dtype (channels-last strides for channels-last input).
        On CUDA, a RoI whose batch index is outside [0, N) (or NaN) pools zeros and gets no
        gradient, as in :func:`personsearch_ops.roi_align`.

    Raises:
        ValueError, TypeError: for malformed arguments, or out-of-range batch indices of CPU
            rois. RuntimeError: more than 8 levels on CUDA (the kernels take the level table
            as a kernel argument of that capacity).
    """
    if isinstance(features_by_level, torch.Tensor) or len(features_by_level) == 0:
        raise ValueError(f"{_OP_NAME}: features_by_level must be a non-empty list of [N, C, H, W] tensors")
    features = list(features_by_level)
    for i, f in enumerate(features):
        check_features(f, _OP_NAME, f"features_by_level[{i}]")
        if (
            f.dtype != features[0].dtype
            or f.device != features[0].device
            or f.shape[:2] != features[0].shape[:2]
        ):
            raise ValueError(
                f"{_OP_NAME}: every level must share dtype, device, batch size and channels; level {i} is "
                f"{tuple(f.shape)} {f.dtype} on {f.device}, level 0 is {tuple(features[0].shape)} "
                f"{features[0].dtype} on {features[0].device}"
            )
    if (spatial_scales is None) == (strides is None):
        raise ValueError(f"{_OP_NAME}: give exactly one of spatial_scales or strides")
    scales = (
        [float(s) for s in spatial_scales]
        if spatial_scales is not None
        else [1.0 / float(s) for s in strides]
    )
    if len(scales) != len(features):
        raise ValueError(f"{_OP_NAME}: {len(features)} feature levels but {len(scales)} scales/strides")
    k_min, k_max = pyramid_levels(scales)
    if not isinstance(aligned, bool):
        raise TypeError(f"{_OP_NAME}: aligned must be a bool, got {aligned!r}")
    pooled_h, pooled_w = output_hw(output_size, _OP_NAME)
    rois_k5 = rois_tensor(rois, features[0], _OP_NAME)
    if extension.has_ops():
        # One memory format for all levels (the kernel reads them with one layout).
        if is_channels_last(features[0]):
            features = [f.contiguous(memory_format=torch.channels_last) for f in features]
        else:
            features = [f.contiguous() for f in features]
        return torch.ops.personsearch_ops.multi_level_roi_align(
            features,
            rois_k5,
            scales,
            pooled_h,
            pooled_w,
            int(sampling_ratio),
            aligned,
            k_min,
            float(canonical_scale),
            float(canonical_level),
        )
    extension.warn_fallback_once(_OP_NAME)
    batch = features[0].shape[0]
    in_range = None
    if batch_indices_checked_on_host(rois_k5):
        check_batch_indices(rois_k5, batch, _OP_NAME)
    else:
        in_range = in_range_rows(rois_k5, batch)
        rois_k5 = rois_with_safe_batch_indices(rois_k5, in_range)
    levels = map_roi_levels(
        rois_k5[:, 1:], k_min, k_max, canonical_scale=canonical_scale, canonical_level=canonical_level
    )
    out = features[0].new_zeros((rois_k5.shape[0], features[0].shape[1], pooled_h, pooled_w))
    for index, (f, scale) in enumerate(zip(features, scales, strict=True)):
        # The per-level split reads each level's RoI count back to the host (a fallback-only
        # cost: the compiled op maps levels inside its kernel).
        selected = torch.nonzero(levels == index).squeeze(1)
        if selected.numel():
            out[selected] = torchvision_roi_align(
                f, rois_k5[selected], (pooled_h, pooled_w), scale, sampling_ratio, aligned
            )
    return out if in_range is None else zero_out_of_range(out, in_range)


if extension.has_ops():

    @torch.library.register_fake("personsearch_ops::multi_level_roi_align")
    def _multi_level_fake(
        features,
        rois,
        spatial_scales,
        pooled_height,
        pooled_width,
        sampling_ratio,
        aligned,
        k_min,
        canonical_scale,
        canonical_level,
    ):
        torch._check(len(features) > 0, lambda: "needs at least one level")
        first = features[0]
        fmt = torch.channels_last if is_channels_last(first) else torch.contiguous_format
        return first.new_empty((rois.shape[0], first.shape[1], pooled_height, pooled_width)).contiguous(
            memory_format=fmt
        )

    @torch.library.register_fake("personsearch_ops::multi_level_roi_align_backward")
    def _multi_level_backward_fake(
        grad,
        rois,
        spatial_scales,
        pooled_height,
        pooled_width,
        sampling_ratio,
        aligned,
        k_min,
        canonical_scale,
        canonical_level,
        batch_size,
        channels,
        heights,
        widths,
        channels_last,
    ):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return [
            grad.new_empty((batch_size, channels, h, w)).contiguous(memory_format=fmt)
            for h, w in zip(heights, widths, strict=True)
        ]

    def _setup_context(ctx, inputs, output):
        features, rois, *args = inputs
        ctx.save_for_backward(rois)
        ctx.batch, ctx.channels = features[0].shape[0], features[0].shape[1]
        ctx.heights = [f.shape[2] for f in features]
        ctx.widths = [f.shape[3] for f in features]
        ctx.channels_last = is_channels_last(features[0])
        ctx.args = args

    def _backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        grads = torch.ops.personsearch_ops.multi_level_roi_align_backward(
            grad, rois, *ctx.args, ctx.batch, ctx.channels, ctx.heights, ctx.widths, ctx.channels_last
        )
        return list(grads), None, None, None, None, None, None, None, None, None

    torch.library.register_autograd(
        "personsearch_ops::multi_level_roi_align", _backward, setup_context=_setup_context
    )
