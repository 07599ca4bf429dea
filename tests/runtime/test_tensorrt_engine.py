"""TensorRTBackend's load order, with stand-ins for ``tensorrt`` and the CUDA calls.

One event log is shared by both stand-ins, so the tests can say what happened before
what: the plan's hash and the TensorRT version are checked before any CUDA call, and
the plugin library is initialised before the plan is deserialised.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import pytest
from personsearch_runtime.backends.engine_sidecar import EngineSidecar, ProfileRange, sidecar_path
from personsearch_runtime.errors import EngineError

PLAN = b"serialized engine"


def _fake_tensorrt(events: list[tuple], *, version: str = "10.16.1", plugins_ok: bool = True):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, level):
            self.level = level

    class TensorIOMode:
        INPUT = "input"
        OUTPUT = "output"

    class Engine:
        num_io_tensors = 2
        num_optimization_profiles = 1
        _names = ("roi_features", "box_scores")

        def get_tensor_name(self, i):
            return self._names[i]

        def get_tensor_mode(self, name):
            return TensorIOMode.INPUT if name == "roi_features" else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return "float32"

        def get_tensor_shape(self, name):
            return (-1, 4, 7, 7) if name == "roi_features" else (-1, 2)

        def create_execution_context(self):
            return object()

    class Runtime:
        def __init__(self, logger):
            events.append(("runtime", logger))
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            events.append(("deserialize", bytes(data)))
            return Engine()

    def init_libnvinfer_plugins(logger, namespace):
        events.append(("init_plugins", logger, namespace))
        return plugins_ok

    trt.Logger = Logger
    trt.TensorIOMode = TensorIOMode
    trt.Runtime = Runtime
    trt.init_libnvinfer_plugins = init_libnvinfer_plugins
    trt.nptype = lambda dtype: dtype
    return trt


@pytest.fixture
def events(monkeypatch) -> list[tuple]:
    """Install the stand-ins; return the shared event log."""
    from personsearch_runtime.gpu import cuda_memory

    log: list[tuple] = []

    class Runtime:
        def cudaSetDevice(self, index):  # noqa: N802 - cuda-python's name
            log.append(("cudaSetDevice", index))
            return (0,)

    class Stream:
        ptr = 0

    class DeviceBuffer:
        pass

    def compute_capability(index):
        log.append(("compute_capability", index))
        return (9, 0)

    monkeypatch.setattr(cuda_memory, "cudart", lambda: Runtime())
    monkeypatch.setattr(cuda_memory, "check", lambda result, what: None)
    monkeypatch.setattr(cuda_memory, "compute_capability", compute_capability)
    monkeypatch.setattr(cuda_memory, "Stream", Stream)
    monkeypatch.setattr(cuda_memory, "DeviceBuffer", DeviceBuffer)
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(log))
    return log


def _write_engine(folder: Path, *, role: str = "box_head", plan_sha256: str | None = None, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / f"{role}.plan"
    engine.write_bytes(PLAN)
    fields = {
        "role": role,
        "engine_file": engine.name,
        "engine_sha256": plan_sha256 or hashlib.sha256(PLAN).hexdigest(),
        "onnx_sha256": "a" * 64,
        "tensorrt_version": "10.16.1",
        "compute_capability": "9.0",
        "device_name": "NVIDIA H200",
        "precision": "fp32",
        "version_compatible": False,
        "tf32": False,
        "hardware_compatibility": "none",
        "profiles": ((ProfileRange("roi_features", (1, 4, 7, 7), (8, 4, 7, 7), (64, 4, 7, 7)),),),
        "built_at": "2026-11-23T00:00:00+00:00",
    }
    fields.update(changes)
    sidecar_path(engine).write_text(json.dumps(EngineSidecar(**fields).to_json()))
    return engine


def _position(events: list[tuple], name: str) -> int:
    return next(i for i, e in enumerate(events) if e[0] == name)


def test_plugins_are_initialised_before_the_plan_is_deserialised(events, tmp_path):
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    engine = _write_engine(tmp_path)
    backend = TensorRTBackend(model_path=engine, onnx_sha256="a" * 64, device="cuda:1")
    assert [t.name for t in backend.inputs()] == ["roi_features"]
    init = _position(events, "init_plugins")
    assert init < _position(events, "deserialize")
    assert events[init][2] == ""  # TensorRT's standard registry, where ROIAlign_TRT lives
    # The runtime reports through the logger the plugin library was given.
    assert ("runtime", events[init][1]) in events
    assert ("deserialize", PLAN) in events  # the very bytes whose hash was checked
    assert _position(events, "cudaSetDevice") < _position(events, "deserialize")
    assert ("cudaSetDevice", 1) in events and ("compute_capability", 1) in events
    # A second engine in the same process does not initialise the library again.
    TensorRTBackend(model_path=_write_engine(tmp_path / "more"), onnx_sha256="a" * 64)
    assert len([e for e in events if e[0] == "init_plugins"]) == 1
    assert len([e for e in events if e[0] == "deserialize"]) == 2


def test_a_replaced_plan_is_refused_before_any_cuda_call(events, tmp_path):
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    # The sidecar describes the plan that was built; a different file now sits there.
    engine = _write_engine(bundle / "engines", plan_sha256=hashlib.sha256(b"the original plan").hexdigest())
    with pytest.raises(EngineError, match="is not the plan its sidecar") as info:
        TensorRTBackend(model_path=engine, onnx_sha256="a" * 64)
    assert f"personsearch build-engine {bundle} --roles box_head" in str(info.value)
    assert events == []  # nothing touched CUDA or TensorRT


def test_a_tensorrt_version_mismatch_is_refused_without_a_gpu(events, tmp_path):
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    engine = _write_engine(tmp_path, tensorrt_version="10.15.0")
    with pytest.raises(EngineError, match="built with TensorRT 10.15.0"):
        TensorRTBackend(model_path=engine, onnx_sha256="a" * 64)
    assert events == []


def test_a_gpu_mismatch_is_refused_before_deserialising(events, tmp_path):
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    engine = _write_engine(tmp_path, compute_capability="8.9")
    with pytest.raises(EngineError, match="compute capability 8.9"):
        TensorRTBackend(model_path=engine, onnx_sha256="a" * 64)
    assert not [e for e in events if e[0] == "deserialize"]


def test_a_missing_engine_names_itself_and_the_command_that_builds_it(events, tmp_path):
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    _write_engine(bundle / "engines", role="detector")  # built, but not the one asked for
    with pytest.raises(EngineError) as info:
        TensorRTBackend(model_path=bundle / "engines" / "query_encoder.plan")
    message = str(info.value)
    assert "engine for 'query_encoder' is missing" in message
    assert f"'personsearch build-engine {bundle} --roles query_encoder'" in message
    assert events == []


def test_plugin_library_failure_is_a_clear_error(monkeypatch, events, tmp_path):
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(events, plugins_ok=False))
    with pytest.raises(EngineError, match="libnvinfer_plugin"):
        TensorRTBackend(model_path=_write_engine(tmp_path), onnx_sha256="a" * 64)
    assert not [e for e in events if e[0] == "deserialize"]
