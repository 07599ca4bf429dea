"""OIM loss: memory update rules, ignored unlabelled samples, gradients, state."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from personsearch_train.losses import OIMLoss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _reference_update(features, labels, lut, queue, head, momentum):
    """The sample-by-sample loop SeqNet runs in its backward (methods.md section 1.3)."""
    lut, queue = lut.clone(), queue.clone()
    for x, y in zip(features, labels.tolist(), strict=True):
        if y >= 0:
            lut[y] = momentum * lut[y] + (1 - momentum) * x
            lut[y] = lut[y] / lut[y].norm()
        else:
            queue[head] = x
            head = (head + 1) % queue.shape[0]
    return lut, queue, head


def _loss_with_memory(lut: torch.Tensor, queue: torch.Tensor, **kwargs) -> OIMLoss:
    oim = OIMLoss(num_features=lut.shape[1], num_labelled=lut.shape[0], queue_size=queue.shape[0], **kwargs)
    oim.lut.copy_(lut)
    oim.queue.copy_(queue)
    return oim


def test_memory_is_state_dict_buffers() -> None:
    oim = OIMLoss(num_features=8, num_labelled=5, queue_size=3)
    state = oim.state_dict()
    assert set(state) == {"lut", "queue", "queue_head"}
    assert not list(oim.parameters())
    assert state["lut"].shape == (5, 8) and state["queue"].shape == (3, 8)


def test_loss_and_gradient_match_a_hand_computation() -> None:
    torch.manual_seed(0)
    lut, queue = _unit(torch.randn(4, 6)), _unit(torch.randn(3, 6))
    oim = _loss_with_memory(lut, queue, scale=30.0)
    x = _unit(torch.randn(5, 6)).requires_grad_(True)
    labels = torch.tensor([2, -1, 0, 2, -1])
    loss = oim(x, labels)

    reference_x = x.detach().clone().requires_grad_(True)
    logits = 30.0 * reference_x @ torch.cat([lut, queue]).t()
    keep = labels >= 0
    expected = F.cross_entropy(logits[keep], labels[keep])  # unlabelled rows excluded entirely
    expected.backward()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    # Gradient uses the memory as it was before this step's update.
    torch.testing.assert_close(x.grad, reference_x.grad)
    assert x.grad[1].abs().max() == 0 and x.grad[4].abs().max() == 0


def test_backward_updates_memory_like_the_sequential_loop() -> None:
    torch.manual_seed(1)
    lut, queue = _unit(torch.randn(4, 6)), torch.zeros(3, 6)
    oim = _loss_with_memory(lut, queue, momentum=0.5)
    # Label 2 twice (order matters), four unlabelled samples wrap the 3-slot queue.
    x = _unit(torch.randn(7, 6))
    labels = torch.tensor([2, -1, 0, -1, 2, -1, -1])
    oim(x.clone().requires_grad_(True), labels).backward()
    ref_lut, ref_queue, ref_head = _reference_update(x, labels, lut, queue, 0, 0.5)
    torch.testing.assert_close(oim.lut, ref_lut)
    torch.testing.assert_close(oim.queue, ref_queue)
    assert int(oim.queue_head) == ref_head == 1
    # Untouched rows stay, updated rows are unit norm.
    torch.testing.assert_close(oim.lut[[1, 3]], lut[[1, 3]])
    torch.testing.assert_close(oim.lut[[0, 2]].norm(dim=1), torch.ones(2))


def test_momentum_update_by_hand() -> None:
    lut = torch.tensor([[1.0, 0.0]])
    oim = _loss_with_memory(lut, torch.zeros(0, 2), momentum=0.5)
    oim(torch.tensor([[0.0, 1.0]], requires_grad=True), torch.tensor([0])).backward()
    s = 0.5**0.5
    torch.testing.assert_close(oim.lut, torch.tensor([[s, s]]))


def test_queue_head_wraps_over_several_steps() -> None:
    oim = OIMLoss(num_features=2, num_labelled=1, queue_size=4)
    written = []
    for _ in range(3):
        x = _unit(torch.randn(3, 2))
        written.extend(x)
        oim(x.requires_grad_(True), torch.full((3,), -1)).backward()
    # 9 writes into 4 slots: slots hold writes 8, 5, 6, 7 -> slot i has the last write with index % 4 == i.
    expected = torch.stack([written[8], written[5], written[6], written[7]])
    torch.testing.assert_close(oim.queue, expected)
    assert int(oim.queue_head) == 9 % 4


def test_more_unlabelled_than_queue_slots_in_one_batch() -> None:
    oim = OIMLoss(num_features=2, num_labelled=1, queue_size=3)
    x = _unit(torch.randn(7, 2))
    oim(x.clone().requires_grad_(True), torch.full((7,), -1)).backward()
    _, ref_queue, ref_head = _reference_update(x, torch.full((7,), -1), oim.lut, torch.zeros(3, 2), 0, 0.5)
    torch.testing.assert_close(oim.queue, ref_queue)
    assert int(oim.queue_head) == ref_head


def test_only_unlabelled_gives_zero_loss_not_nan() -> None:
    oim = OIMLoss(num_features=4, num_labelled=3, queue_size=2)
    x = _unit(torch.randn(2, 4)).requires_grad_(True)
    loss = oim(x, torch.tensor([-1, -1]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(x.grad).all()
    empty = oim(torch.zeros(0, 4, requires_grad=True), torch.zeros(0, dtype=torch.long))
    assert empty.item() == 0.0


def test_out_of_range_labels_are_rejected() -> None:
    oim = OIMLoss(num_features=4, num_labelled=3, queue_size=2)
    import pytest

    with pytest.raises(ValueError, match="contiguous"):
        oim(torch.randn(1, 4), torch.tensor([3]))
    with pytest.raises(ValueError, match="contiguous"):
        oim(torch.randn(1, 4), torch.tensor([-2]))


def test_logits_do_not_touch_memory() -> None:
    oim = OIMLoss(num_features=4, num_labelled=3, queue_size=2, scale=10.0)
    oim.lut.copy_(_unit(torch.randn(3, 4)))
    x = _unit(torch.randn(2, 4))
    before = oim.lut.clone()
    torch.testing.assert_close(oim.logits(x), 10.0 * x @ torch.cat([oim.lut, oim.queue]).t())
    assert torch.equal(before, oim.lut)


def test_unwritten_memory_rows_are_left_out_of_the_softmax() -> None:
    # Regression (issue 3): with zero rows in the softmax, growing a direction shared by
    # every person lowers the loss, and embeddings trained from scratch collapsed.
    torch.manual_seed(3)
    lut = torch.zeros(6, 8)
    queue = torch.zeros(4, 8)
    lut[[0, 2, 3]] = _unit(torch.randn(3, 8))
    queue[:2] = _unit(torch.randn(2, 8))
    oim = _loss_with_memory(lut, queue, scale=30.0)
    features = _unit(torch.randn(4, 8)).requires_grad_()
    labels = torch.tensor([0, 1, 3, -1])  # identity 1 has no written row yet
    loss = oim(features, labels)
    loss.backward()

    reference_x = features.detach().clone().requires_grad_()
    written = torch.cat([lut[[0, 2, 3]], queue[:2]])  # columns 0, 1, 2 = ids 0, 2, 3
    logits = 30.0 * reference_x[[0, 2]] @ written.t()
    expected = F.cross_entropy(logits, torch.tensor([0, 2]))
    expected.backward()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(features.grad, reference_x.grad)
    # The sample of identity 1 scored nothing but still wrote its row.
    torch.testing.assert_close(oim.lut[1], features.detach()[1])


def test_nothing_written_gives_zero_finite_loss_and_fills_memory() -> None:
    oim = OIMLoss(num_features=4, num_labelled=3, queue_size=2)
    features = _unit(torch.randn(3, 4)).requires_grad_()
    loss = oim(features, torch.tensor([0, 2, -1]))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(features.grad).all()
    assert oim.lut[[0, 2]].norm(dim=1).gt(0.99).all() and oim.lut[1].eq(0).all()
    assert oim.queue[0].norm() > 0.99
