#!/usr/bin/env python3
"""Set up a fresh machine and run the demo or the tests: ``python3 tasks.py demo|test``.

Needs nothing but Python 3.10+. Creates ``.venv`` next to this file on first use,
installs the pinned torch/torchvision first (so the RoIAlign extension can build
against it), then the SDK in editable mode with the ``dev`` extra, and reinstalls only
when ``setup.py`` or ``pyproject.toml`` change.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".personsearch-installed"
TORCH_PIN = ("torch==2.14.1", "torchvision==0.29.1")


def _run(*cmd: str | os.PathLike, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("setup.py", "pyproject.toml", "tasks.py"):
        digest.update((ROOT / name).read_bytes())
    for source in sorted((ROOT / "cpp_ext").rglob("*")):
        if source.suffix in (".cpp", ".cu", ".cuh", ".h", ".py") and source.is_file():
            digest.update(source.read_bytes())
    return digest.hexdigest()


def ensure_environment() -> Path:
    """Create and install the virtual environment if needed; return its python."""
    python = BIN / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return python
    pip = (python, "-m", "pip", "install", "--disable-pip-version-check")
    _run(*pip, "--upgrade", "pip", "setuptools>=69", "wheel", "ninja")
    _run(*pip, *TORCH_PIN)
    # No build isolation: the ops extension compiles against the torch just installed.
    env = {**os.environ, "MAX_JOBS": os.environ.get("MAX_JOBS", str(os.cpu_count() or 2))}
    _run(*pip, "--no-build-isolation", "-e", ".[dev]", env=env)
    STAMP.write_text(_fingerprint())
    return python


def main() -> int:
    """Parse the task name and run it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("task", choices=("setup", "demo", "test"))
    parser.add_argument(
        "--tier",
        choices=("fast", "slow", "all"),
        default="fast",
        help="test tier: fast unit tests (default), the slow tier, or both",
    )
    # Unknown arguments go to the demo or to pytest (e.g. `test -k roi_align`).
    args, extra = parser.parse_known_args()
    python = ensure_environment()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.task == "demo":
        _run(BIN / "personsearch", "demo", *extra, env=env)
    elif args.task == "test":
        marker = {"fast": "not slow", "slow": "slow", "all": "slow or not slow"}[args.tier]
        _run(python, "-m", "pytest", "-m", marker, *extra, env=env)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
