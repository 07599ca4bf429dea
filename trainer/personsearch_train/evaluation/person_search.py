"""Person-search mAP and CMC top-k with the reference semantics (methods.md 2.4, 2.5, 2.8).

Both protocols follow SeqNet's ``eval_search_cuhk`` / ``eval_search_prw`` (the
numbers modern papers report), quirks included:

* gallery detections scoring below ``det_thresh = 0.5`` are dropped first; an image
  with none left is absent;
* similarity = gallery embedding · query embedding, the gallery embedding multiplied
  by its detection score first (confidence-weighted similarity, CWS; ``cws=False``
  turns it off);
* for every gallery image of the query, ``count_gt`` grows by one if the query
  person is in that image, *before* checking whether the image has detections, so
  missed people lower recall;
* in an image holding the person, its detections are sorted by similarity and only
  the **first** one whose IoU with the ground truth reaches
  ``min(0.5, w·h / ((w+10)·(h+10)))`` is positive (``w``, ``h`` of the ground-truth
  box); every other detection anywhere is negative;
* per query ``AP = average_precision_score(y_true, y_score) × count_tp / count_gt``,
  or 0 when nothing is found; top-k = whether a positive is among the ``k`` highest
  similarities (no recall scaling); mAP and top-k are plain means over queries.

CUHK-SYSU walks the ``TestG{N}`` gallery list of each query in order; an image listed
twice adds to ``count_gt`` twice but is scored once, as in the reference. The full-set
protocol (``gallery_size=-1``) walks the ``TestG50`` list and then appends every other
pool image with detections (not the query image, not one already visited) as pure
negatives. That is the original OIM code's behaviour and the evident intent of
SeqNet's copy, whose full-set branch cannot run as published (it reads an attribute
its dataset class does not have). CBGM is not defined for the full set.

PRW's gallery is every test frame except the query frame (*all-gallery*); the
*multi-view* variant also removes every frame of the query's camera. The ground
truth in a frame is the first box of the query's identity.

**Queries without ground truth.** A query whose person appears in no frame of its
gallery (possible in PRW multi-view, and in small synthetic sets) has no defined AP:
the reference divides by zero. We **skip** such queries by default, like the usual
re-id convention (Market-1501 evaluation skips queries with no valid gallery match):
they are left out of mAP and top-k and listed in :attr:`SearchResult.skipped`. With
``empty_queries="zero"`` they instead count as AP 0 and top-k 0.

Ground-truth boxes are truncated to whole pixels as the reference readers store them
(``integer_gt=True``): CUHK-SYSU truncates ``x, y, w, h`` separately, PRW truncates the
corners. With integer annotations, as in both real datasets' protocol files, this
changes nothing.

Ties in similarity are broken exactly as the reference does, with
``np.argsort(scores)[::-1]`` on float32 scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.metrics import average_precision_score

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import PredictionsFormatError, TrainerError
from personsearch_train.evaluation.cbgm import CBGM_PARAMS, apply_cbgm
from personsearch_train.evaluation.detection import box_iou
from personsearch_train.evaluation.predictions import SearchPredictions

__all__ = [
    "DEFAULT_MAX_RANK",
    "SEARCH_DET_THRESH",
    "EmptyQueryPolicy",
    "SearchResult",
    "evaluate_search",
    "evaluate_search_cuhk",
    "evaluate_search_prw",
    "gather_rows",
    "query_average_precision",
    "reference_integer_boxes",
    "small_box_iou_threshold",
    "topk_hits",
]

#: Detection score threshold applied before search (SeqNet ``det_thresh``).
SEARCH_DET_THRESH = 0.5
#: Ranks kept for the CMC curve.
DEFAULT_MAX_RANK = 50
#: Largest allowed gap (pixels) between a query box and its context row 0 (CBGM).
_CONTEXT_BOX_TOLERANCE = 1.0

#: Queries whose similarities are computed in one matrix product.
_QUERY_BLOCK = 64

EmptyQueryPolicy = Literal["skip", "zero"]


@dataclass(frozen=True)
class SearchResult:
    """Search metrics of one protocol run.

    Attributes:
        mean_ap: mAP in [0, 1] over the scored queries.
        cmc: ``[max_rank]`` float64, ``cmc[k-1]`` = top-k accuracy in [0, 1].
        average_precisions: ``[Q]`` float64 per-query AP; NaN for skipped queries.
        hits: ``[Q, max_rank]`` bool per-query top-k hits (False rows for skipped queries).
        skipped: Indices of queries with no ground truth in their gallery that were skipped.
        protocol: Short description, e.g. ``"cuhk_sysu gallery 100"``.
    """

    mean_ap: float
    cmc: np.ndarray
    average_precisions: np.ndarray
    hits: np.ndarray
    skipped: tuple[int, ...] = ()
    protocol: str = ""

    def top(self, k: int) -> float:
        """Top-k accuracy in [0, 1]."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"top-{k} is outside the computed CMC (1..{len(self.cmc)})")
        return float(self.cmc[k - 1])

    @property
    def num_scored(self) -> int:
        """Number of queries that entered mAP and top-k."""
        return int(len(self.average_precisions) - len(self.skipped))


