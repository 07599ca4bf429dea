"""CGPS's hard-negative cluster contrastive loss against a loop transcription: values and gradients.

The transcription follows ``HybridMemoryMultiFocalPercent`` (Yan et al., AAAI 2022) step by
step in float64: per-cluster mean of the member logits, the probabilities of the negative
clusters sorted in descending order, the cut where the cumulative mass is closest to
``top_percent`` (first one on ties), every negative at least as probable as the cut kept,
then the negative log-probability of the own cluster. It shares no code with the
vectorised loss.
"""

from __future__ import annotations

import math

import pytest
import torch
from personsearch_train.losses import hard_negative_cluster_contrastive_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def reference(
    f: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    top_percent: float,
) -> torch.Tensor:
    clusters = sorted(set(memory_labels.tolist()))
    losses = []
    for x, own in zip(_unit(f), labels.tolist(), strict=True):
        z = {}
        for c in clusters:
            members = [n for n in range(len(memory)) if int(memory_labels[n]) == c]
            z[c] = sum(memory[n] @ x / temperature for n in members) / len(members)
        negatives = [c for c in clusters if c != own]
        exps = {c: torch.exp(z[c]) for c in negatives}
        total = sum(exps.values())
        probabilities = {c: float((exps[c] / total).detach()) for c in negatives}
        ordered = sorted(probabilities.values(), reverse=True)
        cumulative, cut, best_gap = 0.0, 0, math.inf
        for k, q in enumerate(ordered):
            cumulative += q
            if abs(cumulative - top_percent) < best_gap:
                best_gap, cut = abs(cumulative - top_percent), k
        kept = [c for c in negatives if probabilities[c] >= ordered[cut]]
        positive = torch.exp(z[own])
        losses.append(-torch.log(positive / (positive + sum(exps[c] for c in kept))))
    return sum(losses) / len(losses)


