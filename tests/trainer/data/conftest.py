"""Fixtures: small dataset folders written in the exact real layouts (see reader_layouts.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from reader_layouts import (
    CUHK_IMAGES,
    CUHK_POOL,
    CUHK_PROTOCOLS,
    CUHK_TRAIN,
    PRW_QUERIES,
    PRW_TEST,
    PRW_TRAIN,
    write_cuhk_sysu,
    write_prw,
)


@pytest.fixture
def cuhk_writer() -> Callable[..., Path]:
    return write_cuhk_sysu


@pytest.fixture
def cuhk_root(tmp_path: Path) -> Path:
    return write_cuhk_sysu(tmp_path / "CUHK-SYSU", CUHK_IMAGES, CUHK_POOL, CUHK_TRAIN, CUHK_PROTOCOLS)


@pytest.fixture
def prw_writer() -> Callable[..., Path]:
    return write_prw


@pytest.fixture
def prw_root(tmp_path: Path) -> Path:
    return write_prw(tmp_path / "PRW", PRW_TRAIN, PRW_TEST, PRW_QUERIES)
