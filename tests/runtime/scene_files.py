"""Scene, crop and video files for runtime tests (importable by name; conftest holds fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tiny_bundle import scene

#: Colours (RGB in [0, 1]) of the "people" in the test scenes.
PALETTE = [
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 0.0),
    (0.0, 1.0, 1.0),
    (1.0, 0.0, 1.0),
]


def scene_layout(i: int) -> list[tuple[float, float, float] | None]:
    """Quadrant colours of test scene i (one quadrant left empty)."""
    colours: list[tuple[float, float, float] | None] = [PALETTE[(i + j) % len(PALETTE)] for j in range(4)]
    colours[i % 4] = None
    return colours


def write_scenes(folder: Path, count: int, *, height: int = 96, width: int = 128) -> list[Path]:
    """Write ``count`` PNG scenes; sizes keep the fed image unpadded (exact quadrant boxes)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"scene_{i:03d}.png"
        assert cv2.imwrite(str(path), scene(scene_layout(i), height, width))
        paths.append(path)
    return paths


def write_video(path: Path, frames: int, *, fps: float = 10.0) -> Path:
    """Write an MJPG AVI whose frame t shows scene_layout(t)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (128, 96))
    assert writer.isOpened()
    for t in range(frames):
        writer.write(scene(scene_layout(t), 96, 128))
    writer.release()
    return path


def crop_of(colour: tuple[float, float, float], height: int = 48, width: int = 32) -> np.ndarray:
    """A BGR crop filled with one colour."""
    rgb = np.round(np.asarray(colour) * 255).astype(np.uint8)
    return np.broadcast_to(rgb[::-1], (height, width, 3)).copy()
