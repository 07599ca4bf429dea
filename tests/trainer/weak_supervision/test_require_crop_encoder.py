"""``require_crop_encoder``: the model check R-SiamNet and PPS share before embedding crops."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from personsearch_train.errors import ConfigError
from personsearch_train.weak_supervision import require_crop_encoder
from torch import nn


class _CropModel(nn.Module):
    """A model with an instance path whose head 2 has ``stripes`` stripes at ``stride``."""

    def __init__(self, stride: int, stripes: int) -> None:
        super().__init__()
        self.backbone = SimpleNamespace(stride=stride)
        self.reid_head = SimpleNamespace(stripes=stripes)

    def encode_crops(self, crops: torch.Tensor) -> torch.Tensor:
        return crops.flatten(1)


def test_a_model_without_an_instance_path_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"model.name: pps embeds person crops .* 'detector_only' has no"):
        require_crop_encoder(nn.Linear(2, 2), method="pps", model_name="detector_only", crop_height=192)


def test_crops_must_give_every_stripe_a_row() -> None:
    model = _CropModel(stride=8, stripes=6)  # 2 * 8 * 6 = 96 pixels at the least
    require_crop_encoder(model, method="rsiamnet", model_name="seqnet_small", crop_height=96)
    message = r"crop_height: 95 pixels give seqnet_small's head .* use at least 96"
    with pytest.raises(ConfigError, match=message):
        require_crop_encoder(model, method="rsiamnet", model_name="seqnet_small", crop_height=95)
