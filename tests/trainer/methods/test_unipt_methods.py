"""UniPT's pre-training and fine-tuning losses, the max-pooled towers, weight transfer and the data.

Every loss is checked against a hand transcription of its formula (explicit
``log_softmax``), not against the library function it calls, so a wrong sign, a missing
term or a swapped tensor shows up as a mismatch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from personsearch_train.data.pseudo_captioned import load_pseudo_captioned
from personsearch_train.data.registry import load_text_split
from personsearch_train.engine.checkpoint import save_checkpoint
from personsearch_train.engine.weight_transfer import initialise_from_checkpoint, transfer_matching_weights
from personsearch_train.errors import ConfigError, DatasetFormatError
from personsearch_train.losses.masked_language import IGNORE_INDEX, mask_tokens, masked_language_loss
from personsearch_train.losses.ranking import semi_hard_ranking_loss
from personsearch_train.methods.unipt.finetuning import UniPTFinetuneArgs, UniPTFinetuneLosses
from personsearch_train.methods.unipt.pretraining import (
    TextMaskedLanguageHead,
    UniPTArgs,
    UniPTLosses,
    masked_token_loss,
)
from personsearch_train.models import create_model, register_model
from personsearch_train.text import HuggingFaceTextTower, TextTokenizer, minilm_model_dir
from personsearch_train.text.image_towers import ResNetImageTower, VitImageTower
from personsearch_train.text.text_towers import masked_max

CAPTIONS = [
    "A young man in a red shirt and black trousers.",
    "A woman with long hair wearing a blue coat. She carries a bag.",
    "A person in a green jacket.",
    "An elderly man walking, grey top and brown shorts.",
]


# --- hand transcriptions ------------------------------------------------------------------


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of ``targets`` under row-wise ``log_softmax(logits)``."""
    log_probs = torch.log_softmax(logits, dim=1)
    return -log_probs[torch.arange(len(targets)), targets].mean()


