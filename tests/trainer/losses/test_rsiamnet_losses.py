"""R-SiamNet's losses against direct transcriptions of the paper's equations: values and gradients.

Han et al., ICCV 2021: Eq. 1 (self-instance consistency), Eq. 2 (inter-instance
similarity consistency, with our documented softmax over the other people of the batch)
and Eq. 3 (cluster-level contrastive loss). The transcriptions loop over people and
pairs in float64, the way the formulas are written, so they share no code with the
vectorised losses.
"""

from __future__ import annotations

import math

import pytest
import torch
from personsearch_train.losses import (
    cluster_contrastive_loss,
    self_instance_consistency,
    similarity_consistency,
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def eq1(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
    terms = [1 - _unit(fa[i : i + 1])[0] @ _unit(fb[i : i + 1])[0] for i in range(len(fa))]
    return sum(terms) / len(fa)


def eq2(fa: torch.Tensor, fb: torch.Tensor, temperature: float) -> torch.Tensor:
    sa, sb = _unit(fa) @ _unit(fa).t(), _unit(fb) @ _unit(fb).t()
    total = fa.new_zeros(())
    count = len(fa)
    for i in range(count):
        others = [j for j in range(count) if j != i]
        p = torch.softmax(torch.stack([sa[i, j] for j in others]) / temperature, 0)
        q = torch.softmax(torch.stack([sb[i, j] for j in others]) / temperature, 0)
        total = total + (p * (p / q).log()).sum() / count + (q * (q / p).log()).sum() / count
    return total


def eq3(
    f: torch.Tensor, memory: torch.Tensor, memory_labels: torch.Tensor, labels: torch.Tensor, gamma: float
):
    losses = []
    for x, label in zip(_unit(f), labels, strict=True):
        s = memory @ x
        positives = [s[k] for k in range(len(memory)) if memory_labels[k] == label]
        negatives = [s[k] for k in range(len(memory)) if memory_labels[k] != label]
        inner = sum(torch.exp(gamma * (sn - sp)) for sp in positives for sn in negatives)
        losses.append(torch.log(1 + inner))
    return sum(losses) / len(losses)


def _views(seed: int, count: int = 5, dim: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    fa = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    fb = fa + 0.7 * torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return fa, fb


def _value_and_grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach().double(), [leaf.grad for leaf in leaves]


def test_self_instance_consistency_matches_eq1() -> None:
    fa, fb = _views(0)
    got, got_grads = _value_and_grads(self_instance_consistency, fa, fb)
    want, want_grads = _value_and_grads(eq1, fa, fb)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert float(self_instance_consistency(fa, 3.0 * fa)) == pytest.approx(0.0, abs=1e-6)
    assert float(self_instance_consistency(fa, -fa)) == pytest.approx(2.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_similarity_consistency_matches_eq2_with_softmax_rows(temperature: float) -> None:
    fa, fb = _views(1)
    got, got_grads = _value_and_grads(
        lambda a, b: similarity_consistency(a, b, temperature=temperature), fa, fb
    )
    want, want_grads = _value_and_grads(lambda a, b: eq2(a, b, temperature), fa, fb)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-3, atol=1e-6)


def test_similarity_consistency_is_zero_for_equal_structure_and_small_batches() -> None:
    fa, _ = _views(2)
    rotation = torch.linalg.qr(
        torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    )[0]
    # A rotation keeps every cosine, so both paths give the same distributions.
    assert float(similarity_consistency(fa, fa @ rotation)) == pytest.approx(0.0, abs=1e-6)
    assert float(similarity_consistency(fa[:2], fa[:2].flip(0))) == 0.0
    with pytest.raises(ValueError, match="temperature must be > 0"):
        similarity_consistency(fa, fa, temperature=0.0)


def test_cluster_contrastive_loss_matches_eq3() -> None:
    generator = torch.Generator().manual_seed(4)
    memory = _unit(torch.randn(7, 5, generator=generator, dtype=torch.float64))
    memory_labels = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    f = torch.randn(4, 5, generator=generator, dtype=torch.float64)
    labels = torch.tensor([2, 0, 3, 1])
    got, (got_grad, _) = _value_and_grads(
        lambda x, m: cluster_contrastive_loss(x, m, memory_labels, labels, scale=16.0), f, memory
    )
    want, (want_grad, _) = _value_and_grads(lambda x, m: eq3(x, m, memory_labels, labels, 16.0), f, memory)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-6)


def test_cluster_contrastive_loss_edge_cases() -> None:
    memory = torch.eye(3, dtype=torch.float64)
    # Everyone in one cluster: no negative, so log(1 + 0) = 0.
    assert (
        float(
            cluster_contrastive_loss(
                memory, memory, torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)
            )
        )
        == 0.0
    )
    # Instance recognition (K = 1): the loss only depends on the row's own entry as positive.
    labels = torch.arange(3)
    value = float(cluster_contrastive_loss(memory, memory, labels, labels, scale=1.0))
    assert value == pytest.approx(math.log(1 + 2 * math.exp(-1.0)), rel=1e-6)
    with pytest.raises(ValueError, match="has no entry in the memory"):
        cluster_contrastive_loss(memory, memory, labels, torch.tensor([0, 1, 9]))
    empty = cluster_contrastive_loss(memory[:0], memory, labels, labels[:0])
    assert float(empty) == 0.0
