"""The res4 trunk's stride options: dilating ``layer3`` instead of striding it."""

from __future__ import annotations

import pytest
import torch
import torchvision
from personsearch_train.models import create_model
from personsearch_train.models.backbone import Res4Trunk, dilate_stage, narrow_resnet


@pytest.mark.parametrize("depth", [18, 50])
def test_dilated_stage_matches_torchvision_replace_stride_with_dilation(depth: int) -> None:
    # torchvision supports the option only for bottleneck ResNets; for basic blocks the
    # test checks the rule itself: no stride left, later blocks' 3x3 convs dilated.
    torch.manual_seed(0)
    ours = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    dilate_stage(ours.layer3)
    x = torch.randn(1, ours.layer3[0].conv1.in_channels, 12, 10)
    if depth == 50:
        dilated_layer3 = [False, True, False]
        reference = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=dilated_layer3)
        reference.load_state_dict(ours.state_dict())
        reference.eval()
        torch.testing.assert_close(ours.layer3(x), reference.layer3(x))
    else:
        convs = [m for m in ours.layer3.modules() if isinstance(m, torch.nn.Conv2d)]
        assert all(c.stride == (1, 1) for c in convs)
        second_block = [c for c in ours.layer3[1].modules() if isinstance(c, torch.nn.Conv2d)]
        assert [c.dilation for c in second_block] == [(2, 2)] * 2
    assert ours.layer3(x).shape[2:] == x.shape[2:]  # no downsampling left


def test_stride_8_trunk_keeps_weights_and_doubles_the_map() -> None:
    torch.manual_seed(0)
    coarse = Res4Trunk(narrow_resnet(), freeze_stem=False, stride=16).eval()
    fine = Res4Trunk(narrow_resnet(), freeze_stem=False, stride=8).eval()
    fine.load_state_dict(coarse.state_dict())  # same parameter shapes
    image = torch.rand(1, 3, 96, 160)
    assert coarse(image).shape[2:] == (6, 10) and fine(image).shape[2:] == (12, 20)
    assert fine.stride == 8 and coarse.stride == 16
    with pytest.raises(ValueError, match="16 or 8"):
        Res4Trunk(narrow_resnet(), stride=4)


def test_seqnet_pools_rois_at_the_trunk_stride() -> None:
    model = create_model("seqnet_tiny", res4_stride=8)
    assert model.backbone.stride == 8
    assert model.roi_align.spatial_scale == pytest.approx(1 / 8)
    assert create_model("seqnet_tiny").roi_align.spatial_scale == pytest.approx(1 / 16)
    model.eval()
    detections = model.predict([torch.rand(3, 100, 140)])
    assert len(detections) == 1