def _contrastive_reference(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    cosine = F.cosine_similarity(image.unsqueeze(1), text.unsqueeze(0), dim=-1)  # [B, B]
    logits = cosine / temperature
    diagonal = torch.arange(image.shape[0])
    return (_cross_entropy(logits, diagonal) + _cross_entropy(logits.t(), diagonal)) / 2


def _shared_id_reference(
    classifier: torch.nn.Linear, image: torch.Tensor, text: torch.Tensor, pids: torch.Tensor
):
    weight, bias = classifier.weight, classifier.bias
    return (
        _cross_entropy(image @ weight.t() + bias, pids) + _cross_entropy(text @ weight.t() + bias, pids)
    ) / 2


def _mlm_reference(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE over the labelled positions of ``[B, L, V]`` logits."""
    selected = labels != IGNORE_INDEX
    return _cross_entropy(logits[selected], labels[selected])


# --- shared models ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    """A real dual encoder (no granularity decoder), dropout off so two passes agree."""
    torch.manual_seed(0)
    return create_model("dual_encoder_tiny", max_length=16, embed_dim=32).eval()


@pytest.fixture(scope="module")
def pgu_model() -> torch.nn.Module:
    torch.manual_seed(1)
    return create_model(
        "dual_encoder_tiny",
        max_length=16,
        embed_dim=32,
        granularity_queries=2,
        granularity_layers=1,
        granularity_heads=2,
    ).eval()


def _batch(model: torch.nn.Module, pids: list[int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = model.tokenizer(CAPTIONS[: len(pids)])
    images = [torch.rand(3, *model.image_size, generator=generator) for _ in pids]
    targets = [
        {
            "input_ids": torch.from_numpy(tokens.input_ids[i]),
            "attention_mask": torch.from_numpy(tokens.attention_mask[i]),
            "pids": torch.tensor(pid),
        }
        for i, pid in enumerate(pids)
    ]
    return images, targets


# --- UniPT pre-training: contrast ---------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.25, 0.05, 0.02])
@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_contrastive_term_is_symmetric_infonce_over_cosines(temperature: float, weight: float) -> None:
    generator = torch.Generator().manual_seed(int(temperature * 100))
    image = torch.randn(6, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    text = torch.randn(6, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    losses = UniPTLosses(
        UniPTArgs(temperature=temperature, contrastive_weight=weight, mlm_weight=0.0),
        feature_dim=8,
        vocab_size=10,
        mask_token_id=None,
        special_token_ids=frozenset(),
    )
    assert losses.mlm_head is None
    # The losses read the towers' unit embeddings (TowerOutput.embedding).
    outputs = SimpleNamespace(
        image=SimpleNamespace(embedding=F.normalize(image, dim=-1)),
        text=SimpleNamespace(embedding=F.normalize(text, dim=-1)),
    )
    got = losses(None, outputs, [], [])  # type: ignore[arg-type]
    assert set(got) == {"loss_con"}
    expected = weight * _contrastive_reference(image, text, temperature)
    # The losses compute in float32 (``.float()`` on the embeddings): float32 tolerances.
    torch.testing.assert_close(got["loss_con"].double(), expected, rtol=1e-5, atol=1e-6)

    got_grads = torch.autograd.grad(got["loss_con"], (image, text))
    expected_grads = torch.autograd.grad(expected, (image, text))
    for g, e in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-6)
        assert float(g.abs().sum()) > 0


def test_contrast_is_not_invariant_to_swapping_a_caption() -> None:
    """Sanity check of the reference: a mismatched pair raises the loss."""
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(4, 8, generator=generator)
    matched = _contrastive_reference(image, image + 0.01 * torch.randn(4, 8, generator=generator), 0.05)
    swapped = _contrastive_reference(image, image[[1, 0, 2, 3]], 0.05)
    assert float(swapped) > float(matched) + 1.0


# --- UniPT pre-training: MLM --------------------------------------------------------------


def _labels(
    shape: tuple[int, int], vocab: int, generator: torch.Generator, share: float = 0.3
) -> torch.Tensor:
    labels = torch.randint(vocab, shape, generator=generator)
    keep = torch.rand(shape, generator=generator) < share
    keep[0, 0] = True
    return torch.where(keep, labels, torch.full_like(labels, IGNORE_INDEX))


def test_masked_token_loss_equals_the_full_logit_loss_and_a_manual_ce() -> None:
    torch.manual_seed(0)
    head = TextMaskedLanguageHead(width=12, vocab_size=50)
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randn(3, 7, 12, generator=generator, requires_grad=True)
    labels = _labels((3, 7), 50, generator)
    got = masked_token_loss(head, tokens, labels)
    full = masked_language_loss(head(tokens), labels)
    manual = _mlm_reference(head(tokens), labels)
    torch.testing.assert_close(got, full)
    torch.testing.assert_close(got, manual)
    # The gradient reaches exactly the labelled positions.
    (grad,) = torch.autograd.grad(got, tokens)
    labelled = labels != IGNORE_INDEX
    assert bool((grad[labelled].abs().sum(-1) > 0).all())
    assert float(grad[~labelled].abs().sum()) == 0.0


def test_masked_token_loss_without_labels_is_an_in_graph_zero() -> None:
    head = TextMaskedLanguageHead(width=4, vocab_size=9)
    tokens = torch.randn(2, 5, 4, requires_grad=True)
    loss = masked_token_loss(head, tokens, torch.full((2, 5), IGNORE_INDEX))
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert tokens.grad is not None and float(tokens.grad.abs().sum()) == 0.0


@pytest.mark.parametrize("seed", [0, 7, 123])
def test_mlm_term_is_mask_reencode_head_ce(tiny_model: torch.nn.Module, seed: int) -> None:
    model = tiny_model
    tokenizer = model.tokenizer
    torch.manual_seed(10 + seed)
    losses = UniPTLosses(
        UniPTArgs(temperature=0.05, contrastive_weight=0.3, mlm_weight=0.7),
        feature_dim=model.feature_dim,
        vocab_size=tokenizer.vocab_size,
        mask_token_id=tokenizer.mask_token_id,
        special_token_ids=tokenizer.special_token_ids,
    ).eval()
    assert losses.mlm_head is not None and losses.mlm_head.decoder.out_features == tokenizer.vocab_size
    images, targets = _batch(model, [0, 1, 2, 3], seed=seed)
    outputs = model.forward_train(images, targets)

    torch.manual_seed(seed)
    got = losses(model, outputs, images, targets)
    assert set(got) == {"loss_con", "loss_mlm"}

    torch.manual_seed(seed)
    masked, labels = mask_tokens(
        outputs.input_ids,
        outputs.attention_mask,
        mask_token_id=tokenizer.mask_token_id,
        vocab_size=tokenizer.vocab_size,
        special_token_ids=tokenizer.special_token_ids,
        probability=0.15,
    )
    assert bool((labels != IGNORE_INDEX).any(dim=1).all())  # every caption has a target
    hidden = model.text_outputs(masked, outputs.attention_mask).tokens
    expected = 0.7 * _mlm_reference(losses.mlm_head(hidden), labels)
    torch.testing.assert_close(got["loss_mlm"], expected, rtol=1e-5, atol=1e-6)

    # The contrast of the same call, from the batch's unit embeddings.
    con = 0.3 * _contrastive_reference(outputs.image.features, outputs.text.features, 0.05)
    torch.testing.assert_close(got["loss_con"], con, rtol=1e-5, atol=1e-6)

    # Another mask draw gives another loss: the term really depends on the masking.
    torch.manual_seed(seed + 1000)
    other = losses(model, outputs, images, targets)["loss_mlm"]
    assert not torch.allclose(other, got["loss_mlm"])


def test_mlm_needs_a_mask_token() -> None:
    with pytest.raises(ConfigError, match="mask token"):
        UniPTLosses(
            UniPTArgs(), feature_dim=4, vocab_size=10, mask_token_id=None, special_token_ids=frozenset()
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"temperature": -0.1}, "temperature must be positive"),
        ({"contrastive_weight": 0.0, "mlm_weight": 0.0}, "both 0"),
        ({"mlm_weight": -1.0}, "mlm_weight must be >= 0"),
        ({"mlm_probability": 0.0}, "mlm_probability"),
        ({"eval_dataset": "ufine6926"}, "eval_dataset and eval_root go together"),
        ({"eval_root": "/somewhere"}, "eval_dataset and eval_root go together"),
    ],
)
def test_unipt_args_validation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UniPTArgs(**kwargs)


def test_unipt_args_defaults_are_the_paper_settings() -> None:
    args = UniPTArgs(eval_dataset="ufine6926", eval_root="/data")
    assert (args.temperature, args.contrastive_weight, args.mlm_weight, args.mlm_probability) == (
        1.0,
        1.0,
        1.0,
        0.15,
    )


# --- max pooling --------------------------------------------------------------------------


def _masked_max_loop(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    batch, length, width = tokens.shape
    out = torch.zeros(batch, width, dtype=tokens.dtype)
    for b in range(batch):
        for d in range(width):
            values = [float(tokens[b, t, d]) for t in range(length) if mask[b, t]]
            out[b, d] = max(values) if values else 0.0
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_max_matches_a_loop(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(4)
    # Strongly negative values: a padding token filled with 0 instead of excluded would win.
    tokens = (torch.randn(5, 7, 6, generator=generator) - 3.0).to(dtype)
    mask = (torch.rand(5, 7, generator=generator) < 0.6).long()
    mask[0] = 1
    mask[1] = 0  # all padding -> zeros
    mask[2] = 0
    mask[2, 4] = 1  # a single real token, not the first
    got = masked_max(tokens, mask)
    assert got.dtype == dtype
    torch.testing.assert_close(got, _masked_max_loop(tokens, mask))
    assert float(got[1].abs().sum()) == 0.0
    torch.testing.assert_close(got[2], tokens[2, 4])
    # A bool mask means the same.
    torch.testing.assert_close(masked_max(tokens, mask.bool()), got)


def test_hf_text_tower_max_pooling_is_masked_max() -> None:
    torch.manual_seed(0)
    tower = HuggingFaceTextTower(model_dir=minilm_model_dir(), embed_dim=16, pooling="max").eval()
    tokenizer = TextTokenizer.from_model_dir(minilm_model_dir(), max_length=24)
    batch = tokenizer(CAPTIONS)
    ids, mask = torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask)
    assert bool((mask == 0).any())  # some padding, so the mask matters
    with torch.no_grad():
        out = tower(ids, mask)
    torch.testing.assert_close(out.features, masked_max(out.tokens, mask))
    torch.testing.assert_close(out.features, _masked_max_loop(out.tokens, mask))
    # Padding positions would change the maximum if they were included.
    assert not torch.allclose(out.features, out.tokens.amax(dim=1))


def test_text_tower_refuses_an_unknown_pooling() -> None:
    with pytest.raises(ConfigError, match="pooling"):
        HuggingFaceTextTower(model_dir=minilm_model_dir(), embed_dim=16, pooling="avg")


def test_resnet_tower_pooling() -> None:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 32)
    max_tower = ResNetImageTower(depth="resnet18", embed_dim=16, pooling="max").eval()
    mean_tower = ResNetImageTower(depth="resnet18", embed_dim=16).eval()
    mean_tower.load_state_dict(max_tower.state_dict())
    with torch.no_grad():
        max_out, mean_out = max_tower(images), mean_tower(images)
    torch.testing.assert_close(max_out.tokens, mean_out.tokens)
    torch.testing.assert_close(max_out.features, max_out.tokens.amax(dim=1))
    torch.testing.assert_close(mean_out.features, mean_out.tokens.mean(dim=1))
    assert not torch.allclose(max_out.features, mean_out.features)
    with pytest.raises(ConfigError, match="pooling"):
        ResNetImageTower(depth="resnet18", embed_dim=16, pooling="cls")


def test_vit_tower_pooling() -> None:
    torch.manual_seed(0)
    kwargs = {"image_size": (32, 16), "patch_size": 8, "width": 16, "layers": 1, "heads": 2, "embed_dim": 8}
    max_tower = VitImageTower(**kwargs, pooling="max").eval()
    cls_tower = VitImageTower(**kwargs).eval()
    cls_tower.load_state_dict(max_tower.state_dict())
    images = torch.rand(2, 3, 32, 16)
    with torch.no_grad():
        max_out, cls_out = max_tower(images), cls_tower(images)
    torch.testing.assert_close(max_out.tokens, cls_out.tokens)
    torch.testing.assert_close(max_out.features, max_out.tokens.amax(dim=1))
    torch.testing.assert_close(cls_out.features, cls_out.tokens[:, 0])
    with pytest.raises(ConfigError, match="pooling"):
        VitImageTower(**kwargs, pooling="mean")


# --- UniPT fine-tuning --------------------------------------------------------------------


def test_finetune_terms_equal_their_transcriptions(pgu_model: torch.nn.Module) -> None:
    model = pgu_model
    pids = torch.tensor([0, 1, 0, 2])
    images, targets = _batch(model, pids.tolist(), seed=5)
    outputs = model.forward_train(images, targets)
    args = UniPTFinetuneArgs(id_weight=0.7, ranking_weight=1.3, pgu_weight=0.5, margin=0.3)
    losses = UniPTFinetuneLosses(args, feature_dim=model.feature_dim, num_classes=3)
    # Larger classifier weights than the 0.001 init, so a wrong input changes the loss visibly.
    torch.manual_seed(2)
    with torch.no_grad():
        for classifier in (losses.identity.classifier, losses.pgu_identity.classifier):
            classifier.weight.normal_(std=0.3)
            classifier.bias.normal_(std=0.1)
    got = losses(model, outputs, images, targets)
    assert set(got) == {"loss_id", "loss_rank", "loss_pgu_id", "loss_pgu_rank"}

    image_features, text_features = outputs.image.features, outputs.text.features
    coarse_image, coarse_text = outputs.image_granularity.coarse, outputs.text_granularity.coarse
    scale = math.sqrt(model.feature_dim)
    expected = {
        "loss_id": 0.7
        * _shared_id_reference(losses.identity.classifier, image_features, text_features, pids),
        "loss_rank": 1.3
        * semi_hard_ranking_loss(
            F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1), pids, margin=0.3
        ),
        "loss_pgu_id": 0.5
        * _shared_id_reference(
            losses.pgu_identity.classifier, coarse_image * scale, coarse_text * scale, pids
        ),
        "loss_pgu_rank": 0.5 * semi_hard_ranking_loss(coarse_image, coarse_text, pids, margin=0.3),
    }
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # The two ID terms have their own classifiers and inputs: they differ.
    assert not torch.allclose(got["loss_id"] / 0.7, got["loss_pgu_id"] / 0.5)
    # Every term reaches the model.
    sum(got.values()).backward()
    assert model.granularity_decoder is not None
    assert any(
        p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.granularity_decoder.parameters()
    )
    model.zero_grad(set_to_none=True)


def test_finetune_weights_switch_terms_off(pgu_model: torch.nn.Module) -> None:
    images, targets = _batch(pgu_model, [0, 1], seed=1)
    outputs = pgu_model.forward_train(images, targets)
    losses = UniPTFinetuneLosses(
        UniPTFinetuneArgs(ranking_weight=0.0, pgu_weight=0.0), feature_dim=32, num_classes=2
    )
    assert losses.pgu_identity is None
    assert set(losses(pgu_model, outputs, images, targets)) == {"loss_id"}
    with pytest.raises(ConfigError, match="every loss weight is 0"):
        UniPTFinetuneArgs(id_weight=0.0, ranking_weight=0.0, pgu_weight=0.0)
    with pytest.raises(ConfigError, match="margin"):
        UniPTFinetuneArgs(margin=-0.1)


def test_pgu_without_a_decoder_names_granularity_queries(tiny_model: torch.nn.Module) -> None:
    images, targets = _batch(tiny_model, [0, 1], seed=2)
    outputs = tiny_model.forward_train(images, targets)
    losses = UniPTFinetuneLosses(UniPTFinetuneArgs(), feature_dim=tiny_model.feature_dim, num_classes=2)
    with pytest.raises(ConfigError, match="granularity_queries"):
        losses(tiny_model, outputs, images, targets)


# --- weight transfer ----------------------------------------------------------------------


class _Target(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 3)  # same names and shapes in the source
        self.resized = torch.nn.Linear(4, 5)  # same names, other shapes
        self.fresh = torch.nn.Linear(2, 2)  # target only


class _Source(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = torch.nn.Linear(4, 3)
        self.resized = torch.nn.Linear(4, 6)
        self.extra = torch.nn.Linear(3, 1)  # source only


def test_transfer_matching_weights_by_name_and_shape() -> None:
    torch.manual_seed(0)
    target, source = _Target(), _Source()
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = transfer_matching_weights(target, source.state_dict(), source_name="pretrain-run")

    assert sorted(report.loaded) == ["shared.bias", "shared.weight"]
    assert sorted(report.skipped) == [("resized.bias", (5,), (6,)), ("resized.weight", (5, 4), (6, 4))]
    assert sorted(report.new) == ["fresh.bias", "fresh.weight"]
    assert sorted(report.unused) == ["extra.bias", "extra.weight"]
    torch.testing.assert_close(target.shared.weight, source.shared.weight)
    torch.testing.assert_close(target.shared.bias, source.shared.bias)
    for name in ("resized.weight", "resized.bias", "fresh.weight", "fresh.bias"):
        torch.testing.assert_close(target.state_dict()[name], before[name], msg=name)
    assert not torch.equal(before["shared.weight"], target.shared.weight)

    total = 4 * 3 + 3 + 4 * 5 + 5 + 2 * 2 + 2
    assert (report.loaded_elements, report.total_elements) == (15, total)
    assert report.loaded_fraction == pytest.approx(15 / total)
    text = report.format()
    assert "pretrain-run" in text and "loaded 2 tensors" in text
    assert f"{100 * 15 / total:.1f}%" in text
    assert "resized.weight [5, 4] vs [6, 4]" in text
    assert "fresh" in text and "extra" in text


def test_transfer_casts_to_the_target_dtype() -> None:
    target = _Target()
    source = {k: v.double() + 1.0 for k, v in _Target().state_dict().items()}
    report = transfer_matching_weights(target, source)
    assert len(report.loaded) == 6 and report.loaded_fraction == 1.0
    assert target.shared.weight.dtype == torch.float32
    torch.testing.assert_close(target.shared.weight, source["shared.weight"].float())


@pytest.fixture
def source_model_registered() -> Iterator[str]:
    """Register ``_Source`` as a model for one test (the registry is process-wide)."""
    from personsearch_train.models import registry

    name = "_unipt_test_transfer_source"
    register_model(name)(_Source)
    yield name
    registry._BUILDERS.pop(name, None)


def test_initialise_from_a_run_folder_prefers_latest(tmp_path: Path, source_model_registered: str) -> None:
    torch.manual_seed(1)
    early, late = _Source(), _Source()
    meta = {"model": {"name": source_model_registered, "kwargs": {}}}
    save_checkpoint(tmp_path, "best", model=early, metadata=meta)
    save_checkpoint(tmp_path, "latest", model=late, metadata=meta)

    target = _Source()
    report = initialise_from_checkpoint(target, tmp_path)
    # The end of pre-training, not a checkpoint picked on another task's score.
    for name, tensor in target.state_dict().items():
        torch.testing.assert_close(tensor, late.state_dict()[name], msg=name)
    assert len(report.loaded) == 6 and report.loaded_fraction == 1.0
    assert "latest.safetensors" in report.source and source_model_registered in report.source


def test_initialise_refuses_a_source_that_fits_under_half(
    tmp_path: Path, source_model_registered: str
) -> None:
    save_checkpoint(
        tmp_path,
        "latest",
        model=_Source(),
        metadata={"model": {"name": source_model_registered, "kwargs": {}}},
    )

    class _Other(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = torch.nn.Linear(4, 3)  # 15 elements of 15 + 1100
            self.head = torch.nn.Linear(100, 11)

    with pytest.raises(ConfigError, match=r"fit only 1\.3% .*model\.init_from"):
        initialise_from_checkpoint(_Other(), tmp_path)


def test_initialise_from_a_missing_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^model\.init_from: "):
        initialise_from_checkpoint(_Target(), tmp_path / "no_such_run")


# --- pseudo-captioned crops (luperson_t) --------------------------------------------------


def _write_captions(root: Path, entries: object, name: str = "captions.json") -> Path:
    path = root / name
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def test_pseudo_captioned_list_gives_one_label_per_image(tmp_path: Path) -> None:
    entries = [
        {"file_path": "a/0.jpg", "captions": ["one.", "two."], "attributes": {"age": "young"}},
        {"file_path": "b.jpg", "captions": ["three."], "attributes": {}},
        {"file_path": "c.png", "captions": ["four.", "five.", "six."]},
    ]
    _write_captions(tmp_path, entries)
    for split in (load_pseudo_captioned(tmp_path), load_text_split("luperson_t", tmp_path, "train")):
        assert split.dataset == "luperson_t" and split.split == "train"
        assert split.image_paths == (tmp_path / "a/0.jpg", tmp_path / "b.jpg", tmp_path / "c.png")
        assert split.captions == ("one.", "two.", "three.", "four.", "five.", "six.")
        assert split.caption_image.tolist() == [0, 0, 1, 2, 2, 2]
        assert split.caption_pids.tolist() == [0, 0, 1, 2, 2, 2]
        assert split.image_pids.tolist() == [0, 1, 2]
        assert split.label_to_pid.tolist() == [0, 1, 2]


def test_pseudo_captioned_other_annotation_file(tmp_path: Path) -> None:
    _write_captions(tmp_path, [{"file_path": "x.jpg", "captions": ["a caption."]}], name="other.json")
    split = load_text_split("luperson_t", tmp_path, "train", annotation_file=Path("other.json"))
    assert split.captions == ("a caption.",)
    absolute = load_pseudo_captioned(tmp_path, annotation_file=tmp_path / "other.json")
    assert absolute.image_paths == (tmp_path / "x.jpg",)


def test_pseudo_captioned_missing_file_suggests_the_command(tmp_path: Path) -> None:
    with pytest.raises(DatasetFormatError) as error:
        load_pseudo_captioned(tmp_path)
    message = str(error.value)
    assert str(tmp_path / "captions.json") in message
    assert "personsearch pseudo-caption" in message


@pytest.mark.parametrize(
    ("entries", "pattern"),
    [
        ([{"file_path": "a.jpg", "captions": ["ok."]}, {"file_path": "b.jpg"}], r"entry 1: 'captions'"),
        ([{"file_path": "a.jpg", "captions": []}], r"entry 0: 'captions'"),
        (
            [{"file_path": "a.jpg", "captions": ["ok."]}, {"file_path": "b.jpg", "captions": ["  "]}],
            r"entry 1: every caption",
        ),
        ([{"file_path": "a.jpg", "captions": [3]}], r"entry 0: every caption"),
        ([{"captions": ["ok."]}], r"entry 0: 'file_path'"),
        ([["a.jpg", "caption"]], r"entry 0 is a list"),
        ({"file_path": "a.jpg", "captions": ["ok."]}, r"expected a JSON list"),
        ([], r"the caption list is empty"),
    ],
)
def test_pseudo_captioned_format_errors_name_the_entry(tmp_path: Path, entries: object, pattern: str) -> None:
    path = _write_captions(tmp_path, entries)
    with pytest.raises(DatasetFormatError, match=pattern) as error:
        load_pseudo_captioned(tmp_path)
    assert str(path) in str(error.value)


def test_pseudo_captioned_has_only_a_training_split(tmp_path: Path) -> None:
    _write_captions(tmp_path, [{"file_path": "a.jpg", "captions": ["ok."]}])
    with pytest.raises(ConfigError, match="only a training split"):
        load_pseudo_captioned(tmp_path, "test")
    with pytest.raises(ConfigError, match="only a training split"):
        load_text_split("luperson_t", tmp_path, "test")
