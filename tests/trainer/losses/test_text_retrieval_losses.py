"""Text-to-image retrieval losses against transcriptions of their formulas.

IRRA (Jiang & Ye, CVPR 2023; methods.md section 5.2): SDM, ITC, the shared-classifier ID
loss and the masked-language (implicit relation reasoning) pieces; and our ALBEF-style
hard-negative image-text matching for UFineBench's CFAM (section 5.5). The references
below loop over rows, columns and classes the way the formulas are written (float64
scalars or numpy), so they share no code with the vectorised losses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from personsearch_train.losses import (
    CrossModalMaskedLanguageHead,
    MatchingHead,
    SharedIdentityClassifier,
    hard_negative_matching_loss,
    image_text_contrastive,
    mask_tokens,
    masked_language_loss,
    mine_hard_negatives,
    similarity_distribution_matching,
)
from torch import nn

# --------------------------------------------------------------------------- references


def sdm_by_hand(img, txt, pids, scale, eps=1e-8, directions=("i2t", "t2i")):
    """IRRA's SDM, one row and one column at a time."""
    count = len(pids)
    total = img.new_zeros(())
    for direction in directions:
        part = img.new_zeros(())
        for i in range(count):
            row = [scale * (img[i] @ txt[j] if direction == "i2t" else txt[i] @ img[j]) for j in range(count)]
            z = sum(torch.exp(s) for s in row)
            positives = sum(1 for k in range(count) if pids[k] == pids[i])
            for j in range(count):
                p = torch.exp(row[j]) / z
                q = (1.0 if pids[i] == pids[j] else 0.0) / positives
                part = part + p * (torch.log(p) - math.log(q + eps))
        total = total + part / count
    return total


def itc_by_hand(img, txt, scale):
    count = len(img)
    i2t = img.new_zeros(())
    t2i = img.new_zeros(())
    for i in range(count):
        row = [scale * (img[i] @ txt[j]) for j in range(count)]
        column = [scale * (txt[i] @ img[j]) for j in range(count)]
        i2t = i2t - (row[i] - torch.log(sum(torch.exp(s) for s in row)))
        t2i = t2i - (column[i] - torch.log(sum(torch.exp(s) for s in column)))
    return (i2t / count + t2i / count) / 2


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _pairs(seed: int, count: int = 6, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    img = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    txt = img + 0.8 * torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return _unit(img), _unit(txt)


def _value_and_grads(fn, *inputs: torch.Tensor):
    leaves = [x.clone().requires_grad_(True) for x in inputs]
    value = fn(*leaves)
    value.backward()
    return value.detach(), [leaf.grad for leaf in leaves]


# --------------------------------------------------------------------------- SDM

PIDS = torch.tensor([0, 0, 1, 2, 2, 2])


@pytest.mark.parametrize("scale", [50.0, 10.0, 1.0])
def test_sdm_matches_hand_loop_with_several_positives(scale: float) -> None:
    img, txt = _pairs(0)
    got, got_grads = _value_and_grads(
        lambda a, b: similarity_distribution_matching(a, b, PIDS, logit_scale=scale), img, txt
    )
    want, want_grads = _value_and_grads(lambda a, b: sdm_by_hand(a, b, PIDS.tolist(), scale), img, txt)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert g is not None and torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)


def test_sdm_sums_both_directions() -> None:
    img, txt = _pairs(1)
    loss = similarity_distribution_matching(img, txt, PIDS)
    i2t = sdm_by_hand(img, txt, PIDS.tolist(), 50.0, directions=("i2t",))
    t2i = sdm_by_hand(img, txt, PIDS.tolist(), 50.0, directions=("t2i",))
    # The two parts really differ on this input, so a loss that doubled one would fail.
    assert abs(float(i2t - t2i)) > 1e-3
    torch.testing.assert_close(loss, i2t + t2i, rtol=1e-6, atol=1e-8)
    # Swapping the modalities swaps the parts and leaves the sum.
    torch.testing.assert_close(similarity_distribution_matching(txt, img, PIDS), loss, rtol=1e-6, atol=1e-8)


