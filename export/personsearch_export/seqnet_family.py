"""The ``seqnet`` export family: one-step person-search models with SeqNet's surface.

Graphs (bundle roles): ``detector`` (images -> fixed top-K boxes, scores, embeddings and
valid counts), ``query_encoder`` (one image + boxes -> embeddings) and ``split``, the GPU
path's graphs around RoIAlign (``backbone_rpn``, ``box_head``, ``reid_head``). The model
must be a :class:`personsearch_train.models.SeqNet`: the adapters trace its
``transform``, backbone, RPN, RoIAlign and heads (:mod:`personsearch_export.adapters`).
Every method whose model is a SeqNet exports through this family, whatever it trained with.

By default the graphs keep the model's test-time settings, except that the RPN's pre-NMS
top-N is capped at :data:`RPN_PRE_NMS_TOP_N_CAP` so TensorRT can build its TopK (see
:func:`resolve_rpn_pre_nms_top_n`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from personsearch_runtime.bundle import (
    DimRange,
    EmbeddingSpec,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    TensorSpec,
    file_sha256,
)

from personsearch_export.adapters import DetectorAdapter, QueryEncoderAdapter
from personsearch_export.errors import CheckpointError, ExportError
from personsearch_export.families import ExportRequest, FamilyGraphs, register_export_family
from personsearch_export.image_profile import PAD, ImageProfile, round_up
from personsearch_export.onnx_export import check_opset, export_module, export_split_graphs, rpn_metadata
from personsearch_export.parity import run_parity
from personsearch_export.trt_support import TRT_TOPK_K_MAX

__all__ = ["RPN_PRE_NMS_TOP_N_CAP", "SeqNetExportFamily", "default_profile", "resolve_rpn_pre_nms_top_n"]

#: Default ceiling on the RPN's pre-NMS top-N in exported graphs: the largest K that
#: TensorRT's TopK layer builds (K < 3840 in TensorRT 10.x and 11.x).
RPN_PRE_NMS_TOP_N_CAP = TRT_TOPK_K_MAX


def resolve_rpn_pre_nms_top_n(model: torch.nn.Module, requested: int | None) -> tuple[int, int]:
    """The RPN pre-NMS top-N to export, and the model's own test-time value.

    SeqNet's RPN ranks every anchor and keeps the best ``rpn_pre_nms_top_n_test`` of them
    (6000 for ``seqnet_r50``, ``seqnet_r18`` and ``seqnet_small``) for its NMS. In the
    graph that ranking is one ``TopK`` whose K is that count, and TensorRT's TopK only
    takes K < 3840, so by default the graphs keep ``min(model value, 3839)``.

    The exact count cannot be kept by splitting the ranking: a two-stage top-K (the best
    K of each chunk, then the best K of their union) still ends in a TopK with the full
    K >= 3840. Keeping it would mean selecting the candidates without a TopK (e.g. a
    score threshold, then NMS over every anchor: 72,000 for ``seqnet_small`` at stride 8
    and 480x640), which is not what the graphs do. The cap changes the proposals only
    when NMS over the best 3839 anchors keeps fewer than the post-NMS top-N boxes: greedy
    NMS visits boxes best first, so its first survivors do not depend on the boxes after
    them.

    Args:
        model: A ``SeqNet``.
        requested: ``--rpn-pre-nms-top-n``; None for the default. Values of 3840 and up
            are exported as asked (ONNX Runtime runs them), and ``lint-trt`` and
            TensorRT then refuse the graphs.

    Returns:
        ``(exported, model_value)``, both >= 1.

    Raises:
        ExportError: ``requested`` below 1.
    """
    model_value = int(model.rpn._pre_nms_top_n["testing"])
    if requested is None:
        return min(model_value, RPN_PRE_NMS_TOP_N_CAP), model_value
    if int(requested) < 1:
        raise ExportError(f"--rpn-pre-nms-top-n must be >= 1, got {requested}")
    return int(requested), model_value


def default_profile(model: torch.nn.Module) -> ImageProfile:
    """Fed sizes from the model's resize settings: opt at its short/long side, max square at the long side."""
    short = int(model.transform.min_size[-1])
    long = int(model.transform.max_size)
    opt = (round_up(short), round_up(long))
    return ImageProfile(min=(PAD * 2, PAD * 2), opt=opt, max=(round_up(long), round_up(long)))


def _specs(model: torch.nn.Module, k: int, profile: ImageProfile, max_batch: int) -> dict[str, tuple]:
    d = int(model.embedding_dim)
    h = DimRange("H", profile.min[0], profile.opt[0], profile.max[0])
    w = DimRange("W", profile.min[1], profile.opt[1], profile.max[1])
    # image_sizes: float32, not int64, which TensorRT narrows (lint-trt flags int64 inputs).
    detector = (
        (TensorSpec("images", "float32", ("B", 3, "H", "W")), TensorSpec("image_sizes", "float32", ("B", 2))),
        (
            TensorSpec("boxes", "float32", ("B", k, 4)),
            TensorSpec("scores", "float32", ("B", k)),
            TensorSpec("embeddings", "float32", ("B", k, d)),
            TensorSpec("valid_counts", "int64", ("B",)),
        ),
        (DimRange("B", 1, 1, max_batch), h, w),
    )
    query = (
        (TensorSpec("image", "float32", (1, 3, "H", "W")), TensorSpec("boxes", "float32", ("M", 4))),
        (TensorSpec("embeddings", "float32", ("M", d)),),
        (h, w, DimRange("M", 1, 4, 64)),
    )
    return {"detector": detector, "query_encoder": query}


