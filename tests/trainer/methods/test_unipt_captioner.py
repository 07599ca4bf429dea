"""UniPT's captioner (conquer + combine), its resumable output, the CLI and attribute accuracy.

The scorer is a fake image-text model with fixed weights: an image embedding is a fixed
linear map of the crop's per-channel means, a text embedding the mean of a fixed token
embedding table. It is cheap and deterministic, and it lets a test recompute what the
captioner must have selected.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from personsearch_runtime import cli
from personsearch_train.commands import pseudo_caption
from personsearch_train.data.pseudo_captioned import load_pseudo_captioned
from personsearch_train.errors import ConfigError
from personsearch_train.evaluation.attribute_accuracy import (
    AttributeAccuracy,
    attribute_accuracy,
    format_accuracy_table,
)
from personsearch_train.methods.unipt.caption_templates import CaptionTemplates, load_caption_templates
from personsearch_train.methods.unipt.captioner import (
    CaptionDesign,
    PromptScorer,
    caption_images,
    list_images,
)
from personsearch_train.methods.unipt.phrase_banks import (
    DEFAULT_PHRASE_BANK,
    Attribute,
    PhraseBank,
    load_phrase_bank,
)
from personsearch_train.text import TextTokenizer, minilm_model_dir

LOGIT_SCALE = 50.0
BATCH = 4


class FakeScorerModel(torch.nn.Module):
    """Fixed random weights; counts the crops it encodes."""

    def __init__(self, tokenizer: TextTokenizer, dim: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.image_size = (16, 8)
        self.tokenizer = tokenizer
        self.register_buffer("colour_map", torch.randn(3, dim, generator=generator))
        self.register_buffer("token_table", torch.randn(tokenizer.vocab_size, dim, generator=generator))
        self.images_encoded = 0

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.images_encoded += images.shape[0]
        return F.normalize(images.mean(dim=(2, 3)) @ self.colour_map, dim=-1)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        weights = attention_mask.unsqueeze(-1).float()
        pooled = (self.token_table[input_ids] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1)


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer.from_model_dir(minilm_model_dir(), max_length=32)


def _scorer(tokenizer: TextTokenizer) -> PromptScorer:
    return PromptScorer(FakeScorerModel(tokenizer), logit_scale=LOGIT_SCALE, batch_size=BATCH)


@pytest.fixture(scope="module")
def bank() -> PhraseBank:
    return load_phrase_bank()


@pytest.fixture(scope="module")
def templates(bank: PhraseBank) -> CaptionTemplates:
    return load_caption_templates(bank=bank)


READABLE = [f"crop_{i:02d}.jpg" for i in range(9)] + ["sub/deep.jpg"]


def _write_images(folder: Path) -> Path:
    """Ten small JPEG crops of random colours, a corrupt JPEG and a text file."""
    rng = np.random.default_rng(0)
    for name in READABLE:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = np.zeros((40, 20, 3), np.uint8)
        image[:20] = rng.integers(0, 256, 3)
        image[20:] = rng.integers(0, 256, 3)
        assert cv2.imwrite(str(path), image)
    (folder / "broken.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (folder / "notes.txt").write_text("not an image\n")
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return _write_images(tmp_path / "images")


def _expected_selection(scorer: PromptScorer, bank: PhraseBank, folder: Path, name: str, threshold: float):
    """What the captioner must select for one crop, recomputed from the fake model."""
    bgr = cv2.resize(cv2.imread(str(folder / name)), (8, 16), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1).astype(np.float32) / 255.0
    with torch.no_grad():
        image = scorer.model.encode_images(torch.from_numpy(rgb)[None]).numpy()[0]
    similarities = scorer.encode_prompts(bank.prompts()) @ image
    selection = {}
    start = 0
    for attribute in bank.attributes:
        scores = LOGIT_SCALE * similarities[start : start + len(attribute.values)].astype(np.float64)
        start += len(attribute.values)
        probabilities = np.exp(scores - scores.max())
        probabilities /= probabilities.sum()
        best = int(probabilities.argmax())
        value = attribute.values[best]
        if attribute.required or (value != "none" and probabilities[best] > threshold):
            selection[attribute.name] = value
    return selection


# --- captioning ---------------------------------------------------------------------------


def test_caption_images_writes_every_readable_crop_once(
    images: Path, tmp_path: Path, tokenizer: TextTokenizer, bank: PhraseBank, templates: CaptionTemplates
) -> None:
    scorer = _scorer(tokenizer)
    out = tmp_path / "out" / "captions.json"
    summary = caption_images(images, out, scorer=scorer, bank=bank, templates=templates, progress=False)

    entries = json.loads(out.read_text())
    assert [e["file_path"] for e in entries] == sorted(READABLE)
    assert (summary.images, summary.captioned, summary.resumed) == (11, 10, 0)
    assert summary.skipped == ["broken.jpg"] and summary.out == out
    assert sorted(p.name for p in out.parent.iterdir()) == ["captions.json"]  # no partial, no temp file
    # Each crop was read and encoded once; the broken one is not encoded at all.
    assert scorer.model.images_encoded == 10
    required = {a.name for a in bank.required}
    kept_optional = 0
    for entry in entries:
        assert set(entry) == {"file_path", "captions", "attributes"}
        assert len(entry["captions"]) == 1 and entry["captions"][0].strip()
        attributes = entry["attributes"]
        assert required <= set(attributes)
        for name, value in attributes.items():
            assert value in bank.attribute(name).values
        kept_optional += len(set(attributes) - required)
        # The conquer step: the selection is the per-attribute softmax of this model's scores.
        assert attributes == _expected_selection(scorer, bank, images, entry["file_path"], 0.9)
    assert kept_optional > 0  # the fake scorer is confident enough to keep some optional attribute

    # The output is a luperson_t caption list.
    split = load_pseudo_captioned(images, annotation_file=out)
    assert len(split.image_paths) == 10 and split.captions == tuple(e["captions"][0] for e in entries)


def test_design_switches_reach_the_captions(
    images: Path, tmp_path: Path, tokenizer: TextTokenizer, bank: PhraseBank, templates: CaptionTemplates
) -> None:
    out = tmp_path / "two.json"
    design = CaptionDesign(captions_per_image=2, use_optional=False)
    caption_images(
        images, out, scorer=_scorer(tokenizer), bank=bank, templates=templates, design=design, progress=False
    )
    entries = json.loads(out.read_text())
    required = {a.name for a in bank.required}
    assert all(len(e["captions"]) == 2 and set(e["attributes"]) == required for e in entries)


def _interrupt_after_first_batch(done: int) -> None:
    raise KeyboardInterrupt


def _interrupted_run(
    images: Path, out: Path, tokenizer, bank, templates, design: CaptionDesign | None = None
) -> Path:
    with pytest.raises(KeyboardInterrupt):
        caption_images(
            images,
            out,
            scorer=_scorer(tokenizer),
            bank=bank,
            templates=templates,
            design=design or CaptionDesign(),
            progress=False,
            after_batch=_interrupt_after_first_batch,
        )
    partial = out.with_name(out.name + ".partial.jsonl")
    assert not out.exists() and partial.is_file()
    lines = partial.read_text().splitlines()
    assert len(lines) == 1 + BATCH and "settings" in json.loads(lines[0])
    return partial


@pytest.fixture
def reference(tmp_path: Path, images: Path, tokenizer, bank, templates) -> bytes:
    """The output of an uninterrupted run on a copy of the crops in another folder."""
    other = tmp_path / "elsewhere"
    shutil.copytree(images, other / "images")
    out = other / "captions.json"
    caption_images(
        other / "images", out, scorer=_scorer(tokenizer), bank=bank, templates=templates, progress=False
    )
    return out.read_bytes()


def test_an_interrupted_run_resumes_to_the_same_output(
    images: Path, tmp_path: Path, tokenizer, bank, templates, reference: bytes
) -> None:
    out = tmp_path / "run" / "captions.json"
    partial = _interrupted_run(images, out, tokenizer, bank, templates)
    scorer = _scorer(tokenizer)
    summary = caption_images(images, out, scorer=scorer, bank=bank, templates=templates, progress=False)
    assert summary.resumed == BATCH
    assert out.read_bytes() == reference
    assert not partial.exists()
    paths = [e["file_path"] for e in json.loads(out.read_text())]
    assert len(paths) == len(set(paths)) == 10
    # The first batch was not encoded again (it holds 4 readable crops: broken.jpg sorts first).
    first_batch = sorted([*READABLE, "broken.jpg"])[:BATCH]
    assert scorer.model.images_encoded == 10 - sum(name in READABLE for name in first_batch)


def test_a_torn_last_line_is_redone(
    images: Path, tmp_path: Path, tokenizer, bank, templates, reference: bytes
) -> None:
    out = tmp_path / "run" / "captions.json"
    partial = _interrupted_run(images, out, tokenizer, bank, templates)
    with partial.open("a", encoding="utf-8") as handle:
        handle.write('{"file_path": "crop_05.jpg", "capti')  # the process died mid-line
    summary = caption_images(
        images, out, scorer=_scorer(tokenizer), bank=bank, templates=templates, progress=False
    )
    assert summary.resumed == BATCH
    assert out.read_bytes() == reference


def test_a_torn_line_then_a_second_interruption_still_finishes_the_same(
    images: Path, tmp_path: Path, tokenizer, bank, templates, reference: bytes
) -> None:
    out = tmp_path / "run" / "captions.json"
    partial = _interrupted_run(images, out, tokenizer, bank, templates)
    with partial.open("a", encoding="utf-8") as handle:
        handle.write('{"file_path": "crop_05.jp')
    # The second run appends after the torn text and is interrupted in turn.
    with pytest.raises(KeyboardInterrupt):
        caption_images(
            images,
            out,
            scorer=_scorer(tokenizer),
            bank=bank,
            templates=templates,
            progress=False,
            after_batch=_interrupt_after_first_batch,
        )
    summary = caption_images(
        images, out, scorer=_scorer(tokenizer), bank=bank, templates=templates, progress=False
    )
    assert BATCH <= summary.resumed <= 2 * BATCH
    assert out.read_bytes() == reference


def test_a_partial_made_with_other_settings_is_refused(
    images: Path, tmp_path: Path, tokenizer, bank, templates
) -> None:
    out = tmp_path / "run" / "captions.json"
    partial = _interrupted_run(images, out, tokenizer, bank, templates, design=CaptionDesign(seed=0))
    before = partial.read_bytes()
    with pytest.raises(ConfigError) as error:
        caption_images(
            images,
            out,
            scorer=_scorer(tokenizer),
            bank=bank,
            templates=templates,
            design=CaptionDesign(seed=1),
            progress=False,
        )
    message = str(error.value)
    assert str(partial) in message
    assert "rerun with the same settings" in message and "delete the file" in message
    assert partial.read_bytes() == before and not out.exists()
    # Another logit scale is another setting too.
    with pytest.raises(ConfigError, match="other settings"):
        caption_images(
            images,
            out,
            scorer=PromptScorer(FakeScorerModel(tokenizer), logit_scale=20.0, batch_size=BATCH),
            bank=bank,
            templates=templates,
            progress=False,
        )


def test_only_unreadable_files_is_an_error(tmp_path: Path, tokenizer, bank, templates) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(ConfigError, match="none of the 1 files"):
        caption_images(
            folder,
            tmp_path / "c.json",
            scorer=_scorer(tokenizer),
            bank=bank,
            templates=templates,
            progress=False,
        )


# --- settings and folders -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"synonym_probability": 1.01}, "synonym probability"),
        ({"captions_per_image": 0}, "captions per image"),
    ],
)
def test_caption_design_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CaptionDesign(**kwargs)


def test_prompt_scorer_checks_the_model(tokenizer: TextTokenizer) -> None:
    with pytest.raises(ConfigError, match="not an image-text model"):
        PromptScorer(torch.nn.Linear(2, 2), logit_scale=1.0)
    with pytest.raises(ConfigError, match="logit scale"):
        PromptScorer(FakeScorerModel(tokenizer), logit_scale=0.0)


def test_list_images(tmp_path: Path, images: Path) -> None:
    (images / "UPPER.JPG").write_bytes((images / "crop_00.jpg").read_bytes())
    names = list_images(images)
    assert names == sorted([*READABLE, "broken.jpg", "UPPER.JPG"])
    with pytest.raises(ConfigError, match="is not a folder"):
        list_images(tmp_path / "missing")
    with pytest.raises(ConfigError, match="is not a folder"):
        list_images(images / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="holds no image file"):
        list_images(empty)


# --- the command --------------------------------------------------------------------------


def _malformed_bank(tmp_path: Path) -> tuple[Path, int]:
    lines = DEFAULT_PHRASE_BANK.read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("[hat |"))
    lines.insert(header + 1, "this line has no equals sign")
    path = tmp_path / "my_bank.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, header + 2  # 1-based number of the inserted line


def test_cli_reports_the_malformed_bank_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bank_path, line = _malformed_bank(tmp_path)
    argv = [
        "--images",
        str(tmp_path),
        "--scorer",
        str(tmp_path / "no_such_run"),
        "--out",
        str(tmp_path / "c.json"),
    ]
    argv += ["--bank", str(bank_path), "--no-progress"]
    parser = argparse.ArgumentParser()
    pseudo_caption.add_arguments(parser)
    with pytest.raises(ConfigError) as error:
        pseudo_caption.run(parser.parse_args(argv))
    message = str(error.value)
    assert "my_bank.txt" in message and f":{line}:" in message
    assert "no_such_run" not in message  # it failed on the bank, before loading the scorer

    assert cli.main(["pseudo-caption", *argv]) == 2
    err = capsys.readouterr().err
    assert "pseudo-caption: error:" in err and f"my_bank.txt:{line}:" in err


# --- attribute accuracy -------------------------------------------------------------------


def _accuracy_bank() -> PhraseBank:
    def attribute(name: str, required: bool, values: tuple[str, ...]) -> Attribute:
        return Attribute(name, required, "A photo of {}.", values, values, 1)

    return PhraseBank(
        attributes=(
            attribute("upper_clothes", True, ("red long", "blue long", "red short")),
            attribute("hat", False, ("hat", "none")),
            attribute("age", True, ("young", "old")),
        ),
        path=Path("hand_made.txt"),
    )


SELECTIONS = [
    {"upper_clothes": "red long", "hat": "hat", "age": "young"},  # upper right, hat right
    {"upper_clothes": "blue long", "age": "old"},  # upper wrong, hat not kept = none: right
    {"upper_clothes": "red short", "hat": "hat", "age": "old"},  # upper right (either value), hat wrong
    {"upper_clothes": "red long", "age": "young"},  # upper wrong, hat not kept but present: wrong
]
TRUTHS = [
    {"upper_clothes": ("red long",), "hat": ("hat",)},
    {"upper_clothes": ("red long",), "hat": ("none",)},
    {"upper_clothes": ("red short", "red long"), "hat": ("none",)},
    {"upper_clothes": ("blue long",), "hat": ("hat",)},
]


def test_attribute_accuracy_counts() -> None:
    rows = attribute_accuracy(SELECTIONS, TRUTHS, _accuracy_bank())
    assert [r.name for r in rows] == ["upper_clothes", "hat", "age"]
    upper, hat, age = rows
    # "red long" is acceptable for images 1, 2 and 3: the majority answer gets 3 of 4.
    assert upper == AttributeAccuracy(
        "upper_clothes", True, measured=4, correct=2, majority_correct=3, kept=4
    )
    assert hat == AttributeAccuracy("hat", False, measured=4, correct=2, majority_correct=2, kept=2)
    assert age == AttributeAccuracy("age", True, measured=0, correct=0, majority_correct=0, kept=0)
    assert upper.accuracy == 50.0 and upper.majority == 75.0
    assert age.accuracy is None and age.majority is None

    table = format_accuracy_table(rows).splitlines()
    assert table[2] == "| upper_clothes | required | 4 | 50.00 | 75.00 | 4 |"
    assert table[3] == "| hat | optional | 4 | 50.00 | 50.00 | 2 |"
    assert table[4].startswith("| age | required | 0 |") and "not drawn by the generator" in table[4]


def test_attribute_accuracy_skips_images_without_truth_for_an_attribute() -> None:
    truths = [dict(TRUTHS[0]), {"hat": ("none",)}]
    rows = attribute_accuracy(SELECTIONS[:2], truths, _accuracy_bank())
    assert (rows[0].measured, rows[0].correct) == (1, 1)
    assert (rows[1].measured, rows[1].correct) == (2, 2)


def test_attribute_accuracy_length_mismatch() -> None:
    with pytest.raises(ValueError, match="3 selections but 4 truth entries"):
        attribute_accuracy(SELECTIONS[:3], TRUTHS, _accuracy_bank())


# --- a local Hugging Face CLIP as the scorer ----------------------------------------------


def _tiny_clip_folder(folder: Path, words: list[str]) -> Path:
    """A randomly initialised CLIPModel and a word-level tokenizer saved like a real CLIP folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPModel, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>"
    ).save_pretrained(folder)
    torch.manual_seed(0)
    layer = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(
        text_config={**layer, "vocab_size": len(vocab), "max_position_embeddings": 40, "eos_token_id": 3},
        vision_config={**layer, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3})
    )
    return folder


