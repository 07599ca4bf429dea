"""Predict a person-search test split with any model: the one loop every evaluation runs.

:func:`predict_search_split` turns a :class:`SplitPredictor` (anything that can read an
image, detect people and embed given boxes) into the
:class:`~personsearch_train.evaluation.predictions.SearchPredictions` of a test split.
The PyTorch model (:func:`personsearch_train.engine.inference.predict_split`), the
torch-free runtime (:func:`personsearch_export.runtime_predictions.predict_split_with_runtime`)
and the colour-histogram baseline
(:func:`personsearch_train.baselines.color_histogram.histogram_predictions`) are thin
adapters over it, so the three feed their models identically:

* gallery images go to ``detect`` in groups of ``batch_size`` consecutive images of
  ``split.images``; the grouping is part of the result, because a detector's RPN keeps
  its top-N proposals over the padded batch, so which images share a call can change
  the detections;
* in ground-truth-box mode the annotated gallery boxes are embedded with
  ``embed_boxes`` instead and each gets score 1 (the "with ground-truth boxes" figure
  papers report to separate re-identification from detection);
* the query boxes of one image are embedded in one ``embed_boxes`` call (images in
  groups of ``batch_size``, in order of each image's first query), and each row lands
  at its query's position in ``split.queries``;
* for CBGM, every query's context is its own box followed by its image's detections in
  descending score order (ties keep the detector's order); a query image that is not a
  gallery image is detected on its own.

This module needs only numpy (and tqdm for progress bars); what an image is (an RGB
tensor, a BGR array, a file name) is the predictor's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.evaluation.predictions import SearchPredictions

__all__ = ["DetectionArrays", "ImageDetections", "SplitPredictor", "predict_search_split"]

_T = TypeVar("_T")


class DetectionArrays(Protocol):
    """What ``detect`` returns per image: any object with these three array attributes."""

    @property
    def boxes(self) -> np.ndarray:
        """``[N, 4]`` float32 ``xyxy`` pixels of the original image."""

    @property
    def scores(self) -> np.ndarray:
        """``[N]`` float32 detection scores."""

    @property
    def embeddings(self) -> np.ndarray:
        """``[N, D]`` float32 L2-normalised embeddings (no score weighting applied)."""


@dataclass(frozen=True)
class ImageDetections:
    """One image's detections as numpy arrays (a ready-made :class:`DetectionArrays`).

    Attributes:
        boxes: ``[N, 4]`` float32 ``xyxy`` pixels of the original image.
        scores: ``[N]`` float32 detection scores.
        embeddings: ``[N, D]`` float32 L2-normalised embeddings.
    """

    boxes: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray


class SplitPredictor(Protocol):
    """A model as :func:`predict_search_split` drives it.

    ``Image`` below is whatever the predictor feeds itself (an RGB float tensor, a BGR
    uint8 array, ...); :func:`predict_search_split` only passes it back.
    """

    @property
    def embedding_dim(self) -> int | None:
        """Embedding width ``D``, or None if only the outputs tell.

        Used only to shape empty results (a split without queries).
        """

    def load_image(self, path: Path) -> Any:
        """Read the image file at ``path`` into the predictor's own image type."""

    def detect(self, images: list[Any]) -> Sequence[DetectionArrays]:
        """Detect and embed the people of ``B`` images, in one call (one batch).

        Args:
            images: ``B`` images from :meth:`load_image`.

        Returns:
            ``B`` per-image results (``boxes [N, 4]``, ``scores [N]``,
            ``embeddings [N, D]``, float32, boxes in original-image pixels).
        """

    def embed_boxes(self, images: list[Any], boxes: list[np.ndarray]) -> Sequence[np.ndarray]:
        """Embed given boxes without detection.

        Args:
            images: ``B`` images from :meth:`load_image`.
            boxes: ``B`` arrays ``[M_b, 4]`` float32 ``xyxy`` original-image pixels
                (``M_b`` may be 0 in ground-truth-box mode).

        Returns:
            ``B`` arrays ``[M_b, D]`` float32, L2-normalised.
        """


def _groups(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _as_arrays(found: DetectionArrays) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(found.boxes, dtype=np.float32),
        np.asarray(found.scores, dtype=np.float32),
        np.asarray(found.embeddings, dtype=np.float32),
    )


def _check_count(what: str, got: Sequence[Any], expected: int) -> None:
    if len(got) != expected:
        raise ValueError(f"the predictor's {what} returned {len(got)} results for {expected} images")


