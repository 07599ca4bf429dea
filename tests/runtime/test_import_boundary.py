"""The runtime must never load torch (DESIGN.md section 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run_fresh(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


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
        ours = sorted(m for m in sys.modules if m.startswith(("personsearch_train", "personsearch_export", "personsearch_ops")))
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
