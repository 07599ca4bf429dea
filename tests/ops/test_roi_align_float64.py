"""float64 RoIAlign agrees with torchvision's float64 kernel to 1e-10 (no float32 rounding anywhere).

The rois here are random float64 values that float32 cannot represent, and the spatial scales
include ones that are not powers of two, so a float32 cast of the rois, the scale, a bin size or
the level mapping shows up as errors of ~1e-6 rather than ~1e-15.
"""

from __future__ import annotations

import personsearch_ops
import pytest
import torch
import torchvision
from personsearch_ops import extension
from torchvision.ops import MultiScaleRoIAlign

needs_ops = pytest.mark.skipif(not personsearch_ops.has_ops(), reason="personsearch_ops._C is not built")

TOL = 1e-10


def random_rois(num: int, batch: int, width: float, height: float, seed: int) -> torch.Tensor:
    """[num, 5] float64 rois with arbitrary (non-float32) coordinates, partly or wholly outside the image."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.empty(num, dtype=torch.float64).uniform_(-0.4 * width, 1.1 * width, generator=g)
    y1 = torch.empty(num, dtype=torch.float64).uniform_(-0.4 * height, 1.1 * height, generator=g)
    w = torch.empty(num, dtype=torch.float64).uniform_(0.01, 0.9 * width, generator=g)
    h = torch.empty(num, dtype=torch.float64).uniform_(0.01, 0.9 * height, generator=g)
    b = torch.randint(0, batch, (num,), generator=g).to(torch.float64)
    rois = torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1)
    assert not torch.equal(rois[:, 1:], rois[:, 1:].float().double()), "rois must not be float32-exact"
    return rois


def features(shape=(2, 4, 13, 17), seed=0, channels_last=False) -> torch.Tensor:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
@pytest.mark.parametrize(
    ("spatial_scale", "output_size"), [(1.0, (1, 1)), (0.3, (3, 4)), (1 / 3, (7, 7)), (0.0625, (2, 5))]
)
def test_forward_matches_torchvision(channels_last, aligned, sampling_ratio, spatial_scale, output_size):
    x = features(channels_last=channels_last)
    rois = random_rois(24, 2, 17 / spatial_scale, 13 / spatial_scale, seed=sampling_ratio + 10)
    ours = personsearch_ops.roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned=aligned)
    theirs = torchvision.ops.roi_align(x, rois, output_size, spatial_scale, sampling_ratio, aligned)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)


def test_list_of_boxes_keeps_float64():
    x = features()
    rois = random_rois(10, 2, 40, 30, seed=3)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    ours = personsearch_ops.roi_align(x, boxes, (3, 3), 0.37, 2, aligned=True)
    theirs = torchvision.ops.roi_align(x, boxes, (3, 3), 0.37, 2, True)
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(False, 0), (True, 2), (False, 3)])
def test_backward_matches_torchvision(channels_last, aligned, sampling_ratio):
    x = features(seed=5, channels_last=channels_last)
    rois = random_rois(16, 2, 17 / 0.3, 13 / 0.3, seed=6)
    grad_out = torch.randn(16, 4, 3, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ours_x = x.detach().clone().requires_grad_(True)
    personsearch_ops.roi_align(ours_x, rois, (3, 4), 0.3, sampling_ratio, aligned=aligned).backward(grad_out)
    theirs_x = x.detach().clone().requires_grad_(True)
    torchvision.ops.roi_align(theirs_x, rois, (3, 4), 0.3, sampling_ratio, aligned).backward(grad_out)
    assert ours_x.grad.dtype == torch.float64
    torch.testing.assert_close(ours_x.grad, theirs_x.grad, atol=TOL, rtol=0)


@needs_ops
def test_gradcheck_with_non_float32_rois():
    x = features(shape=(1, 2, 6, 7), seed=8).requires_grad_(True)
    rois = random_rois(4, 1, 7 / 0.7, 6 / 0.7, seed=9)
    assert torch.autograd.gradcheck(
        lambda t: personsearch_ops.roi_align(t, rois, (2, 3), 0.7, 0, aligned=True), (x,), fast_mode=True
    )


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_multi_level_matches_multiscale_roi_align(sampling_ratio):
    height, width, strides = 128, 160, (4, 8, 16, 32)
    g = torch.Generator().manual_seed(11)
    levels = [torch.randn(2, 3, height // s, width // s, generator=g, dtype=torch.float64) for s in strides]
    rois = random_rois(40, 2, width, height, seed=12)
    names = [f"p{i}" for i in range(len(strides))]
    pooler = MultiScaleRoIAlign(names, output_size=5, sampling_ratio=sampling_ratio)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i).squeeze(1) for i in range(2)])
    theirs = pooler(dict(zip(names, levels, strict=True)), boxes, [(height, width)] * 2)
    ours = personsearch_ops.multi_level_roi_align(
        levels, rois, 5, sampling_ratio=sampling_ratio, aligned=False, strides=strides
    )
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours[order], theirs, atol=TOL, rtol=0)


def test_fallback_keeps_float64(monkeypatch):
    monkeypatch.setattr(extension, "_LOADED", False)
    monkeypatch.setattr(extension, "_warned", True)
    x = features(seed=13)
    rois = random_rois(12, 2, 60, 45, seed=14)
    ours = personsearch_ops.roi_align(x, rois, (4, 4), 0.29, 0, aligned=True)
    theirs = torchvision.ops.roi_align(x, rois, (4, 4), 0.29, 0, True)
    torch.testing.assert_close(ours, theirs, atol=TOL, rtol=0)


@needs_ops
def test_compiled_op_takes_rois_in_the_features_precision():
    x = features()
    rois = random_rois(3, 2, 40, 30, seed=15)
    op = torch.ops.personsearch_ops.roi_align
    with pytest.raises(RuntimeError, match="rois must be float64 for Double features, got Float"):
        op(x, rois.float(), 1.0, 2, 2, 2, True)
    with pytest.raises(RuntimeError, match="rois must be float32 for Float features, got Double"):
        op(x.float(), rois, 1.0, 2, 2, 2, True)
