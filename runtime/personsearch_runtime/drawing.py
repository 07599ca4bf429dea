"""Pictures of search results: the query beside its ranked hits, boxes drawn (OpenCV)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.preprocess import InputError, as_bgr_image
from personsearch_runtime.results import SearchHit
from personsearch_runtime.sources import is_video

__all__ = ["draw_hits", "load_frame", "sentence_card"]

_GREEN = (40, 200, 40)
_WHITE = (255, 255, 255)
#: A tile is at most this many times as wide as it is tall (panoramas are letterboxed),
#: which keeps the picture inside JPEG's 65535-pixel width for any number of hits.
_MAX_TILE_ASPECT = 4


def load_frame(source: str, frame_index: int) -> np.ndarray | None:
    """Decode frame ``frame_index`` of an image or video file; None when it cannot be read."""
    import cv2

    if not is_video(source):
        return cv2.imread(source, cv2.IMREAD_COLOR)
    capture = cv2.VideoCapture(source)
    try:
        if not capture.isOpened():
            return None
        capture.set(cv2.CAP_PROP_POS_FRAMES, frame_index)
        ok, image = capture.read()
        return image if ok else None
    finally:
        capture.release()


def _tile(image: np.ndarray, height: int, label: str, box: Sequence[float] | None) -> np.ndarray:
    import cv2

    image = image.copy()
    h, w = image.shape[:2]
    if box is not None and all(np.isfinite(v) for v in box):
        # Clipped first: a box far outside the frame would overflow OpenCV's int coordinates.
        x1, x2 = (int(round(min(max(float(v), -1.0), w + 1.0))) for v in box[0::2])
        y1, y2 = (int(round(min(max(float(v), -1.0), h + 1.0))) for v in box[1::2])
        thickness = max(2, h // 150)
        cv2.rectangle(image, (x1, y1), (x2, y2), _GREEN, thickness)
    scale = min(height / h, _MAX_TILE_ASPECT * height / w)
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    tile = np.zeros((height, size[0], 3), np.uint8)
    tile[: size[1]] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    bar = np.zeros((28, tile.shape[1], 3), np.uint8)
    cv2.putText(bar, label, (4, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, _WHITE, 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def sentence_card(sentences: Sequence[str], height: int, width: int | None = None) -> np.ndarray:
    """A sentence query drawn as a picture tile: the words wrapped on a dark card.

    OpenCV's Hershey fonts draw ASCII only; other characters are shown as ``?``.

    Args:
        sentences: The query sentences (one person).
        height: Card height in pixels.
        width: Card width (default ``1.2 * height``).

    Returns:
        [height, width, 3] uint8 BGR.
    """
    import cv2

    width = width or int(1.2 * height)
    card = np.full((height, width, 3), 40, np.uint8)
    scale, step = 0.45, 18
    lines: list[str] = []
    for sentence in sentences:
        words = sentence.encode("ascii", "replace").decode("ascii").split()
        line = ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width - 12 and line:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
        lines.append("")
    fits = max(1, (height - 8) // step)
    if len(lines) > fits:
        lines = lines[: fits - 1] + ["..."]
    for i, line in enumerate(lines[:fits]):
        cv2.putText(card, line, (6, 18 + i * step), cv2.FONT_HERSHEY_SIMPLEX, scale, _WHITE, 1, cv2.LINE_AA)
    return card


def draw_hits(
    query: np.ndarray | None,
    hits: Sequence[SearchHit],
    out_path: str | os.PathLike[str],
    *,
    query_box: Sequence[float] | None = None,
    tile_height: int = 256,
    sentences: Sequence[str] = (),
) -> Path:
    """Write one picture: the query, then each hit's frame with its box and rank.

    Args:
        query: [H, W, 3] uint8 BGR query crop or frame; None for a sentence-only query.
        hits: Ranked hits (all are drawn in one row: pass the best few).
        out_path: Image file to write (extension picks the format, e.g. ``.jpg``).
        query_box: Box to draw on the query (for queries by box in a frame).
        tile_height: Height of each tile in pixels (16 to 4096).
        sentences: Query sentences, drawn on a card after the query image.

    Returns:
        The written path.

    Raises:
        InputError: ``query`` is not an 8-bit image, ``tile_height`` is out of range, or
            OpenCV has no encoder for ``out_path``'s extension.
    """
    import cv2

    if isinstance(tile_height, bool) or not isinstance(tile_height, int) or not 16 <= tile_height <= 4096:
        raise InputError(f"tile_height must be a whole number from 16 to 4096, got {tile_height!r}")
    if query is None and not sentences:
        raise InputError("draw_hits needs a query image, query sentences or both")
    tiles = []
    if query is not None:
        tiles.append(_tile(as_bgr_image(query, "query"), tile_height, "query", query_box))
    if sentences:
        tiles.append(_tile(sentence_card(sentences, tile_height), tile_height, "query text", None))
    for hit in hits:
        frame = load_frame(hit.source, hit.frame_index)
        if frame is None:
            frame = np.full((tile_height, tile_height // 2, 3), 64, np.uint8)
            box = None
        else:
            box = hit.box
        label = f"#{hit.rank} sim {hit.similarity:.2f}"
        tiles.append(_tile(frame, tile_height, label, box))
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    row = [tiles[0]]
    for t in tiles[1:]:
        row += [gap, t]
    picture = np.concatenate(row, axis=1)
    out_path = Path(out_path)
    # Encoded in memory because OpenCV picks the format from the file name's extension,
    # which the temporary name of an atomic write does not keep.
    try:
        encoded, data = cv2.imencode(out_path.suffix, picture)
    except cv2.error:  # what OpenCV raises for an extension it has no encoder for
        encoded = False
    if not encoded:
        raise InputError(
            f"cannot write the picture {out_path}: OpenCV has no image encoder for the extension "
            f"{out_path.suffix!r}; use .jpg or .png"
        )
    return atomic_write_bytes(out_path, data.tobytes())
