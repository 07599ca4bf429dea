"""build-engine: everything around TensorRT, tested with a recording stand-in for the module."""

from __future__ import annotations

import enum
import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
from personsearch_export.engine_build import (
    GpuInfo,
    build_engine,
    load_engine,
    model_profile,
    network_flags,
    timing_cache_path,
    write_json_atomic,
)
from personsearch_export.errors import ExportError
from personsearch_runtime.backends.engine_sidecar import EngineSidecar, ProfileRange, sidecar_path
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.errors import EngineError

H100 = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")


class _Recorder:
    """Stand-in for the tensorrt module: records what the build layer asks for."""

    def __init__(self, version: str, *, parse_ok: bool = True, plugins_ok: bool = True):
        self.__version__ = version
        self.calls: list[tuple] = []
        self.parse_ok = parse_ok
        self.plugins_ok = plugins_ok
        rec = self

        class NetworkDefinitionCreationFlag(enum.IntEnum):
            STRONGLY_TYPED = 5

        class BuilderFlag(enum.Enum):
            VERSION_COMPATIBLE = "vc"
            TF32 = "tf32"

        class MemoryPoolType(enum.Enum):
            WORKSPACE = "ws"

        class Logger:
            WARNING = 2

            def __init__(self, level):
                self.level = level

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                rec.calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

        class Cache:
            def __init__(self, data):
                self.data = data

            def serialize(self):
                return b"cache:" + self.data

        class Config:
            def set_memory_pool_limit(self, pool, size):
                rec.calls.append(("pool", pool, size))

            def set_flag(self, flag):
                rec.calls.append(("flag", flag))

            def clear_flag(self, flag):
                rec.calls.append(("clear_flag", flag))

            def add_optimization_profile(self, profile):
                return 0

            def create_timing_cache(self, data):
                rec.calls.append(("cache_in", bytes(data)))
                return Cache(bytes(data))

            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache

            def get_timing_cache(self):
                return self.cache

        class Builder:
            def __init__(self, logger):
                rec.calls.append(("builder", logger))

            def create_network(self, flags):
                rec.calls.append(("network", flags))
                return object()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                return b"PLAN"

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                rec.calls.append(("parser", logger))

            def parse_from_file(self, path):
                rec.calls.append(("parse", path))
                return rec.parse_ok

            def get_error(self, i):
                return "In node 3 (RoiAlign): UNSUPPORTED_NODE"

        class Runtime:
            def __init__(self, logger):
                rec.calls.append(("runtime", logger))
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, data):
                rec.calls.append(("deserialize", data, self.engine_host_code_allowed))
                return "ENGINE"

        def init_libnvinfer_plugins(logger, namespace):
            rec.calls.append(("init_plugins", logger, namespace))
            return rec.plugins_ok

        self.init_libnvinfer_plugins = init_libnvinfer_plugins
        self.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
        self.BuilderFlag = BuilderFlag
        self.MemoryPoolType = MemoryPoolType
        self.Logger = Logger
        self.Builder = Builder
        self.OnnxParser = OnnxParser
        self.Runtime = Runtime


def _fake(version="10.16.1", **kw) -> types.ModuleType:
    return _Recorder(version, **kw)  # type: ignore[return-value]


def test_profile_comes_from_manifest_ranges(toy_bundle: Path):
    manifest = Bundle.load(toy_bundle).manifest
    assert model_profile(manifest.models["detector"]) == {
        "images": ((1, 3, 256, 256), (1, 3, 576, 768), (4, 3, 928, 1504))
    }
    assert model_profile(manifest.models["query_encoder"])["boxes"] == ((1, 4), (4, 4), (16, 4))


def test_timing_cache_is_per_gpu_and_trt_version(tmp_path):
    a = timing_cache_path(tmp_path, H100, "10.16.1")
    b = timing_cache_path(tmp_path, H100, "11.4.0")
    c = timing_cache_path(tmp_path, GpuInfo("NVIDIA L4", "8.9"), "10.16.1")
    assert len({a, b, c}) == 3
    assert a.name == "trt10.16.1_sm90_nvidia-h100-80gb-hbm3.cache"


def test_network_flags_10_vs_11():
    assert network_flags(_fake("10.16.1")) == 1 << 5  # STRONGLY_TYPED bit
    assert network_flags(_fake("11.4.0")) == 0


