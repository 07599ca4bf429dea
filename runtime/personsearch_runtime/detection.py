"""Batched detection + embedding: the one-graph detector and the split pipeline.

Both take a padded batch ``[B, 3, H, W]`` and return, per image, boxes in fed-image
pixels, scores and embeddings. ``OneGraphDetector`` runs ``detector.onnx`` (or its
engine). ``SplitDetector`` runs ``backbone_rpn`` -> RoIAlign -> ``box_head`` -> decode,
clip, score threshold, per-image NMS, top-K -> RoIAlign -> ``reid_head``; it is written
once over an array module, so the same code runs on numpy with the reference RoIAlign
(CPU, testable anywhere) and on CuPy arrays with our NVRTC-compiled kernel (GPU path,
no host round trip between the stages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from personsearch_runtime.box_ops import (
    array_module,
    batched_nms,
    clip_boxes,
    decode_boxes,
    roi_align_reference,
)
from personsearch_runtime.bundle import Manifest, RoIAlignSpec

__all__ = ["BatchDetections", "OneGraphDetector", "SplitDetector", "Stage", "l2_normalize"]


@dataclass(frozen=True)
class BatchDetections:
    """Detections of one image of a batch (fed-image pixels).

    Attributes:
        boxes: [N, 4] float32 xyxy, pixels of the fed (resized) image.
        scores: [N] float32, decreasing.
        embeddings: [N, D] float32, L2-normalised.
    """

    boxes: np.ndarray
    scores: np.ndarray
    embeddings: np.ndarray


class Stage(Protocol):
    """Anything that maps named arrays to named arrays (a backend, or a device engine)."""

    def run(self, feed: Mapping[str, Any]) -> dict[str, Any]:
        """Run once."""
        ...


def l2_normalize(x: Any) -> Any:
    """Row-wise L2 normalisation of [N, D] (numpy or CuPy), safe for zero rows."""
    xp = array_module(x)
    norm = xp.linalg.norm(x, axis=1, keepdims=True)
    return (x / xp.maximum(norm, 1e-12)).astype(xp.float32)


class OneGraphDetector:
    """Runs the bundle's ``detector`` graph.

    Args:
        manifest: The bundle manifest.
        stage: A backend for ``detector``.
    """

    def __init__(self, *, manifest: Manifest, stage: Stage) -> None:
        self.manifest = manifest
        self.stage = stage
        spec = manifest.models["detector"]
        self.input_name = spec.inputs[0].name
        self.input_dtype = spec.inputs[0].dtype
        self.names = [t.name for t in spec.outputs]

    def __call__(self, batch: np.ndarray) -> list[BatchDetections]:
        """Detect in a padded batch [B, 3, H, W] float32."""
        out = self.stage.run({self.input_name: batch.astype(self.input_dtype, copy=False)})
        boxes, scores, emb, counts = (out[n] for n in self.names)
        results = []
        for b in range(batch.shape[0]):
            n = int(counts[b])
            e = np.asarray(emb[b, :n], np.float32)
            if not self.manifest.embedding.normalized:
                e = l2_normalize(e)
            results.append(
                BatchDetections(
                    np.asarray(boxes[b, :n], np.float32), np.asarray(scores[b, :n], np.float32), e
                )
            )
        return results


RoIAlignFn = Callable[[Any, Any, RoIAlignSpec], Any]


class SplitDetector:
    """The split pipeline around RoIAlign.

    Args:
        manifest: The bundle manifest (must have the split graphs).
        stages: ``{"backbone_rpn": .., "box_head": .., "reid_head": ..}`` stages taking and
            returning arrays of one array module (numpy backends, or device stages).
        roi_align: ``roi_align(features [N,C,H,W], rois [K,5], spec) -> [K,C,S,S]`` for that
            array module; the numpy reference by default.
    """

    def __init__(
        self, *, manifest: Manifest, stages: Mapping[str, Stage], roi_align: RoIAlignFn = roi_align_reference
    ) -> None:
        if manifest.split is None:
            raise ValueError("the bundle has no split graphs")
        self.manifest = manifest
        self.stages = dict(stages)
        self.roi_align = roi_align
        m = manifest.models
        self.io = {
            role: ([t.name for t in m[role].inputs], [t.name for t in m[role].outputs])
            for role in ("backbone_rpn", "box_head", "reid_head")
        }
        self.feature_dtype = {
            role: m[role].inputs[0].dtype for role in ("backbone_rpn", "box_head", "reid_head")
        }

    def _run(self, role: str, *arrays: Any) -> list[Any]:
        names_in, names_out = self.io[role]
        out = self.stages[role].run(dict(zip(names_in, arrays, strict=True)))
        return [out[n] for n in names_out]

    def __call__(self, batch: Any) -> list[BatchDetections]:
        """Detect in a padded batch [B, 3, H, W] (numpy or CuPy, float32)."""
        xp = array_module(batch)
        split, post = self.manifest.split, self.manifest.postprocessing
        num, _, height, width = batch.shape
        features, proposals, counts = self._run(
            "backbone_rpn", batch.astype(self.feature_dtype["backbone_rpn"])
        )
        counts = counts.astype(xp.int64)
        p = proposals.shape[1]
        valid = xp.arange(p)[None, :] < counts[:, None]
        image_of = xp.broadcast_to(xp.arange(num)[:, None], (num, p))[valid]
        props = proposals[valid].astype(xp.float32)
        rois = xp.concatenate([image_of[:, None].astype(xp.float32), props], axis=1)
        pooled = self.roi_align(features, rois, split.box_roi_align)
        deltas, box_scores = self._run("box_head", pooled.astype(self.feature_dtype["box_head"]))
        boxes = clip_boxes(decode_boxes(props, deltas.astype(xp.float32), split.box_coder), height, width)
        box_scores = box_scores.astype(xp.float32)
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (
            (box_scores > post.score_threshold)
            & (wh[:, 0] >= split.min_box_size)
            & (wh[:, 1] >= split.min_box_size)
        )
        idx = xp.nonzero(keep)[0]
        boxes, box_scores, image_of = boxes[idx], box_scores[idx], image_of[idx]
        kept = batched_nms(boxes, box_scores, image_of, post.nms_threshold)
        boxes, box_scores, image_of = boxes[kept], box_scores[kept], image_of[kept]
        # `kept` is sorted by score; a stable sort by image keeps that order within each image.
        order = (
            xp.argsort(image_of, kind="stable")
            if xp is np
            else xp.argsort(image_of.astype(xp.float64) * 2.0 + (1.0 - box_scores))
        )
        boxes, box_scores, image_of = boxes[order], box_scores[order], image_of[order]
        first = xp.searchsorted(image_of, image_of, side="left")
        rank = xp.arange(image_of.shape[0]) - first
        top = xp.nonzero(rank < post.max_detections)[0]
        boxes, box_scores, image_of = boxes[top], box_scores[top], image_of[top]
        if int(boxes.shape[0]):
            rois = xp.concatenate([image_of[:, None].astype(xp.float32), boxes], axis=1)
            pooled = self.roi_align(features, rois, split.reid_roi_align)
            emb, person_scores = self._run("reid_head", pooled.astype(self.feature_dtype["reid_head"]))
            emb = emb.astype(xp.float32)
            if not self.manifest.embedding.normalized:
                emb = l2_normalize(emb)
            scores = person_scores.astype(xp.float32) if post.final_score == "reid_head" else box_scores
        else:
            emb = xp.zeros((0, self.manifest.embedding.dim), xp.float32)
            scores = box_scores
        to_host = (lambda a: a) if xp is np else xp.asnumpy
        boxes, scores, emb, image_of = (to_host(a) for a in (boxes, scores, emb, image_of))
        results = []
        for b in range(num):
            sel = image_of == b
            results.append(BatchDetections(boxes[sel], scores[sel], emb[sel]))
        return results
