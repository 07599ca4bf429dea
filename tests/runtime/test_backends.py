from __future__ import annotations

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