def test_build_writes_plan_sidecar_and_cache(toy_bundle: Path, tmp_path):
    trt = _fake("10.16.1")
    spec = Bundle.load(toy_bundle).manifest.models["box_head"]
    cache = tmp_path / "cache" / "t.cache"
    engine = tmp_path / "engines" / "box_head.plan"
    sidecar = build_engine(
        trt,
        role="box_head",
        onnx_path=toy_bundle / "box_head.onnx",
        engine_path=engine,
        profile=model_profile(spec),
        gpu=H100,
        precision="fp32",
        workspace_mb=512,
        timing_cache=cache,
        version_compatible=True,
    )
    assert engine.read_bytes() == b"PLAN"
    assert cache.read_bytes() == b"cache:"  # empty cache in, serialised cache out
    assert ("set_shape", "roi_features", (1, 4, 7, 7), (128, 4, 7, 7), (512, 4, 7, 7)) in trt.calls
    assert ("pool", trt.MemoryPoolType.WORKSPACE, 512 << 20) in trt.calls
    assert ("flag", trt.BuilderFlag.VERSION_COMPATIBLE) in trt.calls
    assert ("network", 1 << 5) in trt.calls
    on_disk = EngineSidecar.load(sidecar_path(engine))  # the runtime's schema and validator
    assert on_disk == sidecar
    assert on_disk.onnx_sha256 == spec.sha256
    assert on_disk.profiles[0] == (
        ProfileRange("roi_features", (1, 4, 7, 7), (128, 4, 7, 7), (512, 4, 7, 7)),
    )
    assert on_disk.version_compatible and on_disk.compute_capability == "9.0"
    assert (
        json.loads((tmp_path / "engines" / "box_head.plan.json").read_text())["tensorrt_version"] == "10.16.1"
    )
    # the second build starts from the saved cache
    trt2 = _fake("10.16.1")
    build_engine(
        trt2,
        role="box_head",
        onnx_path=toy_bundle / "box_head.onnx",
        engine_path=engine,
        profile=model_profile(spec),
        gpu=H100,
        precision="fp32",
        timing_cache=cache,
    )
    assert ("cache_in", b"cache:") in trt2.calls


def test_parse_failure_lists_parser_errors(toy_bundle: Path, tmp_path):
    with pytest.raises(ExportError, match="UNSUPPORTED_NODE"):
        build_engine(
            _fake(parse_ok=False),
            role="detector",
            onnx_path=toy_bundle / "detector.onnx",
            engine_path=tmp_path / "d.plan",
            profile={"images": ((1, 3, 8, 8),) * 3},
            gpu=H100,
            precision="fp32",
        )
    assert not (tmp_path / "d.plan").exists()


PLAN_SHA256 = hashlib.sha256(b"PLAN").hexdigest()


def _sidecar(version="10.16.1", cc="9.0", vc=False, plan_sha256=PLAN_SHA256) -> EngineSidecar:
    return EngineSidecar(
        role="box_head",
        engine_file="x.plan",
        engine_sha256=plan_sha256,
        onnx_sha256="1" * 64,
        tensorrt_version=version,
        compute_capability=cc,
        device_name="NVIDIA H100",
        precision="fp32",
        version_compatible=vc,
        tf32=False,
        hardware_compatibility="none",
        profiles=((ProfileRange("roi_features", (1, 4, 7, 7), (2, 4, 7, 7), (8, 4, 7, 7)),),),
        built_at="2026-11-23T00:00:00+00:00",
    )


def test_load_checks_sidecar_before_deserialising(tmp_path):
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"PLAN")
    with pytest.raises(EngineError, match="sidecar"):
        load_engine(_fake(), plan, gpu=H100)
    for bad, match in (
        (_sidecar(cc="8.0"), "compute capability 8.0"),
        (_sidecar(version="10.15.0"), "10.15.0"),
    ):
        write_json_atomic(tmp_path / "x.plan.json", bad.to_json())
        trt = _fake("10.16.1")
        with pytest.raises(EngineError, match=match):
            load_engine(trt, plan, gpu=H100)
        assert not [c for c in trt.calls if c[0] == "deserialize"]
    write_json_atomic(tmp_path / "x.plan.json", _sidecar().to_json())
    with pytest.raises(EngineError, match="different box_head.onnx"):
        load_engine(_fake(), plan, gpu=H100, onnx_sha256="2" * 64)
    # version-compatible plans from 10.x load on 11.x, with host code allowed
    write_json_atomic(tmp_path / "x.plan.json", _sidecar(vc=True).to_json())
    trt = _fake("11.4.0")
    assert load_engine(trt, plan, gpu=H100, onnx_sha256="1" * 64) == "ENGINE"
    assert ("deserialize", b"PLAN", True) in trt.calls


def test_cli_refuses_precision_other_than_the_bundle(toy_bundle: Path, capsys):
    from personsearch_runtime.cli import main

    assert main(["build-engine", str(toy_bundle), "--precision", "fp16"]) == 2
    assert "strong typing" in capsys.readouterr().err