def small_box_iou_threshold(width: float, height: float) -> float:
    """IoU a detection needs to match a ground-truth box of this size.

    ``min(0.5, w·h / ((w+10)·(h+10)))``: small people get a looser threshold.

    Args:
        width: Ground-truth width in pixels.
        height: Ground-truth height in pixels.

    Returns:
        The threshold.
    """
    return float(min(0.5, (width * height * 1.0) / ((width + 10) * (height + 10))))


def reference_integer_boxes(boxes: np.ndarray, dataset: str) -> np.ndarray:
    """Truncate ground-truth boxes to whole pixels the way the reference readers do.

    Args:
        boxes: ``[M, 4]`` float ``xyxy``.
        dataset: ``"cuhk_sysu"`` (truncates ``x, y, w, h``, then adds) or anything else
            (truncates the corners, as SeqNet's PRW reader).

    Returns:
        ``[M, 4]`` float64 ``xyxy`` with integer values.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if dataset == "cuhk_sysu":
        xy = np.trunc(boxes[:, :2])
        wh = np.trunc(boxes[:, 2:] - boxes[:, :2])
        return np.concatenate([xy, xy + wh], axis=1)
    return np.trunc(boxes)


def query_average_precision(y_true: np.ndarray, y_score: np.ndarray, count_tp: int, count_gt: int) -> float:
    """Recall-scaled AP of one query: 0 without a true positive, else sklearn AP × recall.

    Args:
        y_true: ``[T]`` int labels of every scored detection.
        y_score: ``[T]`` float32 similarities.
        count_tp: Positives found.
        count_gt: Gallery images holding the person.

    Returns:
        The AP in [0, 1].
    """
    if count_tp == 0:
        return 0.0
    return float(average_precision_score(y_true, y_score)) * (count_tp * 1.0 / count_gt)


def topk_hits(y_true: np.ndarray, y_score: np.ndarray, max_rank: int) -> np.ndarray:
    """CMC hits of one query: ``hits[k-1] = min(1, positives among the k best)``.

    Args:
        y_true: ``[T]`` int labels.
        y_score: ``[T]`` float32 similarities.
        max_rank: Number of ranks.

    Returns:
        ``[max_rank]`` bool.
    """
    hits = np.zeros(max_rank, dtype=bool)
    if len(y_true) == 0:
        return hits
    order = np.argsort(y_score)[::-1]
    found = np.cumsum(np.asarray(y_true)[order][:max_rank]) > 0
    hits[: len(found)] = found
    hits[len(found) :] = found[-1]
    return hits


def gather_rows(offsets: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of a CSR-style array belonging to a list of images, in that order.

    Args:
        offsets: ``[G+1]`` int64 offsets (image ``g`` owns ``offsets[g]:offsets[g+1]``).
        images: ``[I]`` int64 image indices.

    Returns:
        ``(rows [T] int64, segment_starts [I] int64, segment_lengths [I] int64)``, where
        image ``images[i]`` occupies ``rows[segment_starts[i]:segment_starts[i]+segment_lengths[i]]``.
    """
    images = np.asarray(images, dtype=np.int64)
    starts = offsets[images]
    lengths = offsets[images + 1] - starts
    seg_starts = np.cumsum(lengths) - lengths
    rows = np.repeat(starts - seg_starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return rows, seg_starts, lengths


class _Gallery:
    """Gallery detections kept for search, aligned with ``split.images``."""

    def __init__(self, predictions: SearchPredictions, det_thresh: float, cws: bool) -> None:
        keep = predictions.det_scores >= det_thresh
        image_of = np.repeat(np.arange(predictions.num_gallery), np.diff(predictions.det_offsets))
        counts = np.bincount(image_of[keep], minlength=predictions.num_gallery)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.boxes = predictions.det_boxes[keep]
        embeddings = predictions.det_embeddings[keep]
        if cws:
            embeddings = embeddings * predictions.det_scores[keep][:, None]
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.has_dets = counts > 0


@dataclass
class _QueryCase:
    """What one query is scored on."""

    visited: list[int]  # gallery image indices scored with labels, unique, each with detections
    ground_truth: dict[int, np.ndarray]  # image index -> [4] float64 integer-valued xyxy
    count_gt: int
    negatives: np.ndarray  # image indices appended before the visited ones as pure negatives


def _score_case(
    gallery: _Gallery,
    all_sims: np.ndarray,
    case: _QueryCase,
    *,
    max_rank: int,
    context: np.ndarray | None,
    k1: int,
    k2: int,
) -> tuple[float, np.ndarray, int]:
    rows, seg_starts, seg_lengths = gather_rows(gallery.offsets, np.asarray(case.visited, dtype=np.int64))
    sims = all_sims[rows]
    if context is not None:
        sims = apply_cbgm(
            sims, seg_starts, seg_lengths, gallery.embeddings, context, k1=k1, k2=k2, embedding_rows=rows
        )
    labels = np.zeros(len(sims), dtype=np.int32)
    count_tp = 0
    visited = np.asarray(case.visited, dtype=np.int64)
    for image, gt in case.ground_truth.items():
        found = np.flatnonzero(visited == image)
        if len(found) == 0:  # no kept detection in that image
            continue
        position = int(found[0])
        start, length = int(seg_starts[position]), int(seg_lengths[position])
        segment = slice(start, start + length)
        order = np.argsort(sims[segment])[::-1]
        sims[segment] = sims[segment][order]
        ious = box_iou(gallery.boxes[rows[segment]][order], gt[None, :])[:, 0]
        threshold = small_box_iou_threshold(gt[2] - gt[0], gt[3] - gt[1])
        matched = np.flatnonzero(ious >= threshold)
        if len(matched):
            labels[start + int(matched[0])] = 1
            count_tp += 1
    if len(case.negatives):
        neg_rows, _, _ = gather_rows(gallery.offsets, case.negatives)
        neg_sims = all_sims[neg_rows]
        # The reference appends full-set negatives before the labelled images.
        sims = np.concatenate([neg_sims, sims])
        labels = np.concatenate([np.zeros(len(neg_sims), dtype=np.int32), labels])
    ap = query_average_precision(labels, sims, count_tp, case.count_gt)
    return ap, topk_hits(labels, sims, max_rank), count_tp


def _context_for(predictions: SearchPredictions, split: PersonSearchSplit, q: int) -> np.ndarray:
    boxes, embeddings = predictions.query_context(q)
    query_box = split.queries[q].box
    if np.max(np.abs(boxes[0] - query_box)) > _CONTEXT_BOX_TOLERANCE:
        raise PredictionsFormatError(
            f"{predictions.source}: 'query_context_boxes' row 0 of query {q} is {boxes[0].tolist()} "
            f"but the query box is {query_box.tolist()}; the query box must be forced first in its context"
        )
    return embeddings


def _run_protocol(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    cases: list[_QueryCase],
    *,
    cbgm: bool,
    k1: int,
    k2: int,
    det_thresh: float,
    cws: bool,
    empty_queries: EmptyQueryPolicy,
    max_rank: int,
    protocol: str,
) -> SearchResult:
    if empty_queries not in ("skip", "zero"):
        raise ValueError(f"empty_queries must be 'skip' or 'zero', got {empty_queries!r}")
    gallery = _Gallery(predictions, det_thresh, cws)
    aps = np.full(len(cases), np.nan)
    hits = np.zeros((len(cases), max_rank), dtype=bool)
    skipped: list[int] = []
    block: np.ndarray | None = None
    for q, case in enumerate(cases):
        if q % _QUERY_BLOCK == 0:
            # Similarities to every kept detection, a block of queries at a time (one matrix product
            # instead of gathering embeddings per query and image).
            block = gallery.embeddings @ predictions.query_embeddings[q : q + _QUERY_BLOCK].T
        if case.count_gt == 0:
            if empty_queries == "skip":
                skipped.append(q)
            else:
                aps[q] = 0.0
            continue
        context = _context_for(predictions, split, q) if cbgm else None
        aps[q], hits[q], _ = _score_case(
            gallery,
            np.ascontiguousarray(block[:, q % _QUERY_BLOCK], dtype=np.float32),
            case,
            max_rank=max_rank,
            context=context,
            k1=k1,
            k2=k2,
        )
    scored = np.setdiff1d(np.arange(len(cases)), np.asarray(skipped, dtype=np.int64))
    if len(scored) == 0:
        raise TrainerError(
            f"{protocol}: no query has its person in any image of its gallery, so search metrics are "
            "undefined; check the dataset's annotations"
        )
    return SearchResult(
        mean_ap=float(np.mean(aps[scored])),
        cmc=hits[scored].mean(axis=0),
        average_precisions=aps,
        hits=hits,
        skipped=tuple(int(s) for s in skipped),
        protocol=protocol,
    )


def evaluate_search_cuhk(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    *,
    gallery_size: int = 100,
    cbgm: bool = False,
    det_thresh: float = SEARCH_DET_THRESH,
    cws: bool = True,
    integer_gt: bool = True,
    empty_queries: EmptyQueryPolicy = "skip",
    max_rank: int = DEFAULT_MAX_RANK,
) -> SearchResult:
    """CUHK-SYSU search metrics for one gallery size or the full set.

    Args:
        split: The CUHK-SYSU test split (``galleries`` filled by the reader).
        predictions: Predictions for that split (any gallery order).
        gallery_size: One of the sizes in ``split.galleries`` (50 ... 4000), or -1
            for the full set.
        cbgm: Re-score with CBGM (k1 = 10, k2 = 3); needs the query-context arrays.
        det_thresh: Gallery detections below this score are ignored.
        cws: Multiply gallery embeddings by their detection score.
        integer_gt: Truncate ground-truth boxes as the reference reader does.
        empty_queries: ``"skip"`` or ``"zero"`` for queries without ground truth.
        max_rank: Length of the CMC curve.

    Returns:
        The :class:`SearchResult`.

    Raises:
        PredictionsFormatError: Predictions that do not fit the split.
        TrainerError: Unknown gallery size, or CBGM with the full set.
    """
    predictions = predictions.aligned_to(split)
    full_set = gallery_size == -1
    list_size = 50 if full_set else gallery_size
    if list_size not in split.galleries:
        sizes = ", ".join(str(s) for s in sorted(split.galleries)) or "none"
        raise TrainerError(
            f"CUHK-SYSU gallery size {gallery_size} is not available in {split.root} "
            f"(sizes: {sizes}; -1 = full set)"
        )
    if full_set and cbgm:
        raise TrainerError(
            "CBGM is not defined for the CUHK-SYSU full-set protocol (the reference lacks it too)"
        )
    index = split.image_index()
    has_dets = _Gallery(predictions, det_thresh, cws=False).has_dets
    cases: list[_QueryCase] = []
    for q, query in enumerate(split.queries):
        gallery_list = split.galleries[list_size][q]
        visited: list[int] = []
        seen: set[int] = set()
        truth: dict[int, np.ndarray] = {}
        count_gt = 0
        for entry in gallery_list:
            count_gt += entry.box is not None
            g = index.get(entry.name)
            # An image outside the pool has no detections, as in the reference (counted, then skipped).
            if g is None or not has_dets[g] or g in seen:
                continue
            seen.add(g)
            visited.append(g)
            if entry.box is not None:
                box = np.asarray(entry.box, dtype=np.float64).reshape(1, 4)
                truth[g] = (reference_integer_boxes(box, "cuhk_sysu") if integer_gt else box)[0]
        negatives = np.zeros(0, dtype=np.int64)
        if full_set:
            remaining = has_dets.copy()
            remaining[list(seen)] = False
            if query.name in index:
                remaining[index[query.name]] = False
            negatives = np.flatnonzero(remaining)
        cases.append(_QueryCase(visited=visited, ground_truth=truth, count_gt=count_gt, negatives=negatives))
    k1, k2 = CBGM_PARAMS["cuhk_sysu"]
    return _run_protocol(
        split,
        predictions,
        cases,
        cbgm=cbgm,
        k1=k1,
        k2=k2,
        det_thresh=det_thresh,
        cws=cws,
        empty_queries=empty_queries,
        max_rank=max_rank,
        protocol=f"cuhk_sysu {'full set' if full_set else f'gallery {gallery_size}'}",
    )


def evaluate_search_prw(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    *,
    multi_view: bool = False,
    cbgm: bool = False,
    det_thresh: float = SEARCH_DET_THRESH,
    cws: bool = True,
    integer_gt: bool = True,
    empty_queries: EmptyQueryPolicy = "skip",
    max_rank: int = DEFAULT_MAX_RANK,
) -> SearchResult:
    """PRW search metrics, all-gallery (default) or multi-view.

    Args:
        split: The PRW test split (camera ids filled).
        predictions: Predictions for that split.
        multi_view: Remove the query camera's frames from the gallery.
        cbgm: Re-score with CBGM (k1 = 30, k2 = 4); needs the query-context arrays.
        det_thresh: Gallery detections below this score are ignored.
        cws: Multiply gallery embeddings by their detection score.
        integer_gt: Truncate ground-truth corners as the reference reader does.
        empty_queries: ``"skip"`` or ``"zero"`` for queries without ground truth.
        max_rank: Length of the CMC curve.

    Returns:
        The :class:`SearchResult`.
    """
    predictions = predictions.aligned_to(split)
    has_dets = _Gallery(predictions, det_thresh, cws=False).has_dets
    cameras = np.asarray([record.camera for record in split.images])
    index = split.image_index()
    by_pid: dict[int, list[int]] = {}
    for g, record in enumerate(split.images):
        for pid in np.unique(record.pids):
            by_pid.setdefault(int(pid), []).append(g)
    cases: list[_QueryCase] = []
    for query in split.queries:
        in_gallery = np.ones(len(split.images), dtype=bool)
        if query.name in index:
            in_gallery[index[query.name]] = False
        if multi_view:
            in_gallery &= cameras != query.camera
        truth: dict[int, np.ndarray] = {}
        for g in by_pid.get(int(query.pid), []):
            if in_gallery[g]:
                record = split.images[g]
                box = record.boxes[record.pids == query.pid][:1].astype(np.float64)
                truth[g] = (reference_integer_boxes(box, "prw") if integer_gt else box)[0]
        visited = np.flatnonzero(in_gallery & has_dets).tolist()
        cases.append(
            _QueryCase(
                visited=visited, ground_truth=truth, count_gt=len(truth), negatives=np.zeros(0, np.int64)
            )
        )
    k1, k2 = CBGM_PARAMS["prw"]
    return _run_protocol(
        split,
        predictions,
        cases,
        cbgm=cbgm,
        k1=k1,
        k2=k2,
        det_thresh=det_thresh,
        cws=cws,
        empty_queries=empty_queries,
        max_rank=max_rank,
        protocol=f"prw {'multi-view' if multi_view else 'all-gallery'}",
    )


def evaluate_search(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    *,
    gallery_size: int = 100,
    multi_view: bool = False,
    cbgm: bool = False,
    **options: object,
) -> SearchResult:
    """Run the search protocol that fits ``split.dataset``.

    Args:
        split: A CUHK-SYSU or PRW test split.
        predictions: Predictions for it.
        gallery_size: CUHK-SYSU gallery size (-1 = full set); ignored for PRW.
        multi_view: PRW multi-view gallery; refused for CUHK-SYSU.
        cbgm: Use CBGM.
        **options: Passed on (``det_thresh``, ``cws``, ``integer_gt``, ``empty_queries``, ``max_rank``).

    Returns:
        The :class:`SearchResult`.
    """
    if split.dataset == "cuhk_sysu":
        if multi_view:
            raise TrainerError("--multi-view is a PRW protocol; CUHK-SYSU uses --gallery-size")
        return evaluate_search_cuhk(split, predictions, gallery_size=gallery_size, cbgm=cbgm, **options)
    if split.dataset == "prw":
        return evaluate_search_prw(split, predictions, multi_view=multi_view, cbgm=cbgm, **options)
    raise TrainerError(f"no person-search protocol for dataset {split.dataset!r} (expected cuhk_sysu or prw)")
