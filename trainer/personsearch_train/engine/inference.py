"""Run a model over a person-search test split and produce a predictions file object."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.torch_dataset import read_image
from personsearch_train.evaluation.predictions import SearchPredictions

__all__ = ["predict_split", "predictions_from_checkpoint"]


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


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

    Args:
        model: A model with ``predict(images) -> list[Detections]`` and
            ``embed_boxes(images, boxes) -> list[Tensor[M, D]]``.
        split: A test split (gallery = ``split.images`` in dataset order).
        device: Where to run the model.
        batch_size: Images per forward pass.
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
    if ground_truth_boxes and query_context:
        raise ValueError("ground_truth_boxes and query_context (CBGM) do not combine: CBGM needs detections")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        names, boxes, scores, embeddings = [], [], [], []
        detections_by_name = {}
        for batch in tqdm(
            _batches(split.images, batch_size), desc="gallery", disable=not progress, leave=False
        ):
            images = [read_image(r.path).to(device) for r in batch]
            if ground_truth_boxes:
                truth = [torch.from_numpy(np.asarray(r.boxes, dtype=np.float32)).to(device) for r in batch]
                truth_embeddings = model.embed_boxes(images, truth)
                for record, record_boxes, emb in zip(batch, truth, truth_embeddings, strict=True):
                    names.append(record.name)
                    boxes.append(record_boxes.cpu().numpy())
                    scores.append(np.ones(len(record_boxes), dtype=np.float32))
                    embeddings.append(emb.float().cpu().numpy())
                continue
            for record, det in zip(batch, model.predict(images), strict=True):
                det = det.to("cpu")
                names.append(record.name)
                boxes.append(det.boxes.float().numpy())
                scores.append(det.scores.float().numpy())
                embeddings.append(det.embeddings.float().numpy())
                if query_context:
                    detections_by_name[record.name] = det

        # Embed all query boxes of one image in one pass.
        by_image: dict[str, list[int]] = defaultdict(list)
        for q, query in enumerate(split.queries):
            by_image[query.name].append(q)
        query_emb: list[np.ndarray | None] = [None] * len(split.queries)
        image_names = list(by_image)
        for batch in tqdm(
            _batches(image_names, batch_size), desc="queries", disable=not progress, leave=False
        ):
            paths = [split.queries[by_image[name][0]].path for name in batch]
            images = [read_image(p).to(device) for p in paths]
            box_lists = [
                torch.from_numpy(np.stack([split.queries[q].box for q in by_image[name]])).to(device)
                for name in batch
            ]
            for name, emb in zip(batch, model.embed_boxes(images, box_lists), strict=True):
                for q, row in zip(by_image[name], emb.float().cpu().numpy(), strict=True):
                    query_emb[q] = row
        dim = embeddings[0].shape[1] if embeddings else 0
        if query_emb and query_emb[0] is not None:
            dim = len(query_emb[0])
        query_array = np.stack(query_emb).astype(np.float32) if query_emb else np.zeros((0, dim), np.float32)

        ctx_boxes = ctx_emb = None
        if query_context:
            ctx_boxes, ctx_emb = [], []
            for q, query in enumerate(split.queries):
                det = detections_by_name.get(query.name)
                if det is None:
                    det = model.predict([read_image(query.path).to(device)])[0].to("cpu")
                    detections_by_name[query.name] = det
                order = torch.argsort(det.scores, descending=True)
                ctx_boxes.append(np.concatenate([query.box[None], det.boxes[order].float().numpy()]))
                ctx_emb.append(np.concatenate([query_array[q][None], det.embeddings[order].float().numpy()]))
        return SearchPredictions.from_per_image(
            names,
            boxes,
            scores,
            embeddings,
            query_array,
            query_context_boxes=ctx_boxes,
            query_context_embeddings=ctx_emb,
            source=(
                f"model embeddings of the ground-truth boxes of {split.dataset} {split.split}"
                if ground_truth_boxes
                else f"model predictions on {split.dataset} {split.split}"
            ),
        )
    finally:
        model.train(was_training)


def predictions_from_checkpoint(
    checkpoint: str | Path,
    split: PersonSearchSplit,
    *,
    device: str = "auto",
    batch_size: int = 2,
    query_context: bool = False,
    ground_truth_boxes: bool = False,
    progress: bool = True,
) -> SearchPredictions:
    """Load a checkpoint (run folder or file) and predict on a test split.

    Args:
        checkpoint: Run folder (its ``best``, else ``latest``) or a checkpoint file.
        split: The test split.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Images per forward pass.
        query_context: Also record the CBGM query context.
        ground_truth_boxes: Embed the annotated gallery boxes instead of detecting
            (see :func:`predict_split`).
        progress: Show progress bars.
    """
    from personsearch_train.engine.checkpoint import load_model_from_checkpoint
    from personsearch_train.engine.distributed import select_device

    model, _ = load_model_from_checkpoint(checkpoint)
    target = select_device(device)
    return predict_split(
        model.to(target),
        split,
        device=target,
        batch_size=batch_size,
        query_context=query_context,
        ground_truth_boxes=ground_truth_boxes,
        progress=progress,
    )
