"""Out-of-range batch indices: checked (with a host read) only for CPU rois, masked elsewhere.

Runs without a GPU. Meta tensors stand in for device tensors: any attempt to read their
values (``.item()``, ``bool()``, ``nonzero``) raises, so a call that completes on them
proves that the wrappers decide by device, not by reading the indices. The CUDA kernels'
side of the rule is in test_roi_align_cuda.py (needs_cuda).
"""

from __future__ import annotations

import importlib
import warnings

import personsearch_ops
import pytest
import torch
import torchvision
from personsearch_ops import _validation, extension
from test_multi_level_roi_align import STRIDES, pyramid, pyramid_rois
from test_roi_align import features_for, make_rois

# The modules (the package's attributes of these names are the functions).
roi_align_module = importlib.import_module("personsearch_ops.roi_align")
multi_level_module = importlib.import_module("personsearch_ops.multi_level")

needs_ops = pytest.mark.skipif(not personsearch_ops.has_ops(), reason="personsearch_ops._C is not built")

# Batch indices around the edges of [0, 2): the kernels truncate toward zero.
EDGE_INDICES = [-7.0, -1.0, -0.999, -0.5, 0.0, 0.5, 1.0, 1.999, 2.0, 2.5, 1e9, -1e9]


@pytest.fixture
def fallback(monkeypatch):
    """Run the torchvision fallback (as without the compiled extension), silently."""
    monkeypatch.setattr(extension, "_LOADED", False)
    monkeypatch.setattr(extension, "_warned", True)


@pytest.fixture
def device_rule(monkeypatch):
    """Make the fallback treat CPU rois as device rois (masking instead of raising)."""
    for module in (roi_align_module, multi_level_module):
        monkeypatch.setattr(module, "batch_indices_checked_on_host", lambda rois: False)
        monkeypatch.setattr(module, "check_batch_indices", _must_not_be_called)


def _must_not_be_called(*args, **kwargs):
    raise AssertionError("check_batch_indices read the indices of device rois")


def test_only_cpu_rois_are_checked_on_the_host():
    assert _validation.batch_indices_checked_on_host(torch.zeros(1, 5))
    assert not _validation.batch_indices_checked_on_host(torch.zeros(1, 5, device="meta"))


@needs_ops
@pytest.mark.parametrize("index", EDGE_INDICES)
def test_in_range_rule_is_the_cpu_check(index):
    # The device rule (and the CUDA kernels, which use the same comparison) accept exactly
    # the indices the CPU op accepts.
    x = features_for(torch.float32, False)
    rois = torch.tensor([[index, 1.0, 1.0, 4.0, 4.0]])
    accepted = bool(_validation.in_range_rows(rois, batch=2)[0])
    if accepted:
        personsearch_ops.roi_align(x, rois, 2, 1.0, 2, aligned=False)
    else:
        with pytest.raises(RuntimeError, match="batch index"):
            personsearch_ops.roi_align(x, rois, 2, 1.0, 2, aligned=False)


def test_nan_batch_index_is_out_of_range():
    rois = torch.tensor([[float("nan"), 1.0, 1.0, 4.0, 4.0], [1.0, 1.0, 1.0, 4.0, 4.0]])
    assert _validation.in_range_rows(rois, batch=2).tolist() == [False, True]


def test_masked_rows_point_at_image_zero_and_keep_their_boxes():
    rois = torch.tensor([[5.0, 1, 2, 3, 4], [1.5, 5, 6, 7, 8], [float("nan"), 9, 10, 11, 12]])
    in_range = _validation.in_range_rows(rois, batch=2)
    safe = _validation.rois_with_safe_batch_indices(rois, in_range)
    assert safe[:, 0].tolist() == [0.0, 1.5, 0.0]
    assert torch.equal(safe[:, 1:], rois[:, 1:])


@pytest.mark.parametrize("use_fallback", [False, True])
def test_device_rois_are_never_read_single_level(request, use_fallback):
    if use_fallback:
        request.getfixturevalue("fallback")
    elif not personsearch_ops.has_ops():
        pytest.skip("personsearch_ops._C is not built")
    x = torch.empty(2, 4, 9, 11, device="meta")
    rois = torch.empty(6, 5, device="meta")
    out = personsearch_ops.roi_align(x, rois, (3, 2), 0.5, 2, aligned=True)
    assert out.device.type == "meta" and out.shape == (6, 4, 3, 2)
    boxes = [torch.empty(2, 4, device="meta"), torch.empty(3, 4, device="meta")]
    assert personsearch_ops.roi_align(x, boxes, 2, 0.5, 2, aligned=False).shape == (5, 4, 2, 2)


@needs_ops
def test_device_rois_are_never_read_multi_level():
    levels = [torch.empty(2, 4, 64 // s, 80 // s, device="meta") for s in STRIDES]
    out = personsearch_ops.multi_level_roi_align(
        levels, torch.empty(7, 5, device="meta"), 3, sampling_ratio=2, aligned=False, strides=STRIDES
    )
    assert out.device.type == "meta" and out.shape == (7, 4, 3, 3)


def _with_bad_rows(rois: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rois with every third batch index replaced by an out-of-range value; and the good-row mask."""
    bad_values = torch.tensor([-1.0, float(batch), float("nan"), 1e9, -3.5])
    rois = rois.clone()
    bad = torch.zeros(rois.shape[0], dtype=torch.bool)
    bad[::3] = True
    rois[bad, 0] = bad_values[torch.arange(int(bad.sum())) % len(bad_values)]
    return rois, ~bad


@pytest.mark.usefixtures("fallback", "device_rule")
def test_fallback_device_rule_single_level_zeros_and_no_gradient():
    x = features_for(torch.float32, False).requires_grad_(True)
    rois, good = _with_bad_rows(make_rois(20, 2, 26, 22, seed=3), batch=2)
    out = personsearch_ops.roi_align(x, rois, 3, 0.5, 2, aligned=True)
    assert torch.count_nonzero(out[~good]) == 0
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    out.backward(grad)
    x_ref = x.detach().clone().requires_grad_(True)
    expected = torchvision.ops.roi_align(x_ref, rois[good], 3, 0.5, 2, True)
    expected.backward(grad[good])
    torch.testing.assert_close(out[good], expected)
    torch.testing.assert_close(x.grad, x_ref.grad)


@pytest.mark.usefixtures("fallback", "device_rule")
def test_fallback_device_rule_multi_level_zeros_and_no_gradient():
    levels = [f.requires_grad_(True) for f in pyramid(channels=3)]
    rois, good = _with_bad_rows(pyramid_rois(num=30), batch=2)
    args = {"sampling_ratio": 2, "aligned": False, "strides": STRIDES}
    out = personsearch_ops.multi_level_roi_align(levels, rois, 4, **args)
    assert torch.count_nonzero(out[~good]) == 0
    out.sum().backward()
    ref_levels = [f.detach().clone().requires_grad_(True) for f in levels]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = personsearch_ops.multi_level_roi_align(ref_levels, rois[good], 4, **args)
    expected.sum().backward()
    torch.testing.assert_close(out[good], expected)
    for a, b in zip(levels, ref_levels, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.usefixtures("fallback")
def test_fallback_cpu_rois_still_raise_the_same_message():
    x = features_for(torch.float32, False)
    rois = torch.tensor([[0, 1.0, 1, 4, 4], [2.0, 1.0, 1, 4, 4]])
    with pytest.raises(ValueError, match=r"roi 1 has batch index 2.0 but the features hold 2 image\(s\)"):
        personsearch_ops.roi_align(x, rois, 2, 1.0, 2, aligned=False)