def test_sdm_target_is_uniform_over_same_pid_columns() -> None:
    # Every pair of one identity shares one embedding, identities are orthogonal: at a
    # high scale p is uniform over the row's positives, which is q, so the KL vanishes;
    # a one-hot (diagonal) target would leave about (1 - 1/n) * 18.4 per row.
    basis = torch.eye(8, dtype=torch.float64)
    emb = basis[PIDS]
    assert float(similarity_distribution_matching(emb, emb, PIDS, logit_scale=50.0)) < 1e-6
    losses = [float(similarity_distribution_matching(emb, emb, PIDS, logit_scale=s)) for s in (1, 3, 10, 50)]
    assert all(a > b for a, b in zip(losses, losses[1:], strict=False))
    assert losses[0] > 1.0


def test_sdm_with_distinct_pids_is_kl_to_one_hot_not_cross_entropy() -> None:
    # With distinct pids q is the identity matrix, so per row
    # KL(p || q) = sum_j p_j log p_j - p_ii log(1 + eps) - (1 - p_ii) log(eps),
    # whereas 2 * ITC is sum over directions of -log p_ii (that is KL(q || p)).
    img, txt = _pairs(2)
    pids = torch.arange(6)
    eps = 1e-8
    loss = similarity_distribution_matching(img, txt, pids, epsilon=eps)
    closed_form = 0.0
    for logits in (50.0 * img @ txt.t(), 50.0 * txt @ img.t()):
        p = torch.softmax(logits, dim=1).numpy()
        rows = [
            (p[i] * np.log(p[i])).sum() - p[i, i] * math.log(1 + eps) - (1 - p[i, i]) * math.log(eps)
            for i in range(len(p))
        ]
        closed_form += float(np.mean(rows))
    assert loss.item() == pytest.approx(closed_form, rel=1e-6)
    assert loss.item() != pytest.approx(2 * float(image_text_contrastive(img, txt)), rel=0.05)
    # Both vanish together once every pair is perfectly separated.
    emb = torch.eye(6, dtype=torch.float64)
    assert float(similarity_distribution_matching(emb, emb, pids)) < 1e-6
    assert float(image_text_contrastive(emb, emb)) < 1e-6


def test_sdm_half_inputs_compute_in_float32_and_edge_cases() -> None:
    img, txt = _pairs(3)
    half = similarity_distribution_matching(img.half(), txt.half(), PIDS)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    torch.testing.assert_close(
        half.double(), similarity_distribution_matching(img, txt, PIDS), rtol=0.05, atol=1e-3
    )
    empty = torch.zeros(0, 4, requires_grad=True)
    zero = similarity_distribution_matching(empty, empty, torch.zeros(0, dtype=torch.long))
    zero.backward()
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="one shape"):
        similarity_distribution_matching(img, txt[:, :4], PIDS)
    with pytest.raises(ValueError, match="pids"):
        similarity_distribution_matching(img, txt, PIDS[:3])


# --------------------------------------------------------------------------- ITC


