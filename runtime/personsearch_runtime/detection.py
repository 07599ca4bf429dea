"""Batched detection + embedding: the one-graph detector and the split pipeline.

Both take a padded batch ``[B, 3, H, W]`` and return, per image, boxes in fed-image
pixels, scores and embeddings. ``OneGraphDetector`` runs ``detector.onnx`` (or its
engine). ``SplitDetector`` runs ``backbone_rpn`` -> RoIAlign -> ``box_head`` -> decode,
clip, score threshold, per-image NMS -> RoIAlign -> ``reid_head`` -> refine boxes with
its deltas, clip, second per-image NMS, top-K (the two stages of SeqNet); it is written
once over an array module, so the same code runs on numpy with the reference RoIAlign
(CPU, testable anywhere) and on CuPy arrays with our NVRTC-compiled kernel (GPU path,
no host round trip between the stages).

Both take optional ``image_sizes`` [B, 2] (height, width of each resized image inside
the padding). Graphs with an ``image_sizes`` input clip boxes to it, as PyTorch clips to
the unpadded image; without it (or for graphs without that input) boxes are clipped to
the padded batch.
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

__all__ = [
    "BatchDetections",
    "OneGraphDetector",
    "SplitDetector",
    "Stage",
    "image_sizes_array",
    "l2_normalize",
]


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
        self.sizes_name = spec.inputs[1].name if len(spec.inputs) == 2 else None
        self.names = [t.name for t in spec.outputs]

    def __call__(self, batch: np.ndarray, image_sizes: np.ndarray | None = None) -> list[BatchDetections]:
        """Detect in a padded batch.

        Args:
            batch: [B, 3, H, W] float32.
            image_sizes: [B, 2] (height, width) of each image inside the padding; None
                means the padded size.
        """
        feed = {self.input_name: batch.astype(self.input_dtype, copy=False)}
        if self.sizes_name is not None:
            feed[self.sizes_name] = image_sizes_array(batch, image_sizes)
        out = self.stage.run(feed)
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


def image_sizes_array(batch: Any, image_sizes: Any | None) -> Any:
    """The ``image_sizes`` input: [B, 2] float32 (height, width), the padded size when None.

    Args:
        batch: [B, 3, H, W] padded batch (numpy or CuPy; the result uses its array module).
        image_sizes: [B, 2] sizes (any numeric type, same array module), or None.

    Raises:
        ValueError: When the sizes do not have shape [B, 2] or lie outside the padded batch.
    """
    xp = array_module(batch)
    num, _, height, width = batch.shape
    if image_sizes is None:
        return xp.tile(xp.asarray([[height, width]], xp.float32), (num, 1))
    sizes = xp.asarray(image_sizes, dtype=xp.float32)
    if sizes.shape != (num, 2):
        raise ValueError(f"image_sizes must have shape ({num}, 2), got {tuple(sizes.shape)}")
    if bool((sizes[:, 0] > height).any()) or bool((sizes[:, 1] > width).any()) or bool((sizes < 1).any()):
        raise ValueError(f"image_sizes must lie in [1, padded size ({height}, {width})]")
    return sizes


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
        self.takes_sizes = len(m["backbone_rpn"].inputs) == 2

    def _run(self, role: str, *arrays: Any) -> list[Any]:
        names_in, names_out = self.io[role]
        out = self.stages[role].run(dict(zip(names_in, arrays, strict=True)))
        return [out[n] for n in names_out]

    def __call__(self, batch: Any, image_sizes: Any | None = None) -> list[BatchDetections]:
        """Detect in a padded batch [B, 3, H, W] (numpy or CuPy, float32).

        ``image_sizes`` [B, 2] (height, width) of each image inside the padding: boxes are
        clipped to it when the bundle's ``backbone_rpn`` takes it (as ``detector`` does),
        to the padded batch otherwise.

        Two stages, as the bundle contract (``bundle`` module docstring) and ``detector``
        define them: ``box_head`` on the proposals -> decode, clip, size and score filter,
        NMS at ``nms_threshold``, best ``first_stage_max_detections``; ``reid_head`` on the
        survivors -> decode its refinement deltas, clip, size filter, NMS at
        ``reid_nms_threshold`` (ranked by stage-1 scores), best ``max_detections``.

        An image without proposals simply contributes no RoIs; when the whole batch has
        none, neither head runs (their engines' profiles start at one RoI) and every
        image gets zero detections.
        """
        xp = array_module(batch)
        split, post = self.manifest.split, self.manifest.postprocessing
        num = batch.shape[0]
        dim = self.manifest.embedding.dim
        bounds = image_sizes_array(batch, image_sizes if self.takes_sizes else None)
        inputs = [batch.astype(self.feature_dtype["backbone_rpn"])]
        if self.takes_sizes:
            inputs.append(bounds)
        features, proposals, counts = self._run("backbone_rpn", *inputs)
        counts = counts.astype(xp.int64)
        p = proposals.shape[1]
        valid = xp.arange(p)[None, :] < counts[:, None]
        image_of = xp.broadcast_to(xp.arange(num)[:, None], (num, p))[valid]
        props = proposals[valid].astype(xp.float32)
        if not int(props.shape[0]):
            return _no_detections(xp, num, dim)

        # Stage 1: box head on every valid proposal.
        pooled = self.roi_align(features, _rois(image_of, props), split.box_roi_align)
        deltas, box_scores = self._run("box_head", pooled.astype(self.feature_dtype["box_head"]))
        boxes = _clip_rows(decode_boxes(props, deltas.astype(xp.float32), split.box_coder), bounds, image_of)
        box_scores = box_scores.astype(xp.float32)
        keep = (box_scores > post.score_threshold) & _big_enough(boxes, split.min_box_size)
        idx = xp.nonzero(keep)[0]
        idx = idx[
            _per_image_nms(
                boxes[idx],
                box_scores[idx],
                image_of[idx],
                post.nms_threshold,
                split.first_stage_max_detections,
            )
        ]
        boxes, box_scores, image_of = boxes[idx], box_scores[idx], image_of[idx]
        if not int(boxes.shape[0]):
            return _no_detections(xp, num, dim)

        # Stage 2: re-id head on the survivors; it embeds them and refines their boxes.
        pooled = self.roi_align(features, _rois(image_of, boxes), split.reid_roi_align)
        emb, person_scores, reid_deltas = self._run(
            "reid_head", pooled.astype(self.feature_dtype["reid_head"])
        )
        refined = _clip_rows(
            decode_boxes(boxes, reid_deltas.astype(xp.float32), split.reid_box_coder), bounds, image_of
        )
        scores = person_scores.astype(xp.float32) if post.final_score == "reid_head" else box_scores
        idx = xp.nonzero(_big_enough(refined, split.min_box_size))[0]
        cap = min(post.max_detections, split.first_stage_max_detections)
        # Ranked by the stage-1 scores, as the detector graph (and SeqNet) rank the second NMS.
        idx = idx[_per_image_nms(refined[idx], box_scores[idx], image_of[idx], post.reid_nms_threshold, cap)]
        emb = emb[idx].astype(xp.float32)
        if not self.manifest.embedding.normalized:
            emb = l2_normalize(emb)
        return _per_image(num, refined[idx], scores[idx], emb, image_of[idx])


def _clip_rows(boxes: Any, bounds: Any, image_of: Any) -> Any:
    """Clip [K, 4] boxes to the (height, width) ``bounds`` [B, 2] of each box's image."""
    return clip_boxes(boxes, bounds[image_of, 0:1], bounds[image_of, 1:2])


def _rois(image_of: Any, boxes: Any) -> Any:
    """[K] image indices + [K, 4] boxes -> [K, 5] float32 RoIAlign rows."""
    xp = array_module(boxes)
    return xp.concatenate([image_of[:, None].astype(xp.float32), boxes.astype(xp.float32)], axis=1)


def _big_enough(boxes: Any, min_size: float) -> Any:
    """[N] bool: both sides of [N, 4] xyxy boxes are at least ``min_size``."""
    wh = boxes[:, 2:] - boxes[:, :2]
    return (wh[:, 0] >= min_size) & (wh[:, 1] >= min_size)


def _per_image_nms(boxes: Any, scores: Any, image_of: Any, threshold: float, cap: int) -> Any:
    """Per-image NMS, then the best ``cap`` of each image.

    Args:
        boxes: [N, 4] float32 xyxy.
        scores: [N] float32 ranking scores.
        image_of: [N] int64 image of each box.
        threshold: IoU above which the lower-scoring box is suppressed.
        cap: Most boxes kept per image.

    Returns:
        [M] int64 indices into the inputs, grouped by image (ascending) and by
        decreasing score within an image.
    """
    xp = array_module(boxes)
    kept = batched_nms(boxes, scores, image_of, threshold)
    img, sc = image_of[kept], scores[kept]
    # `kept` is sorted by score; a stable sort by image keeps that order within each image.
    # CuPy has no stable argsort: one key (image, then decreasing score) does the same
    # for scores in [0, 1].
    order = (
        xp.argsort(img, kind="stable")
        if xp is np
        else xp.argsort(img.astype(xp.float64) * 4.0 + (2.0 - sc.astype(xp.float64)))
    )
    kept, img = kept[order], img[order]
    first = xp.searchsorted(img, img, side="left")
    rank = xp.arange(img.shape[0]) - first
    return kept[xp.nonzero(rank < cap)[0]]


def _no_detections(xp: Any, num: int, dim: int) -> list[BatchDetections]:
    """``num`` images without detections ([0, 4] boxes, [0] scores, [0, dim] embeddings)."""
    empty = xp.zeros((0,), xp.int64)
    return _per_image(
        num, xp.zeros((0, 4), xp.float32), xp.zeros((0,), xp.float32), xp.zeros((0, dim), xp.float32), empty
    )


def _per_image(num: int, boxes: Any, scores: Any, emb: Any, image_of: Any) -> list[BatchDetections]:
    """Split flat results by image and bring them to the host.

    Args:
        num: Images in the batch.
        boxes: [N, 4] float32.
        scores: [N] float32.
        emb: [N, D] float32.
        image_of: [N] int64 image of each row.

    Returns:
        ``num`` host ``BatchDetections``, in image order.
    """
    xp = array_module(boxes)
    if xp is not np:
        # One packed [N, 4 + 1 + D + 1] float32 copy is the batch's only device -> host
        # transfer and its one wait on the stream (four copies would wait four times).
        # Image indices are small integers, exact in float32.
        packed = xp.concatenate(
            [
                boxes.astype(xp.float32),
                scores.astype(xp.float32)[:, None],
                emb.astype(xp.float32),
                image_of.astype(xp.float32)[:, None],
            ],
            axis=1,
        )
        host = xp.asnumpy(packed)
        boxes, scores, emb = host[:, :4], host[:, 4], host[:, 5:-1]
        image_of = host[:, -1].astype(np.int64)
    return [
        BatchDetections(boxes[image_of == b], scores[image_of == b], emb[image_of == b]) for b in range(num)
    ]
