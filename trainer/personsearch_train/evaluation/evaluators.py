"""Evaluator objects: accumulate model outputs batch by batch, then score them.

Each evaluator follows the ``reset() / process(...) / evaluate()`` pattern of
detectron2-style evaluation loops, and does no metric arithmetic of its own: it
collects arrays and calls the pure functions of this package.
"""

from __future__ import annotations

import numpy as np

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import PredictionsFormatError
from personsearch_train.evaluation.detection import DEFAULT_DET_THRESH, DetectionResult, evaluate_detection
from personsearch_train.evaluation.person_search import EmptyQueryPolicy
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.scoring import PersonSearchReport, evaluate_predictions

__all__ = ["DetectionEvaluator", "PersonSearchEvaluator"]


class DetectionEvaluator:
    """Detection AP/recall over images processed one by one (methods.md 2.3).

    Args:
        det_thresh: Detections scoring below this are dropped.
        iou_thresh: Minimum IoU of a match.
        labeled_only: Score only labelled people.
    """

    def __init__(
        self, *, det_thresh: float = DEFAULT_DET_THRESH, iou_thresh: float = 0.5, labeled_only: bool = False
    ) -> None:
        self.det_thresh = det_thresh
        self.iou_thresh = iou_thresh
        self.labeled_only = labeled_only
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._gt: list[np.ndarray] = []
        self._pids: list[np.ndarray] = []
        self._boxes: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []

    def process(
        self, gt_boxes: np.ndarray, gt_pids: np.ndarray, det_boxes: np.ndarray, det_scores: np.ndarray
    ) -> None:
        """Add one image.

        Args:
            gt_boxes: ``[M, 4]`` float32 ``xyxy`` ground truth.
            gt_pids: ``[M]`` int64 person ids (-1 unlabelled).
            det_boxes: ``[N, 4]`` float32 ``xyxy`` detections.
            det_scores: ``[N]`` float32 scores.
        """
        self._gt.append(np.asarray(gt_boxes, np.float32).reshape(-1, 4))
        self._pids.append(np.asarray(gt_pids, np.int64).reshape(-1))
        self._boxes.append(np.asarray(det_boxes, np.float32).reshape(-1, 4))
        self._scores.append(np.asarray(det_scores, np.float32).reshape(-1))

    def evaluate(self) -> DetectionResult:
        """Score the images processed since the last reset."""
        return evaluate_detection(
            self._gt,
            self._boxes,
            self._scores,
            gt_pids=self._pids,
            labeled_only=self.labeled_only,
            det_thresh=self.det_thresh,
            iou_thresh=self.iou_thresh,
        )


class PersonSearchEvaluator:
    """Collect gallery detections and query embeddings, then run the exact protocol.

    Args:
        split: The CUHK-SYSU or PRW test split.
        gallery_size: CUHK-SYSU gallery size (-1 = full set).
        multi_view: PRW multi-view gallery.
        cbgm: Re-score with CBGM (then every query needs a context, see :meth:`process_query`).
        cws: Score-weighted similarities.
        empty_queries: ``"skip"`` or ``"zero"`` for queries without ground truth.
    """

    def __init__(
        self,
        split: PersonSearchSplit,
        *,
        gallery_size: int = 100,
        multi_view: bool = False,
        cbgm: bool = False,
        cws: bool = True,
        empty_queries: EmptyQueryPolicy = "skip",
    ) -> None:
        self.split = split
        self.gallery_size = gallery_size
        self.multi_view = multi_view
        self.cbgm = cbgm
        self.cws = cws
        self.empty_queries = empty_queries
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._gallery: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._queries: dict[int, np.ndarray] = {}
        self._contexts: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def process_gallery(
        self, name: str, boxes: np.ndarray, scores: np.ndarray, embeddings: np.ndarray
    ) -> None:
        """Add one gallery image's output.

        Args:
            name: Image name as in ``split.images``.
            boxes: ``[N, 4]`` float32 ``xyxy`` detections.
            scores: ``[N]`` float32 scores.
            embeddings: ``[N, D]`` float32 L2-normalised embeddings (no CWS applied).
        """
        self._gallery[name] = (
            np.asarray(boxes, np.float32).reshape(-1, 4),
            np.asarray(scores, np.float32).reshape(-1),
            np.asarray(embeddings, np.float32),
        )

    def process_query(
        self,
        index: int,
        embedding: np.ndarray,
        context_boxes: np.ndarray | None = None,
        context_embeddings: np.ndarray | None = None,
    ) -> None:
        """Add one query's output.

        Args:
            index: Position of the query in ``split.queries``.
            embedding: ``[D]`` float32 L2-normalised embedding of the query box.
            context_boxes: ``[m, 4]`` float32 query image detections, query box first (CBGM).
            context_embeddings: ``[m, D]`` float32 their embeddings.
        """
        self._queries[int(index)] = np.asarray(embedding, np.float32).reshape(-1)
        if context_boxes is not None and context_embeddings is not None:
            self._contexts[int(index)] = (
                np.asarray(context_boxes, np.float32),
                np.asarray(context_embeddings),
            )

    def predictions(self) -> SearchPredictions:
        """Everything processed, as a checked :class:`SearchPredictions` in dataset order.

        Raises:
            PredictionsFormatError: If a gallery image or query has not been processed.
        """
        missing = [r.name for r in self.split.images if r.name not in self._gallery]
        if missing:
            raise PredictionsFormatError(
                f"{len(missing)} gallery images were not processed (first: {missing[0]!r})"
            )
        absent = [q for q in range(len(self.split.queries)) if q not in self._queries]
        if absent:
            raise PredictionsFormatError(
                f"{len(absent)} queries were not processed (first: query {absent[0]})"
            )
        names = [r.name for r in self.split.images]
        outputs = [self._gallery[n] for n in names]
        context: dict[str, list[np.ndarray]] = {}
        if len(self._contexts) == len(self.split.queries) and self._contexts:
            context = {
                "query_context_boxes": [self._contexts[q][0] for q in range(len(self.split.queries))],
                "query_context_embeddings": [self._contexts[q][1] for q in range(len(self.split.queries))],
            }
        return SearchPredictions.from_per_image(
            names,
            [o[0] for o in outputs],
            [o[1] for o in outputs],
            [o[2] for o in outputs],
            np.stack([self._queries[q] for q in range(len(self.split.queries))]),
            source="PersonSearchEvaluator",
            **context,
        )

    def evaluate(self) -> PersonSearchReport:
        """Run detection and search evaluation on everything processed."""
        return evaluate_predictions(
            self.split,
            self.predictions(),
            gallery_size=self.gallery_size,
            multi_view=self.multi_view,
            cbgm=self.cbgm,
            cws=self.cws,
            empty_queries=self.empty_queries,
        )
