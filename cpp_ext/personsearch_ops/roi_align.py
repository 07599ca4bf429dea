"""Single-level RoIAlign: the public wrapper, autograd and fake (meta) registrations.

Semantics are torchvision.ops.roi_align's (see the kernel source header for the exact rules).
"""

from __future__ import annotations

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

_OP_NAME = "personsearch_ops.roi_align"


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor | Sequence[torch.Tensor],
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    *,
    aligned: bool,
) -> torch.Tensor:
    """Pool a fixed-size feature patch per RoI with bilinear sampling (RoIAlign, average mode).

    Args:
        features: [N, C, H, W] float32, float16, bfloat16 or float64 feature map; contiguous
            or channels-last (channels-last takes the faster, coalesced kernels).
        rois: [K, 5] float rows (batch_index, x1, y1, x2, y2) in image pixels, or a list of N
            [L_i, 4] (x1, y1, x2, y2) tensors, one per image. Converted to float32 (float64
            for float64 features).
        output_size: PH = PW = output_size, or (PH, PW).
        spatial_scale: image-to-feature scale, e.g. 1/16 for a stride-16 map.
        sampling_ratio: bilinear samples per bin and axis; <= 0 means adaptive
            (ceil(roi_size / output_size) per RoI).
        aligned: True shifts by half a pixel (Detectron2 ROIAlignV2, ONNX half_pixel); False is
            torchvision's legacy default (RoI size clamped to >= 1 feature pixel). Required.

    Returns:
        [K, C, PH, PW] tensor of the features' dtype (channels-last strides when the
        features are channels-last). Coordinates and accumulation are float32 (float64 for
        float64 features). Bins whose samples all fall outside the map are 0. On CUDA, a RoI
        whose batch index is outside [0, N) (or NaN) pools zeros and gets no gradient:
        checking would read the rois back to the host and stall the GPU on every call.

    Raises:
        ValueError, TypeError: for malformed arguments; ValueError/RuntimeError for a RoI whose
            batch index is outside [0, N) when the rois are on the CPU.
    """
    check_features(features, _OP_NAME)
    pooled_h, pooled_w = output_hw(output_size, _OP_NAME)
    rois_k5 = rois_tensor(rois, features, _OP_NAME)
    if not isinstance(aligned, bool):
        raise TypeError(f"{_OP_NAME}: aligned must be a bool, got {aligned!r}")
    if not spatial_scale > 0:
        raise ValueError(f"{_OP_NAME}: spatial_scale must be positive, got {spatial_scale!r}")
    if extension.has_ops():
        return torch.ops.personsearch_ops.roi_align(
            features, rois_k5, float(spatial_scale), pooled_h, pooled_w, int(sampling_ratio), aligned
        )
    extension.warn_fallback_once(_OP_NAME)
    batch = features.shape[0]
    if batch_indices_checked_on_host(rois_k5):
        check_batch_indices(rois_k5, batch, _OP_NAME)
        return torchvision_roi_align(
            features, rois_k5, (pooled_h, pooled_w), spatial_scale, sampling_ratio, aligned
        )
    # Device rois: the compiled kernels' behaviour, built from device-side tensor ops.
    in_range = in_range_rows(rois_k5, batch)
    pooled = torchvision_roi_align(
        features,
        rois_with_safe_batch_indices(rois_k5, in_range),
        (pooled_h, pooled_w),
        spatial_scale,
        sampling_ratio,
        aligned,
    )
    return zero_out_of_range(pooled, in_range)


def torchvision_roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """Run torchvision's roi_align with our dtype contract (the fallback path).

    Args:
        features: [N, C, H, W] feature map.
        rois: [K, 5] rois (float32, or float64 with float64 features).
        output_size: (PH, PW).
        spatial_scale: image-to-feature scale.
        sampling_ratio: samples per bin and axis (<= 0 adaptive).
        aligned: half-pixel shift.

    Returns:
        [K, C, PH, PW] in the features' dtype; half/bfloat16 are computed in float32 (as
        torchvision's autocast kernel does).
    """
    from torchvision.ops import roi_align as tv_roi_align

    compute = torch.float64 if features.dtype == torch.float64 else torch.float32
    out = tv_roi_align(
        features.to(compute),
        rois.to(compute),
        output_size,
        float(spatial_scale),
        int(sampling_ratio),
        aligned,
    )
    return out.to(features.dtype)


if extension.has_ops():

    @torch.library.register_fake("personsearch_ops::roi_align")
    def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
        torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "rois must be [K, 5]")
        fmt = torch.channels_last if is_channels_last(input) else torch.contiguous_format
        return input.new_empty((rois.shape[0], input.shape[1], pooled_height, pooled_width)).contiguous(
            memory_format=fmt
        )

    @torch.library.register_fake("personsearch_ops::roi_align_backward")
    def _roi_align_backward_fake(
        grad,
        rois,
        spatial_scale,
        pooled_height,
        pooled_width,
        sampling_ratio,
        aligned,
        batch_size,
        channels,
        height,
        width,
        channels_last,
    ):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return grad.new_empty((batch_size, channels, height, width)).contiguous(memory_format=fmt)

    def _setup_context(ctx, inputs, output):
        features, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
        ctx.save_for_backward(rois)
        ctx.feature_shape = tuple(features.shape)
        ctx.channels_last = is_channels_last(features)
        ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)

    def _backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        batch, channels, height, width = ctx.feature_shape
        grad_features = torch.ops.personsearch_ops.roi_align_backward(
            grad, rois, *ctx.args, batch, channels, height, width, ctx.channels_last
        )
        return grad_features, None, None, None, None, None, None

    torch.library.register_autograd("personsearch_ops::roi_align", _backward, setup_context=_setup_context)
