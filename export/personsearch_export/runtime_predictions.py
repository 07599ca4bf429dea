"""Predictions for a person-search test split made entirely by the torch-free runtime.

The runtime's :class:`~personsearch_runtime.searcher.PersonSearcher` detects and embeds
every gallery image (boxes in original pixels) and embeds every query box on its query
frame with the bundle's ``query_encoder``. The loop is the trainer's
:func:`~personsearch_train.evaluation.split_prediction.predict_search_split`, the one the
PyTorch model (:func:`personsearch_train.engine.inference.predict_split`) runs too, so
images are fed in the same groups (``batch_size`` consecutive gallery images per
detector call: the RPN's top-N selection runs over the padded batch and so depends on
which images share a call). The result is the same
:class:`~personsearch_train.evaluation.predictions.SearchPredictions` object, scored by
one code path (``personsearch_train.commands.evaluate.report_predictions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from personsearch_train.data.images import read_bgr
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.split_prediction import predict_search_split

if TYPE_CHECKING:
    from personsearch_runtime.results import Detections
    from personsearch_runtime.searcher import PersonSearcher

__all__ = ["predict_split_with_runtime"]


class _RuntimeSplitPredictor:
    """A ``PersonSearcher`` behind the ``SplitPredictor`` protocol.

    Args:
        searcher: The runtime searcher.
    """

    def __init__(self, searcher: PersonSearcher) -> None:
        self.searcher = searcher

    @property
    def embedding_dim(self) -> int:
        """The bundle's embedding width."""
        return int(self.searcher.bundle.embedding_dim)

    def load_image(self, path: Path) -> np.ndarray:
        """Decode ``path`` as ``[H, W, 3]`` uint8 BGR."""
        return read_bgr(path)

    def detect(self, images: list[np.ndarray]) -> list[Detections]:
        """The searcher's ``Detections`` (``boxes``, ``scores``, ``embeddings``) per image."""
        return self.searcher.detect(images)

    def embed_boxes(self, images: list[np.ndarray], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Embed each image's ``[M, 4]`` boxes with the query encoder (one call per image)."""
        out = []
        for image, image_boxes in zip(images, boxes, strict=True):
            if len(image_boxes) == 0:
                # The encoder needs at least one box; an image without any has no rows.
                out.append(np.zeros((0, self.embedding_dim), dtype=np.float32))
            else:
                out.append(self.searcher.embed_boxes(image, image_boxes))
        return out


def predict_split_with_runtime(
    searcher: PersonSearcher,
    split: PersonSearchSplit,
    *,
    query_context: bool = False,
    progress: bool = True,
) -> SearchPredictions:
    """Detect and embed every gallery image and embed every query box with the runtime.

    Args:
        searcher: A ``PersonSearcher``; its ``batch_size`` is the number of gallery
            images per detector call.
        split: A test split (gallery = ``split.images`` in dataset order).
        query_context: Also record, for CBGM, each query's box (first) followed by the
            query image's detections in descending score order.
        progress: Show tqdm progress bars.

    Returns:
        The runtime's predictions for ``split``, ready to score or save.
    """
    return predict_search_split(
        _RuntimeSplitPredictor(searcher),
        split,
        batch_size=searcher.batch_size,
        query_context=query_context,
        progress=progress,
        source=f"runtime predictions on {split.dataset} {split.split}",
    )