@pytest.mark.parametrize("scale", [50.0, 5.0])
def test_itc_matches_hand_loop(scale: float) -> None:
    img, txt = _pairs(4, count=5)
    got, got_grads = _value_and_grads(lambda a, b: image_text_contrastive(a, b, logit_scale=scale), img, txt)
    want, want_grads = _value_and_grads(lambda a, b: itc_by_hand(a, b, scale), img, txt)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)
    # Symmetric in the two modalities; an i2t-only loss would change under the swap.
    torch.testing.assert_close(image_text_contrastive(txt, img, logit_scale=scale), got, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- ID


def _ce_by_hand(weight: np.ndarray, bias: np.ndarray, features: np.ndarray, pids: list[int]):
    """Mean CE and its weight gradient, class by class."""
    loss, grad = 0.0, np.zeros_like(weight)
    for x, pid in zip(features, pids, strict=True):
        logits = [sum(weight[c, d] * x[d] for d in range(len(x))) + bias[c] for c in range(len(bias))]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        loss += -(logits[pid] - top - math.log(sum(exps)))
        for c in range(len(bias)):
            grad[c] += (exps[c] / sum(exps) - (1.0 if c == pid else 0.0)) * x
    return loss / len(pids), grad / len(pids)


def test_identity_classifier_is_one_shared_linear_initialised_as_irra() -> None:
    torch.manual_seed(0)
    module = SharedIdentityClassifier(embed_dim=512, num_classes=1000)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1 and len(list(module.parameters())) == 2
    weight = linears[0].weight.detach()
    assert weight.shape == (1000, 512)
    assert weight.std().item() == pytest.approx(0.001, rel=0.02)
    assert abs(weight.mean().item()) < 1e-5
    assert torch.count_nonzero(linears[0].bias) == 0


def test_identity_loss_and_gradient_match_hand_ce_from_both_modalities() -> None:
    generator = torch.Generator().manual_seed(5)
    module = SharedIdentityClassifier(embed_dim=4, num_classes=5).double()
    (linear,) = [m for m in module.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linear.weight.copy_(torch.randn(5, 4, generator=generator, dtype=torch.float64))
        linear.bias.copy_(torch.randn(5, generator=generator, dtype=torch.float64))
    img = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    txt = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    pids = [0, 3, 3, 1, 4, 2]
    loss = module(img, txt, torch.tensor(pids))
    loss.backward()
    weight, bias = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    img_loss, img_grad = _ce_by_hand(weight, bias, img.numpy(), pids)
    txt_loss, txt_grad = _ce_by_hand(weight, bias, txt.numpy(), pids)
    assert loss.item() == pytest.approx((img_loss + txt_loss) / 2, rel=1e-9)
    # One weight collects both halves: a separate text classifier would leave txt_grad out.
    np.testing.assert_allclose(linear.weight.grad.numpy(), (img_grad + txt_grad) / 2, rtol=1e-9, atol=1e-12)
    assert np.abs(img_grad - txt_grad).max() > 1e-3


def test_identity_loss_rejects_unknown_pid() -> None:
    module = SharedIdentityClassifier(embed_dim=4, num_classes=5)
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="pid 5 "):
        module(x, x, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match="pid -1 "):
        module(x, x, torch.tensor([-1, 2, 1]))
    assert module(x.half(), x.half(), torch.tensor([0, 4, 1])).dtype == torch.float32


# --------------------------------------------------------------------------- MLM masking

PAD, CLS, SEP, MASK, VOCAB = 0, 101, 102, 103, 1000
SPECIALS = (PAD, CLS, SEP, MASK)


def _captions(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-like rows: [CLS] words [SEP] padding, with a few quirks to exercise the rules."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((rows, length), dtype=np.int64)
    attention = np.zeros((rows, length), dtype=np.int64)
    for r in range(rows):
        words = int(rng.integers(5, length - 2))
        ids[r, 0] = CLS
        ids[r, 1 : 1 + words] = rng.integers(104, VOCAB, size=words)
        ids[r, 1 + words] = SEP
        attention[r, : 2 + words] = 1
        if r % 7 == 0:  # a special id inside the real tokens must still be skipped
            ids[r, 2] = SEP
        if r % 5 == 0:  # padding that holds ordinary ids must be skipped by the attention mask
            ids[r, 2 + words :] = rng.integers(104, VOCAB, size=length - 2 - words)
    return torch.from_numpy(ids), torch.from_numpy(attention)


def _mask(ids, attention, probability=0.15, seed=0, vocab=VOCAB, specials=SPECIALS, mask_id=MASK):
    return mask_tokens(
        ids,
        attention,
        mask_token_id=mask_id,
        vocab_size=vocab,
        special_token_ids=specials,
        probability=probability,
        generator=torch.Generator().manual_seed(seed),
    )


def test_mask_tokens_selects_only_candidates_at_about_15_percent_with_80_10_10() -> None:
    ids, attention = _captions(2000, 40, seed=0)
    masked, labels = _mask(ids, attention)
    assert masked.dtype == torch.int64 and labels.dtype == torch.int64
    candidate = np.zeros(ids.shape, dtype=bool)
    for r in range(ids.shape[0]):
        for c in range(ids.shape[1]):
            candidate[r, c] = attention[r, c] == 1 and int(ids[r, c]) not in SPECIALS
    selected = (labels != -100).numpy()
    assert not (selected & ~candidate).any()
    assert (labels.numpy()[~selected] == -100).all()
    assert (labels.numpy()[selected] == ids.numpy()[selected]).all()
    assert (masked.numpy()[~selected] == ids.numpy()[~selected]).all()

    # 60k candidates: the selected share has std ~0.0015 around 0.15.
    assert selected.sum() / candidate.sum() == pytest.approx(0.15, abs=0.01)
    new, old = masked.numpy()[selected], ids.numpy()[selected]
    to_mask = (new == MASK).mean()
    to_random = ((new != MASK) & (new != old)).mean()
    unchanged = (new == old).mean()
    # ~9k selections: std ~0.004 for the 0.8 share, ~0.003 for the 0.1 shares.
    assert to_mask == pytest.approx(0.8, abs=0.02)
    assert to_random == pytest.approx(0.1, abs=0.015)
    assert unchanged == pytest.approx(0.1, abs=0.015)
    assert not np.isin(new[(new != MASK) & (new != old)], SPECIALS).any()


def test_mask_tokens_random_replacements_avoid_special_ids() -> None:
    # Small vocabulary where 7 of 12 ids are special: a replacement drawn from the whole
    # vocabulary would hit one in more than half of the ~600 random replacements.
    specials = (0, 1, 2, 3, 4, 5, 11)
    ids = torch.full((600, 10), 7, dtype=torch.long)
    attention = torch.ones_like(ids)
    masked, labels = _mask(ids, attention, probability=1.0, vocab=12, specials=specials, mask_id=11)
    assert bool((labels == 7).all())
    replaced = masked[(masked != 11) & (masked != 7)]
    assert replaced.numel() > 300
    assert set(replaced.tolist()) == {6, 8, 9, 10}


def test_mask_tokens_forces_one_selection_per_row_with_candidates() -> None:
    ids = torch.tensor(
        [
            [CLS, 500, 600, SEP, PAD],
            [CLS, SEP, PAD, PAD, PAD],  # nothing to select
            [CLS, SEP, 700, 800, SEP],  # first candidate at position 2
            [PAD, PAD, PAD, PAD, PAD],
        ]
    )
    attention = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])
    masked, labels = _mask(ids, attention, probability=0.0)
    want_labels = torch.full_like(ids, -100)
    want_labels[0, 1], want_labels[2, 2] = 500, 700
    assert torch.equal(labels, want_labels)
    want_masked = ids.clone()
    want_masked[0, 1], want_masked[2, 2] = MASK, MASK
    assert torch.equal(masked, want_masked)
    # At the default probability, rows with a single candidate are still always covered.
    ids, attention = _captions(300, 8, seed=1)
    _, labels = _mask(ids, attention, seed=3)
    assert bool(((labels != -100).sum(dim=1) >= 1).all())


