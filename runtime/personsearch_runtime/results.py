"""Result types: detections of one frame, and one ranked search hit."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Detections", "SearchHit"]


@dataclass(frozen=True)
class Detections:
    """The people found in one frame.

    Attributes:
        source: File the frame came from.
        frame_index: 0 for an image; the frame number in a video.
        timestamp: Seconds from the start of the video (None for images).
        image_size: (height, width) of the original frame.
        boxes: [N, 4] float32 xyxy, pixels of the original frame.
        scores: [N] float32 person scores, decreasing.
        embeddings: [N, D] float32, L2-normalised.
        text_embeddings: [N, E] float32 L2-normalised crop-encoder embeddings (the
            sentence-search space), or None when the bundle has no text encoder or the
            searcher was asked not to compute them.
    """

    source: str
    frame_index: int
    timestamp: float | None
    image_size: tuple[int, int]
    boxes: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    embeddings: np.ndarray = field(repr=False)
    text_embeddings: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])


@dataclass(frozen=True)
class SearchHit:
    """One gallery detection returned by a query.

    Attributes:
        rank: 1 for the best hit.
        similarity: Cosine similarity (inner product of unit embeddings).
        ranking_score: What hits are ordered by: ``similarity``, or ``similarity * score``
            with score-weighted ranking.
        detection_id: Row id in the gallery.
        source: File of the frame.
        frame_index: Frame number (0 for images).
        timestamp: Seconds into the video (None for images).
        box: (x1, y1, x2, y2) in original-frame pixels.
        score: The detection's person score.
    """

    rank: int
    similarity: float
    ranking_score: float
    detection_id: int
    source: str
    frame_index: int
    timestamp: float | None
    box: tuple[float, float, float, float]
    score: float

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (strict JSON: a non-finite number becomes null)."""
        return {
            "rank": self.rank,
            "similarity": _finite(self.similarity, 6),
            "ranking_score": _finite(self.ranking_score, 6),
            "detection_id": self.detection_id,
            "source": self.source,
            "frame_index": self.frame_index,
            "timestamp": _finite(self.timestamp, None),
            "box": [_finite(v, 2) for v in self.box],
            "score": _finite(self.score, 6),
        }


def _finite(value: float | None, digits: int | None) -> float | None:
    """Round ``value`` to ``digits`` (when given); None for None, NaN and infinities (not JSON)."""
    if value is None or not math.isfinite(value):
        return None
    return float(value) if digits is None else round(float(value), digits)
