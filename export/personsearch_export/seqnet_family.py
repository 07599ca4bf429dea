"""The ``seqnet`` export family: one-step person-search models with SeqNet's surface.

Graphs (bundle roles): ``detector`` (images -> fixed top-K boxes, scores, embeddings and
valid counts), ``query_encoder`` (one image + boxes -> embeddings) and ``split``, the GPU
path's graphs around RoIAlign (``backbone_rpn``, ``box_head``, ``reid_head``). The model
must be a :class:`personsearch_train.models.SeqNet`: the adapters trace its
``transform``, backbone, RPN, RoIAlign and heads (:mod:`personsearch_export.adapters`).
Every method whose model is a SeqNet exports through this family, whatever it trained with.
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
from personsearch_export.onnx_export import check_opset, export_module, export_split_graphs
from personsearch_export.parity import run_parity

__all__ = ["SeqNetExportFamily", "default_profile"]


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
            ExportError: A bad K or opset.
        """
        check_opset(request.opset)
        k = int(request.max_detections or model.box_detections_per_img)
        if k < 1:
            raise ExportError(f"--max-detections must be >= 1, got {k}")
        profile = request.profile or default_profile(model)
        opset, convert = request.opset, request.convert
        specs = _specs(model, k, profile, request.max_batch)
        # Trace sizes chosen to differ from every static size in the graphs.
        trace_h, trace_w = profile.opt
        modules = {
            "detector": DetectorAdapter(model, max_detections=k).eval(),
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
            export_module(modules[role], examples[role], path, inputs=inputs, outputs=outputs, opset=opset)
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
