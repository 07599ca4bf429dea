"""Model registry: names, duplicates, unknown names and overrides."""

from __future__ import annotations

import pytest
from personsearch_train.errors import ConfigError
from personsearch_train.models import SeqNet, create_model, list_models, register_model
from torch import nn


def test_builtin_models_are_listed() -> None:
    names = list_models()
    assert {"seqnet_r50", "seqnet_r18", "seqnet_tiny"} <= set(names)
    assert names == sorted(names)


def test_package_level_factory_is_the_same() -> None:
    import personsearch_train

    assert personsearch_train.create_model is create_model
    assert personsearch_train.list_models is list_models


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model("seqnet_tiny")
        def other(**overrides: object) -> nn.Module:
            return nn.Identity()


def test_unknown_name_lists_available_models() -> None:
    with pytest.raises(ConfigError, match="seqnet_tiny") as info:
        create_model("seqnet_nope")
    assert "seqnet_nope" in str(info.value)


def test_overrides_reach_the_constructor() -> None:
    model = create_model("seqnet_tiny", embedding_dim=32, roi_aligned=True)
    assert isinstance(model, SeqNet)
    assert model.embedding_dim == 32 and model.embedding.dim == 32
    assert model.roi_align.aligned is True
    # The OIM sizes are the training method's settings now, not the model's.
    with pytest.raises(ConfigError, match="queue_size"):
        create_model("seqnet_tiny", queue_size=5)


def test_unknown_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="num_labeled_ids"):
        create_model("seqnet_tiny", num_labeled_ids=7)


def test_unknown_loss_weight_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss_reid"):
        create_model("seqnet_tiny", loss_weights={"loss_reid": 1.0})


def test_paper_defaults_of_seqnet_r50() -> None:
    model = create_model("seqnet_r50")
    assert model.backbone.out_channels == 1024 and model.box_head.out_channels == 2048
    assert model.embedding_dim == 256
    assert model.transform.min_size == (900,) and model.transform.max_size == 1500
    assert model.roi_align.output_size == (14, 14) and model.roi_align.sampling_ratio == 2
    assert model.roi_align.aligned is False
    assert model.loss_weights["loss_proposal_reg"] == 10.0
    assert model.rpn.anchor_generator.num_anchors_per_location() == [15]
    # Only the stem is frozen, as in SeqNet.
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias"}
