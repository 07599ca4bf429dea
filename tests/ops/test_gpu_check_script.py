"""benchmarks/gpu_check.sh --dry-run: it would start on a GPU machine, checked without one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
STEPS = (
    "env",
    "build",
    "cuda-tests",
    "split-pipeline",
    "kernel-parity",
    "nms-parity",
    "roi-align-bench",
    "end-to-end-bench",
)


def _dry_run(out: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_dry_run_passes_and_names_every_step(tmp_path):
    result = _dry_run(tmp_path / "out")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    for step in STEPS:
        assert re.search(rf"^{re.escape(step)}\s+DRY-OK\s", summary, re.MULTILINE), summary
    log = (tmp_path / "out" / "steps.log").read_text()
    # Each script parsed the arguments the real run passes, and the CUDA tests were collected.
    for script in ("gpu_kernel_parity.py", "roi_align.py", "gpu_end_to_end.py"):
        assert re.search(rf"ok: benchmarks/{script} imports and parses", log), log
    assert re.search(r"DRY cuda-tests ok: [1-9]\d* CUDA tests collected", log), log
    assert re.search(r"DRY split-pipeline ok: [1-9]\d* CUDA tests collected", log), log


def test_dry_run_fails_when_a_step_cannot_import(tmp_path):
    # A torchvision that cannot be imported, ahead of the real one: the dry run must notice.
    planted = tmp_path / "planted" / "torchvision"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text('raise ImportError("planted by the test")\n')
    result = _dry_run(tmp_path / "out", PYTHONPATH=str(planted.parent))
    assert result.returncode == 1, result.stdout + result.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert re.search(r"^env\s+FAIL\s", summary, re.MULTILINE), summary
    assert re.search(r"^roi-align-bench\s+FAIL\s", summary, re.MULTILINE), summary
    assert "planted by the test" in (tmp_path / "out" / "steps.log").read_text()


def test_help_names_every_step():
    result = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True)
    for step in STEPS:
        assert re.search(rf"^\s+{re.escape(step)}\s", result.stdout, re.MULTILINE), result.stdout
