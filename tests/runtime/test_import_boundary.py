"""The runtime must never load torch (DESIGN.md section 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_import_runtime_and_cli_help_do_not_load_torch() -> None:
    result = _run_fresh(
        """
        import contextlib, io, sys
        import personsearch_runtime
        from personsearch_runtime import cli
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = cli.main(["--help"])
        assert code == 0, code
        assert "synth" in out.getvalue() and "index" in out.getvalue()
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        ours = sorted(
            m
            for m in sys.modules
            if m.startswith(("personsearch_train", "personsearch_export", "personsearch_ops"))
        )
        print("TORCH", loaded[:5])
        print("OURS", ours[:5])
        assert not loaded, loaded
        assert not ours, ours
        """
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_console_script_help_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "personsearch_runtime", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "personsearch" in result.stdout


def test_cpu_search_with_backends_never_loads_torch(tiny_bundle, tmp_path) -> None:  # noqa: ANN001
    import cv2
    from scene_files import PALETTE, crop_of, write_scenes

    write_scenes(tmp_path / "imgs", 3)
    cv2.imwrite(str(tmp_path / "crop.png"), crop_of(PALETTE[1]))
    result = _run_fresh(
        f"""
        import sys
        import cv2
        from personsearch_runtime import GalleryIndex, PersonSearcher
        from personsearch_runtime.backends import available_backends, backend_class
        from personsearch_runtime.backends import engine_sidecar, onnx_runtime, tensorrt_engine
        from personsearch_runtime.gpu import cuda_memory, roi_align_kernel, device_pipeline
        from personsearch_runtime import box_ops, detection, drawing, gallery, sources
        assert "ort" in available_backends()
        for pipeline in ("detector", "split"):
            searcher = PersonSearcher(bundle={str(tiny_bundle)!r}, pipeline=pipeline)
            with GalleryIndex.open_for_bundle({str(tmp_path)!r} + "/g_" + pipeline, searcher.bundle) as g:
                searcher.index(g, [{str(tmp_path / "imgs")!r}])
                hits = searcher.search_crop(g, cv2.imread({str(tmp_path / "crop.png")!r}), top_k=2)
                assert hits[0].similarity > 0.999, hits
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "torchvision")))
        ours = sorted(m for m in sys.modules if m.startswith(("personsearch_train", "personsearch_export",
                                                              "personsearch_ops", "onnx.", "tiny_bundle")))
        assert not loaded, loaded
        assert not ours, ours
        assert "onnx" not in sys.modules
        print("OK")
        """
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout + result.stderr
