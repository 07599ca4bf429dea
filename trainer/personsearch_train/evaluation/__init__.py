"""Evaluation with the reference protocols (methods.md section 2, 5.3, 5.5).

Pure metric functions (detection AP/recall, CUHK-SYSU and PRW search, CBGM,
text-to-image R@k/mAP/mINP, mSD), evaluator objects over them, the predictions file
format and plots. Import the submodules directly; this package only re-exports the
names most callers need.
"""

from personsearch_train.evaluation.detection import DetectionResult, evaluate_detection
from personsearch_train.evaluation.person_search import (
    SearchResult,
    evaluate_search,
    evaluate_search_cuhk,
    evaluate_search_prw,
)
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.scoring import (
    EvalOptions,
    PersonSearchReport,
    evaluate_predictions,
    score_predictions,
)
from personsearch_train.evaluation.text_evaluator import TextRetrievalEvaluator
from personsearch_train.evaluation.text_retrieval import evaluate_text_to_image, mean_similarity_distribution

__all__ = [
    "DetectionResult",
    "EvalOptions",
    "PersonSearchReport",
    "SearchPredictions",
    "SearchResult",
    "evaluate_detection",
    "evaluate_predictions",
    "evaluate_search",
    "evaluate_search_cuhk",
    "evaluate_search_prw",
    "evaluate_text_to_image",
    "mean_similarity_distribution",
    "score_predictions",
    "TextRetrievalEvaluator",
]
