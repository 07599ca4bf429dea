"""Run a PyTorch model over a person-search test split and produce a predictions object.

The loop itself (gallery batches, ground-truth-box mode, query grouping, CBGM context)
is :func:`personsearch_train.evaluation.split_prediction.predict_search_split`, shared
with the runtime and the baselines; this module adapts a model with the trainer's
``predict`` / ``embed_boxes`` API to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.torch_dataset import read_image
from personsearch_train.evaluation.predictions import SearchPredictions
from personsearch_train.evaluation.split_prediction import ImageDetections, predict_search_split

__all__ = ["TorchSplitPredictor", "predict_split"]


class TorchSplitPredictor:
    """A model with ``predict`` and ``embed_boxes`` behind the ``SplitPredictor`` protocol.

    Args:
        model: The model (already in eval mode; gradients are off around the calls).
        device: Where its images and boxes go.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device

    @property
    def embedding_dim(self) -> int | None:
        """The model's embedding width if it declares one (SeqNet does), else None."""
        dim = getattr(self.model, "embedding_dim", None)
        return None if dim is None else int(dim)

    def load_image(self, path: Path) -> torch.Tensor:
        """Read ``path`` as a ``[3, H, W]`` float32 RGB tensor in [0, 1] on the device."""
        return read_image(path).to(self.device)

    def detect(self, images: list[torch.Tensor]) -> list[ImageDetections]:
        """Run ``model.predict`` on one batch; float32 numpy results on the host."""
        results = []
        for det in self.model.predict(images):
            det = det.to("cpu")
            results.append(
                ImageDetections(
                    boxes=det.boxes.float().numpy(),
                    scores=det.scores.float().numpy(),
                    embeddings=det.embeddings.float().numpy(),
                )
            )
        return results

    def embed_boxes(self, images: list[torch.Tensor], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run ``model.embed_boxes``; ``[M_b, D]`` float32 numpy rows per image."""
        # A copy, so the model never holds a view of the split's annotations.
        tensors = [torch.from_numpy(np.array(b, dtype=np.float32)).to(self.device) for b in boxes]
        return [emb.float().cpu().numpy() for emb in self.model.embed_boxes(images, tensors)]


@torch.no_grad()
def predict_split(
    model: nn.Module,
    split: PersonSearchSplit,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 2,
    query_context: bool = False,
    ground_truth_boxes: bool = False,
    progress: bool = True,
) -> SearchPredictions:
    """Detect and embed every gallery image, and embed every query box.

    The model is switched to eval mode for the run and back to its previous mode after.

    Args:
        model: A model with ``predict(images) -> list[Detections]`` and
            ``embed_boxes(images, boxes) -> list[Tensor[M, D]]``.
        split: A test split (gallery = ``split.images`` in dataset order).
        device: Where to run the model.
        batch_size: Images per forward pass (``batch_size`` consecutive gallery images
            per ``predict`` call; the RPN's top-N depends on the batch).
        query_context: Also run detection on every query image and record the
            query box (first) plus the image's detections in descending score order,
            for CBGM.
        ground_truth_boxes: Skip detection: embed the annotated gallery boxes with
            ``embed_boxes`` and give each score 1. Person-search papers report this
            "with ground-truth boxes" figure to separate re-id quality from detection.
        progress: Show tqdm progress bars.

    Returns:
        The model's predictions for ``split``, ready to score or save.

    Raises:
        ValueError: for ``ground_truth_boxes`` together with ``query_context`` (CBGM
            matches detections, which that mode does not produce).
    """
    was_training = model.training
    model.eval()
    try:
        return predict_search_split(
            TorchSplitPredictor(model, torch.device(device)),
            split,
            batch_size=batch_size,
            query_context=query_context,
            ground_truth_boxes=ground_truth_boxes,
            progress=progress,
            source=(
                f"model embeddings of the ground-truth boxes of {split.dataset} {split.split}"
                if ground_truth_boxes
                else f"model predictions on {split.dataset} {split.split}"
            ),
        )
    finally:
        model.train(was_training)
