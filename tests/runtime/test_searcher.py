from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
from personsearch_runtime.errors import PersonSearchError
from personsearch_runtime.gallery import GalleryIndex
from personsearch_runtime.searcher import (
    Installed,
    NoPersonFoundError,
    PersonSearcher,
    PipelineChoice,
    SlowPathWarning,
    choose_pipeline,
)
from scene_files import PALETTE, crop_of, scene_layout, write_scenes
from tiny_bundle import embed_colour, scene

QUADS = np.array([[0, 0, 64, 48], [64, 0, 128, 48], [0, 48, 64, 96], [64, 48, 128, 96]], np.float32)


def test_detections_are_in_original_pixels(tiny_bundle: Path) -> None:
    searcher = PersonSearcher(bundle=tiny_bundle, pipeline="detector")
    small = scene([PALETTE[0], None, PALETTE[1], None], 96, 128)
    big = cv2.resize(small, (256, 192), interpolation=cv2.INTER_NEAREST)  # fed at 96x128, mapped back x2
    d_small, d_big = searcher.detect([small, big])
    assert len(d_small) == 2 and len(d_big) == 2
    np.testing.assert_allclose(sorted(d_small.boxes.tolist()), sorted(QUADS[[0, 2]].tolist()), atol=1e-3)
    np.testing.assert_allclose(sorted(d_big.boxes.tolist()), sorted((QUADS[[0, 2]] * 2).tolist()), atol=1e-3)
    assert d_big.image_size == (192, 256)
    expected = embed_colour(np.array([PALETTE[0], PALETTE[1]]))
    assert np.max(d_small.embeddings @ expected.T, axis=0).min() > 0.999


def test_split_pipeline_reproduces_the_detector(tiny_bundle: Path) -> None:
    one = PersonSearcher(bundle=tiny_bundle, pipeline="detector", batch_size=3)
    split = PersonSearcher(bundle=tiny_bundle, pipeline="split", batch_size=3)
    images = [scene(scene_layout(i)) for i in range(5)]
    for a, b in zip(one.detect(images), split.detect(images), strict=True):
        assert len(a) == len(b) == 3
        ia, ib = np.lexsort(a.boxes.T), np.lexsort(b.boxes.T)
        np.testing.assert_allclose(a.boxes[ia], b.boxes[ib], atol=1e-3)
        np.testing.assert_allclose(a.scores[ia], b.scores[ib], atol=1e-5)
        np.testing.assert_allclose(np.sum(a.embeddings[ia] * b.embeddings[ib], axis=1), 1.0, atol=1e-5)


def test_query_encoder_agrees_with_detector(tiny_bundle: Path) -> None:
    searcher = PersonSearcher(bundle=tiny_bundle)
    image = scene(scene_layout(1))
    det = searcher.detect([image])[0]
    emb = searcher.embed_boxes(image, det.boxes)
    np.testing.assert_allclose(np.sum(emb * det.embeddings, axis=1), 1.0, atol=1e-5)
    with pytest.raises(PersonSearchError, match=r"box 10,10,5,20 is empty: .*x1 < x2 and y1 < y2"):
        searcher.embed_boxes(image, np.array([[10, 10, 5, 20]], np.float32))


def test_search_by_crop_and_by_box(tiny_bundle: Path, tmp_path: Path) -> None:
    write_scenes(tmp_path / "imgs", 6)
    searcher = PersonSearcher(bundle=tiny_bundle, batch_size=4)
    with GalleryIndex.open_for_bundle(tmp_path / "g", searcher.bundle) as gallery:
        summary = searcher.index(gallery, [tmp_path / "imgs"])
        assert summary.frames == 6 and summary.detections == 18 and not summary.skipped
        colour = PALETTE[2]
        hits = searcher.search_crop(gallery, crop_of(colour), top_k=3)
        assert [h.rank for h in hits] == [1, 2, 3]
        assert all(h.similarity > 0.999 for h in hits)  # scenes 0, 1, 2 and 3 hold blue; 3 is the best 3 of 4
        for h in hits:
            i = int(Path(h.source).stem.split("_")[1])
            q = [tuple(b) for b in QUADS.tolist()].index(tuple(round(v) for v in h.box))
            assert scene_layout(i)[q] == colour
        frame = scene(scene_layout(4))
        hits_box = searcher.search_box(gallery, frame, QUADS[1].tolist(), top_k=1)
        assert hits_box[0].similarity > 0.999
        with pytest.raises(NoPersonFoundError):
            searcher.search_crop(gallery, np.zeros((40, 20, 3), np.uint8))


# ---- which detection path runs, and why ---------------------------------------------------------

ALL_INSTALLED = Installed(cupy=True, cuda_python=True, roi_align_source=True)
SPLIT_ENGINES = frozenset({"backbone_rpn", "box_head", "reid_head", "detector", "query_encoder"})


