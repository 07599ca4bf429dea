"""ClipTextTower: causal attention, EOT feature, CLIP-named weights round trips, load errors."""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from personsearch_train.errors import ConfigError  # noqa: E402
from personsearch_train.text import ClipTextTower, TowerOutput  # noqa: E402

SMALL = {"vocab_size": 100, "context_length": 16, "width": 32, "layers": 2, "heads": 4, "embed_dim": 24}


def _tower(seed: int = 0, **overrides: object) -> ClipTextTower:
    torch.manual_seed(seed)
    return ClipTextTower(**{**SMALL, **overrides}).eval()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    # Row 0: 5 real tokens, row 1: 9, row 2: all 16; right padding with id 0.
    lengths = [5, 9, 16]
    ids = torch.zeros(3, 16, dtype=torch.long)
    mask = torch.zeros(3, 16, dtype=torch.long)
    generator = torch.Generator().manual_seed(1)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, 100, (n,), generator=generator)
        mask[row, :n] = 1
    return ids, mask


def test_openai_clip_parameter_names() -> None:
    keys = set(ClipTextTower(layers=1).state_dict())
    expected = {
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "ln_final.bias",
        "text_projection",
        "transformer.resblocks.0.ln_1.weight",
        "transformer.resblocks.0.ln_1.bias",
        "transformer.resblocks.0.attn.in_proj_weight",
        "transformer.resblocks.0.attn.in_proj_bias",
        "transformer.resblocks.0.attn.out_proj.weight",
        "transformer.resblocks.0.attn.out_proj.bias",
        "transformer.resblocks.0.ln_2.weight",
        "transformer.resblocks.0.ln_2.bias",
        "transformer.resblocks.0.mlp.c_fc.weight",
        "transformer.resblocks.0.mlp.c_fc.bias",
        "transformer.resblocks.0.mlp.c_proj.weight",
        "transformer.resblocks.0.mlp.c_proj.bias",
    }
    assert keys == expected
    tower = ClipTextTower(layers=1)
    assert tower.positional_embedding.shape == (77, 512)
    assert tower.text_projection.shape == (512, 512)
    assert tower.transformer.resblocks[0].mlp.c_fc.weight.shape == (2048, 512)
    assert (tower.vocab_size, tower.embed_dim) == (49408, 512)


def test_causal_later_tokens_do_not_change_earlier_outputs() -> None:
    tower = _tower()
    ids, mask = _batch()
    changed = ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 13) % 100
    with torch.no_grad():
        before = tower(ids, mask).tokens
        after = tower(changed, mask).tokens
    torch.testing.assert_close(before[:, :7], after[:, :7])
    assert not torch.allclose(before[:, 7:], after[:, 7:])
    # An earlier change does reach later positions (attention is not simply disabled).
    earlier = ids.clone()
    earlier[:, 0] = (earlier[:, 0] + 1) % 100
    with torch.no_grad():
        moved = tower(earlier, mask).tokens
    assert not torch.allclose(before[:, 1:4], moved[:, 1:4])


def test_eot_feature_is_last_real_token() -> None:
    tower = _tower()
    ids, mask = _batch()
    with torch.no_grad():
        out = tower(ids, mask)
    assert isinstance(out, TowerOutput)
    assert out.tokens.shape == (3, 16, 24) and out.features.shape == (3, 24)
    torch.testing.assert_close(out.features, out.tokens[torch.arange(3), torch.tensor([4, 8, 15])])
    torch.testing.assert_close(out.padding_mask, mask == 0)
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(3))
    # Padding content is irrelevant to the features (causal mask, right padding).
    repadded = ids.clone()
    repadded[mask == 0] = 42
    with torch.no_grad():
        torch.testing.assert_close(tower(repadded, mask).features, out.features)
    # With CLIP tokenisation the EOT (largest id) sits at the same position.
    # With CLIP tokenisation (EOT = the largest id, last real token) the feature is the
    # projected EOT token, CLIP's text feature.
    clip_ids = ids.clamp(max=98)
    clip_ids[torch.arange(3), torch.tensor([4, 8, 15])] = 99
    with torch.no_grad():
        clip_out = tower(clip_ids, mask)
    eot = clip_ids.argmax(dim=-1)
    torch.testing.assert_close(clip_out.features, clip_out.tokens[torch.arange(3), eot])


