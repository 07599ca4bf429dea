"""Loading torchvision-format ResNet weights from a local file."""

from __future__ import annotations

import pytest
import torch
import torchvision
from personsearch_train.errors import TrainerError
from personsearch_train.models import BackboneWeightsError, create_model, load_backbone_weights
from safetensors.torch import save_file


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


def _check_loaded(model, state) -> None:
    trunk = model.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_var", "layer3.1.conv2.weight", "layer1.0.bn1.bias"):
        assert torch.equal(trunk[key], state[key]), key
    for head in (model.box_head, model.reid_head):
        head_state = head.state_dict()
        for key in ("layer4.0.conv1.weight", "layer4.1.bn2.running_mean", "layer4.0.downsample.0.weight"):
            assert torch.equal(head_state[key], state[key]), key


def test_loads_a_torch_save_file_into_trunk_and_both_heads(tmp_path, resnet18_state) -> None:
    path = tmp_path / "r18.pth"
    torch.save(resnet18_state, path)
    model = create_model("seqnet_r18")
    report = load_backbone_weights(model, path)
    _check_loaded(model, resnet18_state)
    assert report.ignored == ("fc.bias", "fc.weight")
    assert report.num_tensors == len(resnet18_state) - 2
    # The two heads stay separate modules after loading.
    assert (
        model.box_head.layer4[0].conv1.weight.data_ptr() != model.reid_head.layer4[0].conv1.weight.data_ptr()
    )


def test_loads_safetensors(tmp_path, resnet18_state) -> None:
    path = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_state.items()}, str(path))
    model = create_model("seqnet_r18")
    load_backbone_weights(model, path)
    _check_loaded(model, resnet18_state)


def test_missing_file_is_a_user_error(tmp_path) -> None:
    model = create_model("seqnet_tiny")
    with pytest.raises(BackboneWeightsError, match="does not exist") as info:
        load_backbone_weights(model, tmp_path / "nope.pth")
    assert isinstance(info.value, TrainerError) and info.value.is_user_error


def test_wrong_depth_names_the_mismatch_and_changes_nothing(tmp_path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    model = create_model("seqnet_r18")
    before = model.backbone.conv1.weight.clone()
    with pytest.raises(BackboneWeightsError, match="resnet18") as info:
        load_backbone_weights(model, path)
    assert "layer1.0.conv1.weight" in str(info.value) or "shape" in str(info.value)
    assert torch.equal(model.backbone.conv1.weight, before)


def test_missing_keys_are_named(tmp_path, resnet18_state) -> None:
    partial = {k: v for k, v in resnet18_state.items() if not k.startswith("layer4.1.")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(BackboneWeightsError, match="layer4.1"):
        load_backbone_weights(create_model("seqnet_r18"), path)


def test_not_a_state_dict(tmp_path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneWeightsError, match="cannot read"):
        load_backbone_weights(create_model("seqnet_tiny"), path)
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(BackboneWeightsError, match="state dict"):
        load_backbone_weights(create_model("seqnet_tiny"), path)


def test_full_model_checkpoint_is_refused(tmp_path, resnet18_state) -> None:
    path = tmp_path / "model.pth"
    torch.save({**resnet18_state, "roi_heads.box_predictor.cls_score.weight": torch.zeros(2, 512)}, path)
    with pytest.raises(BackboneWeightsError, match="roi_heads"):
        load_backbone_weights(create_model("seqnet_r18"), path)
