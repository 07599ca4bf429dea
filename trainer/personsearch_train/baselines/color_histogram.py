"""Colour-histogram re-identification on ground-truth boxes: the classical baseline.

Each person box is described by HSV colour histograms of two horizontal stripes, an
upper-body stripe and a lower-body stripe, taken from the central part of the box
width (the sides are mostly background). Each stripe histogram is normalised to sum
1 and square-rooted (so the dot product of two descriptors is the Bhattacharyya
coefficient of the stripes, summed), and the concatenation is L2-normalised. It uses
no learning and no detector: every ground-truth box of every gallery image becomes
a detection with score 1, which is why its detection AP is 1 and its search numbers
measure identity matching alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from personsearch_train.data.images import read_bgr
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.split_prediction import ImageDetections, predict_search_split

__all__ = ["ColorHistogramEmbedder", "histogram_predictions"]


@dataclass(frozen=True)
class ColorHistogramEmbedder:
    """HSV stripe histograms of person boxes.

    Attributes:
        hue_bins: Hue bins (OpenCV hue spans 0..180).
        saturation_bins: Saturation bins.
        value_bins: Value (brightness) bins.
        stripes: ``(top, bottom)`` fractions of the box height of each stripe; the
            defaults cover the torso and the legs.
        width_margin: Fraction of the box width dropped on each side.
    """

    hue_bins: int = 12
    saturation_bins: int = 4
    value_bins: int = 4
    stripes: tuple[tuple[float, float], ...] = ((0.15, 0.5), (0.5, 0.9))
    width_margin: float = 0.15

    @property
    def dim(self) -> int:
        """Descriptor length ``D``."""
        return self.hue_bins * self.saturation_bins * self.value_bins * len(self.stripes)

    def embed(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Describe the people in one image.

        Args:
            image_bgr: ``[H, W, 3]`` uint8 BGR image (as ``cv2.imread`` returns it).
            boxes: ``[N, 4]`` float ``xyxy`` pixels.

        Returns:
            ``[N, D]`` float32 L2-normalised descriptors.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        out = np.zeros((len(boxes), self.dim), dtype=np.float32)
        if len(boxes) == 0:
            return out
        hsv = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2HSV)
        height, width = hsv.shape[:2]
        bins = [self.hue_bins, self.saturation_bins, self.value_bins]
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            margin = self.width_margin * (x2 - x1)
            left = int(np.clip(np.floor(x1 + margin), 0, width - 1))
            right = int(np.clip(np.ceil(x2 - margin), left + 1, width))
            parts = []
            for top, bottom in self.stripes:
                r0 = int(np.clip(np.floor(y1 + top * (y2 - y1)), 0, height - 1))
                r1 = int(np.clip(np.ceil(y1 + bottom * (y2 - y1)), r0 + 1, height))
                hist = cv2.calcHist([hsv[r0:r1, left:right]], [0, 1, 2], None, bins, [0, 180, 0, 256, 0, 256])
                hist = hist.reshape(-1).astype(np.float64)
                parts.append(np.sqrt(hist / max(hist.sum(), 1.0)))
            vector = np.concatenate(parts)
            out[i] = vector / max(np.linalg.norm(vector), 1e-12)
        return out


class _HistogramPredictor:
    """The embedder behind the ``SplitPredictor`` protocol, for ground-truth-box mode only.

    Args:
        embedder: Descriptor settings.
    """

    def __init__(self, embedder: ColorHistogramEmbedder) -> None:
        self.embedder = embedder

    @property
    def embedding_dim(self) -> int:
        """Descriptor length ``D``."""
        return self.embedder.dim

    def load_image(self, path: Path) -> np.ndarray:
        """Decode ``path`` as ``[H, W, 3]`` uint8 BGR."""
        return read_bgr(path)

    def detect(self, images: list[np.ndarray]) -> list[ImageDetections]:
        """Not available: the baseline has no detector.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError(
            "the colour-histogram baseline has no detector; it only describes given boxes"
        )

    def embed_boxes(self, images: list[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Describe each image's ``[M, 4]`` boxes: ``[M, D]`` float32 per image."""
        return [self.embedder.embed(image, b) for image, b in zip(images, boxes, strict=True)]


def histogram_predictions(
    split: PersonSearchSplit,
    embedder: ColorHistogramEmbedder | None = None,
    *,
    progress: bool = False,
) -> SearchPredictions:
    """Run the baseline on a test split: ground-truth boxes, score 1, histogram embeddings.

    Args:
        split: A CUHK-SYSU or PRW test split (its images must exist on disk).
        embedder: Descriptor settings; defaults when None.
        progress: Show tqdm progress bars.

    Returns:
        Predictions in the split's gallery and query order.
    """
    return predict_search_split(
        _HistogramPredictor(embedder or ColorHistogramEmbedder()),
        split,
        # Each box is described on its own, so grouping images changes nothing.
        batch_size=1,
        ground_truth_boxes=True,
        progress=progress,
        source=f"colour-histogram baseline on {split.root}",
    )
