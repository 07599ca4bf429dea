"""Predictions for a person-search test split made entirely by the torch-free runtime.

The runtime's :class:`~personsearch_runtime.searcher.PersonSearcher` detects and embeds
every gallery image (boxes in original pixels) and embeds every query box on its query
frame with the bundle's ``query_encoder``. The result is the same
:class:`~personsearch_train.evaluation.predictions.SearchPredictions` object the
trainer's own evaluation builds, so both are scored by one code path
(``personsearch_train.commands.evaluate.report_predictions``).

Images are fed in the same groups as
:func:`personsearch_train.engine.inference.predict_split` feeds the PyTorch model
(``batch_size`` consecutive gallery images per detector call), because the RPN's top-N
selection runs over the padded batch and so depends on which images share a call.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import DatasetFormatError
from personsearch_train.evaluation.predictions import SearchPredictions

__all__ = ["predict_split_with_runtime", "read_bgr"]


def read_bgr(path: str | Path) -> np.ndarray:
    """Decode an image file as OpenCV does for the runtime.

    Args:
        path: Image file.

    Returns:
        [H, W, 3] uint8 BGR.

    Raises:
        DatasetFormatError: The file is missing or cannot be decoded.
    """
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetFormatError(f"{path}: image is missing or cannot be decoded; check the dataset folder")
    return image


def _groups(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def predict_split_with_runtime(
    searcher,  # noqa: ANN001 - a personsearch_runtime PersonSearcher
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
    from tqdm import tqdm

    names: list[str] = []
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    detections_by_name: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for group in tqdm(
        _groups(split.images, searcher.batch_size),
        desc="gallery (runtime)",
        disable=not progress,
        leave=False,
    ):
        found = searcher.detect([read_bgr(r.path) for r in group])
        for record, det in zip(group, found, strict=True):
            names.append(record.name)
            boxes.append(det.boxes)
            scores.append(det.scores)
            embeddings.append(det.embeddings)
            if query_context:
                detections_by_name[record.name] = (det.boxes, det.scores, det.embeddings)

    # All query boxes of one frame go through the query encoder in one call.
    by_image: dict[str, list[int]] = defaultdict(list)
    for q, query in enumerate(split.queries):
        by_image[query.name].append(q)
    dim = searcher.bundle.embedding_dim
    query_array = np.zeros((len(split.queries), dim), np.float32)
    query_groups = tqdm(by_image.values(), desc="queries (runtime)", disable=not progress, leave=False)
    for members in query_groups:
        frame = read_bgr(split.queries[members[0]].path)
        query_boxes = np.stack([np.asarray(split.queries[q].box, np.float32) for q in members])
        query_array[members] = searcher.embed_boxes(frame, query_boxes)

    ctx_boxes = ctx_emb = None
    if query_context:
        ctx_boxes, ctx_emb = [], []
        for q, query in enumerate(split.queries):
            if query.name not in detections_by_name:
                det = searcher.detect([read_bgr(query.path)])[0]
                detections_by_name[query.name] = (det.boxes, det.scores, det.embeddings)
            det_boxes, det_scores, det_emb = detections_by_name[query.name]
            order = np.argsort(-det_scores, kind="stable")
            ctx_boxes.append(np.concatenate([np.asarray(query.box, np.float32)[None], det_boxes[order]]))
            ctx_emb.append(np.concatenate([query_array[q][None], det_emb[order]]))
    return SearchPredictions.from_per_image(
        names,
        boxes,
        scores,
        embeddings,
        query_array,
        query_context_boxes=ctx_boxes,
        query_context_embeddings=ctx_emb,
        source=f"runtime predictions on {split.dataset} {split.split}",
    )
