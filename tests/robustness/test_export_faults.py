"""Bad inputs and faults in the exporter's commands: nothing lost, nothing silent, no tracebacks.

``export --overwrite`` replaces only a bundle folder holding nothing but what the exporter
writes, and swaps the new bundle in so a crash never leaves neither; ``lint-trt`` and the
other bundle commands check the manifest's SHA-256 of every graph and call a damaged copy
corrupted; missing, empty, truncated and wrong-typed inputs give one ``error:`` line and
exit code 2. The export itself is replaced by a stub writing a toy bundle (the real export
is covered by tests/export/test_export.py), so every case here runs in milliseconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from personsearch_export import bundle_folder, exporter
from personsearch_export.bundle_folder import check_output_folder, not_ours
from personsearch_export.errors import ExportError
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.cli import main


def _load_toy_bundle_writer():
    """tests/export/conftest.py's ``make_toy_bundle`` (tiny hand-built graphs, valid manifest)."""
    path = Path(__file__).resolve().parents[1] / "export" / "conftest.py"
    spec = importlib.util.spec_from_file_location("export_toy_bundle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_toy_bundle


make_toy_bundle = _load_toy_bundle_writer()


def _tree(folder: Path) -> dict[str, bytes]:
    """Relative path -> contents of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err


@pytest.fixture
def old_bundle(tmp_path: Path) -> Path:
    """A bundle as the exporter's commands leave it: graphs, parity, engines, trtexec output, a stale temp."""
    root = make_toy_bundle(tmp_path / "out")
    (root / "parity.json").write_text('{"marker": "old"}')
    (root / "engines").mkdir()
    (root / "engines" / "detector.plan").write_bytes(b"plan")
    (root / "engines" / "detector.plan.json").write_text("{}")
    (root / "engines" / "box_head.trt10.plan").write_bytes(b"plan")
    (root / "trtexec").mkdir()
    (root / "trtexec" / "box_head.trt10.times.json").write_text("[]")
    (root / ".manifest.json.0123456789ab.tmp").write_text("killed writer")
    return root


@pytest.fixture
def fake_export(monkeypatch):
    """Replace checkpoint loading, tracing and parity by a stub that writes a toy bundle.

    Returns a namespace whose ``during`` callable (default: nothing) runs inside the export,
    after the graphs are written, to simulate what happens while an export runs.
    """
    state = SimpleNamespace(during=lambda folder: None)
    description = SimpleNamespace(family="seqnet")
    loaded = SimpleNamespace(model=None, method=SimpleNamespace(export_description=lambda: description))

    def export_graphs(loaded, folder, **kwargs):
        make_toy_bundle(folder)
        state.during(folder)

    family = SimpleNamespace(parity=lambda folder, model, **kwargs: {"marker": "new", "passed": True})
    monkeypatch.setattr(exporter, "load_checkpoint", lambda path: loaded)
    monkeypatch.setattr(exporter, "export_graphs", export_graphs)
    monkeypatch.setattr(exporter, "get_export_family", lambda name: family)
    monkeypatch.setattr(exporter, "load_scene_images", lambda scenes: [])
    return state


def _siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


# --- export --overwrite: only our own bundles, never a user's files ----------------------------------------


def test_overwrite_refuses_a_folder_that_is_not_a_bundle(tmp_path, capsys):
    out = tmp_path / "notes"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    (out / "sub" / "plan.md").write_text("more")
    before = _tree(out)
    assert main(["export", "--checkpoint", str(tmp_path / "none"), "--out", str(out), "--overwrite"]) == 2
    err = _error_line(capsys)
    assert "--overwrite refused" in err and "not a bundle made by 'personsearch export'" in err
    assert _tree(out) == before


def test_overwrite_refuses_a_bundle_holding_user_files_and_lists_them(old_bundle, capsys):
    (old_bundle / "notes.txt").write_text("my notes")
    (old_bundle / "experiments").mkdir()
    (old_bundle / "experiments" / "run1.csv").write_text("1,2")
    (old_bundle / "engines" / "mine.plan").write_bytes(b"x")
    before = _tree(old_bundle)
    assert not_ours(old_bundle, Bundle.load(old_bundle).manifest) == [
        "engines/mine.plan",
        "experiments/",
        "notes.txt",
    ]
    assert main(["export", "--checkpoint", "ckpt", "--out", str(old_bundle), "--overwrite"]) == 2
    err = _error_line(capsys)
    assert "holds files the exporter did not write: engines/mine.plan, experiments/, notes.txt" in err
    assert _tree(old_bundle) == before


def test_overwrite_refuses_an_invalid_manifest(old_bundle):
    (old_bundle / "manifest.json").write_text('{"format": "something else"}')
    with pytest.raises(ExportError, match="not a valid bundle manifest"):
        check_output_folder(old_bundle, overwrite=True)


def test_overwrite_replaces_our_bundle_and_removes_only_its_files(old_bundle, fake_export):
    exporter.export_bundle("ckpt", old_bundle, overwrite=True)
    assert json.loads((old_bundle / "parity.json").read_text())["marker"] == "new"
    # The old engines and trtexec results belonged to the old graphs: gone with them.
    assert not (old_bundle / "engines").exists() and not (old_bundle / "trtexec").exists()
    assert sorted(p.name for p in old_bundle.iterdir()) == sorted(
        ["manifest.json", "parity.json", *(f"{r}.onnx" for r in Bundle.load(old_bundle).manifest.models)]
    )
    assert _siblings(old_bundle) == []  # no hidden partial or old folder left behind


def test_overwrite_without_atomic_exchange_falls_back_to_two_renames(old_bundle, fake_export, monkeypatch):
    monkeypatch.setattr(bundle_folder, "_exchange", lambda first, second: False)
    exporter.export_bundle("ckpt", old_bundle, overwrite=True)
    assert json.loads((old_bundle / "parity.json").read_text())["marker"] == "new"
    assert _siblings(old_bundle) == []


def test_failed_swap_keeps_the_old_bundle(old_bundle, fake_export, monkeypatch):
    monkeypatch.setattr(bundle_folder, "_exchange", lambda first, second: False)
    real_replace = os.replace

    def replace(src, dst):
        if Path(src).name.startswith(".out.partial-"):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(bundle_folder.os, "replace", replace)
    before = _tree(old_bundle)
    with pytest.raises(OSError):
        exporter.export_bundle("ckpt", old_bundle, overwrite=True)
    assert _tree(old_bundle) == before
    assert _siblings(old_bundle) == []


def test_crash_during_export_keeps_the_old_bundle(old_bundle, fake_export):
    def killed(folder):
        raise KeyboardInterrupt

    fake_export.during = killed
    before = _tree(old_bundle)
    with pytest.raises(KeyboardInterrupt):
        exporter.export_bundle("ckpt", old_bundle, overwrite=True)
    assert _tree(old_bundle) == before
    assert _siblings(old_bundle) == []


def test_file_added_while_exporting_is_not_deleted(old_bundle, fake_export):
    fake_export.during = lambda folder: (old_bundle / "notes.txt").write_text("written meanwhile")
    with pytest.raises(ExportError, match="notes.txt"):
        exporter.export_bundle("ckpt", old_bundle, overwrite=True)
    assert (old_bundle / "notes.txt").read_text() == "written meanwhile"
    assert json.loads((old_bundle / "parity.json").read_text())["marker"] == "old"
    assert _siblings(old_bundle) == []


def test_existing_non_empty_out_needs_overwrite_but_an_empty_folder_does_not(old_bundle, fake_export, capsys):
    before = _tree(old_bundle)
    assert main(["export", "--checkpoint", "ckpt", "--out", str(old_bundle)]) == 2
    assert "already exists and is not empty" in _error_line(capsys)
    assert _tree(old_bundle) == before
    empty = old_bundle.parent / "empty"
    empty.mkdir()
    exporter.export_bundle("ckpt", empty)
    Bundle.load(empty)


def test_new_bundle_and_triton_repository_get_ordinary_permissions(tmp_path, fake_export):
    # Written in a hidden sibling and renamed in: that folder must not keep mkdtemp's 0700.
    out = tmp_path / "bundle"
    exporter.export_bundle("ckpt", out)
    assert main(["export-triton", str(out), "--out", str(tmp_path / "repo")]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "repo").stat().st_mode) == 0o777 & ~umask