def _choose(**overrides: object) -> PipelineChoice:
    kwargs: dict[str, object] = {
        "backend": "ort",
        "device": "cuda",
        "requested": "auto",
        "has_split_graphs": True,
        "engines": SPLIT_ENGINES,
        "installed": ALL_INSTALLED,
    }
    kwargs.update(overrides)
    return choose_pipeline(**kwargs)  # type: ignore[arg-type]


def test_ort_on_cuda_with_cupy_takes_the_one_graph_with_iobinding() -> None:
    # Everything the split path could want is there; ORT would still copy each stage
    # through the host, so the one graph wins.
    choice = _choose()
    assert (choice.path, choice.io_binding, choice.device, choice.warning) == (
        "detector",
        True,
        "cuda:0",
        None,
    )
    assert choice.line() == (
        "pipeline: one-graph (detector.onnx) with IOBinding on cuda:0 - "
        "ORT's split path would copy each stage through the host"
    )
    assert (
        _choose(device="cuda:1")
        .line()
        .startswith("pipeline: one-graph (detector.onnx) with IOBinding on cuda:1")
    )


def test_trt_on_cuda_with_cupy_and_split_engines_takes_the_split_path() -> None:
    choice = _choose(backend="trt")
    assert (choice.path, choice.io_binding, choice.warning) == ("split", False, None)
    assert choice.line() == (
        "pipeline: split (backbone_rpn.plan -> our RoIAlign kernel -> box_head.plan, reid_head.plan) on "
        "cuda:0 - every stage stays on the device "
        "(TensorRT engines and our kernel on one non-blocking stream)"
    )
    # Missing any piece of the all-device path falls back to the detector engine, saying what is missing.
    no_head = _choose(backend="trt", engines=SPLIT_ENGINES - {"box_head"})
    assert no_head.path == "detector" and "box_head.plan not built" in no_head.reason
    assert no_head.line().startswith("pipeline: one-graph (detector.plan) on cuda:0 - ")
    no_cupy = _choose(backend="trt", installed=Installed(cupy=False, cuda_python=True, roi_align_source=True))
    assert no_cupy.path == "detector" and "CuPy not installed" in no_cupy.reason
    no_graphs = _choose(backend="trt", has_split_graphs=False)
    assert no_graphs.path == "detector" and "no split graphs" in no_graphs.reason


def test_cpu_takes_the_one_graph() -> None:
    for installed in (ALL_INSTALLED, Installed(cupy=False, cuda_python=False, roi_align_source=False)):
        choice = _choose(device="cpu", installed=installed)
        assert (choice.path, choice.io_binding, choice.device) == ("detector", False, "cpu")
        assert choice.line().startswith("pipeline: one-graph (detector.onnx) on cpu - on the CPU")
    # An explicit split on the CPU runs (numpy reference RoIAlign), needs no GPU packages, no warning.
    split = _choose(device="cpu", requested="split", installed=Installed(False, False, False))
    assert (split.path, split.warning) == ("split", None)
    assert "the numpy reference RoIAlign" in split.line()


def test_explicit_choices_are_honoured_and_the_slow_one_warns() -> None:
    split = _choose(requested="split")
    assert split.path == "split" and split.reason == "asked for with --pipeline split"
    assert split.warning is not None and "through the host" in split.warning
    assert "through the host on cuda:0" in split.line()
    assert split.describe() == [split.line(), f"warning: {split.warning}"]
    assert _choose(backend="trt", requested="split").warning is None
    detector = _choose(backend="trt", requested="detector")
    assert (detector.path, detector.reason) == ("detector", "asked for with --pipeline detector")
    with pytest.raises(PersonSearchError, match="no split graphs"):
        _choose(requested="split", has_split_graphs=False)
    with pytest.raises(PersonSearchError, match="needs CuPy, which is not installed"):
        _choose(requested="split", installed=Installed(cupy=False, cuda_python=True, roi_align_source=True))
    with pytest.raises(PersonSearchError, match="cuda only"):
        _choose(backend="trt", device="cpu")
    with pytest.raises(PersonSearchError, match="unknown device"):
        _choose(device="gpu0")
    with pytest.raises(PersonSearchError, match="pipeline must be one of"):
        _choose(requested="fast")


