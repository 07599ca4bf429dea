"""Argument checks and conversions shared by the RoIAlign wrappers."""

from __future__ import annotations

from collections.abc import Sequence

import torch

_FEATURE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_features(features: torch.Tensor, op_name: str, what: str = "features") -> None:
    """Raise ValueError/TypeError unless ``features`` is a floating [N, C, H, W] tensor.

    Args:
        features: tensor to check.
        op_name: public function name for the message.
        what: how the message names the argument.
    """
    if not isinstance(features, torch.Tensor):
        raise TypeError(
            f"{op_name}: {what} must be a torch.Tensor [N, C, H, W], got {type(features).__name__}"
        )
    if features.dim() != 4:
        raise ValueError(f"{op_name}: {what} must be [N, C, H, W], got shape {tuple(features.shape)}")
    if features.dtype not in _FEATURE_DTYPES:
        raise TypeError(
            f"{op_name}: {what} must be float32, float16, bfloat16 or float64, got {features.dtype}"
        )


def output_hw(output_size: int | Sequence[int], op_name: str) -> tuple[int, int]:
    """Return (pooled_height, pooled_width) from an int or a pair, checking positivity.

    Args:
        output_size: one int (square output) or (height, width).
        op_name: public function name for the message.

    Returns:
        (pooled_height, pooled_width).
    """
    if isinstance(output_size, int):
        hw = (output_size, output_size)
    else:
        hw = tuple(int(v) for v in output_size)
        if len(hw) != 2:
            raise ValueError(f"{op_name}: output_size must be an int or (height, width), got {output_size!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"{op_name}: output_size must be positive, got {output_size!r}")
    return hw[0], hw[1]


def rois_tensor(
    rois: torch.Tensor | Sequence[torch.Tensor], features: torch.Tensor, op_name: str
) -> torch.Tensor:
    """Return rois as a contiguous [K, 5] tensor on the features' device, in :func:`roi_dtype`.

    Args:
        rois: [K, 5] rows (batch_index, x1, y1, x2, y2), or a list with one [L_i, 4] (x1, y1,
            x2, y2) tensor per image (image i gets batch index i).
        features: the feature map (device and batch size are taken from it).
        op_name: public function name for the message.

    Returns:
        [K, 5] rois in image coordinates: float64 for float64 features, float32 otherwise.
    """
    dtype = roi_dtype(features)
    if isinstance(rois, (list, tuple)):
        for i, boxes in enumerate(rois):
            if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
                shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
                raise ValueError(
                    f"{op_name}: rois[{i}] must be an [L, 4] (x1, y1, x2, y2) tensor, got {shape}"
                )
        if len(rois) == 0:
            return torch.zeros((0, 5), dtype=dtype, device=features.device)
        index = torch.cat(
            [torch.full((b.shape[0], 1), float(i), dtype=dtype, device=b.device) for i, b in enumerate(rois)]
        )
        rois = torch.cat([index, torch.cat([b.to(dtype) for b in rois])], dim=1)
    if not isinstance(rois, torch.Tensor):
        raise TypeError(f"{op_name}: rois must be a [K, 5] tensor or a list of [L, 4] tensors")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"{op_name}: rois must be [K, 5] rows (batch_index, x1, y1, x2, y2), "
            f"got shape {tuple(rois.shape)}"
        )
    if not rois.is_floating_point():
        raise TypeError(f"{op_name}: rois must be a floating tensor, got {rois.dtype}")
    if rois.device != features.device:
        raise ValueError(f"{op_name}: rois are on {rois.device} but features are on {features.device}")
    return rois.to(dtype).contiguous()


def roi_dtype(features: torch.Tensor) -> torch.dtype:
    """Return the dtype the kernels take rois in for ``features``: never below float32.

    float64 features get float64 rois, so a float64 pooling rounds no coordinate to float32
    (and agrees with torchvision's float64 kernel to rounding); every other feature dtype
    gets float32 rois (box coordinates in half precision would be off by whole pixels).

    Args:
        features: [N, C, H, W] feature map.
    """
    return torch.float64 if features.dtype == torch.float64 else torch.float32


def batch_indices_checked_on_host(rois: torch.Tensor) -> bool:
    """Return True when the batch indices of ``rois`` are validated on the host (which reads them).

    Only CPU tensors are. Reading a CUDA tensor's values copies them to the host and blocks
    until the device has caught up, on every forward and backward call, so device rois get
    the shape, dtype and device checks alone; an out-of-range RoI then pools zeros and
    receives no gradient (the CUDA kernels skip it; the torchvision fallback masks it with
    :func:`in_range_rows`). The compiled op's C++ check follows the same rule.

    Args:
        rois: [K, 5] rois.
    """
    return rois.device.type == "cpu"


def check_batch_indices(rois: torch.Tensor, batch: int, op_name: str) -> None:
    """Raise ValueError when a RoI's batch index is outside [0, batch) (fallback path, CPU rois).

    The compiled ops perform the same check in C++. Call it only where
    :func:`batch_indices_checked_on_host` is True: it reads the indices.

    Args:
        rois: [K, 5] rois on the CPU.
        batch: number of images in the feature batch.
        op_name: public function name for the message.
    """
    if rois.shape[0] == 0:
        return
    index = rois[:, 0].to(torch.int64)
    bad = (index < 0) | (index >= batch)
    if bool(bad.any()):
        k = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{op_name}: roi {k} has batch index {float(rois[k, 0])} but the features hold {batch} image(s); "
            f"batch indices must lie in [0, {batch - 1}]"
        )


def in_range_rows(rois: torch.Tensor, batch: int) -> torch.Tensor:
    """Return [K] bool, True where a RoI's batch index truncates into [0, batch), without a host read.

    The CUDA kernels' rule: in range iff -1 < index < batch, so a NaN index is out of range.

    Args:
        rois: [K, 5] rois.
        batch: number of images in the feature batch.
    """
    index = rois[:, 0]
    return (index > -1) & (index < batch)


def rois_with_safe_batch_indices(rois: torch.Tensor, in_range: torch.Tensor) -> torch.Tensor:
    """Return ``rois`` with every out-of-range batch index replaced by 0.

    torchvision's kernels index the batch with the raw value, so masked rows must still
    point at a real image; their output is zeroed afterwards.

    Args:
        rois: [K, 5] rois.
        in_range: [K] bool from :func:`in_range_rows`.
    """
    index = torch.where(in_range, rois[:, 0], 0.0)
    return torch.cat([index.unsqueeze(1), rois[:, 1:]], dim=1)


def zero_out_of_range(pooled: torch.Tensor, in_range: torch.Tensor) -> torch.Tensor:
    """Return ``pooled`` [K, C, PH, PW] with the rows of out-of-range RoIs set to 0 (and no gradient).

    Args:
        pooled: pooled features.
        in_range: [K] bool from :func:`in_range_rows`.
    """
    return torch.where(in_range.view(-1, 1, 1, 1), pooled, 0.0)


def is_channels_last(features: torch.Tensor) -> bool:
    """Return True when the kernels take the channels-last path (mirrors the C++ rule).

    Args:
        features: [N, C, H, W] tensor.
    """
    return (not features.is_contiguous()) and features.is_contiguous(memory_format=torch.channels_last)
