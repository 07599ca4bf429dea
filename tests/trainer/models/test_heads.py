"""NAE, stripe pooling, BN-neck regressor, box coder and RoI sampler."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from personsearch_train.models import create_model
from personsearch_train.models.backbone import stripe_max_pool
from personsearch_train.models.box_coding import BoxCoder
from personsearch_train.models.heads import BNNeckBoxRegressor, NormAwareEmbedding
from personsearch_train.models.roi_sampling import RoISampler
from torchvision.ops import box_iou


def test_nae_embeddings_are_unit_norm_and_logit_is_norm_based() -> None:
    torch.manual_seed(0)
    nae = NormAwareEmbedding(in_channels=(16, 32), dim=11)
    assert [p[0].out_features for p in nae.projections] == [5, 6]  # remainder goes to the last part
    a, b = torch.randn(9, 16), torch.randn(9, 32)
    embeddings, logits = nae(a, b)
    assert embeddings.shape == (9, 11) and logits.shape == (9,)
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(9))
    nae.eval()
    embeddings, logits = nae(a, b)
    joint = torch.cat([nae.projections[0](a), nae.projections[1](b)], dim=1)
    torch.testing.assert_close(embeddings, joint / joint.norm(dim=1, keepdim=True))
    # Logit is a monotone (BN with positive scale) function of the norm.
    assert float(nae.norm_bn.weight.detach()) > 0
    assert torch.equal(joint.norm(dim=1).argsort(), logits.argsort())


def test_bn_neck_regressor_shape() -> None:
    head = BNNeckBoxRegressor(in_channels=12, num_classes=2)
    assert head(torch.randn(5, 12, 1, 1)).shape == (5, 8)


def test_box_coder_round_trip_and_known_value() -> None:
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    refs = torch.tensor([[0.0, 0.0, 10.0, 20.0], [5.0, 5.0, 15.0, 9.0]])
    targets = torch.tensor([[2.0, 1.0, 14.0, 21.0], [4.0, 4.0, 20.0, 12.0]])
    deltas = coder.encode(targets, refs)
    # First box: centre (5,10) -> (8,11), size (10,20) -> (12,20).
    torch.testing.assert_close(
        deltas[0], torch.tensor([10 * 3 / 10, 10 * 1 / 20, 5 * torch.log(torch.tensor(1.2)).item(), 0.0])
    )
    decoded = coder.decode(torch.cat([torch.zeros_like(deltas), deltas], dim=1), refs)
    assert decoded.shape == (2, 2, 4)
    torch.testing.assert_close(decoded[:, 0], refs)
    torch.testing.assert_close(decoded[:, 1], targets)


def test_roi_sampler_adds_ground_truth_and_balances() -> None:
    torch.manual_seed(0)
    sampler = RoISampler(
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=16,
        positive_fraction=0.25,
        box_coder=BoxCoder(),
    )
    gt = torch.tensor([[10.0, 10.0, 50.0, 90.0], [60.0, 10.0, 100.0, 90.0]])
    pids = torch.tensor([4, -1])
    far = torch.tensor([[200.0, 200.0, 230.0, 260.0]]).repeat(30, 1)
    near = gt[:1] + torch.tensor([1.0, 1.0, 1.0, 1.0])
    out = sampler(torch.cat([near, far]), gt, pids)
    assert out.boxes.shape == (16, 4)
    assert int(out.is_person.sum()) == 3  # near box + the two appended ground-truth boxes (< 16 * 0.25)
    iou = box_iou(out.boxes, gt).max(dim=1).values
    assert (iou[out.is_person] >= 0.5).all() and (iou[~out.is_person] < 0.5).all()
    assert sorted(out.pids[out.is_person].tolist()) == [-1, 4, 4]
    assert (out.regression_targets[~out.is_person] == 0).all()


def test_roi_sampler_without_ground_truth() -> None:
    sampler = RoISampler(
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=8,
        positive_fraction=0.5,
        box_coder=BoxCoder(),
    )
    out = sampler(
        torch.rand(20, 4) * 10 + torch.tensor([0, 0, 20, 20]), torch.zeros(0, 4), torch.zeros(0).long()
    )
    assert out.boxes.shape == (8, 4) and not out.is_person.any()
    assert torch.isfinite(out.regression_targets).all()


def test_nae_fixed_shift_keeps_projection_biases_at_zero() -> None:
    # Regression (issue 3): a learnt shared BN offset let from-scratch training collapse
    # every embedding onto one direction.
    torch.manual_seed(0)
    nae = NormAwareEmbedding(in_channels=(6, 10), dim=8, learn_shift=False)
    optimiser = torch.optim.SGD([p for p in nae.parameters() if p.requires_grad], lr=1.0)
    x4, x5 = torch.randn(12, 6), torch.randn(12, 10)
    embeddings, logits = nae(x4, x5)
    (embeddings[:, 0].sum() + logits.sum()).backward()
    optimiser.step()
    for projection in nae.projections:
        assert not projection[1].bias.requires_grad and projection[1].bias.grad is None
        assert projection[1].bias.eq(0).all()
        assert projection[1].weight.grad is not None
    # In training mode each embedding coordinate is then zero-mean over the batch.
    joint = torch.cat([p(x) for p, x in zip(nae.projections, (x4, x5), strict=True)], dim=1)
    torch.testing.assert_close(joint.mean(dim=0), torch.zeros(8), atol=1e-5, rtol=0)
    learnt = NormAwareEmbedding(in_channels=(6, 10), dim=8)
    assert all(p[1].bias.requires_grad for p in learnt.projections)


def test_seqnet_builders_fix_the_nae_shift_for_from_scratch_variants() -> None:
    from personsearch_train.models import create_model

    for name, learns in (("seqnet_tiny", False), ("seqnet_small", False), ("seqnet_r18", True)):
        model = create_model(name)
        assert model.embedding.learn_shift is learns, name
        # A random stem must train; the paper freezes only an ImageNet-initialised one.
        assert model.backbone.conv1.weight.requires_grad is not learns, name


@pytest.mark.parametrize("height", [5, 7, 14])
@pytest.mark.parametrize("stripes", [1, 2, 3, 4])
def test_stripe_max_pool_matches_adaptive_max_pooling(height: int, stripes: int) -> None:
    features = torch.randn(3, 6, height, 5, generator=torch.Generator().manual_seed(height + stripes))
    expected = F.adaptive_max_pool2d(features, (stripes, 1)).flatten(1)
    assert torch.equal(stripe_max_pool(features, stripes), expected)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stripes", [1, 2, 7])
def test_stripe_max_pool_sends_each_gradient_to_one_arg_max(stripes: int, channels_last: bool) -> None:
    # Small integers after a ReLU: most maxima occur several times (zeros above all).
    g = torch.Generator().manual_seed(stripes)
    features = torch.randint(-3, 3, (4, 5, 14, 6), generator=g).float().relu()
    if channels_last:
        features = features.contiguous(memory_format=torch.channels_last)
    upstream = torch.randn(4, 5 * stripes, generator=g)
    ours = features.clone().requires_grad_()
    (stripe_max_pool(ours, stripes) * upstream).sum().backward()
    # SeqNet's pooling (stripes divide 14 here, so the bands do not overlap).
    reference = features.clone().requires_grad_()
    (F.adaptive_max_pool2d(reference, (stripes, 1)).flatten(1) * upstream).sum().backward()
    assert torch.equal(ours.grad, reference.grad)
    # One position per band and channel receives the whole gradient, not a share of it.
    nonzero_per_band = (ours.grad != 0).reshape(4, 5, stripes, -1).sum(dim=3)
    assert int(nonzero_per_band.max()) == 1


def test_stripe_max_pool_refuses_more_stripes_than_rows() -> None:
    with pytest.raises(ValueError, match="3 rows into 4 stripes"):
        stripe_max_pool(torch.zeros(1, 2, 3, 3), 4)


def test_striped_reid_head_tells_top_from_bottom() -> None:
    """Swapping the upper and lower halves of a RoI changes a striped embedding only."""
    torch.manual_seed(0)
    pooled = torch.rand(1, 32, 14, 14)
    swapped = torch.cat([pooled[:, :, 7:], pooled[:, :, :7]], dim=2)
    for stripes, should_differ in ((1, False), (2, True)):
        model = create_model("seqnet_tiny", embedding_stripes=stripes).eval()
        # A 1x1 layer4 keeps each row's features in its row, so only the pooling can mix them.
        model.reid_head.layer4 = torch.nn.Conv2d(32, 64, kernel_size=1)
        with torch.no_grad():
            a, _, deltas = model.reid_head_outputs(pooled)
            b, _, swapped_deltas = model.reid_head_outputs(swapped)
            # The box regressor sees the global maximum whatever the stripes.
            global_res5 = model.reid_head.layer4(pooled).amax(dim=(2, 3))
            torch.testing.assert_close(deltas, model.reid_regressor(global_res5))
        torch.testing.assert_close(deltas, swapped_deltas)
        assert (not torch.allclose(a, b, atol=1e-4)) == should_differ
