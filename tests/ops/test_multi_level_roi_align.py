"""multi_level_roi_align: in-kernel level mapping vs torchvision's MultiScaleRoIAlign."""

from __future__ import annotations

import warnings

import numpy as np
import personsearch_ops
import pytest
import torch
from personsearch_ops import extension
from roi_align_reference import reference_levels, reference_roi_align
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import LevelMapper

needs_ops = pytest.mark.skipif(not personsearch_ops.has_ops(), reason="personsearch_ops._C is not built")

IMAGE_H, IMAGE_W = 256, 320
STRIDES = (4, 8, 16, 32)


def pyramid(dtype=torch.float32, channels_last=False, channels=6, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    levels = []
    for s in STRIDES:
        f = torch.randn(batch, channels, IMAGE_H // s, IMAGE_W // s, generator=g, dtype=torch.float64).to(
            dtype
        )
        levels.append(f.contiguous(memory_format=torch.channels_last) if channels_last else f)
    return levels


def pyramid_rois(num=40, batch=2, seed=1):
    """Boxes of every size class (so every level is used), in 1/8-px steps, plus edge cases."""
    g = torch.Generator().manual_seed(seed)
    size = torch.exp(torch.empty(num).uniform_(np.log(8), np.log(600), generator=g))
    aspect = torch.empty(num).uniform_(0.5, 2.0, generator=g)
    w = torch.round(size * aspect.sqrt() * 8) / 8
    h = torch.round(size / aspect.sqrt() * 8) / 8
    x1 = torch.round(torch.empty(num).uniform_(-30, IMAGE_W - 20, generator=g) * 8) / 8
    y1 = torch.round(torch.empty(num).uniform_(-30, IMAGE_H - 20, generator=g) * 8) / 8
    b = torch.randint(0, batch, (num,), generator=g).float()
    rois = torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1)
    # Exactly on the level thresholds (sqrt(area) = 112, 224, 448), zero-area, degenerate.
    extra = torch.tensor(
        [
            [0, 10, 10, 122, 122],
            [1, 0, 0, 224, 224],
            [0, 5, 5, 453, 453],
            [1, 7, 7, 7, 9],
            [0, 40, 40, 30, 20],
        ],
        dtype=torch.float32,
    )
    return torch.cat([rois, extra])


def test_map_roi_levels_matches_torchvision_level_mapper():
    rois = pyramid_rois()
    ours = personsearch_ops.map_roi_levels(rois[:, 1:], 2, 5)
    theirs = LevelMapper(2, 5)([rois[:4, 1:], rois[4:, 1:]])
    assert torch.equal(ours, theirs.to(torch.int64))
    assert np.array_equal(ours.numpy(), reference_levels(rois[:, 1:].numpy(), 2, 5))
    # threshold boxes: 112 -> level 3, 224 -> level 4, 448+ -> level 5 (indices 1, 2, 3)
    assert ours[-5:-2].tolist() == [1, 2, 3]


