"""CFAM's shared granularity decoder, the combined retrieval embedding and the image towers."""

from __future__ import annotations

import pytest
import torch
from personsearch_train.errors import ConfigError
from personsearch_train.text.granularity_decoder import (
    GranularityDecoder,
    GranularityEmbeddings,
    combine_embeddings,
    concatenated_parts,
)
from personsearch_train.text.image_towers import ResNetImageTower, VitImageTower, build_image_tower


def _unit(*shape: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(
        torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1
    )


def test_decoder_outputs_are_unit_norm_with_fine_and_coarse_queries() -> None:
    torch.manual_seed(0)
    decoder = GranularityDecoder(width=16, num_fine=3, heads=2, layers=1)
    out = decoder(torch.randn(4, 7, 16))
    assert out.fine.shape == (4, 3, 16) and out.coarse.shape == (4, 16)
    torch.testing.assert_close(out.fine.norm(dim=-1), torch.ones(4, 3))
    torch.testing.assert_close(out.coarse.norm(dim=-1), torch.ones(4))
    # Distinct learnable queries ask distinct questions of the same tokens.
    assert not torch.allclose(out.fine[:, 0], out.fine[:, 1])


def test_one_decoder_serves_both_modalities_and_both_train_it() -> None:
    torch.manual_seed(0)
    decoder = GranularityDecoder(width=16, num_fine=2, heads=2, layers=1)
    image_tokens = torch.randn(3, 10, 16)
    text_tokens = torch.randn(3, 6, 16)
    padding = torch.tensor([[False] * 6, [False] * 4 + [True] * 2, [False] * 5 + [True]])

    decoder(image_tokens).coarse.sum().backward()
    from_images = {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
    decoder.zero_grad()
    decoder(text_tokens, padding).coarse.sum().backward()
    from_texts = {n: p.grad.clone() for n, p in decoder.named_parameters() if p.grad is not None}
    # The same parameters (queries, attention, MLP) receive gradient from either modality.
    assert "queries" in from_images and "queries" in from_texts
    assert set(from_images) == set(from_texts) == {n for n, _ in decoder.named_parameters()}
    assert not torch.allclose(from_images["queries"], from_texts["queries"])


def test_padding_tokens_do_not_change_text_answers() -> None:
    torch.manual_seed(0)
    decoder = GranularityDecoder(width=8, num_fine=2, heads=2, layers=2).eval()
    tokens = torch.randn(1, 5, 8)
    padding = torch.tensor([[False, False, False, True, True]])
    changed = tokens.clone()
    changed[:, 3:] = torch.randn(1, 2, 8) * 10
    a, b = decoder(tokens, padding), decoder(changed, padding)
    torch.testing.assert_close(a.fine, b.fine)
    torch.testing.assert_close(a.coarse, b.coarse)


def test_concatenated_parts_inner_product_is_mean_per_query_cosine() -> None:
    a, b = _unit(3, 4, 8, seed=1), _unit(5, 4, 8, seed=2)
    expected = torch.einsum("ikd,jkd->ij", a, b) / 4
    torch.testing.assert_close(concatenated_parts(a) @ concatenated_parts(b).T, expected)
    torch.testing.assert_close(concatenated_parts(a).norm(dim=1), torch.ones(3))


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (2.0, 0.5, 1.0), (1.0, 0.0, 0.0)])
def test_combined_embedding_is_the_weighted_mean_of_the_three_cosines(
    weights: tuple[float, float, float],
) -> None:
    g_a, g_b = _unit(3, 8, seed=3), _unit(4, 8, seed=4)
    p_a = GranularityEmbeddings(fine=_unit(3, 2, 8, seed=5), coarse=_unit(3, 8, seed=6))
    p_b = GranularityEmbeddings(fine=_unit(4, 2, 8, seed=7), coarse=_unit(4, 8, seed=8))
    a = combine_embeddings(g_a, p_a, weights=weights)
    b = combine_embeddings(g_b, p_b, weights=weights)
    w_g, w_c, w_f = weights
    fine = torch.einsum("ikd,jkd->ij", p_a.fine, p_b.fine) / 2
    expected = (w_g * g_a @ g_b.T + w_c * p_a.coarse @ p_b.coarse.T + w_f * fine) / sum(weights)
    torch.testing.assert_close(a @ b.T, expected)
    torch.testing.assert_close(a.norm(dim=1), torch.ones(3))
    assert a.shape == (3, 8 * 4)


def test_combined_embedding_without_decoder_is_the_global_one_and_bad_weights_raise() -> None:
    g = _unit(2, 8, seed=9)
    assert combine_embeddings(g, None) is g
    parts = GranularityEmbeddings(fine=_unit(2, 1, 8, seed=1), coarse=_unit(2, 8, seed=2))
    with pytest.raises(ValueError, match="non-negative"):
        combine_embeddings(g, parts, weights=(1.0, -1.0, 1.0))


def test_resnet_tower_tokens_follow_the_feature_map_and_last_stride() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 32)
    stride1 = ResNetImageTower(depth="resnet18", embed_dim=24, last_stride=1).eval()
    stride2 = ResNetImageTower(depth="resnet18", embed_dim=24, last_stride=2).eval()
    out1, out2 = stride1(images), stride2(images)
    assert out1.tokens.shape == (2, 4 * 2, 24)  # 64x32 / 16
    assert out2.tokens.shape == (2, 2 * 1, 24)  # 64x32 / 32
    torch.testing.assert_close(out1.features, out1.tokens.mean(dim=1))
    torch.testing.assert_close(out1.embedding.norm(dim=1), torch.ones(2))


def test_vit_tower_on_non_square_crops_uses_the_class_token() -> None:
    torch.manual_seed(0)
    tower = VitImageTower(
        image_size=(64, 32), patch_size=16, width=32, layers=1, heads=2, embed_dim=16
    ).eval()
    out = tower(torch.rand(2, 3, 64, 32))
    assert out.tokens.shape == (2, 1 + 4 * 2, 16)
    torch.testing.assert_close(out.features, out.tokens[:, 0])
    with pytest.raises(ConfigError, match="multiple of patch_size"):
        VitImageTower(image_size=(60, 32), patch_size=16)


def test_unknown_image_tower_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        build_image_tower("efficientnet", embed_dim=8, image_size=(64, 32))
    with pytest.raises(ConfigError, match="image tower 'resnet18'"):
        build_image_tower("resnet18", embed_dim=8, image_size=(64, 32), widht=3)
