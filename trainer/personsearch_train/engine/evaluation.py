"""The evaluation step of training: a method's inference fed to any evaluator.

:func:`run_evaluation` is what the trainer calls every ``eval.every`` epochs:
``reset()``, then ``process()`` for each item the method's ``inference`` yields, then
``evaluate()``, the protocol of the evaluators in :mod:`personsearch_train.evaluation`.
:class:`SearchSplitEvaluator` is the default evaluator of person-search methods: it takes
whole-split :class:`~personsearch_train.evaluation.predictions.SearchPredictions` and scores
them with the exact protocol of the dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import TrainerError
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.scoring import EvalOptions

if TYPE_CHECKING:
    from personsearch_train.engine.config import ExperimentConfig
    from personsearch_train.methods.base import Evaluator, TrainingMethod

__all__ = ["SearchSplitEvaluator", "run_evaluation"]


class SearchSplitEvaluator:
    """Person-search scores of predictions on one test split, in the evaluator protocol.

    Args:
        split: The CUHK-SYSU- or PRW-style test split.
        options: The protocol's choices (gallery size, multi-view, CBGM, CWS).
    """

    def __init__(self, split: PersonSearchSplit, options: EvalOptions) -> None:
        self.split = split
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Forget the predictions processed so far."""
        self.predictions: SearchPredictions | None = None

    def process(self, outputs: SearchPredictions) -> None:
        """Take the predictions of the whole split (one call per evaluation).

        Raises:
            TrainerError: Not a ``SearchPredictions``, or a second call before ``reset``.
        """
        if not isinstance(outputs, SearchPredictions):
            raise TrainerError(
                f"{type(self).__name__} scores SearchPredictions of a whole split, "
                f"got {type(outputs).__name__}"
            )
        if self.predictions is not None:
            raise TrainerError(
                f"{type(self).__name__} takes one split's predictions per evaluation; call reset()"
            )
        self.predictions = outputs

    def evaluate(self) -> dict[str, float]:
        """``mAP, top1, top5, top10, det_ap, det_recall`` (fractions) of the processed predictions."""
        from personsearch_train.evaluation.scoring import evaluate_with_options

        if self.predictions is None:
            raise TrainerError(f"{type(self).__name__}.evaluate() before any process()")
        return evaluate_with_options(self.split, self.predictions, self.options).summary()

    def save(self, path: Path) -> Path:
        """Write the processed predictions as a predictions file (``.npz``) at ``path``."""
        if self.predictions is None:
            raise TrainerError(f"{type(self).__name__}.save() before any process()")
        return self.predictions.save(path)


def run_evaluation(
    method: TrainingMethod,
    model: nn.Module,
    test_data: Any,
    evaluator: Evaluator,
    cfg: ExperimentConfig,
    *,
    device: torch.device,
    progress: bool = True,
) -> dict[str, float]:
    """Score ``model`` on ``test_data`` with ``evaluator``, fed by the method's inference.

    Args:
        method: The training method (its ``inference`` runs the model).
        model: The model (switched to eval mode for the pass and back afterwards).
        test_data: What the method's ``build_test_data`` returned.
        evaluator: Any object with ``reset()``, ``process(outputs)`` and ``evaluate()``.
        cfg: The experiment config (``eval`` settings).
        device: Where the model runs.
        progress: Show progress bars.

    Returns:
        The evaluator's scores.
    """
    was_training = model.training
    model.eval()
    try:
        evaluator.reset()
        with torch.no_grad():
            for outputs in method.inference(model, test_data, cfg, device=device, progress=progress):
                evaluator.process(outputs)
        scores = evaluator.evaluate()
    finally:
        model.train(was_training)
    return {str(k): float(v) for k, v in scores.items()}
