from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from personsearch_runtime.box_ops import roi_align_reference
from personsearch_runtime.bundle import RoIAlignSpec
from personsearch_runtime.gpu.roi_align_kernel import (
    KERNEL_RELATIVE_PATH,
    compile_kernels,
    cuda_include_dir,
    entry_point,
    kernel_source_path,
)

needs_nvrtc = pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="needs cuda-python (NVRTC)")


def test_kernel_source_is_the_installed_cuda_file() -> None:
    path = kernel_source_path()
    assert path.is_file() and path.as_posix().endswith(KERNEL_RELATIVE_PATH.as_posix())
    text = path.read_text()
    assert 'extern "C" __global__ void ps_roi_align_fwd_##LAYOUT##_##SFX' in text
    assert entry_point("float32") == "ps_roi_align_fwd_nchw_f32"


# Run in a fresh interpreter: imports the runtime and every module of its GPU path and
# backends (none needs a GPU to import), locates the kernel source as the GPU path does,
# then reports which of our forbidden packages got loaded. Modules named on the command
# line are imported first, so the checker itself can be shown to notice them.
_IMPORT_CHECKER = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    for name in sys.argv[1:]:
        importlib.import_module(name)
    import personsearch_runtime
    import personsearch_runtime.backends
    import personsearch_runtime.gpu

    imported = []
    for package in (personsearch_runtime.gpu, personsearch_runtime.backends):
        for info in pkgutil.iter_modules(package.__path__, package.__name__ + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
    from personsearch_runtime.gpu.roi_align_kernel import KernelError, kernel_source_path

    try:
        source = str(kernel_source_path())
    except KernelError:  # a runtime-only install has no personsearch_ops to take it from
        source = None

    def loaded(top):
        return any(m == top or m.startswith(top + ".") for m in sys.modules)

    print(json.dumps({
        "imported": imported,
        "kernel_source": source,
        "personsearch_ops": loaded("personsearch_ops"),
        "torch": loaded("torch"),
    }))
    """
)


def _run_import_checker(*preload: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECKER, *preload], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_gpu_path_and_backends_never_import_personsearch_ops_or_torch() -> None:
    report = _run_import_checker()
    # The checker really imported the GPU path, not an empty list of modules.
    assert {
        "personsearch_runtime.gpu.roi_align_kernel",
        "personsearch_runtime.gpu.device_pipeline",
        "personsearch_runtime.gpu.cuda_memory",
        "personsearch_runtime.backends.onnx_runtime",
        "personsearch_runtime.backends.tensorrt_engine",
    } <= set(report["imported"])
    if importlib.util.find_spec("personsearch_ops") is not None:
        assert report["kernel_source"] is not None
        assert report["kernel_source"].endswith(KERNEL_RELATIVE_PATH.as_posix())
    assert report["personsearch_ops"] is False
    assert report["torch"] is False


@pytest.mark.skipif(importlib.util.find_spec("personsearch_ops") is None, reason="needs personsearch_ops")
def test_the_import_checker_notices_personsearch_ops_and_torch() -> None:
    # Same checker, with personsearch_ops (which imports torch) loaded first: it must say so,
    # or the test above could never fail.
    report = _run_import_checker("personsearch_ops")
    assert report["personsearch_ops"] is True
    assert report["torch"] is True


@needs_nvrtc
def test_nvrtc_compiles_the_kernel_to_ptx_with_every_entry_point(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("PERSONSEARCH_CACHE", str(tmp_path))
    assert (cuda_include_dir() / "cuda_fp16.h").is_file()
    compiled = compile_kernels("compute_80")
    assert compiled.kind == "ptx"
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        assert f".entry {entry_point(dtype)}(".encode() in compiled.image
    again = compile_kernels("compute_80")  # from the on-disk cache
    assert again.image == compiled.image and any(tmp_path.rglob("*.ptx"))


@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_nvrtc_kernel_matches_the_reference(dtype: str) -> None:
    cupy = pytest.importorskip("cupy")
    from personsearch_runtime.gpu.roi_align_kernel import RoIAlignKernel

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((2, 8, 25, 31)).astype(np.float32)
    xy = rng.uniform(-30, 400, (50, 2))
    rois = np.concatenate([rng.integers(0, 2, (50, 1)), xy, xy + rng.uniform(0, 200, (50, 2))], 1).astype(
        np.float32
    )
    spec = RoIAlignSpec(output_size=7, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
    ref = roi_align_reference(feats, rois, spec)
    out = RoIAlignKernel()(cupy.asarray(feats.astype(dtype)), cupy.asarray(rois), spec)
    tol = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(cupy.asnumpy(out).astype(np.float32), ref, atol=tol, rtol=tol)


@pytest.mark.needs_cuda
def test_device_split_pipeline_agrees_with_cpu(tiny_bundle: Path) -> None:
    pytest.importorskip("cupy")
    from personsearch_runtime.backends import create_backend
    from personsearch_runtime.gpu.device_pipeline import device_split_detector
    from personsearch_runtime.preprocess import batch_images, prepare_image
    from personsearch_runtime.searcher import PersonSearcher
    from scene_files import scene_layout
    from tiny_bundle import scene

    images = [scene(scene_layout(i)) for i in range(4)]
    searcher = PersonSearcher(bundle=tiny_bundle, pipeline="split", device="cpu")
    cpu = searcher.detect(images)
    # The graphs run in ONNX Runtime (through the host) and everything between them on the device.
    stages = {
        r: create_backend("ort", tiny_bundle / f"{r}.onnx") for r in ("backbone_rpn", "box_head", "reid_head")
    }
    detect = device_split_detector(manifest=searcher.manifest, stages=stages, device="cuda")
    spec = searcher.manifest.preprocessing
    gpu = detect(batch_images([prepare_image(im, spec) for im in images], spec))
    for a, b in zip(cpu, gpu, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_allclose(np.sum(a.embeddings * b.embeddings, axis=1), 1.0, atol=1e-5)


@needs_nvrtc
def test_cuda_errors_become_clear_messages() -> None:
    from personsearch_runtime.gpu.cuda_memory import CudaError, check, cudart

    rt = cudart()
    assert check((rt.cudaError_t.cudaSuccess, 7), "x") == 7
    assert check((rt.cudaError_t.cudaSuccess,), "x") is None
    with pytest.raises(CudaError, match=r"cudaMalloc failed: cudaErrorMemoryAllocation"):
        check((rt.cudaError_t.cudaErrorMemoryAllocation, 0), "cudaMalloc")


@pytest.mark.needs_cuda
def test_device_buffer_round_trip() -> None:
    from personsearch_runtime.gpu.cuda_memory import DeviceBuffer, Stream

    stream = Stream()
    data = np.arange(1000, dtype=np.float32)
    buf = DeviceBuffer()
    buf.upload(data, stream)
    out = buf.download(np.empty_like(data), stream)
    stream.synchronize()
    np.testing.assert_array_equal(out, data)
    buf.free()
    stream.close()


# ---- the device pipeline's stream, with a stand-in CuPy (no GPU needed) -------------------------


def _fake_cupy() -> types.ModuleType:
    """A stand-in ``cupy``: streams with handles, a current-stream stack, numpy arrays.

    Records every stream created, the devices entered, and the stream current at each upload.
    """
    cupy = types.ModuleType("cupy")
    current: list[Any] = []
    cupy.created, cupy.devices, cupy.uploads = [], [], []

    class Stream:
        def __init__(self, non_blocking: bool = False) -> None:
            self.non_blocking = non_blocking
            self.ptr = 0x7F00 + 0x10 * len(cupy.created)
            cupy.created.append(self)

        def __enter__(self) -> Stream:
            current.append(self)
            return self

        def __exit__(self, *exc: object) -> None:
            current.pop()

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def __enter__(self) -> None:
            cupy.devices.append(self.index)

        def __exit__(self, *exc: object) -> None:
            pass

    null_stream = types.SimpleNamespace(ptr=0)
    cupy.cuda = types.SimpleNamespace(
        Stream=Stream, Device=Device, get_current_stream=lambda: current[-1] if current else null_stream
    )

    def asarray(array: Any, dtype: Any = None) -> np.ndarray:
        cupy.uploads.append(cupy.cuda.get_current_stream().ptr)
        return np.asarray(array, dtype)

    cupy.asarray, cupy.asnumpy, cupy.float32 = asarray, np.asarray, np.float32
    return cupy


class _DeviceEngine:
    """Stands in for a TensorRT engine: ``run_device`` runs the tiny ONNX graph, records the stream."""

    def __init__(self, role: str, backend: Any, cupy: Any, log: list[tuple[str, Any, int]]) -> None:
        self.role, self.backend, self.cupy, self.log = role, backend, cupy, log

    def run_device(self, feed: dict[str, Any], stream: int | None = None) -> dict[str, Any]:
        self.log.append((self.role, stream, self.cupy.cuda.get_current_stream().ptr))
        return self.backend.run(feed)


def test_the_device_pipeline_runs_engines_and_kernel_on_one_non_blocking_stream(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from personsearch_runtime.backends import create_backend
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.detection import SplitDetector
    from personsearch_runtime.gpu.device_pipeline import device_split_detector
    from personsearch_runtime.preprocess import batch_images, prepare_image
    from scene_files import scene_layout
    from tiny_bundle import scene

    cupy = _fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    manifest = Bundle.load(tiny_bundle).manifest
    ort = {
        r: create_backend("ort", tiny_bundle / f"{r}.onnx") for r in ("backbone_rpn", "box_head", "reid_head")
    }
    log: list[tuple[str, Any, int]] = []
    engines = {role: _DeviceEngine(role, backend, cupy, log) for role, backend in ort.items()}
    launches: list[int] = []

    def kernel(features: Any, rois: Any, spec: RoIAlignSpec) -> Any:
        launches.append(cupy.cuda.get_current_stream().ptr)
        return roi_align_reference(features, rois, spec)

    detect = device_split_detector(manifest=manifest, stages=engines, device="cuda:1", kernel=kernel)
    assert len(cupy.created) == 1 and cupy.created[0].non_blocking is True
    handle = cupy.created[0].ptr
    assert handle != 0 and detect.stream is cupy.created[0]

    spec = manifest.preprocessing
    batches = [
        batch_images([prepare_image(scene(scene_layout(i)), spec) for i in range(j, j + 2)], spec)
        for j in (0, 2)
    ]
    for batch in batches:
        for got, want in zip(detect(batch), SplitDetector(manifest=manifest, stages=ort)(batch), strict=True):
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-6)
    # Three engine executions and two kernel launches per batch, every one on the pipeline's
    # stream (passed explicitly to the engines, and current for them and for the kernel).
    assert [role for role, _, _ in log] == ["backbone_rpn", "box_head", "reid_head"] * 2
    assert {(stream, current) for _, stream, current in log} == {(handle, handle)}
    assert launches == [handle] * 4
    assert cupy.uploads and set(cupy.uploads) == {handle}  # the batch is uploaded on it too
    assert set(cupy.devices) == {1} and len(cupy.created) == 1  # one stream for the pipeline's life


def test_trt_run_device_queues_on_the_stream_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """``execute_async_v3`` and the profile switch get the pipeline's handle, not CuPy's null stream."""
    import threading

    from personsearch_runtime.backends import TensorInfo
    from personsearch_runtime.backends.tensorrt_engine import TensorRTBackend

    class Array:
        def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
            self.shape, self.dtype = shape, np.dtype(dtype)
            self.data = types.SimpleNamespace(ptr=0xA000)

    cupy = types.ModuleType("cupy")
    cupy.ascontiguousarray = lambda a, dtype=None: Array(tuple(a.shape), dtype)
    cupy.empty = lambda shape, dtype=None: Array(tuple(shape), dtype)
    cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: types.SimpleNamespace(ptr=0))
    monkeypatch.setitem(sys.modules, "cupy", cupy)

    calls: list[tuple[str, int]] = []

    class Context:
        def set_optimization_profile_async(self, profile: int, stream: int) -> bool:
            calls.append(("set_optimization_profile_async", stream))
            return True

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            return True

        def set_tensor_address(self, name: str, ptr: int) -> None:
            pass

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return (5,)

        def execute_async_v3(self, stream: int) -> bool:
            calls.append(("execute_async_v3", stream))
            return True

    # Only what run_device reads; building a real one needs TensorRT and a GPU.
    backend = object.__new__(TensorRTBackend)
    backend.model_path = Path("box_head.plan")
    backend._inputs = (TensorInfo("roi_features", "float32", (None, 3, 2, 2)),)
    backend._outputs = (TensorInfo("box_scores", "float32", (None,)),)
    backend.sidecar = types.SimpleNamespace(profiles=[[]])
    backend._contexts = [
        types.SimpleNamespace(context=Context(), profile=-1, lock=threading.Lock(), keep_alive={})
    ]
    backend._next, backend._pick_lock = 0, threading.Lock()

    out = backend.run_device({"roi_features": Array((5, 3, 2, 2), "float32")}, stream=0x7F00)
    assert calls == [("set_optimization_profile_async", 0x7F00), ("execute_async_v3", 0x7F00)]
    assert out["box_scores"].shape == (5,)


# ---- person crops for the crop encoder --------------------------------------------------------------


def test_the_crop_kernels_arithmetic_is_opencvs_within_one_level() -> None:
    from personsearch_runtime.gpu.person_crops import reference_crops
    from personsearch_runtime.text_search import crop_person_boxes, integer_crop_boxes

    rng = np.random.default_rng(0)
    exact = total = 0
    for _ in range(60):
        height, width = (int(v) for v in rng.integers(8, 240, 2))
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        xy = rng.uniform(-20, max(height, width), (4, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.3, 150, (4, 2))], 1)
        size = tuple(int(v) for v in rng.integers(4, 160, 2))
        cpu = crop_person_boxes(image, boxes, size)
        gpu_rule = reference_crops(image, integer_crop_boxes(boxes, height, width), size)
        levels = np.abs(cpu - gpu_rule) * 255
        assert levels.max() <= 1.0 + 1e-4  # OpenCV's 11-bit fixed-point weights vs float32
        exact += int((levels < 1e-4).sum())
        total += levels.size
    assert exact / total > 0.8  # most values agree exactly (87 % on these draws)
    # Whole-pixel box, same size: a copy, exactly.
    image = rng.integers(0, 256, (30, 20, 3), dtype=np.uint8)
    same = reference_crops(image, np.array([[2, 3, 12, 23]], np.int32), (20, 10))
    np.testing.assert_array_equal(same[0], image[3:23, 2:12, ::-1].transpose(2, 0, 1) / np.float32(255))


@needs_nvrtc
def test_nvrtc_compiles_the_crop_kernel(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    from personsearch_runtime.gpu.person_crops import CROP_KERNEL, CROP_KERNEL_SOURCE

    monkeypatch.setenv("PERSONSEARCH_CACHE", str(tmp_path))
    compiled = compile_kernels("compute_80", source=CROP_KERNEL_SOURCE, cache_name="person_crops")
    assert f".entry {CROP_KERNEL}(".encode() in compiled.image
    assert any(p.name.startswith("person_crops_compute_80_") for p in tmp_path.rglob("*.ptx"))


@pytest.mark.needs_cuda
def test_device_crops_match_the_reference() -> None:
    cupy = pytest.importorskip("cupy")
    from personsearch_runtime.gpu.person_crops import DeviceCropper, reference_crops
    from personsearch_runtime.text_search import integer_crop_boxes

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    xy = rng.uniform(-10, 300, (40, 2))
    boxes = integer_crop_boxes(np.concatenate([xy, xy + rng.uniform(1, 120, (40, 2))], 1), 180, 320)
    crops = DeviceCropper()(image, boxes, (96, 32))
    np.testing.assert_allclose(cupy.asnumpy(crops), reference_crops(image, boxes, (96, 32)), atol=1e-6)
    assert DeviceCropper()(image, boxes[:0], (96, 32)).shape == (0, 3, 96, 32)
