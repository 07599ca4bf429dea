"""Early-stopping NMS and the single-level RPN give exactly torchvision's proposals."""

from __future__ import annotations

import pytest
import torch
from personsearch_train.models.proposals import SingleLevelRPN, nms_first_k
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import nms


def _clustered_boxes(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes jittered around a few centres (heavy suppression) plus scattered ones."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(8, 2, generator=g) * 400
    which = torch.randint(0, 8, (count,), generator=g)
    scattered = torch.rand(count, generator=g) < 0.3
    xy = torch.where(scattered[:, None], torch.rand(count, 2, generator=g) * 400, centres[which])
    xy = xy + torch.randn(count, 2, generator=g) * 6
    wh = 20 + torch.rand(count, 2, generator=g) * 60
    return torch.cat([xy, xy + wh], dim=1), torch.rand(count, generator=g)


@pytest.mark.parametrize("k", [1, 7, 50, 300, 5000])
@pytest.mark.parametrize("iou", [0.3, 0.7])
def test_nms_first_k_is_the_prefix_of_full_nms(k: int, iou: float) -> None:
    boxes, scores = _clustered_boxes(3000, seed=k)
    full = nms(boxes, scores, iou)
    got = nms_first_k(boxes, scores, iou, k)
    assert full.numel() > 7  # the case is not trivial...
    assert full.numel() < 3000  # ...and NMS really suppresses
    assert torch.equal(got, full[:k])


def test_nms_first_k_breaks_score_ties_as_torchvision_does() -> None:
    boxes, scores = _clustered_boxes(2000, seed=3)
    scores = (scores * 10).floor() / 10  # ten distinct values, so ties everywhere
    for k in (5, 40, 400):
        assert torch.equal(nms_first_k(boxes, scores, 0.5, k), nms(boxes, scores, 0.5)[:k])


def test_nms_first_k_grows_its_prefix_when_survivors_are_rare() -> None:
    # 1000 near-copies of one box ahead of 20 separate ones: the first prefix of
    # 2k boxes holds one survivor, so the prefix must grow to reach the others.
    g = torch.Generator().manual_seed(0)
    copies = torch.tensor([[10.0, 10.0, 60.0, 90.0]]) + torch.rand(1000, 4, generator=g)
    separate = torch.stack([torch.tensor([100.0 * i, 200.0, 100.0 * i + 50, 280.0]) for i in range(20)])
    boxes = torch.cat([copies, separate])
    scores = torch.cat([1 + torch.rand(1000, generator=g), torch.rand(20, generator=g)])
    got = nms_first_k(boxes, scores, 0.7, 10)
    assert torch.equal(got, nms(boxes, scores, 0.7)[:10])
    assert got.numel() == 10


def test_nms_first_k_handles_empty_input_and_rejects_bad_k() -> None:
    assert nms_first_k(torch.zeros(0, 4), torch.zeros(0), 0.7, 5).numel() == 0
    with pytest.raises(ValueError, match="k must be positive"):
        nms_first_k(torch.zeros(3, 4), torch.zeros(3), 0.7, 0)


def _rpns(**kwargs: object) -> tuple[RegionProposalNetwork, SingleLevelRPN]:
    anchors = AnchorGenerator(sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),))
    head = RPNHead(16, 15)
    args = {
        "fg_iou_thresh": 0.7,
        "bg_iou_thresh": 0.3,
        "batch_size_per_image": 256,
        "positive_fraction": 0.5,
        "nms_thresh": 0.7,
        **kwargs,
    }
    return RegionProposalNetwork(anchors, head, **args), SingleLevelRPN(anchors, head, **args)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("score_thresh", [0.0, 0.4])
def test_single_level_rpn_returns_torchvisions_proposals(training: bool, score_thresh: float) -> None:
    reference, ours = _rpns(
        pre_nms_top_n={"training": 1200, "testing": 600},
        post_nms_top_n={"training": 200, "testing": 30},
        score_thresh=score_thresh,
    )
    reference.train(training)
    ours.train(training)
    g = torch.Generator().manual_seed(1)
    num_images, num_anchors = 2, 3000
    boxes, _ = _clustered_boxes(num_images * num_anchors, seed=5)
    boxes[:7] = torch.tensor([5.0, 5.0, 5.5, 40.0])  # narrower than min_size: removed
    proposals = (boxes - 40).reshape(num_images, num_anchors, 4)  # some leave the image: clipped
    objectness = torch.randn(num_images * num_anchors, 1, generator=g) * 2
    shapes = [(300, 380), (420, 350)]
    expected_boxes, expected_scores = reference.filter_proposals(proposals, objectness, shapes, [num_anchors])
    got_boxes, got_scores = ours.filter_proposals(proposals, objectness, shapes, [num_anchors])
    assert len(got_boxes) == len(got_scores) == num_images
    for index in range(num_images):
        assert got_boxes[index].shape[0] == (200 if training else 30)
        assert torch.equal(got_boxes[index], expected_boxes[index])
        assert torch.equal(got_scores[index], expected_scores[index])


def test_single_level_rpn_rejects_feature_pyramids() -> None:
    counts = {"training": 10, "testing": 10}
    _, ours = _rpns(pre_nms_top_n=counts, post_nms_top_n=counts)
    with pytest.raises(ValueError, match="one feature map"):
        ours.filter_proposals(torch.zeros(1, 8, 4), torch.zeros(8, 1), [(10, 10)], [4, 4])
