"""``MemoryBank``: normalised entries, momentum updates, checkpointed buffers."""

from __future__ import annotations

import pytest
import torch
from personsearch_train.weak_supervision import MemoryBank


def test_reinitialise_normalises_and_sets_labels() -> None:
    bank = MemoryBank(size=3, dim=2)
    bank.reinitialise(torch.tensor([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]]), torch.tensor([5, 6, 5]))
    torch.testing.assert_close(bank.features, torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]))
    assert bank.labels.tolist() == [5, 6, 5] and bank.labels.dtype == torch.int64
    bank.reinitialise(torch.ones(3, 2))  # labels=None keeps the old labels
    assert bank.labels.tolist() == [5, 6, 5]


def test_reinitialise_refuses_another_shape() -> None:
    bank = MemoryBank(size=3, dim=2)
    with pytest.raises(ValueError, match=r"holds \(3, 2\), got \(2, 2\)"):
        bank.reinitialise(torch.ones(2, 2))


def test_update_mixes_with_momentum_then_normalises() -> None:
    bank = MemoryBank(size=2, dim=2, momentum=0.75)
    bank.reinitialise(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]))
    mixed = torch.tensor([0.75, 0.25])
    torch.testing.assert_close(bank.features[0], mixed / mixed.norm())
    torch.testing.assert_close(bank.features[1], torch.tensor([0.0, 1.0]))  # untouched


def test_similarities_are_inner_products_with_every_entry() -> None:
    bank = MemoryBank(size=2, dim=2)
    bank.reinitialise(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    sims = bank.similarities(torch.tensor([[0.5, 2.0], [1.0, 1.0], [0.0, -1.0]]))
    torch.testing.assert_close(sims, torch.tensor([[0.5, 2.0], [1.0, 1.0], [0.0, -1.0]]))


def test_state_dict_holds_features_and_labels() -> None:
    bank = MemoryBank(size=2, dim=3)
    bank.reinitialise(torch.rand(2, 3) + 0.1, torch.tensor([1, 0]))
    restored = MemoryBank(size=2, dim=3)
    restored.load_state_dict(bank.state_dict())
    assert set(bank.state_dict()) == {"features", "labels"}
    assert torch.equal(restored.features, bank.features) and torch.equal(restored.labels, bank.labels)
    assert not list(bank.parameters())  # a memory, not trained by the optimiser
