from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from engine_scenes import make_splits  # noqa: E402


@pytest.fixture(scope="session")
def tiny_splits(tmp_path_factory: pytest.TempPathFactory):
    return make_splits(tmp_path_factory.mktemp("scenes"))