def test_out_that_is_a_file_or_under_a_file_or_a_link(tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert main(["export", "--checkpoint", "ckpt", "--out", str(a_file)]) == 2
    assert "is a file; give a folder path" in _error_line(capsys)
    assert main(["export", "--checkpoint", "ckpt", "--out", str(a_file / "b")]) == 2
    assert "is a file, so no folder can be made under it" in _error_line(capsys)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(ExportError, match="symbolic link"):
        check_output_folder(link, overwrite=True)
    assert a_file.read_text() == "x"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--max-batch", "0"], "--max-batch must be >= 1"),
        (["--max-detections", "0"], "--max-detections must be >= 1"),
        (["--parity-cases", "-1"], "--parity-cases must be >= 0"),
    ],
)
def test_export_size_options_are_checked_before_any_work(tmp_path, capsys, option, message):
    # The checkpoint does not exist: the option must be refused before it is looked at.
    assert (
        main(["export", "--checkpoint", str(tmp_path / "none"), "--out", str(tmp_path / "b"), *option]) == 2
    )
    assert message in _error_line(capsys)
    assert not (tmp_path / "b").exists()


def test_export_from_a_folder_without_a_checkpoint(tmp_path, capsys):
    # A truncated checkpoint is tests/export/test_export.py::test_corrupt_checkpoint_is_refused.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("x")
    assert main(["export", "--checkpoint", str(tmp_path / "notes"), "--out", str(tmp_path / "b")]) == 2
    assert "no checkpoint" in _error_line(capsys)
    assert _siblings(tmp_path / "b") == ["notes"]


