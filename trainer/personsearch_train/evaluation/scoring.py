"""Score a predictions file on a person-search test split: detection plus search.

:func:`evaluate_predictions` is the one entry point the ``personsearch eval`` command
(and anything that produces predictions from a model) calls; :func:`score_predictions`
returns its headline numbers; :class:`EvalOptions` carries the protocol choices of one
evaluation as a checked value.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import TrainerError
from personsearch_train.evaluation.detection import DEFAULT_DET_THRESH, DetectionResult, evaluate_detection
from personsearch_train.evaluation.person_search import (
    DEFAULT_MAX_RANK,
    EmptyQueryPolicy,
    SearchResult,
    evaluate_search,
    reference_integer_boxes,
)
from personsearch_train.evaluation.predictions import SearchPredictions

__all__ = [
    "SUMMARY_KEYS",
    "EvalOptions",
    "PersonSearchReport",
    "evaluate_detection_on_split",
    "evaluate_predictions",
    "evaluate_with_options",
    "score_predictions",
]

#: Keys of the summary dict, all fractions in [0, 1].
SUMMARY_KEYS = ("mAP", "top1", "top5", "top10", "det_ap", "det_recall")

#: CUHK-SYSU's standard gallery size (methods.md 2.1), the default everywhere.
DEFAULT_GALLERY_SIZE = 100


@dataclass(frozen=True)
class EvalOptions:
    """The protocol choices of one person-search evaluation, checked on construction.

    Attributes:
        dataset: Which protocol: ``"cuhk_sysu"`` or ``"prw"``.
        gallery_size: CUHK-SYSU gallery size (50 ... 4000, or -1 for the full set);
            PRW has none, so it must stay at the default there.
        multi_view: PRW multi-view gallery (the query camera's frames removed);
            PRW only.
        cbgm: Re-score with CBGM (needs the predictions' query-context arrays).
        cws: Rank by score-weighted similarity (detection score x cosine), as SeqNet's
            model does before its evaluator; False ranks by cosine alone.
        empty_queries: ``"skip"`` or ``"zero"`` for queries whose person is in no
            gallery image.

    Raises:
        TrainerError: An option that the dataset's protocol does not have, or an
            unknown ``empty_queries`` policy. The messages name the
            ``personsearch eval`` flags, which carry the same names.
    """

    dataset: str
    gallery_size: int = DEFAULT_GALLERY_SIZE
    multi_view: bool = False
    cbgm: bool = False
    cws: bool = True
    empty_queries: EmptyQueryPolicy = "skip"

    def __post_init__(self) -> None:
        if self.dataset == "prw" and self.gallery_size != DEFAULT_GALLERY_SIZE:
            raise TrainerError("--gallery-size is a CUHK-SYSU option; PRW uses all frames (or --multi-view)")
        if self.dataset == "cuhk_sysu" and self.multi_view:
            raise TrainerError("--multi-view is a PRW option; CUHK-SYSU uses --gallery-size")
        if self.empty_queries not in ("skip", "zero"):
            raise TrainerError(f"--empty-queries must be 'skip' or 'zero', got {self.empty_queries!r}")


@dataclass(frozen=True)
class PersonSearchReport:
    """Everything one evaluation produced.

    Attributes:
        search: Search metrics (mAP, CMC, per-query AP, skipped queries).
        detection: Detection AP and recall over the gallery (all people, ``det_thresh`` 0.01).
    """

    search: SearchResult
    detection: DetectionResult

    def summary(self) -> dict[str, float]:
        """``{"mAP", "top1", "top5", "top10", "det_ap", "det_recall"}`` as fractions in [0, 1]."""
        return {
            "mAP": float(self.search.mean_ap),
            "top1": self.search.top(1),
            "top5": self.search.top(5),
            "top10": self.search.top(10),
            "det_ap": float(self.detection.ap),
            "det_recall": float(self.detection.recall),
        }


def evaluate_detection_on_split(
    split: PersonSearchSplit, predictions: SearchPredictions, *, integer_gt: bool = True
) -> DetectionResult:
    """Detection AP/recall of aligned predictions against every annotated person of the split.

    Args:
        split: The test split.
        predictions: Predictions already aligned to ``split.images``.
        integer_gt: Truncate ground truth to whole pixels as the reference readers do.

    Returns:
        The :class:`DetectionResult`.
    """
    gt = [
        reference_integer_boxes(r.boxes, split.dataset) if integer_gt else r.boxes.astype(np.float64)
        for r in split.images
    ]
    slices = [predictions.image_slice(g) for g in range(predictions.num_gallery)]
    return evaluate_detection(
        gt,
        [predictions.det_boxes[s] for s in slices],
        [predictions.det_scores[s] for s in slices],
        det_thresh=DEFAULT_DET_THRESH,
    )


def evaluate_predictions(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    multi_view: bool = False,
    cbgm: bool = False,
    cws: bool = True,
    empty_queries: EmptyQueryPolicy = "skip",
    max_rank: int = DEFAULT_MAX_RANK,
) -> PersonSearchReport:
    """Run detection and search evaluation with the reference protocols.

    Args:
        split: CUHK-SYSU or PRW test split.
        predictions: Predictions for it (checked against it).
        gallery_size: CUHK-SYSU gallery size, -1 for the full set.
        multi_view: PRW multi-view gallery.
        cbgm: Re-score with CBGM (needs query-context arrays).
        cws: Rank by score-weighted similarity (score x cosine); False: cosine alone.
        empty_queries: ``"skip"`` (default) or ``"zero"`` for queries without ground truth.
        max_rank: Length of the CMC curve.

    Returns:
        The :class:`PersonSearchReport`.
    """
    aligned = predictions.aligned_to(split)
    search = evaluate_search(
        split,
        aligned,
        gallery_size=gallery_size,
        multi_view=multi_view,
        cbgm=cbgm,
        cws=cws,
        empty_queries=empty_queries,
        max_rank=max_rank,
    )
    return PersonSearchReport(search=search, detection=evaluate_detection_on_split(split, aligned))


def evaluate_with_options(
    split: PersonSearchSplit, predictions: SearchPredictions, options: EvalOptions
) -> PersonSearchReport:
    """:func:`evaluate_predictions` with the protocol choices of one :class:`EvalOptions`.

    Args:
        split: The test split of ``options.dataset``.
        predictions: Predictions for it.
        options: Gallery size, multi-view, CBGM, CWS and the empty-query policy.

    Returns:
        The :class:`PersonSearchReport`.
    """
    return evaluate_predictions(
        split,
        predictions,
        gallery_size=options.gallery_size,
        multi_view=options.multi_view,
        cbgm=options.cbgm,
        cws=options.cws,
        empty_queries=options.empty_queries,
    )


def score_predictions(
    split: PersonSearchSplit,
    predictions: SearchPredictions,
    *,
    gallery_size: int = DEFAULT_GALLERY_SIZE,
    multi_view: bool = False,
    cbgm: bool = False,
    cws: bool = True,
) -> dict[str, float]:
    """Headline numbers of :func:`evaluate_predictions`.

    Args:
        split: CUHK-SYSU or PRW test split.
        predictions: Predictions for it.
        gallery_size: CUHK-SYSU gallery size, -1 for the full set.
        multi_view: PRW multi-view gallery.
        cbgm: Re-score with CBGM.
        cws: Rank by score-weighted similarity (score x cosine); False: cosine alone.

    Returns:
        ``{"mAP", "top1", "top5", "top10", "det_ap", "det_recall"}``, fractions in [0, 1].
    """
    report = evaluate_predictions(
        split, predictions, gallery_size=gallery_size, multi_view=multi_view, cbgm=cbgm, cws=cws
    )
    return report.summary()
