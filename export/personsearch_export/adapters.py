"""Tensor-in / tensor-out modules around a trained SeqNet, written to trace into ONNX.

``SeqNet.predict`` works on lists of images and per-image variable-length results; a
graph needs batched tensors with static output shapes. The adapters re-express the
same inference (same submodules, same thresholds, same order of operations) on padded
tensors:

* every per-image NMS is one ONNX ``NonMaxSuppression`` over the batch (boxes
  ``[B, N, 4]``, scores ``[B, 1, N]``), whose ``[S, 3]`` selection is turned into a fixed
  ``[B, K]`` index table plus valid counts (:func:`pad_selection`), so every later shape
  is static in K;
* RoIAlign is one ``RoiAlign`` node with every attribute written
  (``coordinate_transformation_mode``, ``sampling_ratio``, ``mode="avg"``, output size,
  ``spatial_scale``), batch indices int64;
* boxes are in the pixels of the *fed* tensor (resized and padded by the runtime) and
  clipped, as torchvision clips them, to each image's real (unpadded) size when the
  optional ``image_sizes`` ``[B, 2]`` float32 (height, width) is given, to the whole
  padded tensor otherwise. By default the graph takes *normalised* images (the runtime subtracts
  mean / divides by std, then pads with zeros), which is exactly what torchvision's
  transform feeds the model; padding raw pixels and normalising in the graph would give
  the padding a different value. ``normalize_in_graph=True`` moves the normalisation
  into the graph for callers that feed raw [0, 1] images without padding.

The split graphs (:class:`BackboneRpnAdapter`, :class:`BoxHeadAdapter`,
:class:`ReidHeadAdapter`) are the same pieces cut at the two RoIAligns, so the runtime
can run its own RoIAlign between them and redo the detector's two stages (the bundle
contract in ``personsearch_runtime.bundle`` spells the composition out).

Each ``torch.autograd.Function`` below computes the reference result eagerly (torchvision
``nms`` / ``roi_align``) and emits the standard ONNX operator when traced, so running an
adapter in PyTorch is the reference the ONNX graph is checked against.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

__all__ = [
    "BackboneRpnAdapter",
    "BoxHeadAdapter",
    "DetectorAdapter",
    "QueryEncoderAdapter",
    "ReidHeadAdapter",
    "batched_nms_onnx",
    "pad_selection",
    "roi_align_onnx",
    "selection_rows",
]

#: torchvision's RPN drops proposals narrower or shorter than this (pixels).
_RPN_MIN_SIZE = 1e-3
#: SeqNet drops detections narrower or shorter than this (pixels).
_DET_MIN_SIZE = 1e-2
#: Score given to padded / invalid candidates so NMS never selects them.
_INVALID_SCORE = -1.0


class _NonMaxSuppression(torch.autograd.Function):
    """Per-image greedy NMS over a batch; ONNX ``NonMaxSuppression`` when exported."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_out: int, iou: float, score_thr: float) -> Tensor:  # noqa: ANN001
        rows = []
        for b in range(boxes.shape[0]):
            cand = torch.nonzero(scores[b, 0] > score_thr).squeeze(1)
            order = cand[torchvision.ops.nms(boxes[b, cand], scores[b, 0, cand], iou)][:max_out]
            batch = torch.full_like(order, b)
            rows.append(torch.stack([batch, torch.zeros_like(order), order], dim=1))
        return torch.cat(rows).to(torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_out, iou, score_thr):  # noqa: ANN001, ANN205, D102
        return g.op(
            "NonMaxSuppression",
            boxes,
            scores,
            g.op("Constant", value_t=torch.tensor([int(max_out)], dtype=torch.int64)),
            g.op("Constant", value_t=torch.tensor([float(iou)], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([float(score_thr)], dtype=torch.float32)),
        )


def batched_nms_onnx(boxes: Tensor, scores: Tensor, *, max_out: int, iou: float, score_thr: float) -> Tensor:
    """Greedy NMS per image, in ONNX ``NonMaxSuppression`` semantics.

    Args:
        boxes: ``[B, N, 4]`` float32 xyxy.
        scores: ``[B, N]`` float32; candidates with score <= ``score_thr`` are ignored.
        max_out: Most boxes kept per image.
        iou: A box is suppressed when its IoU with a kept box is > ``iou``.
        score_thr: Score threshold.

    Returns:
        ``[S, 3]`` int64 rows ``(batch, 0, box index)``, grouped by batch, each group
        in decreasing score order.
    """
    return _NonMaxSuppression.apply(boxes, scores[:, None, :], int(max_out), float(iou), float(score_thr))


def selection_rows(selected: Tensor, batch: int | Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Place the rows of an NMS selection into a fixed ``[B, K]`` table.

    Args:
        selected: ``[S, 3]`` int64 from :func:`batched_nms_onnx` (grouped by batch,
            at most ``k`` rows per image).
        batch: B.
        k: K, the padded width.

    Returns:
        ``rows`` ``[B, K]`` int64: ``r + 1`` for selection row ``r``, 0 in padding (so a
        table with a dummy row prepended can be gathered), ``valid`` ``[B, K]`` bool and
        ``counts`` ``[B]`` int64.
    """
    image = selected[:, 0]
    onehot = (image[:, None] == torch.arange(batch, device=selected.device)[None, :]).to(torch.int64)
    per_image = onehot.sum(0)
    counts = per_image.clamp(max=k)
    offsets = torch.cumsum(per_image, 0) - per_image
    slots = torch.arange(k, device=selected.device)
    valid = slots[None, :] < counts[:, None]
    # Row 0 of the padded table is a dummy so the gather is valid even when S == 0.
    rows = torch.where(valid, offsets[:, None] + slots[None, :] + 1, torch.zeros_like(slots)[None, :])
    return rows, valid, counts


def pad_selection(selected: Tensor, batch: int | Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Turn an NMS selection into a fixed ``[B, K]`` index table.

    Args:
        selected: ``[S, 3]`` int64 from :func:`batched_nms_onnx` (grouped by batch,
            at most ``k`` rows per image).
        batch: B.
        k: K, the padded width.

    Returns:
        ``indices`` ``[B, K]`` int64 (0 in padding), ``valid`` ``[B, K]`` bool and
        ``counts`` ``[B]`` int64.
    """
    rows, valid, counts = selection_rows(selected, batch, k)
    table = torch.cat([selected.new_zeros(1), selected[:, 2]])
    return table[rows], valid, counts


class _RoIAlign(torch.autograd.Function):
    """torchvision ``roi_align``; ONNX ``RoiAlign`` (opset >= 16) with every attribute when exported."""

    @staticmethod
    def forward(  # noqa: D102
        ctx,  # noqa: ANN001
        features: Tensor,
        rois: Tensor,
        batch_indices: Tensor,
        output_size: int,
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool,
    ) -> Tensor:
        boxes = torch.cat([batch_indices.to(rois.dtype)[:, None], rois], dim=1)
        return torchvision.ops.roi_align(
            features,
            boxes,
            output_size=(output_size, output_size),
            spatial_scale=spatial_scale,
            sampling_ratio=sampling_ratio,
            aligned=aligned,
        )

    @staticmethod
    def symbolic(g, features, rois, batch_indices, output_size, spatial_scale, sampling_ratio, aligned):  # noqa: ANN001, ANN205, D102
        return g.op(
            "RoiAlign",
            features,
            rois,
            batch_indices,
            coordinate_transformation_mode_s="half_pixel" if aligned else "output_half_pixel",
            mode_s="avg",
            output_height_i=int(output_size),
            output_width_i=int(output_size),
            sampling_ratio_i=max(int(sampling_ratio), 0),
            spatial_scale_f=float(spatial_scale),
        )


def roi_align_onnx(features: Tensor, rois: Tensor, batch_indices: Tensor, roi_align: nn.Module) -> Tensor:
    """RoIAlign with the settings of a trainer ``RoIAlign`` module.

    Args:
        features: ``[B, C, H, W]`` float32.
        rois: ``[R, 4]`` float32 xyxy in input pixels.
        batch_indices: ``[R]`` int64 image of each roi.
        roi_align: The model's ``personsearch_train.layers.RoIAlign`` (square output).

    Returns:
        ``[R, C, S, S]`` pooled features.
    """
    size = roi_align.output_size
    if size[0] != size[1]:
        raise ValueError(f"only square RoIAlign outputs are exported, got {size}")
    return _RoIAlign.apply(
        features,
        rois,
        batch_indices.to(torch.int64),
        int(size[0]),
        float(roi_align.spatial_scale),
        int(roi_align.sampling_ratio),
        bool(roi_align.aligned),
    )


def _clip(boxes: Tensor, bounds: Tensor) -> Tensor:
    """Clip ``[..., 4]`` xyxy boxes to ``[0, width] x [0, height]``.

    ``bounds`` holds (height, width) and broadcasts against ``boxes[..., :2]`` (e.g.
    ``[B, 1, 2]`` for ``[B, N, 4]`` boxes, ``[R, 2]`` for ``[R, 4]``); tensors, not Python
    numbers, so sizes stay dynamic in the graph.
    """
    x = torch.minimum(boxes[..., 0::2].clamp(min=0), bounds[..., 1:2])
    y = torch.minimum(boxes[..., 1::2].clamp(min=0), bounds[..., 0:1])
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def _big_enough(boxes: Tensor, min_size: float) -> Tensor:
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def _gather_rows(values: Tensor, indices: Tensor) -> Tensor:
    """``values`` ``[B, N, *F]`` gathered at ``indices`` ``[B, K]`` -> ``[B, K, *F]``."""
    flat = values.reshape(values.shape[0], values.shape[1], -1)
    index = indices[:, :, None].expand(-1, -1, flat.shape[2])
    out = torch.gather(flat, 1, index)
    return out.reshape((indices.shape[0], indices.shape[1], *values.shape[2:]))


class _SeqNetGraph(nn.Module):
    """Shared pieces: normalisation, backbone, RPN on padded tensors, RoIAlign.

    Args:
        model: A ``SeqNet`` in eval mode.
        normalize_in_graph: Subtract mean / divide by std inside the graph.
        pre_nms_top_n: How many of the best-scoring anchors the RPN keeps before its NMS
            (the K of the graph's ``TopK``); None for the model's own test-time value.
            The exporter passes a value below TensorRT's TopK limit
            (:func:`personsearch_export.seqnet_family.resolve_rpn_pre_nms_top_n`).
    """

    def __init__(
        self, model: nn.Module, *, normalize_in_graph: bool = False, pre_nms_top_n: int | None = None
    ) -> None:
        super().__init__()
        if pre_nms_top_n is not None and int(pre_nms_top_n) < 1:
            raise ValueError(f"pre_nms_top_n must be >= 1, got {pre_nms_top_n}")
        self.model = model
        self.normalize_in_graph = bool(normalize_in_graph)
        self.pre_nms_top_n = None if pre_nms_top_n is None else int(pre_nms_top_n)
        transform = model.transform
        self.register_buffer("mean", torch.tensor(transform.image_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(transform.image_std, dtype=torch.float32).view(1, 3, 1, 1))
        cell = model.rpn.anchor_generator.cell_anchors
        if len(cell) != 1:
            raise ValueError("the exporter supports single-level SeqNet RPNs only")
        self.register_buffer("cell_anchors", cell[0].to(torch.float32))

    def features(self, images: Tensor) -> Tensor:
        if self.normalize_in_graph:
            images = (images - self.mean) / self.std
        return self.model.extract_features(images)

    def image_bounds(self, images: Tensor, image_sizes: Tensor | None = None) -> Tensor:
        """``[B, 2]`` float32 (height, width) boxes are clipped to: ``image_sizes``, or the tensor's size."""
        if image_sizes is not None:
            return image_sizes.to(torch.float32)
        shape = torch._shape_as_tensor(images)
        hw = torch.stack([shape[2], shape[3]]).to(torch.float32)
        return hw[None, :].expand(images.shape[0], 2)

    def anchors(self, images: Tensor, features: Tensor) -> Tensor:
        """``[h * w * A, 4]`` anchors in torchvision's (row, column, anchor) order."""
        img = torch._shape_as_tensor(images)
        feat = torch._shape_as_tensor(features)
        stride_y = img[2] // feat[2]
        stride_x = img[3] // feat[3]
        ys = torch.arange(0, features.shape[2], dtype=torch.int64, device=images.device) * stride_y
        xs = torch.arange(0, features.shape[3], dtype=torch.int64, device=images.device) * stride_x
        shift_y, shift_x = torch.meshgrid(ys, xs, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1).to(torch.float32)
        return (shifts.view(-1, 1, 4) + self.cell_anchors.view(1, -1, 4)).reshape(-1, 4)

    def proposals(
        self, images: Tensor, features: Tensor, bounds: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """RPN proposals padded to ``post_nms_top_n``: (boxes [B, P, 4], valid [B, P], counts [B]).

        ``bounds`` ``[B, 2]`` (height, width) to clip to; default :meth:`image_bounds`.
        """
        rpn = self.model.rpn
        logits, deltas = rpn.head([features])
        logits, deltas = logits[0], deltas[0]
        batch = features.shape[0]
        a = self.cell_anchors.shape[0]
        # torchvision's permute_and_flatten: [B, A*C, h, w] -> [B, h*w*A, C]
        logits = logits.reshape(batch, a, 1, features.shape[2], features.shape[3]).permute(0, 3, 4, 1, 2)
        logits = logits.reshape(batch, -1)
        deltas = deltas.reshape(batch, a, 4, features.shape[2], features.shape[3]).permute(0, 3, 4, 1, 2)
        deltas = deltas.reshape(batch, -1, 4)
        anchors = self.anchors(images, features)
        # torchvision takes the top min(pre_nms_top_n, N) logits. A constant K keeps TopK
        # buildable by TensorRT: pad with pre_nms_top_n -inf entries, take the top K and
        # mark picks from the padding invalid - the same candidates for any N. TensorRT
        # also needs K < 3840, which is why the exporter may set a smaller K than the model's.
        pre = int(rpn.pre_nms_top_n()) if self.pre_nms_top_n is None else self.pre_nms_top_n
        n = torch._shape_as_tensor(logits)[1]
        logits = torch.cat([logits, torch.full_like(logits[:, :1], float("-inf")).expand(-1, pre)], dim=1)
        deltas = torch.cat([deltas, torch.zeros_like(deltas[:, :1]).expand(-1, pre, -1)], dim=1)
        anchors = torch.cat([anchors, torch.zeros_like(anchors[:1]).expand(pre, -1)], dim=0)
        top_logits, top_idx = logits.topk(pre, dim=1)
        top_deltas = _gather_rows(deltas, top_idx)
        top_anchors = anchors[top_idx.reshape(-1)]
        boxes = rpn.box_coder.decode_single(top_deltas.reshape(-1, 4), top_anchors).reshape(batch, -1, 4)
        bounds = self.image_bounds(images) if bounds is None else bounds
        boxes = _clip(boxes, bounds[:, None, :])
        scores = torch.sigmoid(top_logits)
        real = (top_idx < n) & _big_enough(boxes, _RPN_MIN_SIZE)
        scores = torch.where(real, scores, torch.full_like(scores, _INVALID_SCORE))
        post = int(rpn.post_nms_top_n())
        # score_thresh of torchvision's RPN is >= 0 on probabilities: everything valid passes -0.5.
        keep = batched_nms_onnx(boxes, scores, max_out=post, iou=float(rpn.nms_thresh), score_thr=-0.5)
        indices, valid, counts = pad_selection(keep, batch, post)
        return _gather_rows(boxes, indices), valid, counts

    def pool(self, features: Tensor, boxes: Tensor) -> Tensor:
        """RoIAlign of padded boxes ``[B, K, 4]`` -> ``[B * K, C, S, S]``."""
        batch, k = boxes.shape[0], boxes.shape[1]
        image = torch.arange(batch, device=boxes.device)[:, None].expand(batch, k).reshape(-1)
        return roi_align_onnx(features, boxes.reshape(-1, 4), image, self.model.roi_align)


class DetectorAdapter(_SeqNetGraph):
    """Images ``[B, 3, H, W]`` -> boxes ``[B, K, 4]``, scores, embeddings ``[B, K, D]``, counts ``[B]``.

    Reproduces ``SeqNet.predict`` on an already resized (and padded) batch: head 1 on the
    proposals (score threshold, NMS ``box_nms_thresh``), head 2 on the kept boxes
    (refined boxes, NMS ``reid_nms_thresh`` ranked by head-1 scores), fixed top-K.

    Args:
        model: A ``SeqNet`` in eval mode.
        max_detections: K; detections beyond the best K per image are dropped.
        normalize_in_graph: Subtract mean / divide by std inside the graph.
        pre_nms_top_n: The RPN's pre-NMS top-N; None for the model's own (see
            :class:`_SeqNetGraph`).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        max_detections: int,
        normalize_in_graph: bool = False,
        pre_nms_top_n: int | None = None,
    ) -> None:
        super().__init__(model, normalize_in_graph=normalize_in_graph, pre_nms_top_n=pre_nms_top_n)
        self.max_detections = int(max_detections)

    def forward(
        self, images: Tensor, image_sizes: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Run detection and embedding; see the class docstring for shapes.

        Args:
            images: ``[B, 3, H, W]`` float32, padded batch.
            image_sizes: ``[B, 2]`` float32 (height, width) of each real image inside the
                padding; boxes are clipped to it. None: the padded size.
        """
        m = self.model
        batch = images.shape[0]
        bounds = self.image_bounds(images, image_sizes)
        features = self.features(images)
        proposals, proposal_valid, _ = self.proposals(images, features, bounds)
        p = proposals.shape[1]

        class_logits, proposal_deltas = m.box_head_outputs(self.pool(features, proposals))
        scores = torch.softmax(class_logits, dim=1)[:, 1].reshape(batch, p)
        boxes = m.box_coder.decode(proposal_deltas, proposals.reshape(-1, 4))[:, 1].reshape(batch, p, 4)
        boxes = _clip(boxes, bounds[:, None, :])
        valid = proposal_valid & _big_enough(boxes, _DET_MIN_SIZE)
        first_k = int(m.box_detections_per_img)
        keep = batched_nms_onnx(
            boxes,
            torch.where(valid, scores, torch.full_like(scores, _INVALID_SCORE)),
            max_out=first_k,
            iou=m.box_nms_thresh,
            score_thr=m.box_score_thresh,
        )
        # Head 2 runs on the S kept boxes only (plus one dummy row, so S may be 0), not on
        # the padded table: padding to box_detections_per_img would multiply its cost.
        rows1, valid1, _ = selection_rows(keep, batch, first_k)
        flat = keep[:, 0] * p + keep[:, 2]
        dummy_box = torch.tensor([[0.0, 0.0, 1.0, 1.0]], device=boxes.device)
        kept_boxes = torch.cat([dummy_box, boxes.reshape(-1, 4)[flat]])
        kept_scores = torch.cat([scores.new_zeros(1), scores.reshape(-1)[flat]])
        kept_image = torch.cat([keep.new_zeros(1), keep[:, 0]])
        pooled = roi_align_onnx(features, kept_boxes, kept_image, m.roi_align)
        embeddings, _, reid_deltas = m.reid_head_outputs(pooled)
        refined = _clip(m.box_coder.decode(reid_deltas, kept_boxes)[:, 1], bounds[kept_image])
        refined = refined[rows1]
        scores1 = kept_scores[rows1]
        embeddings = embeddings[rows1]
        valid2 = valid1 & _big_enough(refined, _DET_MIN_SIZE)
        keep2 = batched_nms_onnx(
            refined,
            torch.where(valid2, scores1, torch.full_like(scores1, _INVALID_SCORE)),
            max_out=min(self.max_detections, first_k),
            iou=m.reid_nms_thresh,
            score_thr=m.box_score_thresh,
        )
        idx2, valid_out, counts = pad_selection(keep2, batch, self.max_detections)
        mask = valid_out.to(torch.float32)
        out_boxes = _gather_rows(refined, idx2) * mask[..., None]
        out_scores = _gather_rows(scores1, idx2) * mask
        out_embeddings = _gather_rows(embeddings, idx2) * mask[..., None]
        return out_boxes, out_scores, out_embeddings, counts


class QueryEncoderAdapter(_SeqNetGraph):
    """``image [1, 3, H, W]`` + ``boxes [M, 4]`` -> ``embeddings [M, D]`` (``SeqNet.embed_boxes``).

    Args:
        model: A ``SeqNet`` in eval mode.
        normalize_in_graph: Subtract mean / divide by std inside the graph.
    """

    def forward(self, image: Tensor, boxes: Tensor) -> Tensor:
        """Embed the boxes (xyxy pixels of the fed image)."""
        features = self.features(image)
        image_index = torch.zeros_like(boxes[:, 0]).to(torch.int64)
        embeddings, _, _ = self.model.reid_head_outputs(
            roi_align_onnx(features, boxes, image_index, self.model.roi_align)
        )
        return embeddings


class BackboneRpnAdapter(_SeqNetGraph):
    """Images ``[B, 3, H, W]`` -> features, proposals ``[B, P, 4]``, proposal counts ``[B]``.

    The detector graph up to its first RoIAlign (with the same optional ``image_sizes``).
    ``P`` is the RPN's post-NMS top-N (fixed); rows ``proposal_counts[b]`` and beyond are
    padding, set to zeros.

    Args:
        model: A ``SeqNet`` in eval mode.
        normalize_in_graph: Subtract mean / divide by std inside the graph.
        pre_nms_top_n: The RPN's pre-NMS top-N; None for the model's own (see
            :class:`_SeqNetGraph`).
    """

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Return ``features`` [B, C, Hf, Wf], ``proposals`` [B, P, 4] float32, ``counts`` [B] int64.

        ``image_sizes`` ``[B, 2]`` float32 (height, width) clips the proposals as in
        :class:`DetectorAdapter`.
        """
        features = self.features(images)
        proposals, valid, counts = self.proposals(images, features, self.image_bounds(images, image_sizes))
        return features, proposals * valid.to(proposals.dtype)[..., None], counts


class BoxHeadAdapter(nn.Module):
    """Head 1: pooled ``[R, C, S, S]`` -> person-class ``box_deltas`` ``[R, 4]``, ``box_scores`` ``[R]``.

    Args:
        model: A ``SeqNet`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Deltas against the proposals (``model.box_coder`` weights) and softmax person scores."""
        class_logits, deltas = self.model.box_head_outputs(pooled)
        # Class 1 (person) owns columns 4..7 of the class-specific deltas.
        return deltas.reshape(deltas.shape[0], -1, 4)[:, 1], torch.softmax(class_logits, dim=1)[:, 1]


class ReidHeadAdapter(nn.Module):
    """Head 2: pooled ``[R, C, S, S]`` -> embeddings ``[R, D]``, person scores ``[R]``, box deltas ``[R, 4]``.

    Args:
        model: A ``SeqNet`` in eval mode.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unit-norm embeddings, sigmoid of the NAE person logit, BN-neck person-class deltas."""
        embeddings, person_logits, deltas = self.model.reid_head_outputs(pooled)
        return embeddings, torch.sigmoid(person_logits), deltas.reshape(deltas.shape[0], -1, 4)[:, 1]