def test_the_searcher_builds_the_chosen_path(tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ORT on CUDA with CuPy present, with stand-ins: no GPU, no onnxruntime-gpu, no CuPy needed."""
    import personsearch_runtime.gpu.device_pipeline as device_pipeline
    import personsearch_runtime.searcher as searcher_module

    made: list[tuple[str, str, dict[str, object]]] = []

    def fake_backend(name: str, path: Path, **options: object) -> object:
        made.append((name, Path(path).name, options))
        return object()

    split_stages: list[dict[str, object]] = []

    def fake_device_split(*, manifest: object, stages: dict[str, object], device: str) -> object:
        split_stages.append(stages)
        return lambda batch, sizes=None: []

    monkeypatch.setattr(searcher_module, "create_backend", fake_backend)
    monkeypatch.setattr(searcher_module.Installed, "probe", classmethod(lambda cls: ALL_INSTALLED))
    monkeypatch.setattr(device_pipeline, "device_split_detector", fake_device_split)

    auto = PersonSearcher(bundle=tiny_bundle, device="cuda:1")
    assert auto.pipeline == "detector" and auto.pipeline_choice.io_binding
    assert made == [("ort", "detector.onnx", {"device": "cuda:1", "intra_op_threads": 0})]
    assert not split_stages

    made.clear()
    with pytest.warns(SlowPathWarning, match="copies every stage's inputs and outputs through the host"):
        split = PersonSearcher(bundle=tiny_bundle, device="cuda", pipeline="split")
    assert split.pipeline == "split"
    assert [m[1] for m in made] == ["backbone_rpn.onnx", "box_head.onnx", "reid_head.onnx"]
    assert list(split_stages[0]) == ["backbone_rpn", "box_head", "reid_head"]


def test_installed_probe_looks_packages_up_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    cupy_was_loaded = "cupy" in sys.modules
    probed = Installed.probe()
    assert probed.cupy == (importlib.util.find_spec("cupy") is not None)
    assert ("cupy" in sys.modules) == cupy_was_loaded
    real = importlib.util.find_spec

    def no_cuda(name: str, *args: object) -> object:
        if name == "cuda.bindings":
            raise ModuleNotFoundError("No module named 'cuda'")
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", no_cuda)
    assert Installed.probe().cuda_python is False
    assert "cuda-python" in Installed.probe().missing_for_split()


def _bench_args(bundle: Path, **overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "bundle": bundle,
        "backend": "ort",
        "device": "cpu",
        "pipeline": "auto",
        "source": [],
        "frames": 2,
        "size": (96, 128),
        "batch": [1, 2],
        "warmup": 1,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


def test_bench_prints_the_path_line(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from personsearch_runtime.commands import bench

    assert bench.run(_bench_args(tiny_bundle)) == 0
    lines = capsys.readouterr().out.splitlines()
    path_lines = [line for line in lines if line.startswith("pipeline: ")]
    assert path_lines == [
        "pipeline: one-graph (detector.onnx) on cpu - on the CPU one ONNX Runtime session runs the whole "
        "detector (the split path is for the GPU)"
    ]
    assert lines.index(path_lines[0]) < lines.index(
        "| batch | pipeline | preprocess ms/frame | model ms/frame | frames/s |"
    )


def test_bench_on_cuda_says_one_graph_with_iobinding(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in searcher on 'cuda': bench prints the searcher's own choice, with the warning."""
    import personsearch_runtime.searcher as searcher_module
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.commands import bench

    manifest = Bundle.load(tiny_bundle).manifest

    class FakeSearcher:
        def __init__(
            self, *, bundle: Path, backend: str, device: str, batch_size: int, pipeline: str
        ) -> None:
            self.manifest = manifest
            self.batch_size = batch_size
            self.pipeline_choice = choose_pipeline(
                backend=backend,
                device=device,
                requested=pipeline,
                has_split_graphs=True,
                engines=(),
                installed=ALL_INSTALLED,
            )
            self.pipeline = self.pipeline_choice.path

        def detect_prepared(self, prepared: list[object]) -> list[object]:
            return []

    monkeypatch.setattr(searcher_module, "PersonSearcher", FakeSearcher)
    bench.run(_bench_args(tiny_bundle, device="cuda:0"))
    out = capsys.readouterr().out
    assert (
        "pipeline: one-graph (detector.onnx) with IOBinding on cuda:0 - "
        "ORT's split path would copy each stage through the host\n"
    ) in out
    bench.run(_bench_args(tiny_bundle, device="cuda:0", pipeline="split"))
    out = capsys.readouterr().out
    assert (
        "pipeline: split (backbone_rpn.onnx -> our RoIAlign kernel -> box_head.onnx, reid_head.onnx)" in out
    )
    assert "\nwarning: --pipeline split with ONNX Runtime on cuda:0 copies" in out


def test_info_prints_the_path_for_a_bundle(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from personsearch_runtime import cli

    assert cli.main(["info", "--bundle", str(tiny_bundle)]) == 0
    assert capsys.readouterr().out.startswith("pipeline: one-graph (detector.onnx) on cpu - on the CPU")
    assert cli.main(["info", "--bundle", str(tiny_bundle), "--pipeline", "split", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)["pipeline"]
    assert (payload["path"], payload["io_binding"], payload["warning"]) == ("split", False, None)
    assert payload["line"].startswith("pipeline: split (backbone_rpn.onnx -> the numpy reference RoIAlign")
    assert cli.main(["info"]) == 2
    assert "give --gallery DIR, --bundle DIR, or both" in capsys.readouterr().err