class SeqNetExportFamily:
    """Exports :class:`~personsearch_train.models.SeqNet` models (see the module docstring)."""

    name = "seqnet"
    roles = ("detector", "query_encoder", "split")
    required_roles = ("detector", "query_encoder")

    def check_model(self, model: torch.nn.Module, where: str) -> None:
        """Refuse anything but a SeqNet.

        Raises:
            CheckpointError: Naming ``where`` and the model's class.
        """
        from personsearch_train.models import SeqNet

        if not isinstance(model, SeqNet):
            raise CheckpointError(
                f"{where}: model {type(model).__name__} is not a SeqNet; the 'seqnet' export family "
                "exports SeqNet models only (a method with another model names its own export family)"
            )

    def write_graphs(self, model: torch.nn.Module, folder: Path, request: ExportRequest) -> FamilyGraphs:
        """Trace the detector, the query encoder and (if asked) the split graphs.

        Raises:
            ExportError: A bad K, pre-NMS top-N or opset.
        """
        check_opset(request.opset)
        k = int(request.max_detections or model.box_detections_per_img)
        if k < 1:
            raise ExportError(f"--max-detections must be >= 1, got {k}")
        profile = request.profile or default_profile(model)
        opset, convert = request.opset, request.convert
        pre_nms, model_pre_nms = resolve_rpn_pre_nms_top_n(model, request.rpn_pre_nms_top_n)
        # Recorded in every graph that runs the RPN: the manifest has no field for it.
        metadata = {"detector": rpn_metadata(pre_nms, model_pre_nms)}
        specs = _specs(model, k, profile, request.max_batch)
        # Trace sizes chosen to differ from every static size in the graphs.
        trace_h, trace_w = profile.opt
        modules = {
            "detector": DetectorAdapter(model, max_detections=k, pre_nms_top_n=pre_nms).eval(),
            "query_encoder": QueryEncoderAdapter(model).eval(),
        }
        examples = {
            "detector": (
                torch.rand(2, 3, trace_h, trace_w),
                torch.tensor([[trace_h, trace_w], [trace_h - 8, trace_w - 24]], dtype=torch.float32),
            ),
            "query_encoder": (
                torch.rand(1, 3, trace_h, trace_w),
                torch.tensor([[4.0, 6.0, 40.0, 90.0], [20.0, 10.0, 60.0, 70.0], [1.0, 2.0, 30.0, 31.0]]),
            ),
        }
        models: dict[str, ModelSpec] = {}
        for role in ("detector", "query_encoder"):
            if role not in request.roles:
                continue
            inputs, outputs, dims = specs[role]
            path = folder / f"{role}.onnx"
            export_module(
                modules[role],
                examples[role],
                path,
                inputs=inputs,
                outputs=outputs,
                opset=opset,
                metadata=metadata.get(role),
            )
            if convert is not None:
                # Strongly typed: fp16 lives in the graph; inputs and outputs stay float32.
                convert(path)
            models[role] = ModelSpec(role, path.name, file_sha256(path), inputs, outputs, dims)
        split = None
        if "split" in request.roles:
            batch_dim, height_dim, width_dim = specs["detector"][2]
            split_models, split = export_split_graphs(
                model,
                folder,
                opset=opset,
                batch=batch_dim,
                height=height_dim,
                width=width_dim,
                convert=convert,
                rpn_pre_nms_top_n=pre_nms,
            )
            models.update(split_models)
        transform = model.transform
        return FamilyGraphs(
            models=models,
            preprocessing=Preprocessing(
                resize_policy="shorter_side",
                min_size=int(transform.min_size[-1]),
                max_size=int(transform.max_size),
                mean=tuple(float(v) for v in transform.image_mean),
                std=tuple(float(v) for v in transform.image_std),
                normalize_in_graph=False,
                pad_divisor=PAD,
                pad_value=0.0,
            ),
            postprocessing=Postprocessing(
                score_threshold=float(model.box_score_thresh),
                nms_threshold=float(model.box_nms_thresh),
                reid_nms_threshold=float(model.reid_nms_thresh),
                max_detections=k,
            ),
            embedding=EmbeddingSpec(dim=int(model.embedding_dim), normalized=True),
            split=split,
        )

    def parity(
        self, folder: Path, model: torch.nn.Module, *, scenes: Sequence[np.ndarray], random_cases: int
    ) -> dict[str, Any]:
        """The detector and query encoder against the PyTorch model (:func:`~.parity.run_parity`)."""
        return run_parity(folder, model, scenes=scenes, random_cases=random_cases)


register_export_family(SeqNetExportFamily())