@pytest.mark.needs_trt
@pytest.mark.needs_cuda
def test_real_tensorrt_builds_the_toy_head(toy_bundle: Path, tmp_path):
    import tensorrt as trt
    from personsearch_export.engine_build import current_gpu

    spec = Bundle.load(toy_bundle).manifest.models["box_head"]
    engine = tmp_path / "box_head.plan"
    build_engine(
        trt,
        role="box_head",
        onnx_path=toy_bundle / "box_head.onnx",
        engine_path=engine,
        profile=model_profile(spec),
        gpu=current_gpu(),
        precision="fp32",
        workspace_mb=256,
    )
    assert load_engine(trt, engine, gpu=current_gpu(), onnx_sha256=spec.sha256).num_io_tensors == 3


def test_cli_build_engine_end_to_end_with_fake_tensorrt(toy_bundle: Path, tmp_path, monkeypatch, capsys):
    """The CLI path (not just build_engine) runs through and prints from real sidecar fields."""
    from personsearch_export import engine_build
    from personsearch_runtime.cli import main

    trt = _fake("10.16.1")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(engine_build, "current_gpu", lambda device=0: H100)
    out = tmp_path / "engines"
    argv = ["build-engine", str(toy_bundle), "--out", str(out), "--timing-cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    roles = ("detector", "query_encoder", "backbone_rpn", "box_head", "reid_head")
    assert len(printed) == len(roles)  # one line per engine the runtime can load
    for role, line in zip(roles, printed, strict=True):
        assert line.startswith(str(out / f"{role}.plan")) and "TensorRT 10.16.1" in line
        assert line.endswith("no TF32")
        assert (out / f"{role}.plan").read_bytes() == b"PLAN"
        assert EngineSidecar.load(sidecar_path(out / f"{role}.plan")).tensorrt_version == "10.16.1"


def _build(trt, toy_bundle: Path, tmp_path: Path, role="box_head", **kw) -> EngineSidecar:
    spec = Bundle.load(toy_bundle).manifest.models[role]
    return build_engine(
        trt,
        role=role,
        onnx_path=toy_bundle / f"{role}.onnx",
        engine_path=tmp_path / "engines" / f"{role}.plan",
        profile=model_profile(spec),
        gpu=H100,
        precision="fp32",
        **kw,
    )


def _index(calls: list[tuple], name: str) -> int:
    return next(i for i, c in enumerate(calls) if c[0] == name)


def test_plugins_are_initialised_before_parsing_once_per_logger(toy_bundle: Path, tmp_path):
    trt = _fake()
    _build(trt, toy_bundle, tmp_path, role="detector")
    init, parse = _index(trt.calls, "init_plugins"), _index(trt.calls, "parse")
    assert init < parse
    logger = trt.calls[init][1]
    assert trt.calls[init][2] == ""  # TensorRT's standard registry namespace
    # The parser and builder report through the logger the plugin library was given.
    assert ("parser", logger) in trt.calls and ("builder", logger) in trt.calls
    # A second build in the same process reuses that logger and does not re-initialise.
    _build(trt, toy_bundle, tmp_path, role="query_encoder")
    assert [c for c in trt.calls if c[0] == "init_plugins"] == [("init_plugins", logger, "")]
    assert [c for c in trt.calls if c[0] == "parse"][1][1].endswith("query_encoder.onnx")


def test_plugin_library_failure_stops_before_parsing(toy_bundle: Path, tmp_path):
    trt = _fake(plugins_ok=False)
    with pytest.raises(EngineError, match="libnvinfer_plugin"):
        _build(trt, toy_bundle, tmp_path, role="detector")
    assert not [c for c in trt.calls if c[0] == "parse"]
    assert not (tmp_path / "engines" / "detector.plan").exists()


def _config_calls(trt) -> list[tuple]:
    return [c for c in trt.calls if c[0] in ("pool", "flag", "clear_flag")]


def test_tf32_is_cleared_for_fp32_by_default_and_kept_when_asked(toy_bundle: Path, tmp_path):
    trt = _fake()
    sidecar = _build(trt, toy_bundle, tmp_path, workspace_mb=256)
    assert _config_calls(trt) == [
        ("pool", trt.MemoryPoolType.WORKSPACE, 256 << 20),
        ("clear_flag", trt.BuilderFlag.TF32),
    ]
    assert sidecar.tf32 is False
    assert EngineSidecar.load(tmp_path / "engines" / "box_head.plan.json").tf32 is False

    trt = _fake()
    sidecar = _build(trt, toy_bundle, tmp_path, workspace_mb=256, tf32=True, version_compatible=True)
    assert _config_calls(trt) == [
        ("pool", trt.MemoryPoolType.WORKSPACE, 256 << 20),
        ("flag", trt.BuilderFlag.VERSION_COMPATIBLE),
    ]  # TF32 left as TensorRT sets it (on)
    assert EngineSidecar.load(tmp_path / "engines" / "box_head.plan.json").tf32 is True


def test_load_refuses_a_replaced_plan_and_inits_plugins_before_deserialising(tmp_path):
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"PLAN")
    write_json_atomic(tmp_path / "x.plan.json", _sidecar().to_json())
    trt = _fake()
    assert load_engine(trt, plan, gpu=H100, onnx_sha256="1" * 64) == "ENGINE"
    assert _index(trt.calls, "init_plugins") < _index(trt.calls, "deserialize")
    # Same sidecar, plan replaced afterwards (e.g. copied from another machine): refused.
    plan.write_bytes(b"ANOTHER PLAN")
    trt = _fake()
    with pytest.raises(EngineError, match=r"not the plan its sidecar .* rebuild the engine"):
        load_engine(trt, plan, gpu=H100, onnx_sha256="1" * 64)
    assert not [c for c in trt.calls if c[0] == "deserialize"]