def test_shorter_sequences_and_too_long() -> None:
    tower = _tower()
    ids, mask = _batch()
    with torch.no_grad():
        full = tower(ids, mask).tokens
        short = tower(ids[:, :5], mask[:, :5]).tokens
    torch.testing.assert_close(short, full[:, :5])
    with pytest.raises(ValueError, match="context_length"):
        tower(torch.zeros(1, 17, dtype=torch.long), torch.ones(1, 17, dtype=torch.long))


def _assert_same_outputs(a: ClipTextTower, b: ClipTextTower) -> None:
    ids, mask = _batch()
    with torch.no_grad():
        torch.testing.assert_close(a(ids, mask).tokens, b(ids, mask).tokens)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _tower(seed=1)
    file = tmp_path / "text.safetensors"
    # CLIP checkpoints are fp16; loading must still fill the float32 tower.
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))
    loaded = ClipTextTower(**SMALL, weights=file).eval()
    assert loaded.pretrained and not source.pretrained
    assert not torch.allclose(_tower(seed=2).token_embedding.weight, source.token_embedding.weight)
    _assert_same_outputs(source, loaded)

    half = tmp_path / "half.safetensors"
    save_file({k: v.half().contiguous() for k, v in source.state_dict().items()}, str(half))
    loaded_half = ClipTextTower(**SMALL, weights=half)
    assert loaded_half.text_projection.dtype == torch.float32
    torch.testing.assert_close(loaded_half.text_projection, source.text_projection.half().float())


def test_pt_with_text_prefix(tmp_path: Path) -> None:
    source = _tower(seed=3)
    file = tmp_path / "model.pt"
    state = {f"text.{k}": v for k, v in source.state_dict().items()}
    state["image.proj.weight"] = torch.zeros(3, 3)  # another tower's keys are ignored
    torch.save(state, file)
    _assert_same_outputs(source, ClipTextTower(**SMALL, weights=file).eval())


def test_full_clip_state_dict(tmp_path: Path) -> None:
    source = _tower(seed=4)
    state = dict(source.state_dict())
    state.update(
        {
            "visual.conv1.weight": torch.zeros(8, 3, 4, 4),
            "visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(24, 8),
            "visual.proj": torch.zeros(8, 24),
            "logit_scale": torch.tensor(4.6),
        }
    )
    file = tmp_path / "clip.pth"
    torch.save(state, file)
    _assert_same_outputs(source, ClipTextTower(**SMALL, weights=file).eval())


def test_wrong_shape_names_key(tmp_path: Path) -> None:
    state = dict(_tower().state_dict())
    state["text_projection"] = torch.zeros(32, 48)
    file = tmp_path / "bad.pt"
    torch.save(state, file)
    with pytest.raises(ConfigError) as info:
        ClipTextTower(**SMALL, weights=file)
    message = str(info.value)
    assert "text_projection" in message and str(file) in message and "(32, 48)" in message


def test_missing_keys_named(tmp_path: Path) -> None:
    state = dict(_tower(layers=1).state_dict())  # one block where the tower has two
    file = tmp_path / "short.pt"
    torch.save(state, file)
    with pytest.raises(ConfigError, match=r"transformer\.resblocks\.1\.") as info:
        ClipTextTower(**SMALL, weights=file)
    assert str(file) in str(info.value)


def test_not_clip_weights(tmp_path: Path) -> None:
    file = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2)}, file)
    with pytest.raises(ConfigError, match="token_embedding.weight"):
        ClipTextTower(**SMALL, weights=file)


def test_missing_and_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ConfigError) as info:
        ClipTextTower(**SMALL, weights=missing)
    assert str(missing) in str(info.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00garbage")
    with pytest.raises(ConfigError, match="could not be read"):
        ClipTextTower(**SMALL, weights=garbage)


def test_heads_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        ClipTextTower(width=30, heads=4, layers=1)


def test_gradients_flow() -> None:
    tower = _tower()
    ids, mask = _batch()
    tower.train()
    tower(ids, mask).features.sum().backward()
    assert tower.token_embedding.weight.grad is not None
    assert tower.transformer.resblocks[0].attn.in_proj_weight.grad is not None
