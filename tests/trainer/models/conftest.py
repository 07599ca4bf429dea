"""Fixtures for the model tests: a tiny synthetic person-search batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread: None) -> None:
    """Every model test runs on one torch thread (``one_torch_thread``)."""


def make_scene(
    height: int,
    width: int,
    people: list[tuple[float, float, float, float]],
    colours: list[tuple[float, float, float]],
) -> torch.Tensor:
    """A grey noisy background with one flat-coloured rectangle (a "person") per box.

    Returns:
        ``[3, height, width]`` float32 RGB in [0, 1].
    """
    generator = torch.Generator().manual_seed(height * 1000 + width)
    image = 0.5 + 0.05 * torch.randn(3, height, width, generator=generator)
    for (x1, y1, x2, y2), colour in zip(people, colours, strict=True):
        image[:, int(y1) : int(y2), int(x1) : int(x2)] = torch.tensor(colour)[:, None, None]
    return image.clamp(0, 1)


@pytest.fixture
def scene_factory() -> Callable[..., torch.Tensor]:
    """:func:`make_scene`, for tests that draw their own scenes."""
    return make_scene


@pytest.fixture
def tiny_batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two small scenes with three identities (0, 1 labelled; one unlabelled)."""
    boxes_a = [(10.0, 20.0, 40.0, 100.0), (70.0, 15.0, 100.0, 105.0)]
    boxes_b = [(20.0, 30.0, 52.0, 120.0), (90.0, 25.0, 120.0, 110.0)]
    images = [
        make_scene(128, 112, boxes_a, [(0.9, 0.1, 0.1), (0.1, 0.2, 0.9)]),
        make_scene(136, 144, boxes_b, [(0.9, 0.1, 0.1), (0.1, 0.8, 0.2)]),
    ]
    targets = [
        {"boxes": torch.tensor(boxes_a), "pids": torch.tensor([0, 1])},
        {"boxes": torch.tensor(boxes_b), "pids": torch.tensor([0, -1])},
    ]
    return images, targets
