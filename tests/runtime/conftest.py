"""Fixtures for runtime tests: tiny bundles (built with onnx.helper) and scene files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_bundle import add_text_graphs, write_tiny_bundle  # noqa: E402


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def other_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same graphs and dimension, different weights (another checkpoint)."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "other", seed=1)


@pytest.fixture(scope="session")
def text_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny bundle's detector plus tiny text and crop encoders (colour words)."""
    return add_text_graphs(write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "text"))