# --- lint-trt: truncated graphs and recorded hashes -------------------------------------------------------


def test_lint_trt_on_truncated_empty_and_non_onnx_files(toy_bundle_dir, tmp_path, capsys):
    data = (toy_bundle_dir / "detector.onnx").read_bytes()
    cases = {
        "truncated.onnx": (data[: len(data) // 3], "truncated or corrupted"),
        "empty.onnx": (b"", "not an ONNX model (empty"),
        "text.onnx": (b"hello world, not a graph\n", "truncated or corrupted"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        assert main(["lint-trt", str(tmp_path / name)]) == 2, name
        assert message in _error_line(capsys), name


def test_lint_trt_verifies_the_bundle_hashes(toy_bundle_dir, capsys):
    assert main(["lint-trt", str(toy_bundle_dir)]) == 0
    capsys.readouterr()
    graph = toy_bundle_dir / "box_head.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit: still parses, but is not what was exported
    graph.write_bytes(bytes(data))
    assert main(["lint-trt", str(toy_bundle_dir), "--models", "detector"]) == 2
    err = _error_line(capsys)
    assert f"bundle {toy_bundle_dir} is corrupted" in err and "box_head.onnx" in err


def test_lint_trt_paths_that_are_not_bundles(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "folder").mkdir()
    for path, message in (
        (tmp_path / "notes.txt", "is neither a bundle directory nor an .onnx file"),
        (tmp_path / "missing.onnx", "does not exist"),
        (tmp_path / "folder", "manifest.json is missing"),
    ):
        assert main(["lint-trt", str(path)]) == 2
        assert message in _error_line(capsys)


@pytest.fixture
def toy_bundle_dir(tmp_path: Path) -> Path:
    return make_toy_bundle(tmp_path / "bundle")


# --- verify, build-engine, trtexec-cmd, trtexec-report, export-triton, eval -------------------------------


def test_bundle_commands_on_a_file_a_folder_without_manifest_and_a_corrupted_bundle(
    toy_bundle_dir, tmp_path, capsys
):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    (tmp_path / "empty").mkdir()
    corrupted = make_toy_bundle(tmp_path / "corrupted")
    graph = corrupted / "query_encoder.onnx"
    graph.write_bytes(graph.read_bytes()[:-10])
    commands = {
        "verify": ["--checkpoint", "ckpt"],
        "build-engine": [],
        "trtexec-cmd": [],
        "export-triton": ["--out", str(tmp_path / "repo")],
    }
    for command, extra in commands.items():
        assert main([command, str(a_file), *extra]) == 2, command
        assert "is a file, not a bundle folder" in _error_line(capsys), command
        assert main([command, str(tmp_path / "empty"), *extra]) == 2, command
        assert "manifest.json is missing" in _error_line(capsys), command
        assert main([command, str(corrupted), *extra]) == 2, command
        assert "is corrupted" in _error_line(capsys), command
    assert not (tmp_path / "repo").exists()


def test_bundle_command_outputs_that_are_files_and_bad_counts(toy_bundle_dir, tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    bundle = str(toy_bundle_dir)
    cases = [
        (["build-engine", bundle, "--out", str(a_file)], "--out"),
        (["build-engine", bundle, "--workspace-mb", "0"], "--workspace-mb must be >= 1"),
        (["trtexec-cmd", bundle, "--out", str(a_file)], "is a file; give a folder for the trtexec"),
        (["trtexec-cmd", bundle, "--workspace-mb", "-1"], "--workspace-mb must be >= 1"),
        (["export-triton", bundle, "--out", str(a_file)], "is a file; give a new folder"),
        (
            ["export-triton", bundle, "--out", str(tmp_path / "r"), "--instances", "0"],
            "--instances must be >= 1",
        ),
        (
            ["export-triton", bundle, "--out", str(tmp_path / "r"), "--max-queue-delay-us", "-5"],
            "--max-queue-delay-us must be >= 0",
        ),
        (["verify", bundle, "--checkpoint", "ckpt", "--parity-cases", "-1"], "--parity-cases must be >= 0"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in _error_line(capsys), argv
    assert a_file.read_text() == "x"
    assert not (tmp_path / "r").exists()


_TIME_KEYS = (
    "startEnqMs endEnqMs startH2dMs endH2dMs startComputeMs endComputeMs startD2hMs endD2hMs "
    "h2dMs computeMs d2hMs latencyMs enqueueMs"
).split()


def test_trtexec_report_on_truncated_wrong_typed_and_non_finite_files(tmp_path, capsys):
    record = dict.fromkeys(_TIME_KEYS, 1.0)
    good = tmp_path / "times.json"
    good.write_text(json.dumps([record]))
    text = good.read_text()
    files = {
        "truncated.json": (text[: len(text) // 2], "is not a JSON file"),
        "nan.json": (json.dumps([{**record, "latencyMs": "nan"}]), "non-finite latencyMs"),
        "string.json": (json.dumps([{**record, "computeMs": "fast"}]), "non-numeric computeMs"),
    }
    for name, (content, message) in files.items():
        (tmp_path / name).write_text(content)
        assert main(["trtexec-report", str(tmp_path / name)]) == 2, name
        assert message in _error_line(capsys), name
    profile = tmp_path / "profile.json"
    profile.write_text(
        json.dumps([{"count": 1}, {"name": "conv", "timeMs": None, "averageMs": 1, "percentage": 5}])
    )
    assert main(["trtexec-report", str(good), str(profile)]) == 2
    assert "non-numeric timeMs" in _error_line(capsys)
    assert main(["trtexec-report", str(good), "--top-layers", "-1"]) == 2
    assert "--top-layers must be >= 0" in _error_line(capsys)
    (tmp_path / "folder").mkdir()
    assert main(["trtexec-report", str(tmp_path / "folder")]) == 2
    _error_line(capsys)
    assert main(["trtexec-report", str(good), "--json", str(tmp_path / "summary.json")]) == 0
    assert json.loads((tmp_path / "summary.json").read_text())["queries"] == 1


def test_eval_bundle_batch_size_and_bundle_path(toy_bundle_dir, tmp_path, capsys):
    base = ["eval", "--dataset", "prw", "--root", str(tmp_path / "no-data")]
    assert main([*base, "--bundle", str(toy_bundle_dir), "--batch-size", "0"]) == 2
    assert "--batch-size must be >= 1" in _error_line(capsys)
    (tmp_path / "afile").write_text("x")
    assert main([*base, "--bundle", str(tmp_path / "afile")]) == 2
    assert "is a file, not a bundle folder" in _error_line(capsys)
