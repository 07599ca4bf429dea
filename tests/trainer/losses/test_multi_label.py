"""SSL's dynamic multi-label learning (Wang et al., ICCV 2023, section 3.3) against transcriptions.

Eq. 9's threshold schedule at known epochs, the same-image rule of Eq. 10 on a hand-made
similarity matrix and against a traversal written the way the paper describes it, and
Eq. 11 against a loop over persons and memory entries in float64 (values and gradients).
"""

from __future__ import annotations

import math

import pytest
import torch
from personsearch_train.losses import dynamic_threshold, multi_label_loss, same_image_multilabels


def traverse(
    similarities: torch.Tensor, image_of_entry: torch.Tensor, threshold: float, cap: int | None = None
) -> torch.Tensor:
    labels = torch.zeros(similarities.shape, dtype=torch.bool)
    for row in range(similarities.shape[0]):
        order = sorted(range(similarities.shape[1]), key=lambda j: (-float(similarities[row, j]), j))
        blocked: set[int] = set()
        for j in order:
            if float(similarities[row, j]) < threshold or (cap is not None and int(labels[row].sum()) == cap):
                break
            if int(j) in blocked:
                continue
            labels[row, j] = True
            # Everyone else of j's image cannot be this person.
            blocked.update(k for k in range(len(image_of_entry)) if image_of_entry[k] == image_of_entry[j])
    return labels


def eq11(f: torch.Tensor, memory: torch.Tensor, positives: torch.Tensor, delta: float) -> torch.Tensor:
    total = f.new_zeros(())
    for i in range(len(f)):
        x = f[i] / f[i].norm()
        pos = [(memory[p] @ x - 1) ** 2 for p in range(len(memory)) if positives[i, p]]
        neg = [(memory[v] @ x + 1) ** 2 for v in range(len(memory)) if not positives[i, v]]
        total = total + delta / len(pos) * sum(pos) + (sum(neg) / len(neg) if neg else 0.0)
    return total / len(f)


def test_dynamic_threshold_schedule() -> None:
    assert dynamic_threshold(0) == pytest.approx(0.7)
    assert dynamic_threshold(10) == pytest.approx(0.6 + 0.1 * math.exp(-1.0))
    assert dynamic_threshold(25) == pytest.approx(0.6 + 0.1 * math.exp(-2.5))
    assert dynamic_threshold(20, beta=-0.05) == pytest.approx(0.6 + 0.1 * math.exp(-1.0))
    assert dynamic_threshold(3) > dynamic_threshold(4) > 0.6