def predict_search_split(
    predictor: SplitPredictor,
    split: PersonSearchSplit,
    *,
    batch_size: int,
    query_context: bool = False,
    ground_truth_boxes: bool = False,
    progress: bool = True,
    source: str | None = None,
) -> SearchPredictions:
    """Detect and embed every gallery image of ``split`` and embed every query box.

    Args:
        predictor: The model, behind the :class:`SplitPredictor` protocol.
        split: A test split (gallery = ``split.images`` in dataset order, queries =
            ``split.queries``).
        batch_size: Gallery images per ``detect`` call (consecutive images of
            ``split.images``), and query images per ``embed_boxes`` call.
        query_context: Also record each query's CBGM context: its box first, then its
            image's detections in descending score order.
        ground_truth_boxes: Skip detection: embed the annotated gallery boxes and give
            each score 1.
        progress: Show tqdm progress bars.
        source: Where the predictions came from, for error messages; a description
            of the split when None.

    Returns:
        The predictions for ``split``, gallery and queries in the split's order.

    Raises:
        ValueError: ``batch_size`` below 1, ``ground_truth_boxes`` together with
            ``query_context`` (CBGM matches detections, which that mode does not make),
            or a predictor that returns the wrong number of results or rows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if ground_truth_boxes and query_context:
        raise ValueError("ground_truth_boxes and query_context (CBGM) do not combine: CBGM needs detections")
    names: list[str] = []
    boxes: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    # Gallery detections kept for the CBGM context of queries whose image is in the gallery.
    detections_by_name: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for group in tqdm(_groups(split.images, batch_size), desc="gallery", disable=not progress, leave=False):
        images = [predictor.load_image(record.path) for record in group]
        if ground_truth_boxes:
            truth = [record.boxes for record in group]
            found_embeddings = predictor.embed_boxes(images, truth)
            _check_count("embed_boxes", found_embeddings, len(group))
            for record, emb in zip(group, found_embeddings, strict=True):
                names.append(record.name)
                boxes.append(record.boxes)
                scores.append(np.ones(len(record.boxes), dtype=np.float32))
                embeddings.append(np.asarray(emb, dtype=np.float32))
            continue
        found = predictor.detect(images)
        _check_count("detect", found, len(group))
        for record, det in zip(group, found, strict=True):
            det_boxes, det_scores, det_embeddings = _as_arrays(det)
            names.append(record.name)
            boxes.append(det_boxes)
            scores.append(det_scores)
            embeddings.append(det_embeddings)
            if query_context:
                detections_by_name[record.name] = (det_boxes, det_scores, det_embeddings)

    query_array = _embed_queries(predictor, split, batch_size=batch_size, progress=progress)
    if len(query_array) == 0:
        # No queries: take the width from the gallery (or the predictor) so the arrays agree.
        declared = predictor.embedding_dim
        width = embeddings[0].shape[1] if embeddings else (declared if declared is not None else 0)
        query_array = np.zeros((0, width), dtype=np.float32)

    context_boxes = context_embeddings = None
    if query_context:
        context_boxes, context_embeddings = [], []
        for q, query in enumerate(split.queries):
            if query.name not in detections_by_name:
                single = predictor.detect([predictor.load_image(query.path)])
                _check_count("detect", single, 1)
                detections_by_name[query.name] = _as_arrays(single[0])
            det_boxes, det_scores, det_embeddings = detections_by_name[query.name]
            order = np.argsort(-det_scores, kind="stable")
            context_boxes.append(np.concatenate([query.box[None], det_boxes[order]]))
            context_embeddings.append(np.concatenate([query_array[q][None], det_embeddings[order]]))
    return SearchPredictions.from_per_image(
        names,
        boxes,
        scores,
        embeddings,
        query_array,
        query_context_boxes=context_boxes,
        query_context_embeddings=context_embeddings,
        source=source or f"predictions on {split.dataset} {split.split}",
    )


def _embed_queries(
    predictor: SplitPredictor, split: PersonSearchSplit, *, batch_size: int, progress: bool
) -> np.ndarray:
    """Embed every query box, the boxes of one image in one call.

    Returns:
        ``[Q, D]`` float32 rows in ``split.queries`` order (``[0, 0]`` without queries).
    """
    by_image: dict[str, list[int]] = {}
    for q, query in enumerate(split.queries):
        by_image.setdefault(query.name, []).append(q)
    rows: list[np.ndarray | None] = [None] * len(split.queries)
    image_names = list(by_image)
    for group in tqdm(_groups(image_names, batch_size), desc="queries", disable=not progress, leave=False):
        images = [predictor.load_image(split.queries[by_image[name][0]].path) for name in group]
        box_lists = [np.stack([split.queries[q].box for q in by_image[name]]) for name in group]
        found = predictor.embed_boxes(images, box_lists)
        _check_count("embed_boxes", found, len(group))
        for name, emb in zip(group, found, strict=True):
            emb = np.asarray(emb, dtype=np.float32)
            members = by_image[name]
            if emb.ndim != 2 or emb.shape[0] != len(members):
                raise ValueError(
                    f"the predictor's embed_boxes returned shape {emb.shape} for the {len(members)} "
                    f"query boxes of {name}; expected ({len(members)}, D)"
                )
            for q, row in zip(members, emb, strict=True):
                rows[q] = row
    if not rows:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack(rows).astype(np.float32)