def test_pyramid_levels():
    assert personsearch_ops.pyramid_levels([1 / 4, 1 / 8, 1 / 16, 1 / 32]) == (2, 5)
    with pytest.raises(ValueError, match="power of two"):
        personsearch_ops.pyramid_levels([1 / 3])
    with pytest.raises(ValueError, match="consecutive"):
        personsearch_ops.pyramid_levels([1 / 4, 1 / 16])


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_picks_the_mapped_level(channels_last):
    # Level l filled with the constant l: the pooled value of every in-image RoI is its level.
    levels = [torch.full((2, 3, IMAGE_H // s, IMAGE_W // s), float(i)) for i, s in enumerate(STRIDES)]
    if channels_last:
        levels = [f.contiguous(memory_format=torch.channels_last) for f in levels]
    rois = pyramid_rois()
    inside = (rois[:, 1] >= 0) & (rois[:, 2] >= 0) & (rois[:, 3] <= IMAGE_W) & (rois[:, 4] <= IMAGE_H)
    rois = rois[inside & (rois[:, 3] > rois[:, 1]) & (rois[:, 4] > rois[:, 2])]
    out = personsearch_ops.multi_level_roi_align(
        levels, rois, 2, sampling_ratio=2, aligned=False, strides=STRIDES
    )
    expected = personsearch_ops.map_roi_levels(rois[:, 1:], 2, 5).float()
    torch.testing.assert_close(out.amax(dim=(1, 2, 3)), expected)
    torch.testing.assert_close(out.amin(dim=(1, 2, 3)), expected)


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_multiscale_roi_align(channels_last, sampling_ratio):
    levels = pyramid(channels_last=channels_last)
    rois = pyramid_rois()
    pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=7, sampling_ratio=sampling_ratio)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i).squeeze(1) for i in range(2)])
    theirs = pooler(dict(zip(["p2", "p3", "p4", "p5"], levels, strict=True)), boxes, [(IMAGE_H, IMAGE_W)] * 2)
    ours = personsearch_ops.multi_level_roi_align(
        levels, rois, 7, sampling_ratio=sampling_ratio, aligned=False, spatial_scales=[1 / s for s in STRIDES]
    )
    assert ours.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(ours[order], theirs, atol=2e-5, rtol=1e-5)


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_per_level_reference(dtype, aligned):
    levels = pyramid(dtype=dtype, channels=3, seed=2)
    rois = pyramid_rois(num=12, seed=3)
    ours = personsearch_ops.multi_level_roi_align(
        levels, rois, (2, 3), sampling_ratio=0, aligned=aligned, strides=STRIDES
    )
    index = reference_levels(rois[:, 1:].numpy(), 2, 5)
    atol, rtol = {
        torch.float64: (1e-10, 1e-10),
        torch.float32: (2e-5, 1e-5),
        torch.float16: (4e-3, 2e-3),
        torch.bfloat16: (3e-2, 1e-2),
    }[dtype]
    for k in range(rois.shape[0]):
        lvl = int(index[k])
        expected = reference_roi_align(
            levels[lvl].double().numpy(), rois[k : k + 1].numpy(), (2, 3), 1 / STRIDES[lvl], 0, aligned
        )
        torch.testing.assert_close(ours[k : k + 1].double(), torch.from_numpy(expected), atol=atol, rtol=rtol)


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(channels_last):
    g = torch.Generator().manual_seed(4)
    levels = [torch.randn(1, 2, 64 // s, 64 // s, generator=g, dtype=torch.float64) for s in (4, 8, 16)]
    if channels_last:
        levels = [f.contiguous(memory_format=torch.channels_last) for f in levels]
    levels = [f.requires_grad_(True) for f in levels]
    rois = torch.tensor([[0, 3.3, 5.1, 20.7, 30.9], [0, 1.7, 2.2, 60.1, 61.3], [0, 10.4, 9.8, 55.5, 33.3]])

    def fn(*feats):
        return personsearch_ops.multi_level_roi_align(
            list(feats), rois, 2, sampling_ratio=2, aligned=True, strides=(4, 8, 16)
        )

    assert torch.autograd.gradcheck(fn, tuple(levels), fast_mode=True)


@needs_ops
def test_backward_matches_per_level_roi_align():
    levels = pyramid(channels=3, seed=5)
    rois = pyramid_rois(num=20, seed=6)
    index = personsearch_ops.map_roi_levels(rois[:, 1:], 2, 5)
    grad_out = torch.randn(rois.shape[0], 3, 4, 4, generator=torch.Generator().manual_seed(7))
    ours = [f.clone().requires_grad_(True) for f in levels]
    personsearch_ops.multi_level_roi_align(
        ours, rois, 4, sampling_ratio=2, aligned=False, strides=STRIDES
    ).backward(grad_out)
    ref = [f.clone().requires_grad_(True) for f in levels]
    total = 0
    for lvl, s in enumerate(STRIDES):
        sel = torch.nonzero(index == lvl).squeeze(1)
        total = (
            total
            + (
                personsearch_ops.roi_align(ref[lvl], rois[sel], 4, 1 / s, 2, aligned=False) * grad_out[sel]
            ).sum()
        )
    total.backward()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)


@needs_ops
def test_opcheck():
    levels = [f.requires_grad_(True) for f in pyramid(channels=2, seed=8)]
    rois = pyramid_rois(num=6, seed=9)
    args = (levels, rois, [1 / s for s in STRIDES], 3, 3, 2, False, 2, 224.0, 4.0)
    torch.library.opcheck(torch.ops.personsearch_ops.multi_level_roi_align.default, args)


@needs_ops
def test_empty_and_bad_batch_index():
    levels = pyramid(channels=2)
    out = personsearch_ops.multi_level_roi_align(
        levels, torch.zeros(0, 5), 7, sampling_ratio=2, aligned=False, strides=STRIDES
    )
    assert out.shape == (0, 2, 7, 7)
    with pytest.raises((RuntimeError, ValueError), match="batch index"):
        personsearch_ops.multi_level_roi_align(
            levels, torch.tensor([[2.0, 0, 0, 50, 50]]), 7, sampling_ratio=2, aligned=False, strides=STRIDES
        )


def test_argument_validation():
    levels = pyramid(channels=2)
    with pytest.raises(ValueError, match="exactly one"):
        personsearch_ops.multi_level_roi_align(levels, torch.zeros(0, 5), 7, sampling_ratio=2, aligned=False)
    with pytest.raises(ValueError, match="scales/strides"):
        personsearch_ops.multi_level_roi_align(
            levels, torch.zeros(0, 5), 7, sampling_ratio=2, aligned=False, strides=(4, 8)
        )
    with pytest.raises(ValueError, match="share"):
        personsearch_ops.multi_level_roi_align(
            [levels[0], levels[1][:, :1]],
            torch.zeros(0, 5),
            7,
            sampling_ratio=2,
            aligned=False,
            strides=(4, 8),
        )


def test_fallback_matches_native(monkeypatch):
    levels = pyramid(channels=3, seed=10)
    rois = pyramid_rois(num=15, seed=11)
    expected = None
    if personsearch_ops.has_ops():
        expected = personsearch_ops.multi_level_roi_align(
            levels, rois, 5, sampling_ratio=2, aligned=True, strides=STRIDES
        )
    monkeypatch.setattr(extension, "_LOADED", False)
    monkeypatch.setattr(extension, "_warned", False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fallback = personsearch_ops.multi_level_roi_align(
            levels, rois, 5, sampling_ratio=2, aligned=True, strides=STRIDES
        )
    index = reference_levels(rois[:, 1:].numpy(), 2, 5)
    k = int(np.argmax(index == 3)) if (index == 3).any() else 0
    lvl = int(index[k])
    ref = reference_roi_align(
        levels[lvl].double().numpy(), rois[k : k + 1].numpy(), (5, 5), 1 / STRIDES[lvl], 2, True
    )
    torch.testing.assert_close(fallback[k : k + 1].double(), torch.from_numpy(ref), atol=2e-5, rtol=1e-5)
    if expected is not None:
        torch.testing.assert_close(fallback, expected, atol=2e-5, rtol=1e-5)
