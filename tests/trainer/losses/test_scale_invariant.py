"""SSL's scale-invariant loss against a loop transcription of Eqs. 2-4: values and gradients.

Wang et al., ICCV 2023, section 3.2. The transcription loops over images, persons and
exemplar scales in float64 with ``D(a, b) = ||a/|a| - b/|b|||^2``, the way the equations
are written, so it shares no code with the vectorised loss.
"""

from __future__ import annotations

import pytest
import torch
from personsearch_train.losses import scale_invariant_loss


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def reference(
    instance: torch.Tensor, exemplars: torch.Tensor, image_ids: torch.Tensor, margin: float, gamma: float
) -> torch.Tensor:
    f, g = _unit(instance), _unit(exemplars)
    scales = g.shape[1]

    def d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ((a - b) ** 2).sum()

    image_losses = []
    for image in sorted(set(image_ids.tolist())):
        persons = [i for i in range(len(f)) if int(image_ids[i]) == image]
        total = f.new_zeros(())
        for i in persons:
            hardest_positive = max(d(f[i], g[i, s]) for s in range(1, scales))
            negatives = [d(f[i], g[j, s]) for j in persons if j != i for s in range(scales)]
            hinge = torch.clamp(margin + hardest_positive - min(negatives), min=0) if negatives else 0.0
            total = total + hinge + gamma * d(f[i], g[i, 0])
        image_losses.append(total / len(persons))
    return sum(image_losses) / len(image_losses)


def _value_and_grads(fn, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach().double(), [leaf.grad for leaf in leaves]


@pytest.mark.parametrize(("seed", "margin", "gamma"), [(0, 0.3, 0.05), (1, 0.3, 0.05), (2, 1.0, 0.5)])
def test_matches_eq2_to_eq4(seed: int, margin: float, gamma: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    # Images 7 (3 persons), 2 (1 person, no negative), 9 (3 persons), interleaved.
    image_ids = torch.tensor([7, 7, 2, 9, 7, 9, 9])
    instance = torch.randn(len(image_ids), 5, generator=generator, dtype=torch.float64)
    # K = 3 rescaled exemplars near the instance, so some hinges are active and some not.
    exemplars = instance[:, None, :] + 0.8 * torch.randn(
        len(image_ids), 4, 5, generator=generator, dtype=torch.float64
    )
    got, got_grads = _value_and_grads(
        lambda a, b: scale_invariant_loss(a, b, image_ids, margin=margin, gamma=gamma), instance, exemplars
    )
    want, want_grads = _value_and_grads(
        lambda a, b: reference(a, b, image_ids, margin, gamma), instance, exemplars
    )
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_lone_person_keeps_only_the_original_scale_pull() -> None:
    instance = torch.tensor([[1.0, 0.0]])
    # Original scale orthogonal (D = 2), the rescaled exemplars anywhere: no negative,
    # so only gamma * 2 remains.
    exemplars = torch.tensor([[[0.0, 3.0], [-1.0, 0.0], [0.5, 0.5]]])
    value = scale_invariant_loss(instance, exemplars, torch.tensor([4]), gamma=0.05)
    assert value.dtype == torch.float32
    assert float(value) == pytest.approx(0.1, rel=1e-6)


def test_averages_over_persons_then_images() -> None:
    # Image 0: two persons with loss 0 + 0 (identical exemplars, far negatives);
    # image 1: one person with pull gamma * 2. Eq. 4 gives (0 + 0.1) / 2, not 0.1 / 3.
    instance = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])
    lone = torch.tensor([[0.0, 1.0]] * 3)
    exemplars = torch.stack([instance[0].repeat(3, 1), instance[1].repeat(3, 1), lone])
    value = scale_invariant_loss(instance, exemplars, torch.tensor([0, 0, 1]), gamma=0.05)
    assert float(value) == pytest.approx(0.05, abs=1e-6)


def test_edge_cases() -> None:
    instance = torch.randn(3, 4)
    exemplars = torch.randn(3, 2, 4)
    empty = scale_invariant_loss(instance[:0], exemplars[:0], torch.zeros(0, dtype=torch.int64))
    assert float(empty) == 0.0 and empty.dtype == torch.float32
    with pytest.raises(ValueError, match="at least one rescaled"):
        scale_invariant_loss(instance, exemplars[:, :1], torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="exemplars must be"):
        scale_invariant_loss(instance, exemplars[:, :, :3], torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="exemplars must be"):
        scale_invariant_loss(instance, exemplars, torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"instance \[P, D\]"):
        scale_invariant_loss(instance, exemplars[0], torch.zeros(3, dtype=torch.int64))