def test_default_engines_cover_every_engine_the_runtime_loads(toy_bundle: Path, monkeypatch):
    """build-engine's defaults vs what index (every pipeline) and query ask the TRT backend for.

    The runtime side is the real ``PersonSearcher``; only the backend factory and the GPU
    pieces of the split path are stand-ins, so its choice of engines is its own.
    """
    import numpy as np
    from personsearch_export import engine_build
    from personsearch_runtime import searcher as searcher_module
    from personsearch_runtime.cli import main
    from personsearch_runtime.gpu import device_pipeline
    from personsearch_runtime.searcher import PersonSearcher

    # Build with every default, into the folder the runtime reads by default.
    trt = _fake()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(engine_build, "current_gpu", lambda device=0: H100)
    assert main(["build-engine", str(toy_bundle), "--timing-cache", str(toy_bundle / "cache")]) == 0
    built = {p.name for p in (toy_bundle / "engines").glob("*.plan")}
    assert built == {Path(c[1]).stem + ".plan" for c in trt.calls if c[0] == "parse"}

    manifest = Bundle.load(toy_bundle).manifest
    query_spec = manifest.models["query_encoder"]
    requested: list[str] = []

    class FakeStage:
        def run(self, feed):  # only the query encoder runs here: one embedding per box
            boxes = feed[query_spec.inputs[1].name]
            return {query_spec.outputs[0].name: np.ones((len(boxes), 8), np.float32)}

    def fake_create_backend(name, model_path, **options):
        assert name == "trt"
        requested.append(Path(model_path).name)
        return FakeStage()

    monkeypatch.setattr(searcher_module, "create_backend", fake_create_backend)
    # The split path's CUDA pieces (CuPy, the NVRTC kernel) are not what is tested here.
    monkeypatch.setattr(searcher_module.Installed, "probe", classmethod(lambda cls: cls(True, True, True)))
    monkeypatch.setattr(device_pipeline, "device_split_detector", lambda **kw: None)
    pipelines = set()
    for pipeline in ("auto", "detector", "split"):  # index and query build the same detector
        searcher = PersonSearcher(bundle=toy_bundle, backend="trt", device="cuda", pipeline=pipeline)
        pipelines.add(searcher.pipeline)
        image = np.zeros((64, 96, 3), np.uint8)
        searcher.embed_boxes(image, np.array([[4, 4, 40, 60]], np.float32))  # query --frame --box
    assert pipelines == {"detector", "split"}  # both paths were exercised
    assert set(requested) == {
        "detector.plan",
        "backbone_rpn.plan",
        "box_head.plan",
        "reid_head.plan",
        "query_encoder.plan",
    }
    assert set(requested) <= built


def test_roles_builds_a_subset_and_tf32_reaches_the_sidecar(toy_bundle: Path, tmp_path, monkeypatch, capsys):
    from personsearch_export import engine_build
    from personsearch_runtime.cli import main

    monkeypatch.setattr(engine_build, "current_gpu", lambda device=0: H100)
    for option in ("--roles", "--models"):  # --models is the older spelling
        trt = _fake()
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        out = tmp_path / option.strip("-")
        argv = ["build-engine", str(toy_bundle), "--out", str(out), "--timing-cache", str(tmp_path)]
        assert main([*argv, option, "query_encoder", "query_encoder", "--tf32"]) == 0
        assert [Path(c[1]).name for c in trt.calls if c[0] == "parse"] == ["query_encoder.onnx"]
        assert not [c for c in trt.calls if c[0] == "clear_flag"]
        assert EngineSidecar.load(out / "query_encoder.plan.json").tf32 is True
        assert capsys.readouterr().out.strip().endswith("TF32 allowed")
    trt = _fake()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    assert (
        main(["build-engine", str(toy_bundle), "--out", str(tmp_path / "x"), "--roles", "text_encoder"]) == 2
    )
    assert "text_encoder" in capsys.readouterr().err
    assert not trt.calls  # refused before TensorRT was touched