def test_mask_tokens_is_deterministic_given_the_generator() -> None:
    ids, attention = _captions(50, 30, seed=2)
    first = _mask(ids, attention, seed=11)
    again = _mask(ids, attention, seed=11)
    other = _mask(ids, attention, seed=12)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    with pytest.raises(ValueError, match="probability"):
        _mask(ids, attention, probability=1.5)
    with pytest.raises(ValueError, match="same shape|one shape"):
        _mask(ids, attention[:, :5])


# --------------------------------------------------------------------------- MLM head and loss


def test_mlm_head_shape_structure_and_padding() -> None:
    torch.manual_seed(0)
    head = CrossModalMaskedLanguageHead(width=32, vocab_size=50, heads=4, depth=2).eval()
    attentions = [m for m in head.modules() if isinstance(m, nn.MultiheadAttention)]
    layers = [m for m in head.modules() if isinstance(m, nn.TransformerEncoderLayer)]
    assert len(layers) == 2 and all(layer.norm_first for layer in layers)
    assert len(attentions) == 3  # one cross-attention + one self-attention per layer
    text = torch.randn(3, 7, 32)
    image = torch.randn(3, 11, 32)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 4:] = True
    logits = head(text, image, padding)
    assert logits.shape == (3, 7, 50)
    # Padded positions are masked as keys, so rewriting them leaves the real ones alone.
    text2 = text.clone()
    text2[1, 4:] = torch.randn(3, 32)
    torch.testing.assert_close(head(text2, image, padding)[1, :4], logits[1, :4])
    assert not torch.allclose(head(text2, image)[1, :4], logits[1, :4])