def test_a_local_huggingface_clip_scores_the_prompts(
    tmp_path: Path, images: Path, bank: PhraseBank, templates: CaptionTemplates
) -> None:
    from transformers import AutoTokenizer, CLIPModel

    words = sorted({w for p in bank.prompts() for w in p.replace(".", " .").replace(",", " ,").split()})
    folder = _tiny_clip_folder(tmp_path / "clip", words)
    scorer = PromptScorer.from_checkpoint(folder, batch_size=BATCH)
    reference = CLIPModel.from_pretrained(folder).eval()

    assert scorer.image_size == (32, 32)
    assert scorer.logit_scale == pytest.approx(float(reference.logit_scale.detach().exp()))
    assert len(scorer.weights_sha256) == 64  # the resume check covers the weights

    # Parity with transformers' own features: prompts tokenised by the folder's tokenizer...
    prompts = bank.prompts()[:5]
    tokens = AutoTokenizer.from_pretrained(folder)(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        text = reference.get_text_features(**tokens)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
    np.testing.assert_allclose(
        scorer.encode_prompts(prompts), F.normalize(text, dim=-1).numpy(), atol=1e-5, rtol=0
    )
    # ...and crops normalised with the folder's mean and std (and resized to its input).
    crops = np.random.default_rng(0).random((2, 3, 40, 20), dtype=np.float32)
    resized = F.interpolate(torch.from_numpy(crops), size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        image = reference.get_image_features(pixel_values=(resized - 0.5) / 0.25)
        image = image if isinstance(image, torch.Tensor) else image.pooler_output
    np.testing.assert_allclose(
        scorer.encode_crops(crops), F.normalize(image, dim=-1).numpy(), atol=1e-5, rtol=0
    )

    out = tmp_path / "captions.json"
    summary = caption_images(images, out, scorer=scorer, bank=bank, templates=templates, progress=False)
    assert summary.captioned == 10 and summary.skipped == ["broken.jpg"]
    assert all(e["captions"][0].strip() for e in json.loads(out.read_text()))


def test_a_folder_that_is_not_clip_is_refused(tmp_path: Path) -> None:
    from personsearch_train.methods.unipt.huggingface_clip import HuggingFaceClip

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConfigError, match="not a Hugging Face CLIP folder"):
        HuggingFaceClip(tmp_path)