def _problem(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Cluster ids with gaps (3, 6 unused): empty clusters take no part.
    memory_labels = torch.tensor([0, 0, 1, 2, 2, 2, 4, 5, 5, 7, 7, 8, 9, 9, 9, 10, 11, 11])
    memory = _unit(torch.randn(len(memory_labels), 8, generator=generator, dtype=torch.float64))
    labels = torch.tensor([0, 2, 2, 7, 9, 11])
    f = torch.randn(len(labels), 8, generator=generator, dtype=torch.float64)
    return f, memory, memory_labels, labels


def _value_and_grad(fn, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = f.clone().requires_grad_(True)
    value = fn(leaf)
    value.backward()
    return value.detach().double(), leaf.grad


@pytest.mark.parametrize(
    ("seed", "temperature", "top_percent"),
    [(0, 0.05, 0.6), (1, 0.05, 0.7), (2, 0.1, 0.3), (3, 0.2, 0.6), (4, 0.2, 1.0), (5, 0.5, 0.8)],
)
def test_matches_loop_transcription(seed: int, temperature: float, top_percent: float) -> None:
    f, memory, memory_labels, labels = _problem(seed)
    got, got_grad = _value_and_grad(
        lambda x: hard_negative_cluster_contrastive_loss(
            x, memory, memory_labels, labels, temperature=temperature, top_percent=top_percent
        ),
        f,
    )
    want, want_grad = _value_and_grad(
        lambda x: reference(x, memory, memory_labels, labels, temperature, top_percent), f
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-4, atol=1e-5)


def test_filter_drops_easy_negatives() -> None:
    f, memory, memory_labels, labels = _problem(2)
    filtered = hard_negative_cluster_contrastive_loss(
        f, memory, memory_labels, labels, temperature=0.1, top_percent=0.3
    )
    everything = hard_negative_cluster_contrastive_loss(
        f, memory, memory_labels, labels, temperature=0.1, top_percent=1.0
    )
    # Dropping negatives only removes terms from the denominator.
    assert float(filtered) < float(everything)


def _entry(similarity: float) -> list[float]:
    return [similarity, math.sqrt(1 - similarity**2)]


@pytest.mark.parametrize(
    ("top_percent", "kept_mass"),
    [
        (0.6, 0.5),  # cumsum 0.5, 0.8, 1.0: 0.5 is nearest, the crossing cluster is dropped
        (0.7, 0.8),  # 0.8 is nearest: the crossing cluster is kept
        (0.1, 0.5),  # at least the hardest negative is always kept
        (1.0, 1.0),  # every negative
    ],
)
def test_hand_made_selection(top_percent: float, kept_mass: float) -> None:
    temperature = 0.05
    # Negative clusters 2, 5, 7 with softmax (among negatives) 0.5, 0.3, 0.2: cosine
    # 0.5 + tau * log(q) gives cluster logits 10 + log(q); cluster 2 has two entries
    # whose cosines average to its value. The own cluster 0 has logit 10 (= log 1 + 10).
    c2 = 0.5 + temperature * math.log(0.5)
    memory = torch.tensor(
        [
            _entry(0.5),
            _entry(c2 + 0.03),
            _entry(c2 - 0.03),
            _entry(0.5 + temperature * math.log(0.3)),
            _entry(0.5 + temperature * math.log(0.2)),
        ],
        dtype=torch.float64,
    )
    memory_labels = torch.tensor([0, 2, 2, 5, 7])
    x = torch.tensor([[3.0, 0.0]], dtype=torch.float64)
    value = hard_negative_cluster_contrastive_loss(
        x, memory, memory_labels, torch.tensor([0]), temperature=temperature, top_percent=top_percent
    )
    # -log(1 / (1 + kept mass)), the negatives' exps being (own exp) * q.
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(math.log(1 + kept_mass), rel=1e-5)


def test_edge_cases() -> None:
    f, memory, memory_labels, labels = _problem(5)
    empty = hard_negative_cluster_contrastive_loss(f[:0], memory, memory_labels, labels[:0])
    assert float(empty) == 0.0 and empty.dtype == torch.float32
    leaf = f.clone().requires_grad_(True)
    single = hard_negative_cluster_contrastive_loss(
        leaf, memory, torch.zeros_like(memory_labels), torch.zeros_like(labels)
    )
    single.backward()
    assert float(single.detach()) == 0.0 and bool((leaf.grad == 0).all())
    with pytest.raises(ValueError, match="has no entry in the memory"):
        hard_negative_cluster_contrastive_loss(f, memory, memory_labels, torch.tensor([0, 2, 2, 7, 9, 3]))
    with pytest.raises(ValueError, match="has no entry in the memory"):
        hard_negative_cluster_contrastive_loss(f, memory, memory_labels, torch.tensor([0, 2, 2, 7, 9, 40]))
    with pytest.raises(ValueError, match="top_percent"):
        hard_negative_cluster_contrastive_loss(f, memory, memory_labels, labels, top_percent=0.0)
    with pytest.raises(ValueError, match="temperature"):
        hard_negative_cluster_contrastive_loss(f, memory, memory_labels, labels, temperature=0.0)
    with pytest.raises(ValueError, match=r"features \[B, D\]"):
        hard_negative_cluster_contrastive_loss(f[:, :3], memory, memory_labels, labels)
    with pytest.raises(ValueError, match="memory_labels must be"):
        hard_negative_cluster_contrastive_loss(f, memory, memory_labels[:-1], labels)


def test_runs_at_training_scale() -> None:
    # CGPS-sized memory: 10k entries in 5k clusters, a batch of 100 RoIs.
    generator = torch.Generator().manual_seed(6)
    memory = _unit(torch.randn(10_000, 64, generator=generator))
    memory_labels = torch.randint(0, 5_000, (10_000,), generator=generator)
    labels = memory_labels[torch.randint(0, 10_000, (100,), generator=generator)]
    f = torch.randn(100, 64, generator=generator, requires_grad=True)
    value = hard_negative_cluster_contrastive_loss(f, memory, memory_labels, labels)
    value.backward()
    assert torch.isfinite(value) and bool(torch.isfinite(f.grad).all())
