"""CGPS's triplet loss with background term against a loop transcription: values and gradients.

The transcription follows ``Quaduplet2Loss`` (Yan et al., AAAI 2022) anchor by anchor in
float64 on normalised embeddings: Euclidean distances, the hardest positive (the anchor
itself, at 0, included) and hardest negative, then for the background term the farthest
foreground RoI of any label against the nearest background RoI; hinge losses averaged
over the anchors. It shares no code with the vectorised loss.
"""

from __future__ import annotations

import math

import pytest
import torch
from personsearch_train.losses import triplet_with_background_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _distance(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((u - v) ** 2).sum().sqrt()


def reference(
    f: torch.Tensor, labels: torch.Tensor, background: torch.Tensor, margin: float, weight: float
) -> torch.Tensor:
    if len(set(labels.tolist())) < 2:
        return f.sum() * 0.0
    x, b = _unit(f), _unit(background)
    n = len(x)

    def d(i: int, j: int) -> torch.Tensor:
        return x.new_zeros(()) if i == j else _distance(x[i], x[j])

    triplet, ranking = [], []
    for i in range(n):
        positives = [d(i, j) for j in range(n) if labels[j] == labels[i]]
        negatives = [d(i, j) for j in range(n) if labels[j] != labels[i]]
        triplet.append(torch.clamp(margin + max(positives) - min(negatives), min=0))
        if len(b):
            farthest = max(d(i, j) for j in range(n))
            nearest = min(_distance(x[i], b[k]) for k in range(len(b)))
            ranking.append(torch.clamp(margin + farthest - nearest, min=0))
    loss = sum(triplet) / n
    if ranking:
        loss = loss + weight * sum(ranking) / n
    return loss


def _value_and_grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach().double(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize(("seed", "margin", "background_count"), [(0, 0.3, 5), (1, 0.3, 1), (2, 0.8, 4)])
def test_matches_loop_transcription(seed: int, margin: float, background_count: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    # Three identities (one a singleton) around their centres; unnormalised on purpose.
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 1])
    f = 2.0 * centres[labels] + torch.randn(len(labels), 6, generator=generator, dtype=torch.float64)
    background = torch.randn(background_count, 6, generator=generator, dtype=torch.float64)
    got, got_grads = _value_and_grads(
        lambda x, b: triplet_with_background_loss(x, labels, b, margin=margin, background_weight=0.25),
        f,
        background,
    )
    want, want_grads = _value_and_grads(lambda x, b: reference(x, labels, b, margin, 0.25), f, background)
    assert float(want) > 0.0
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_hand_made_singleton_anchor_and_background_term() -> None:
    f = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    d01, d02, d12 = math.sqrt(0.4), math.sqrt(2.0), math.sqrt(0.8)
    # Anchor 2 is alone in its label: its hardest positive is itself, at 0.
    triplet = ((1 + d01 - d02) + (1 + d01 - d12) + (1 - d12)) / 3
    no_background = triplet_with_background_loss(f, labels, f[:0], margin=1.0)
    assert no_background.dtype == torch.float32
    assert float(no_background) == pytest.approx(triplet, rel=1e-5)
    # Background (-1, 0): anchor 0's farthest foreground is anchor 2 of the *other* label
    # (CGPS's code), giving 1 + d02 - 2; anchor 1: 1 + d12 - sqrt(3.6) < 0; anchor 2: 1 + d02 - d02.
    ranking = ((1 + d02 - 2.0) + 0.0 + 1.0) / 3
    with_background = triplet_with_background_loss(
        f, labels, torch.tensor([[-1.0, 0.0]]), margin=1.0, background_weight=0.25
    )
    assert float(with_background) == pytest.approx(triplet + 0.25 * ranking, rel=1e-5)


def test_edge_cases() -> None:
    generator = torch.Generator().manual_seed(3)
    f = torch.randn(4, 5, generator=generator, requires_grad=True)
    background = torch.randn(3, 5, generator=generator)
    # One label: no anchor has a negative, and CGPS returns 0 for the whole loss.
    one_label = triplet_with_background_loss(f, torch.zeros(4, dtype=torch.int64), background)
    one_label.backward()
    assert float(one_label.detach()) == 0.0 and bool((f.grad == 0).all())
    empty = triplet_with_background_loss(f[:0], torch.zeros(0, dtype=torch.int64), background)
    assert float(empty.detach()) == 0.0 and empty.dtype == torch.float32
    with pytest.raises(ValueError, match=r"background \[K, D\]"):
        triplet_with_background_loss(f, torch.arange(4), background[:, :2])
    with pytest.raises(ValueError, match="labels must be"):
        triplet_with_background_loss(f, torch.arange(3), background)