def test_same_image_multilabels_hand_made() -> None:
    image_of_entry = torch.tensor([0, 0, 1, 1, 1, 2])
    similarities = torch.tensor(
        [
            # 0 (img 0) accepted, blocks 1; 3 (img 1) accepted, blocks 2 and 4; 5 accepted.
            [0.9, 0.8, 0.7, 0.75, 0.2, 0.5],
            # 2 and 3 (img 1) tie at 0.6: the lower index comes first; 5 is below 0.5.
            [0.1, 0.95, 0.6, 0.6, 0.4, 0.49],
            # No candidate at all.
            [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
            # Exactly at the threshold counts.
            [0.5, 0.3, 0.3, 0.3, 0.3, 0.3],
        ]
    )
    expected = torch.tensor(
        [
            [True, False, False, True, False, True],
            [False, True, True, False, False, False],
            [False, False, False, False, False, False],
            [True, False, False, False, False, False],
        ]
    )
    got = same_image_multilabels(similarities, image_of_entry, threshold=0.5)
    assert got.dtype == torch.bool
    assert torch.equal(got, expected)
    assert torch.equal(traverse(similarities, image_of_entry, 0.5), expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_image_multilabels_matches_traversal(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    image_of_entry = torch.randint(0, 12, (60,), generator=generator)
    # Rounded to 0.05 so that ties inside an image occur.
    similarities = (torch.rand(5, 60, generator=generator) * 20).round() / 20
    # Off the 0.05 grid, so float32 and float64 agree on which entries pass it.
    got = same_image_multilabels(similarities, image_of_entry, threshold=0.675)
    assert torch.equal(got, traverse(similarities, image_of_entry, 0.675))
    assert int(got.sum()) > 5


def test_max_positives_stops_the_traversal_after_k_accepted() -> None:
    image_of_entry = torch.tensor([0, 0, 1, 1, 1, 2])
    similarities = torch.tensor(
        [
            # Accepted in order 0, 3, 5; a cap of 2 drops 5, the least similar.
            [0.9, 0.8, 0.7, 0.75, 0.2, 0.5],
            # 2 and 5 tie at 0.6 after 1: the lower index is accepted first.
            [0.1, 0.95, 0.6, 0.3, 0.4, 0.6],
        ]
    )
    got = same_image_multilabels(similarities, image_of_entry, threshold=0.5, max_positives=2)
    expected = torch.tensor(
        [[True, False, False, True, False, False], [False, True, True, False, False, False]]
    )
    assert torch.equal(got, expected)
    assert torch.equal(traverse(similarities, image_of_entry, 0.5, cap=2), expected)
    # A cap of 1 keeps the best entry; a cap at least the row's positives changes nothing.
    one = same_image_multilabels(similarities, image_of_entry, threshold=0.5, max_positives=1)
    assert one.sum(dim=1).tolist() == [1, 1] and bool(one[0, 0]) and bool(one[1, 1])
    uncapped = same_image_multilabels(similarities, image_of_entry, threshold=0.5)
    roomy = same_image_multilabels(similarities, image_of_entry, threshold=0.5, max_positives=3)
    assert torch.equal(roomy, uncapped)
    with pytest.raises(ValueError, match="max_positives must be >= 1"):
        same_image_multilabels(similarities, image_of_entry, threshold=0.5, max_positives=0)


@pytest.mark.parametrize("cap", [1, 3, 7])
def test_max_positives_matches_the_capped_traversal(cap: int) -> None:
    generator = torch.Generator().manual_seed(cap)
    image_of_entry = torch.randint(0, 12, (60,), generator=generator)
    similarities = (torch.rand(5, 60, generator=generator) * 20).round() / 20
    got = same_image_multilabels(similarities, image_of_entry, threshold=0.375, max_positives=cap)
    assert torch.equal(got, traverse(similarities, image_of_entry, 0.375, cap=cap))
    assert got.sum(dim=1).max() == cap


def test_multi_label_loss_matches_eq11() -> None:
    generator = torch.Generator().manual_seed(3)
    memory = torch.randn(9, 6, generator=generator, dtype=torch.float64)
    memory = memory / memory.norm(dim=1, keepdim=True)
    f = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    positives = torch.zeros(4, 9, dtype=torch.bool)
    positives[0, [0]] = True
    positives[1, [1, 4, 7]] = True
    positives[2, [2, 3]] = True
    positives[3, :] = True  # no negative: that term is 0
    leaf = f.clone().requires_grad_(True)
    got = multi_label_loss(leaf, memory, positives, delta=5.0)
    got.backward()
    reference_leaf = f.clone().requires_grad_(True)
    want = eq11(reference_leaf, memory, positives, 5.0)
    want.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.detach().double(), want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(leaf.grad, reference_leaf.grad, rtol=1e-4, atol=1e-6)


def test_multi_label_loss_edge_cases() -> None:
    memory = torch.eye(3)
    # A feature equal to its only positive and opposite to nothing: (1 - 1)^2 = 0 and
    # negatives at cosine 0 give (0 + 1)^2 = 1.
    value = multi_label_loss(torch.eye(3)[:1] * 4.0, memory, torch.tensor([[True, False, False]]))
    assert float(value) == pytest.approx(1.0, abs=1e-6)
    empty = multi_label_loss(torch.zeros(0, 3), memory, torch.zeros(0, 3, dtype=torch.bool))
    assert float(empty) == 0.0 and empty.dtype == torch.float32
    with pytest.raises(ValueError, match="needs a positive"):
        multi_label_loss(torch.ones(2, 3), memory, torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match="positives must be bool"):
        multi_label_loss(torch.ones(2, 3), memory, torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"features \[B, D\]"):
        multi_label_loss(torch.ones(2, 4), memory, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="image_of_entry"):
        same_image_multilabels(torch.ones(2, 3), torch.zeros(4, dtype=torch.int64), threshold=0.5)
