from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from personsearch_runtime.backends import (
    Backend,
    available_backends,
    backend_names,
    create_backend,
    register_backend,
)
from personsearch_runtime.backends.onnx_runtime import OnnxRuntimeBackend, providers_for_device
from personsearch_runtime.errors import BundleError, PersonSearchError


def test_registry() -> None:
    assert {"ort", "trt"} <= set(backend_names())
    assert "ort" in available_backends()
    with pytest.raises(ValueError, match="already registered"):
        register_backend("ort", "x", "Y", extra="runtime")
    with pytest.raises(PersonSearchError, match="unknown backend"):
        create_backend("tflite", "model.tflite")


def test_trt_missing_is_a_clear_error() -> None:
    pytest.importorskip("personsearch_runtime")
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(PersonSearchError, match=r"personsearch\[tensorrt\]"):
        create_backend("trt", "detector.plan")


def test_providers_are_explicit() -> None:
    assert providers_for_device("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CPUExecutionProvider"
    ]
    assert providers_for_device("cuda:1", ["CUDAExecutionProvider", "CPUExecutionProvider"])[0] == (
        "CUDAExecutionProvider"
    )
    with pytest.raises(PersonSearchError, match="CUDA provider"):
        providers_for_device("cuda", ["CPUExecutionProvider"])
    with pytest.raises(PersonSearchError, match="unknown device"):
        providers_for_device("tpu", ["CPUExecutionProvider"])


def test_ort_backend_runs_the_detector(tiny_bundle: Path) -> None:
    backend = create_backend("ort", tiny_bundle / "detector.onnx", device="cpu")
    assert isinstance(backend, Backend) and isinstance(backend, OnnxRuntimeBackend)
    assert backend.providers == ["CPUExecutionProvider"]
    assert [t.name for t in backend.inputs()] == ["images"]
    assert [t.name for t in backend.outputs()] == ["boxes", "scores", "embeddings", "valid_counts"]
    assert backend.outputs()[3].dtype == "int64"
    images = np.zeros((2, 3, 64, 64), np.float64)  # converted to the model's float32
    images[0, 0, :32, :32] = 1.0
    out = backend.run({"images": images})
    assert out["valid_counts"].tolist() == [1, 0]
    np.testing.assert_allclose(out["boxes"][0, 0], [0, 0, 32, 32])
    with pytest.raises(PersonSearchError, match="missing input"):
        backend.run({})


def test_ort_backend_refuses_a_broken_model(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(BundleError, match="cannot load"):
        OnnxRuntimeBackend(model_path=path)


def test_ort_io_binding_gives_the_same_results_as_run(tiny_bundle: Path) -> None:
    # The IOBinding call path, really run (on the CPU, where ORT supports it too).
    plain = OnnxRuntimeBackend(model_path=tiny_bundle / "detector.onnx")
    bound = OnnxRuntimeBackend(model_path=tiny_bundle / "detector.onnx", io_binding=True)
    assert (plain.io_binding, bound.io_binding, bound.binding_device) == (False, True, ("cpu", 0))
    images = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 96)).astype(np.float32)
    a, b = plain.run({"images": images}), bound.run({"images": images.astype(np.float64)})
    assert list(a) == list(b) == ["boxes", "scores", "embeddings", "valid_counts"]
    for name in a:
        assert b[name].dtype == a[name].dtype
        np.testing.assert_array_equal(a[name], b[name])


class _FakeArg:
    def __init__(self, name: str, type_: str, shape: list[object]) -> None:
        self.name, self.type, self.shape = name, type_, shape


class _FakeBinding:
    def __init__(self, calls: list[tuple[object, ...]]) -> None:
        self.calls = calls

    def bind_ortvalue_input(self, name: str, value: object) -> None:
        self.calls.append(("bind_ortvalue_input", name, value.device))  # type: ignore[attr-defined]

    def bind_input(self, *args: object) -> None:
        self.calls.append(("bind_input", *args))

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0) -> None:
        self.calls.append(("bind_output", name, device_type, device_id))

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        self.calls.append(("copy_outputs_to_cpu",))
        return [np.ones((1, 4), np.float32), np.array([1], np.int64)]


