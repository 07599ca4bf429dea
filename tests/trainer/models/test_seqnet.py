"""SeqNet surface: shapes and dtypes, losses, inference paths and statelessness."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from personsearch_train.losses.oim import OIMLoss
from personsearch_train.methods.seqnet_oim import OIMReidLoss
from personsearch_train.models import Detections, SeqNet, create_model
from personsearch_train.models.structures import TrainingOutputs

LOSS_NAMES = {
    "loss_rpn_cls",
    "loss_rpn_reg",
    "loss_proposal_cls",
    "loss_proposal_reg",
    "loss_box_cls",
    "loss_box_reg",
}


def _oim_for(model: SeqNet, num_labelled: int = 16, queue_size: int = 32) -> OIMReidLoss:
    return OIMReidLoss(
        OIMLoss(num_features=model.embedding_dim, num_labelled=num_labelled, queue_size=queue_size)
    )


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_forward_train_returns_finite_scalar_losses(tiny_batch) -> None:
    images, targets = tiny_batch
    torch.manual_seed(0)
    model = create_model("seqnet_tiny")
    outputs = model.forward_train(images, targets)
    assert isinstance(outputs, TrainingOutputs) and set(outputs.losses) == LOSS_NAMES
    for name, value in outputs.losses.items():
        assert value.shape == () and value.dtype == torch.float32, name
        assert math.isfinite(value.item()), name
    # The matched people: unit-norm embeddings with the label of the box each RoI matched.
    k = outputs.person_embeddings.shape[0]
    assert k > 0 and outputs.person_embeddings.shape == (k, model.embedding_dim)
    torch.testing.assert_close(outputs.person_embeddings.norm(dim=1), torch.ones(k), atol=1e-4, rtol=0)
    for label, image, box in zip(
        outputs.person_labels, outputs.person_image_index, outputs.person_box_index, strict=True
    ):
        assert label == targets[int(image)]["pids"][int(box)]
    total = sum(outputs.losses.values()) + _oim_for(model)(model, outputs, images, targets)["loss_box_reid"]
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_loss_weights_scale_their_terms(tiny_batch) -> None:
    images, targets = tiny_batch
    torch.manual_seed(0)
    model = create_model("seqnet_tiny")
    torch.manual_seed(1)
    default = model.forward_train(images, targets).losses
    model.loss_weights = {**model.loss_weights, "loss_proposal_reg": 1.0, "loss_box_cls": 3.0}
    torch.manual_seed(1)
    changed = model.forward_train(images, targets).losses
    torch.testing.assert_close(changed["loss_proposal_reg"] * 10.0, default["loss_proposal_reg"])
    torch.testing.assert_close(changed["loss_box_cls"], default["loss_box_cls"] * 3.0)


def test_losses_decrease_on_a_tiny_batch(tiny_batch) -> None:
    images, targets = tiny_batch
    torch.manual_seed(1)
    model = create_model("seqnet_tiny")
    oim = _oim_for(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.003, momentum=0.9)
    totals = []
    for _ in range(20):
        outputs = model.forward_train(images, targets)
        total = sum(outputs.losses.values()) + oim(model, outputs, images, targets)["loss_box_reid"]
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        assert math.isfinite(total.item())
        totals.append(total.item())
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.8 * first, totals
    # The memory was filled by the backward passes: labelled ids 0 and 1 have unit-norm rows.
    norms = oim.oim.lut.norm(dim=1)
    torch.testing.assert_close(norms[:2], torch.ones(2))
    assert int(oim.oim.queue_head) > 0


def test_predict_shapes_dtypes_and_units(tiny_batch) -> None:
    images, _ = tiny_batch
    torch.manual_seed(0)
    # Threshold 0 so an untrained model still returns detections.
    model = create_model("seqnet_tiny", box_score_thresh=0.0).eval()
    results = model.predict(images)
    assert len(results) == len(images)
    for image, det in zip(images, results, strict=True):
        assert isinstance(det, Detections)
        assert len(det) > 0
        assert det.boxes.dtype == det.scores.dtype == det.embeddings.dtype == torch.float32
        assert det.embeddings.shape == (len(det), model.embedding_dim)
        torch.testing.assert_close(det.embeddings.norm(dim=1), torch.ones(len(det)))
        assert ((det.scores >= 0) & (det.scores <= 1)).all()
        assert (det.boxes[:, 2] >= det.boxes[:, 0]).all() and (det.boxes[:, 3] >= det.boxes[:, 1]).all()
        height, width = image.shape[1:]
        assert det.boxes[:, [0, 2]].max() <= width + 1e-3 and det.boxes[:, [1, 3]].max() <= height + 1e-3
        assert len(det) <= model.box_detections_per_img
        assert (det.scores[:-1] >= det.scores[1:]).all()  # NMS output is best-first


def test_predict_maps_boxes_back_to_the_original_size(scene_factory) -> None:
    torch.manual_seed(0)
    model = create_model("seqnet_tiny", box_score_thresh=0.0).eval()
    # Short side 128 = min_size: the model sees this image unchanged. Its nearest-neighbour
    # double is resized by exactly 0.5 back to the same input, so boxes must scale by 2.
    image = scene_factory(128, 160, [(20.0, 10.0, 60.0, 110.0)], [(0.9, 0.2, 0.1)])
    doubled = F.interpolate(image[None], scale_factor=2.0, mode="nearest")[0]
    small = model.predict([image])[0]
    large = model.predict([doubled])[0]
    assert len(small) == len(large) > 0
    torch.testing.assert_close(large.boxes, 2 * small.boxes, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(large.scores, small.scores)
    torch.testing.assert_close(large.embeddings, small.embeddings)


def test_no_detections_gives_empty_results(tiny_batch) -> None:
    images, _ = tiny_batch
    model = create_model("seqnet_tiny", box_score_thresh=1.0).eval()
    results = model.predict(images)
    assert [len(r) for r in results] == [0, 0]
    assert results[0].embeddings.shape == (0, model.embedding_dim)


def test_embed_boxes_shapes_norms_and_scale(tiny_batch) -> None:
    images, targets = tiny_batch
    torch.manual_seed(0)
    model = create_model("seqnet_tiny").eval()
    boxes = [t["boxes"] for t in targets]
    embeddings = model.embed_boxes(images, boxes)
    assert [e.shape for e in embeddings] == [(2, model.embedding_dim), (2, model.embedding_dim)]
    for e in embeddings:
        assert e.dtype == torch.float32
        torch.testing.assert_close(e.norm(dim=1), torch.ones(len(e)))
    # Same person at twice the resolution, with its box scaled: same model input, same embedding.
    doubled = F.interpolate(images[0][None], scale_factor=2.0, mode="bilinear", align_corners=False)[0]
    again = model.embed_boxes([doubled], [2 * boxes[0]])[0]
    cosine = (again * embeddings[0]).sum(dim=1)
    assert (cosine > 0.99).all(), cosine
    # Different people get different embeddings.
    assert float(embeddings[0][0] @ embeddings[0][1]) < 0.999


def test_embed_boxes_accepts_images_without_boxes(tiny_batch) -> None:
    images, targets = tiny_batch
    model = create_model("seqnet_tiny").eval()
    out = model.embed_boxes(images, [torch.zeros((0, 4)), targets[1]["boxes"]])
    assert out[0].shape == (0, model.embedding_dim) and out[1].shape == (2, model.embedding_dim)
    empty = model.embed_boxes(images, [torch.zeros((0, 4)), torch.zeros((0, 4))])
    assert [e.shape[0] for e in empty] == [0, 0]


def test_inference_changes_no_state(tiny_batch) -> None:
    images, targets = tiny_batch
    torch.manual_seed(0)
    model = create_model("seqnet_tiny", box_score_thresh=0.0)
    # Put something in the BN statistics first.
    sum(model.forward_train(images, targets).losses.values()).backward()
    model.eval()
    before = _state(model)
    model.predict(images)
    model.embed_boxes(images, [t["boxes"] for t in targets])
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key


def test_forward_alone_does_not_touch_the_oim_memory(tiny_batch) -> None:
    images, targets = tiny_batch
    model = create_model("seqnet_tiny")
    oim = _oim_for(model)
    before = (oim.oim.lut.clone(), oim.oim.queue.clone(), oim.oim.queue_head.clone())
    loss = oim(model, model.forward_train(images, targets), images, targets)["loss_box_reid"]
    assert torch.equal(oim.oim.lut, before[0]) and torch.equal(oim.oim.queue, before[1])
    assert torch.equal(oim.oim.queue_head, before[2])
    loss.backward()
    assert not torch.equal(oim.oim.lut, before[0])


def test_encode_boxes_is_the_query_path_with_gradients(tiny_batch) -> None:
    images, targets = tiny_batch
    torch.manual_seed(0)
    model = create_model("seqnet_tiny").eval()
    boxes = [t["boxes"] for t in targets]
    with_grad = model.encode_boxes(images, boxes)
    assert all(e.requires_grad for e in with_grad)
    for a, b in zip(with_grad, model.embed_boxes(images, boxes), strict=True):
        torch.testing.assert_close(a.detach(), b)
    sum(e.sum() for e in with_grad).backward()
    assert model.reid_head.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    # In training mode too (a method's second path through the network).
    model.train()
    assert model.encode_boxes(images, boxes)[0].shape == (len(boxes[0]), model.embedding_dim)


def test_methods_check_the_mode(tiny_batch) -> None:
    images, targets = tiny_batch
    model = create_model("seqnet_tiny")
    with pytest.raises(RuntimeError, match="model.eval"):
        model.predict(images)
    with pytest.raises(RuntimeError, match="model.eval"):
        model.embed_boxes(images, [t["boxes"] for t in targets])
    model.eval()
    with pytest.raises(RuntimeError, match="model.train"):
        model.forward_train(images, targets)


def test_bad_inputs_are_reported(tiny_batch) -> None:
    images, targets = tiny_batch
    model = create_model("seqnet_tiny")
    with pytest.raises(ValueError, match="image 0"):
        model.forward_train([images[0][:1]], targets[:1])
    with pytest.raises(ValueError, match="pids"):
        model.forward_train(images, [{"boxes": t["boxes"]} for t in targets])
    bad = [{"boxes": targets[0]["boxes"], "pids": torch.tensor([0, 99])}, targets[1]]
    outputs = model.forward_train(images, bad)  # the model passes labels through; the loss checks them
    with pytest.raises(ValueError, match=r"OIM labels must be in \[-1, 15\]"):
        _oim_for(model)(model, outputs, images, bad)


def test_images_without_people_train(tiny_batch) -> None:
    images, targets = tiny_batch
    model = create_model("seqnet_tiny")
    empty = {"boxes": torch.zeros((0, 4)), "pids": torch.zeros((0,), dtype=torch.long)}
    outputs = model.forward_train(images, [empty, targets[1]])
    assert all(math.isfinite(v.item()) for v in outputs.losses.values())
    assert (outputs.person_image_index == 1).all()


def test_split_pieces_compose_to_predict_inputs(tiny_batch) -> None:
    """The export-facing pieces accept pooled features and return documented shapes."""
    images, _ = tiny_batch
    model: SeqNet = create_model("seqnet_tiny").eval()
    with torch.no_grad():
        image_list, _ = model.transform(images)
        features = model.extract_features(image_list.tensors)
        proposals = model.propose(image_list, features)
        pooled = model.roi_align(features, proposals)
        logits, deltas = model.box_head_outputs(pooled)
        embeddings, person_logits, reid_deltas = model.reid_head_outputs(pooled)
    k = sum(p.shape[0] for p in proposals)
    assert features.shape[1] == model.backbone.out_channels
    assert pooled.shape == (k, model.backbone.out_channels, 14, 14)
    assert logits.shape == (k, 2) and deltas.shape == (k, 8) and reid_deltas.shape == (k, 8)
    assert embeddings.shape == (k, model.embedding_dim) and person_logits.shape == (k,)


def test_module_call_is_forward_train(tiny_batch) -> None:
    """``model(images, targets)`` (the path DistributedDataParallel takes) gives the same losses."""
    images, targets = tiny_batch
    model = create_model("seqnet_tiny")
    torch.manual_seed(3)
    via_call = model(images, targets)
    torch.manual_seed(3)
    direct = model.forward_train(images, targets)
    assert via_call.losses.keys() == direct.losses.keys()
    for key in direct.losses:
        torch.testing.assert_close(via_call.losses[key], direct.losses[key])
    torch.testing.assert_close(via_call.person_embeddings, direct.person_embeddings)


def test_predict_batch_where_one_image_has_no_first_stage_boxes(tiny_batch) -> None:
    # Regression: decoding 0 deltas used reshape(0, -1, 4), which cannot infer -1.
    images, _ = tiny_batch
    torch.manual_seed(0)
    model = create_model("seqnet_tiny", box_score_thresh=0.0).eval()
    # Same batch (same padding) without the drop: image 1 must come out unchanged.
    reference = model.predict(images)[1]
    original_select = model._select
    calls = []

    def select_nothing_for_image_0(boxes, scores, nms_thresh):
        calls.append(len(calls))
        keep = original_select(boxes, scores, nms_thresh)
        # First stage runs image 0 then image 1; drop everything of image 0 there.
        return keep[:0] if len(calls) == 1 else keep

    model._select = select_nothing_for_image_0
    results = model.predict(images)
    assert len(results[0]) == 0 and results[0].embeddings.shape == (0, model.embedding_dim)
    assert len(results[1]) == len(reference) > 0
    torch.testing.assert_close(results[1].boxes, reference.boxes, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(results[1].embeddings, reference.embeddings, atol=1e-4, rtol=1e-4)


def test_box_decode_of_no_boxes() -> None:
    from personsearch_train.models.box_coding import BoxCoder

    decoded = BoxCoder().decode(torch.zeros(0, 8), torch.zeros(0, 4))
    assert decoded.shape == (0, 2, 4)
