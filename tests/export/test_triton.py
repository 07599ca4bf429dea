"""export-triton: the written config.pbtxt files parse back to what the manifest says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from personsearch_export.engine_build import GpuInfo, make_sidecar, write_json_atomic
from personsearch_export.errors import ExportError
from personsearch_export.triton import write_repository
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.cli import main

_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<punct>[{}\[\]:,])|(?P<word>[A-Za-z0-9_.+-]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        assert m, f"cannot tokenise at {text[pos : pos + 20]!r}"
        out.append(m.group(m.lastgroup))
        pos = m.end()
    return out


def _value(tok: str):
    if tok.startswith('"'):
        return tok[1:-1]
    if re.fullmatch(r"-?\d+", tok):
        return int(tok)
    return tok  # enum identifier


def parse_pbtxt(text: str) -> dict:
    """Tiny protobuf text-format parser: every field maps to a list of values (repeated-safe)."""
    toks = _tokens(text)
    pos = 0

    def message(end: str | None) -> dict:
        nonlocal pos
        fields: dict = {}
        while pos < len(toks) and toks[pos] != end:
            key = toks[pos]
            pos += 1
            if toks[pos] == ":":
                pos += 1
            if toks[pos] == "{":
                pos += 1
                fields.setdefault(key, []).append(message("}"))
                pos += 1
            elif toks[pos] == "[":
                pos += 1
                while toks[pos] != "]":
                    if toks[pos] == "{":
                        pos += 1
                        fields.setdefault(key, []).append(message("}"))
                        pos += 1
                    else:
                        fields.setdefault(key, []).append(_value(toks[pos]))
                        pos += 1
                    if toks[pos] == ",":
                        pos += 1
                pos += 1
                fields.setdefault(key, [])
            else:
                fields.setdefault(key, []).append(_value(toks[pos]))
                pos += 1
        return fields

    return message(None)


def test_parser_self_check():
    cfg = parse_pbtxt(
        'name: "m"\ninput [ { name: "a" dims: [ 1, -1 ] }, { name: "b" dims: [ ] } ]\nx { y: 2 }\n'
    )
    assert cfg["name"] == ["m"]
    assert cfg["input"][0]["dims"] == [1, -1] and cfg["input"][1]["dims"] == []
    assert cfg["x"][0]["y"] == [2]


def test_onnxruntime_repository_matches_manifest(toy_bundle: Path, tmp_path):
    repo = tmp_path / "repo"
    configs = write_repository(Bundle.load(toy_bundle), repo)
    assert sorted(p.name for p in repo.iterdir()) == sorted(configs)
    manifest = Bundle.load(toy_bundle).manifest
    for role, spec in manifest.models.items():
        name = f"personsearch_{role}"
        cfg = parse_pbtxt((repo / name / "config.pbtxt").read_text())
        assert cfg["name"] == [name]
        assert cfg["platform"] == ["onnxruntime_onnx"]
        assert (repo / name / "1" / "model.onnx").read_bytes() == (toy_bundle / spec.file).read_bytes()
        batch = cfg["max_batch_size"][0]
        assert [t["name"][0] for t in cfg["input"]] == [t.name for t in spec.inputs]
        assert [t["name"][0] for t in cfg["output"]] == [t.name for t in spec.outputs]
        for parsed, tensor in zip(cfg["input"] + cfg["output"], spec.inputs + spec.outputs, strict=True):
            expected = [
                d if isinstance(d, int) else -1 for d in (tensor.shape[1:] if batch else tensor.shape)
            ]
            if not expected:
                assert parsed["dims"] == [1] and parsed["reshape"][0]["shape"] == []
            else:
                assert parsed["dims"] == expected
            assert parsed["data_type"] == [{"float32": "TYPE_FP32", "int64": "TYPE_INT64"}[tensor.dtype]]
        assert cfg["instance_group"][0]["kind"] == ["KIND_CPU"]
        assert ("dynamic_batching" in cfg) == (batch > 0)
    det = parse_pbtxt((repo / "personsearch_detector" / "config.pbtxt").read_text())
    assert det["max_batch_size"] == [manifest.models["detector"].dim("B").max]
    qe = parse_pbtxt((repo / "personsearch_query_encoder" / "config.pbtxt").read_text())
    assert qe["max_batch_size"] == [0]  # image [1,...] and boxes [M,4] share no batch dimension
    head = parse_pbtxt((repo / "personsearch_box_head" / "config.pbtxt").read_text())
    assert head["max_batch_size"] == [manifest.models["box_head"].dim("R").max]
    assert head["dynamic_batching"][0]["max_queue_delay_microseconds"] == [100]


def test_tensorrt_repository_needs_engines_and_uses_cc_filenames(toy_bundle: Path, tmp_path):
    bundle = Bundle.load(toy_bundle)
    with pytest.raises(ExportError, match="build the engines first"):
        write_repository(bundle, tmp_path / "repo_missing", backend="tensorrt", roles=["box_head"])
    assert not (tmp_path / "repo_missing").exists()  # nothing half-written
    engines = tmp_path / "engines"
    engines.mkdir()
    plan = engines / "box_head.plan"
    plan.write_bytes(b"fake plan bytes")
    sidecar = make_sidecar(
        role="box_head",
        onnx_path=toy_bundle / "box_head.onnx",
        engine_path=plan,
        trt_version="10.16.1",
        gpu=GpuInfo("NVIDIA H100", "9.0"),
        profile={"roi_features": ((1, 4, 7, 7), (128, 4, 7, 7), (512, 4, 7, 7))},
        precision="fp32",
        version_compatible=False,
    )
    write_json_atomic(engines / "box_head.plan.json", sidecar.to_json())
    repo = tmp_path / "repo"
    write_repository(
        bundle, repo, backend="tensorrt", engine_dir=engines, roles=["box_head"], instance_count=2
    )
    cfg = parse_pbtxt((repo / "personsearch_box_head" / "config.pbtxt").read_text())
    assert cfg["platform"] == ["tensorrt_plan"]
    assert cfg["cc_model_filenames"][0] == {"key": ["9.0"], "value": ["model_sm90.plan"]}
    assert cfg["instance_group"][0] == {"count": [2], "kind": ["KIND_GPU"]}
    assert (repo / "personsearch_box_head" / "1" / "model_sm90.plan").read_bytes() == b"fake plan bytes"


def test_cli_refuses_non_empty_out_and_unknown_role(toy_bundle: Path, tmp_path, capsys):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "x").write_text("keep me")
    assert main(["export-triton", str(toy_bundle), "--out", str(repo)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["export-triton", str(toy_bundle), "--out", str(tmp_path / "r2"), "--models", "nope"]) == 2
    assert "no model 'nope'" in capsys.readouterr().err
    assert main(["export-triton", str(toy_bundle), "--out", str(tmp_path / "r3")]) == 0
