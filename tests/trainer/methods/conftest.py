from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``tiny`` synthetic preset in every layout (CUHK-SYSU, PRW, ...), seed 0."""
    from personsearch_train.data.synthetic.generator import generate_dataset

    root = tmp_path_factory.mktemp("synthetic_tiny")
    generate_dataset(root, preset="tiny", seed=0, workers=1)
    return root
