"""UniPT's semi-hard bidirectional ranking loss against a loop transcription and hand cases.

The reference below walks anchor by anchor: it normalises each vector by its own norm,
takes dot products one pair at a time, and picks the negative by comparing Python floats
(strictly below the positive, else the largest), so it shares no code with the vectorised
loss. The hand cases use ``text = I`` so that the cosine matrix is the (unit-norm) image
rows themselves, and every selection and value can be checked on paper.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from personsearch_train.losses import semi_hard_ranking_loss


def reference(image: torch.Tensor, text: torch.Tensor, pids: list[int], margin: float) -> torch.Tensor:
    count = len(pids)
    img = [image[i] / (image[i] * image[i]).sum().sqrt() for i in range(count)]
    txt = [text[i] / (text[i] * text[i]).sum().sqrt() for i in range(count)]

    def term(anchor: torch.Tensor, others: list[torch.Tensor], i: int) -> torch.Tensor:
        positive = anchor @ others[i]
        semi_hard, hardest = None, None
        for j in range(count):
            if pids[j] == pids[i]:
                continue
            s = anchor @ others[j]
            # Strict ">" keeps the first of equal maxima, as argmax does.
            if hardest is None or s.item() > hardest.item():
                hardest = s
            if s.item() < positive.item() and (semi_hard is None or s.item() > semi_hard.item()):
                semi_hard = s
        chosen = semi_hard if semi_hard is not None else hardest
        return torch.clamp(margin - positive + chosen, min=0.0)

    if len(set(pids)) < 2:
        return (image.sum() + text.sum()) * 0.0
    image_part = sum(term(img[i], txt, i) for i in range(count)) / count
    text_part = sum(term(txt[i], img, i) for i in range(count)) / count
    return image_part + text_part


def _identity_text(count: int) -> torch.Tensor:
    return torch.eye(count, dtype=torch.float64)


def _random_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """12 pairs, 8-D, 4 identities; float64."""
    generator = torch.Generator().manual_seed(seed)
    count, dim = 12, 8
    # Correlated text makes most positives beat some negatives (semi-hard branch); a few
    # texts are flipped to point away from their image, so those anchors' positives lose
    # to every negative (fallback branch) in both directions.
    image = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    text = image + 1.2 * torch.randn(count, dim, generator=generator, dtype=torch.float64)
    text[:2] = -image[:2] + 0.1 * torch.randn(2, dim, generator=generator, dtype=torch.float64)
    pids = torch.randint(0, 4, (count,), generator=generator)
    pids[0] = 0
    pids[1:4] = 1  # at least two identities, and shared ones
    return image * 3.0, text, pids


SEEDS = [0, 1, 2, 3, 4]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("margin", [0.0, 0.2, 0.5])
def test_matches_loop_reference_values_and_gradients(seed: int, margin: float) -> None:
    image, text, pids = _random_batch(seed)
    image.requires_grad_()
    text.requires_grad_()

    got = semi_hard_ranking_loss(image, text, pids, margin=margin)
    want = reference(image, text, pids.tolist(), margin)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0.0)
    assert got.dtype == torch.float64

    got_grads = torch.autograd.grad(got, (image, text))
    want_grads = torch.autograd.grad(want, (image, text))
    for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=0.0)
    # Guard against a vacuous comparison of two zeros (the fallback anchors always
    # violate any margin >= 0, since their positive is below every negative).
    assert got.item() > 0
    assert all(g.abs().sum() > 0 for g in got_grads)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_batches_exercise_both_selection_branches(seed: int) -> None:
    # The reference comparison is only informative if some anchors fall back to the
    # hardest negative and others have a strictly-below-positive one, in both directions.
    image, text, pids = _random_batch(seed)
    s = F.normalize(image, dim=1) @ F.normalize(text, dim=1).t()
    negative = pids[:, None] != pids[None, :]
    for matrix in (s, s.t()):
        has_semi_hard = (negative & (matrix < matrix.diagonal()[:, None])).any(dim=1)
        assert has_semi_hard.any() and not has_semi_hard.all()


def test_float32_matches_reference() -> None:
    generator = torch.Generator().manual_seed(7)
    image = torch.randn(10, 16, generator=generator).requires_grad_()
    text = torch.randn(10, 16, generator=generator).requires_grad_()
    pids = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 4, 5])
    got = semi_hard_ranking_loss(image, text, pids)
    assert got.dtype == torch.float32
    want = reference(image.double(), text.double(), pids.tolist(), 0.2)
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=0.0)


def test_hand_made_three_by_three() -> None:
    # S = image rows (text = I). Rows are unit norm: 0.6^2 + 0.48^2 + 0.64^2 = 1, etc.
    #   row 0: [0.60, 0.48, 0.64]  s_p 0.6; 0.48 below, 0.64 above -> semi-hard 0.48 -> 0.08
    #   row 1: [0.00, 0.60, 0.80]  s_p 0.6; 0.00 below, 0.80 above -> semi-hard 0.00 -> 0
    #   row 2: [0.48, 0.64, 0.60]  s_p 0.6; 0.48 below, 0.64 above -> semi-hard 0.48 -> 0.08
    #   col 0: [0.60, 0.00, 0.48]  s_p 0.6; both below           -> semi-hard 0.48 -> 0.08
    #   col 1: [0.48, 0.60, 0.64]  s_p 0.6; 0.48 below           -> semi-hard 0.48 -> 0.08
    #   col 2: [0.64, 0.80, 0.60]  s_p 0.6; both above           -> hardest  0.80 -> 0.40
    # Loss = (0.08 + 0 + 0.08) / 3 + (0.08 + 0.08 + 0.40) / 3 = 0.72 / 3 = 0.24.
    # Taking the hardest negative everywhere would give (0.24+0.4+0.24)/3 + (0.08+0.24+0.4)/3.
    rows = torch.tensor([[0.60, 0.48, 0.64], [0.00, 0.60, 0.80], [0.48, 0.64, 0.60]], dtype=torch.float64)
    # Arbitrary positive scales: the loss must normalise its inputs itself.
    image = rows * torch.tensor([[2.0], [0.5], [3.0]], dtype=torch.float64)
    text = _identity_text(3) * 4.0
    loss = semi_hard_ranking_loss(image, text, torch.tensor([0, 1, 2]), margin=0.2)
    torch.testing.assert_close(loss, torch.tensor(0.24, dtype=torch.float64), atol=1e-12, rtol=0.0)


def test_same_identity_is_never_a_negative() -> None:
    # Row 0 of the case above, but text 1 now shares pid 0, so its 0.48 is not a candidate:
    # the only negative of image 0 is text 2 at 0.64 (above the positive) -> fallback.
    rows = torch.tensor([[0.60, 0.48, 0.64], [0.48, 0.60, 0.64], [0.64, 0.48, 0.60]], dtype=torch.float64)
    pids = torch.tensor([0, 0, 1])
    # Image anchors: 0 -> only text 2 (0.64 >= 0.6) -> 0.24; 1 -> only text 2 -> 0.24;
    #   2 -> texts 0 (0.64) and 1 (0.48) -> semi-hard 0.48 -> 0.08.
    # Text anchors (columns): col 0 = [0.6, 0.48, 0.64] -> only image 2 (0.64) -> 0.24;
    #   col 1 = [0.48, 0.6, 0.48] -> only image 2 (0.48) -> 0.08;
    #   col 2 = [0.64, 0.64, 0.6] -> images 0, 1 both 0.64 -> 0.24.
    expected = (0.24 + 0.24 + 0.08) / 3 + (0.24 + 0.08 + 0.24) / 3
    loss = semi_hard_ranking_loss(rows, _identity_text(3), pids, margin=0.2)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0.0)


def test_candidate_tied_with_the_positive_is_not_semi_hard() -> None:
    # Rows [2, 2, 1] / 3 etc.: every anchor's positive is 2/3 and its negatives are one tie
    # at 2/3 (exactly equal in floating point: the same normalised entry) and 1/3. The
    # strict rule takes 1/3 -> relu(0.2 - 2/3 + 1/3) = 0 for all six anchors; counting the
    # tie as semi-hard (or taking the hardest) would give 0.2 each, a loss of 0.4.
    image = torch.tensor([[2.0, 2.0, 1.0], [1.0, 2.0, 2.0], [2.0, 1.0, 2.0]], dtype=torch.float64)
    loss = semi_hard_ranking_loss(image, _identity_text(3), torch.tensor([0, 1, 2]), margin=0.2)
    assert loss.item() == 0.0


def test_fallback_takes_the_hardest_negative() -> None:
    # Every off-diagonal entry is above its row's and its column's positive (0), so no
    # anchor has a semi-hard negative. The hardest is 0.8 everywhere -> term 0.2 + 0.8 = 1
    # for all six anchors -> loss 2. The easiest candidate (0.6) would give 1.6, and
    # skipping anchors without a semi-hard negative would give 0.
    rows = torch.tensor([[0.0, 0.6, 0.8], [0.8, 0.0, 0.6], [0.6, 0.8, 0.0]], dtype=torch.float64)
    image = rows.clone().requires_grad_()
    loss = semi_hard_ranking_loss(image, _identity_text(3), torch.tensor([0, 1, 2]), margin=0.2)
    torch.testing.assert_close(loss, torch.tensor(2.0, dtype=torch.float64), atol=1e-12, rtol=0.0)

    # The gradient pins down which negatives were used, not just their values. With
    # text = I, S = normalize(image), so dL/d image = g - (g . x) x per unit row x, where
    # g = dL/dS. Each active term is 1/3 * (0.2 - S[i, i] + S[negative]):
    # the hardest text of image i and the hardest image of text j both sit at
    # (0, 2), (1, 0), (2, 1) here, and each positive appears in two terms.
    (grad,) = torch.autograd.grad(loss, image)
    d_s = torch.zeros(3, 3, dtype=torch.float64)
    for i, j in [(0, 2), (1, 0), (2, 1)]:
        d_s[i, j] = 2 / 3
    d_s -= torch.eye(3, dtype=torch.float64) * (2 / 3)
    expected = d_s - (d_s * rows).sum(dim=1, keepdim=True) * rows
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0.0)


def test_zero_when_positives_clear_the_margin() -> None:
    # S = I: every positive is 1 and every negative 0, a gap of 1 > 0.2.
    image = (_identity_text(4) * 2.0).requires_grad_()
    text = _identity_text(4).requires_grad_()
    pids = torch.tensor([0, 1, 2, 3])
    loss = semi_hard_ranking_loss(image, text, pids, margin=0.2)
    assert loss.item() == 0.0
    grads = torch.autograd.grad(loss, (image, text))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads)
    # Same inputs, a margin wider than the gap: each of the 8 anchors costs 1.5 - 1 = 0.5.
    wide = semi_hard_ranking_loss(image, text, pids, margin=1.5)
    torch.testing.assert_close(wide, torch.tensor(1.0, dtype=torch.float64), atol=1e-12, rtol=0.0)


def test_single_identity_batch_gives_zero_and_backward_works() -> None:
    image = torch.randn(5, 6, requires_grad=True)
    text = torch.randn(5, 6, requires_grad=True)
    loss = semi_hard_ranking_loss(image, text, torch.full((5,), 7))
    assert loss.item() == 0.0
    loss.backward()
    assert image.grad is not None and torch.equal(image.grad, torch.zeros_like(image))
    assert text.grad is not None and torch.equal(text.grad, torch.zeros_like(text))


def test_empty_batch_gives_zero() -> None:
    image = torch.zeros(0, 4, requires_grad=True)
    loss = semi_hard_ranking_loss(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()


def test_half_precision_is_upcast() -> None:
    generator = torch.Generator().manual_seed(3)
    image = torch.randn(6, 8, generator=generator)
    text = torch.randn(6, 8, generator=generator)
    pids = torch.tensor([0, 1, 1, 2, 3, 3])
    loss = semi_hard_ranking_loss(image.half(), text.half(), pids)
    assert loss.dtype == torch.float32
    want = reference(image.half().double(), text.half().double(), pids.tolist(), 0.2)
    torch.testing.assert_close(loss.double(), want, atol=1e-5, rtol=0.0)


@pytest.mark.parametrize(
    ("image_shape", "text_shape", "pids_shape", "margin", "message"),
    [
        ((4, 8), (5, 8), (4,), 0.2, "same batch size"),
        ((4, 8), (4, 6), (4,), 0.2, "same batch size and feature size"),
        ((4, 8, 1), (4, 8, 1), (4,), 0.2, "2-D"),
        ((8,), (8,), (8,), 0.2, "2-D"),
        ((4, 8), (4, 8), (5,), 0.2, "pids must be"),
        ((4, 8), (4, 8), (4, 1), 0.2, "pids must be"),
        ((4, 8), (4, 8), (4,), -0.1, "margin"),
    ],
)
def test_shape_and_margin_errors(
    image_shape: tuple[int, ...],
    text_shape: tuple[int, ...],
    pids_shape: tuple[int, ...],
    margin: float,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        semi_hard_ranking_loss(
            torch.randn(image_shape),
            torch.randn(text_shape),
            torch.zeros(pids_shape, dtype=torch.long),
            margin=margin,
        )
