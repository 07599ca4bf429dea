"""The RoIAlign layer: torchvision parity, box formats, ``aligned``, and personsearch_ops parity."""

from __future__ import annotations

import importlib

import pytest
import torch
import torchvision
from personsearch_train.layers import RoIAlign, roi_align, uses_personsearch_ops


def _inputs() -> tuple[torch.Tensor, list[torch.Tensor]]:
    torch.manual_seed(0)
    features = torch.randn(2, 5, 12, 16)
    boxes = [
        torch.tensor([[3.0, 4.0, 60.0, 90.0], [0.0, 0.0, 200.0, 150.0]]),
        torch.tensor([[10.5, 7.25, 33.0, 41.0]]),
    ]
    return features, boxes


@pytest.mark.parametrize("aligned", [False, True])
def test_layer_matches_torchvision(aligned: bool) -> None:
    features, boxes = _inputs()
    layer = RoIAlign(output_size=7, spatial_scale=1 / 8, sampling_ratio=2, aligned=aligned)
    expected = torchvision.ops.roi_align(features, boxes, (7, 7), 1 / 8, 2, aligned)
    # personsearch_ops, when built, must agree with torchvision to float rounding.
    torch.testing.assert_close(layer(features, boxes), expected, atol=1e-5, rtol=1e-5)


def test_list_and_rois_forms_agree() -> None:
    features, boxes = _inputs()
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    a = roi_align(features, boxes, 4, 0.25, 2, aligned=False)
    b = roi_align(features, rois, (4, 4), 0.25, 2, aligned=False)
    torch.testing.assert_close(a, b)
    assert a.shape == (3, 5, 4, 4)


def test_aligned_shifts_by_half_a_pixel() -> None:
    # Feature value = x coordinate of the cell centre's index; a 1x1 bin averaged over a
    # box [x1, x2) samples its centre: legacy uses (x1 + x2) / 2, aligned subtracts 0.5.
    features = torch.arange(16.0).repeat(8, 1)[None, None]
    box = [torch.tensor([[4.0, 2.0, 8.0, 6.0]])]
    legacy = roi_align(features, box, 1, 1.0, 1, aligned=False)
    half = roi_align(features, box, 1, 1.0, 1, aligned=True)
    assert legacy.item() == pytest.approx(6.0)
    assert half.item() == pytest.approx(5.5)


def test_gradients_flow() -> None:
    features, boxes = _inputs()
    features.requires_grad_(True)
    RoIAlign(output_size=3, spatial_scale=1 / 8, sampling_ratio=2, aligned=False)(
        features, boxes
    ).sum().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0


def test_bad_box_shape_is_reported() -> None:
    features, _ = _inputs()
    with pytest.raises(ValueError, match="image 0"):
        roi_align(features, [torch.zeros(2, 3)], 2, 1.0, 2, aligned=False)


@pytest.mark.skipif(not uses_personsearch_ops(), reason="personsearch_ops is not built")
@pytest.mark.parametrize("aligned", [False, True])
def test_personsearch_ops_matches_torchvision(aligned: bool) -> None:
    import personsearch_ops

    features, boxes = _inputs()
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)])
    ours = personsearch_ops.roi_align(features, rois, (14, 14), 1 / 8, 2, aligned=aligned)
    expected = torchvision.ops.roi_align(features, rois, (14, 14), 1 / 8, 2, aligned)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_torchvision_fallback_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without personsearch_ops the layer is torchvision's op, also for half-precision features."""
    module = importlib.import_module("personsearch_train.layers.roi_align")

    monkeypatch.setattr(module, "_personsearch_ops", lambda: None)
    assert not module.uses_personsearch_ops()
    features, boxes = _inputs()
    out = roi_align(features, boxes, 7, 1 / 8, 2, aligned=True)
    torch.testing.assert_close(out, torchvision.ops.roi_align(features, boxes, (7, 7), 1 / 8, 2, True))
    half = roi_align(features.half(), boxes, 7, 1 / 8, 2, aligned=True)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), out, atol=2e-2, rtol=1e-2)