class _FakeGpuSession:
    """Stands in for an onnxruntime-gpu InferenceSession on the CUDA provider."""

    calls: list[tuple[object, ...]] = []

    def __init__(
        self, path: str, *, sess_options: object, providers: list[str], provider_options: list
    ) -> None:
        self.providers, self.provider_options = providers, provider_options

    def get_inputs(self) -> list[_FakeArg]:
        return [_FakeArg("images", "tensor(float)", ["B", 3, "H", "W"])]

    def get_outputs(self) -> list[_FakeArg]:
        return [_FakeArg("boxes", "tensor(float)", ["B", 4]), _FakeArg("counts", "tensor(int64)", ["B"])]

    def get_providers(self) -> list[str]:
        return self.providers

    def io_binding(self) -> _FakeBinding:
        return _FakeBinding(self.calls)

    def run_with_iobinding(self, binding: _FakeBinding) -> None:
        self.calls.append(("run_with_iobinding",))

    def run(self, *args: object) -> None:
        raise AssertionError("on CUDA the session must run through its IOBinding")


class _FakeOrtValue:
    def __init__(self, array: np.ndarray, device: tuple[str, int]) -> None:
        self.array, self.device = array, device

    @classmethod
    def ortvalue_from_numpy(cls, array: np.ndarray, device_type: str, device_id: int) -> _FakeOrtValue:
        return cls(array, (device_type, device_id))


class _FakeCupyArray:
    """Exposes the CUDA array interface (v3) like a CuPy array written on stream 0x1234."""

    def __init__(
        self, shape: tuple[int, ...], typestr: str = "<f4", strides: tuple[int, ...] | None = None
    ) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (0xD000, False),
            "strides": strides,
            "version": 3,
            "stream": 0x1234,
        }


@dataclass
class _GpuOrt:
    calls: list[tuple[object, ...]]
    synced: list[int]


@pytest.fixture
def gpu_ort(monkeypatch: pytest.MonkeyPatch) -> _GpuOrt:
    """onnxruntime with a CUDA provider, stood in (no GPU, no onnxruntime-gpu needed)."""
    import onnxruntime
    from personsearch_runtime.backends import onnx_runtime

    fake = _GpuOrt(calls=[], synced=[])
    _FakeGpuSession.calls = fake.calls
    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    monkeypatch.setattr(onnxruntime, "InferenceSession", _FakeGpuSession)
    monkeypatch.setattr(onnxruntime, "OrtValue", _FakeOrtValue)
    monkeypatch.setattr(onnx_runtime, "_synchronize_stream", fake.synced.append)
    return fake


def test_ort_on_cuda_binds_inputs_and_outputs_on_the_gpu(gpu_ort: _GpuOrt, tmp_path: Path) -> None:
    backend = OnnxRuntimeBackend(model_path=tmp_path / "detector.onnx", device="cuda:1")
    assert backend.io_binding and backend.binding_device == ("cuda", 1)
    assert backend.session.provider_options[0] == {"device_id": "1"}
    out = backend.run({"images": np.zeros((1, 3, 32, 32), np.float64)})
    assert gpu_ort.calls == [
        ("bind_ortvalue_input", "images", ("cuda", 1)),
        ("bind_output", "boxes", "cuda", 1),
        ("bind_output", "counts", "cuda", 1),
        ("run_with_iobinding",),
        ("copy_outputs_to_cpu",),
    ]
    assert list(out) == ["boxes", "counts"] and out["counts"].tolist() == [1]
    assert gpu_ort.synced == []

    # A device array is bound by its pointer, after waiting for the stream that wrote it.
    gpu_ort.calls.clear()
    backend.run({"images": _FakeCupyArray((2, 3, 32, 32))})
    assert gpu_ort.calls[0] == (
        "bind_input",
        "images",
        "cuda",
        1,
        np.dtype("float32"),
        (2, 3, 32, 32),
        0xD000,
    )
    assert gpu_ort.synced == [0x1234]
    with pytest.raises(PersonSearchError, match="is float16; the graph wants float32"):
        backend.run({"images": _FakeCupyArray((1, 3, 4, 4), "<f2")})
    with pytest.raises(PersonSearchError, match="C-contiguous"):
        backend.run({"images": _FakeCupyArray((1, 3, 4, 4), strides=(4, 4, 4, 4))})


def test_a_gpu_array_on_a_cpu_session_is_refused(tiny_bundle: Path) -> None:
    backend = OnnxRuntimeBackend(model_path=tiny_bundle / "detector.onnx")
    with pytest.raises(PersonSearchError, match="is a GPU array, but this session runs on cpu"):
        backend.run({"images": _FakeCupyArray((1, 3, 32, 32))})