def test_masked_language_loss_ignores_unlabelled_positions() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 6, generator=generator, dtype=torch.float64)
    labels = torch.tensor([[-100, 3, -100, -100], [5, -100, 0, -100]])
    loss = masked_language_loss(logits, labels)
    terms = []
    for b in range(2):
        for t in range(4):
            if labels[b, t] != -100:
                row = logits[b, t].tolist()
                terms.append(-(row[labels[b, t]] - math.log(sum(math.exp(v) for v in row))))
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    shifted = logits.clone()
    shifted[labels == -100] += 100 * torch.randn(5, 6, generator=generator, dtype=torch.float64)
    assert float(masked_language_loss(shifted, labels)) == pytest.approx(loss.item(), rel=1e-12)
    assert masked_language_loss(logits.half(), labels).dtype == torch.float32

    leaf = logits.clone().requires_grad_(True)
    nothing = masked_language_loss(leaf, torch.full((2, 4), -100))
    nothing.backward()
    assert nothing.item() == 0.0 and torch.count_nonzero(leaf.grad) == 0


def test_mlm_head_trains_end_to_end_on_masked_ids() -> None:
    torch.manual_seed(0)
    head = CrossModalMaskedLanguageHead(width=16, vocab_size=VOCAB, heads=2, depth=1)
    ids, attention = _captions(4, 12, seed=4)
    _, labels = _mask(ids, attention)
    text = torch.randn(4, 12, 16, requires_grad=True)
    loss = masked_language_loss(head(text, torch.randn(4, 5, 16), attention == 0), labels)
    loss.backward()
    assert torch.isfinite(loss) and text.grad is not None
    assert all(p.grad is not None for p in head.parameters())


# --------------------------------------------------------------------------- hard negatives

# pids [0, 0, 1, 1, 2]; every row's and column's largest entry is a same-pid pair, so only
# an identity-aware miner finds the values below (diagonal-only exclusion would not).
HN_PIDS = torch.tensor([0, 0, 1, 1, 2])
HN_SIM = torch.tensor(
    [
        [9.0, 8.0, 1.0, 3.0, 2.0],
        [7.0, 9.0, 5.0, 0.0, 6.0],
        [4.0, 2.0, 9.0, 8.0, 1.0],
        [0.0, 6.0, 8.0, 9.0, 5.0],
        [3.0, 2.0, 7.0, 1.0, 9.0],
    ]
)
HARDEST_TEXT_FOR_IMAGE = [3, 4, 0, 1, 2]
HARDEST_IMAGE_FOR_TEXT = [2, 3, 4, 0, 1]


def test_miner_takes_hardest_other_identity() -> None:
    text_for_image, image_for_text = mine_hard_negatives(HN_SIM, HN_PIDS, sample=False)
    assert text_for_image.dtype == torch.int64 and image_for_text.dtype == torch.int64
    assert text_for_image.tolist() == HARDEST_TEXT_FOR_IMAGE
    assert image_for_text.tolist() == HARDEST_IMAGE_FOR_TEXT


def test_miner_returns_minus_one_when_everyone_is_one_person() -> None:
    pids = torch.tensor([4, 4, 4])
    for sample in (False, True):
        text_for_image, image_for_text = mine_hard_negatives(torch.randn(3, 3), pids, sample=sample)
        assert text_for_image.tolist() == [-1, -1, -1] and image_for_text.tolist() == [-1, -1, -1]


def test_miner_sampling_follows_softmax_over_negatives_and_never_a_positive() -> None:
    similarity = HN_SIM / 3
    generator = torch.Generator().manual_seed(0)
    draws = 2000
    text_counts = np.zeros((5, 5))
    image_counts = np.zeros((5, 5))
    for _ in range(draws):
        text_for_image, image_for_text = mine_hard_negatives(similarity, HN_PIDS, generator=generator)
        text_counts[range(5), text_for_image.numpy()] += 1
        image_counts[range(5), image_for_text.numpy()] += 1
    pids = HN_PIDS.tolist()
    for counts, scores in ((text_counts, similarity), (image_counts, similarity.t())):
        for i in range(5):
            negatives = [j for j in range(5) if pids[j] != pids[i]]
            z = sum(math.exp(float(scores[i, j])) for j in negatives)
            for j in range(5):
                if pids[j] == pids[i]:
                    assert counts[i, j] == 0
                else:
                    # std of a frequency at 2000 draws is at most 0.011.
                    assert counts[i, j] / draws == pytest.approx(math.exp(float(scores[i, j])) / z, abs=0.05)


