"""build-engine: everything around TensorRT, tested with a recording stand-in for the module."""

from __future__ import annotations

import enum
import json
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

    def __init__(self, version: str, *, parse_ok: bool = True):
        self.__version__ = version
        self.calls: list[tuple] = []
        self.parse_ok = parse_ok
        rec = self

        class NetworkDefinitionCreationFlag(enum.IntEnum):
            STRONGLY_TYPED = 5

        class BuilderFlag(enum.Enum):
            VERSION_COMPATIBLE = "vc"

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
                pass

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
                pass

            def parse_from_file(self, path):
                rec.calls.append(("parse", path))
                return rec.parse_ok

            def get_error(self, i):
                return "In node 3 (RoiAlign): UNSUPPORTED_NODE"

        class Runtime:
            def __init__(self, logger):
                self.engine_host_code_allowed = False

            def deserialize_cuda_engine(self, data):
                rec.calls.append(("deserialize", data, self.engine_host_code_allowed))
                return "ENGINE"

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


def _sidecar(version="10.16.1", cc="9.0", vc=False) -> EngineSidecar:
    return EngineSidecar(
        role="box_head",
        engine_file="x.plan",
        engine_sha256="0" * 64,
        onnx_sha256="1" * 64,
        tensorrt_version=version,
        compute_capability=cc,
        device_name="NVIDIA H100",
        precision="fp32",
        version_compatible=vc,
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
    import sys

    from personsearch_export import engine_build
    from personsearch_runtime.cli import main

    trt = _fake("10.16.1")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(engine_build, "current_gpu", lambda device=0: H100)
    out = tmp_path / "engines"
    argv = ["build-engine", str(toy_bundle), "--out", str(out), "--timing-cache", str(tmp_path / "cache")]
    assert main(argv) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 3  # one line per split graph
    for role, line in zip(("backbone_rpn", "box_head", "reid_head"), printed, strict=True):
        assert line.startswith(str(out / f"{role}.plan")) and "TensorRT 10.16.1" in line
        assert (out / f"{role}.plan").read_bytes() == b"PLAN"
        assert EngineSidecar.load(sidecar_path(out / f"{role}.plan")).tensorrt_version == "10.16.1"