def test_miner_is_deterministic_given_the_generator() -> None:
    sim = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    pids = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    a = mine_hard_negatives(sim, pids, generator=torch.Generator().manual_seed(5))
    b = mine_hard_negatives(sim, pids, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        mine_hard_negatives(sim[:, :4], pids)


class _DotHead(MatchingHead):
    """A fixed matching function: match logit = <mean of real text tokens, mean image token>."""

    def __init__(self) -> None:
        super().__init__(width=4, heads=1, depth=0)

    def forward(self, text_tokens, image_tokens, text_padding_mask=None):
        valid = (~text_padding_mask).to(text_tokens.dtype).unsqueeze(-1)
        text = (text_tokens * valid).sum(dim=1) / valid.sum(dim=1)
        score = (text * image_tokens.mean(dim=1)).sum(dim=-1)
        return torch.stack([torch.zeros_like(score), score], dim=1)


def _hn_batch(seed: int, dtype=torch.float64, width: int = 4):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(5, 3, width, generator=generator, dtype=dtype)
    text = torch.randn(5, 4, width, generator=generator, dtype=dtype)
    padding = torch.tensor([[False] * n + [True] * (4 - n) for n in (3, 4, 2, 4, 1)])
    return image, text, padding


def _dot_score_by_hand(image: np.ndarray, text: np.ndarray, length: int) -> float:
    text_mean = [sum(text[t, d] for t in range(length)) / length for d in range(4)]
    image_mean = [sum(image[t, d] for t in range(3)) / 3 for d in range(4)]
    return sum(a * b for a, b in zip(text_mean, image_mean, strict=True))


def test_matching_loss_labels_true_and_mined_pairs() -> None:
    image, text, padding = _hn_batch(0)
    lengths = (~padding).sum(dim=1).tolist()
    im, tx = image.numpy(), text.numpy()
    pairs = [(i, i, 1) for i in range(5)]
    pairs += [(i, HARDEST_TEXT_FOR_IMAGE[i], 0) for i in range(5)]
    pairs += [(HARDEST_IMAGE_FOR_TEXT[j], j, 0) for j in range(5)]
    terms = []
    for i, j, label in pairs:
        score = _dot_score_by_hand(im[i], tx[j], lengths[j])
        match = 1 / (1 + math.exp(-score))  # softmax over (0, score)
        terms.append(-math.log(match if label == 1 else 1 - match))
    want = sum(terms) / len(terms)
    got = hard_negative_matching_loss(_DotHead(), image, text, padding, HN_SIM, HN_PIDS, sample=False)
    assert got.item() == pytest.approx(want, rel=1e-9)
    # Labels swapped (negatives called matches) would give another value on this batch.
    swapped = sum(
        -math.log(
            1 - 1 / (1 + math.exp(-_dot_score_by_hand(im[i], tx[j], lengths[j])))
            if label == 1
            else 1 / (1 + math.exp(-_dot_score_by_hand(im[i], tx[j], lengths[j])))
        )
        for i, j, label in pairs
    ) / len(pairs)
    assert abs(swapped - want) > 1e-2

    # One person only: no negatives, the loss is the mean over the true pairs.
    same = torch.zeros(5, dtype=torch.long)
    only_true = hard_negative_matching_loss(_DotHead(), image, text, padding, HN_SIM, same)
    assert only_true.item() == pytest.approx(sum(terms[:5]) / 5, rel=1e-9)


def test_matching_loss_trains_the_head_not_the_similarity() -> None:
    torch.manual_seed(0)
    head = MatchingHead(width=8, heads=2, depth=1)
    image, text, padding = _hn_batch(1, dtype=torch.float32, width=8)
    image.requires_grad_(True)
    text.requires_grad_(True)
    similarity = HN_SIM.clone().requires_grad_(True)
    loss = hard_negative_matching_loss(
        head, image, text, padding, similarity, HN_PIDS, generator=torch.Generator().manual_seed(0)
    )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    assert torch.count_nonzero(head.classifier.weight.grad) > 0
    assert image.grad is not None and text.grad is not None
    assert similarity.grad is None


def test_matching_head_shape_and_padding() -> None:
    torch.manual_seed(0)
    head = MatchingHead(width=8, heads=2, depth=2).eval()
    image, text, padding = _hn_batch(2, dtype=torch.float32, width=8)
    logits = head(text, image, padding)
    assert logits.shape == (5, 2)
    text2 = text.clone()
    text2[padding] = 50.0
    torch.testing.assert_close(head(text2, image, padding), logits)
    assert head(text, image).shape == (5, 2)
