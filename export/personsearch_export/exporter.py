"""Checkpoint -> bundle: graphs, manifest and measured parity, written atomically.

The bundle is assembled in a hidden temporary folder next to the target and renamed
into place only after the manifest validates and parity has run, so an interrupted
export never leaves a half-written bundle where the runtime would look.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import torch
from personsearch_runtime.bundle import (
    DimRange,
    EmbeddingSpec,
    Manifest,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    Provenance,
    TensorSpec,
    file_sha256,
    write_manifest,
)

from personsearch_export.adapters import DetectorAdapter, QueryEncoderAdapter
from personsearch_export.checkpoint_io import LoadedCheckpoint, load_checkpoint
from personsearch_export.engine_build import write_json_atomic
from personsearch_export.errors import ExportError
from personsearch_export.onnx_export import check_opset, export_module, export_split_graphs
from personsearch_export.parity import PARITY_FILE, load_scene_images, run_parity
from personsearch_export.precision import convert_file_to_fp16

__all__ = ["ImageProfile", "export_bundle", "parse_image_size"]

PRECISIONS = ("fp32", "fp16")
_PAD = 32


@dataclass(frozen=True)
class ImageProfile:
    """Fed image size range (after resize and padding), each ``(height, width)``."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]


def parse_image_size(text: str) -> ImageProfile:
    """Parse ``H,W`` (fixed) or ``h,w/h,w/h,w`` (min/opt/max).

    Raises:
        ExportError: On malformed text or an unordered range.
    """
    parts = text.split("/")
    if len(parts) not in (1, 3):
        raise ExportError(f"--image-size {text!r}: give H,W or minH,minW/optH,optW/maxH,maxW")
    sizes = []
    for part in parts:
        match = re.fullmatch(r"\s*(\d+)\s*,\s*(\d+)\s*", part)
        if not match:
            raise ExportError(f"--image-size {text!r}: {part!r} is not H,W")
        sizes.append((int(match.group(1)), int(match.group(2))))
    lo, opt, hi = (sizes[0],) * 3 if len(sizes) == 1 else sizes
    for axis in (0, 1):
        if not lo[axis] <= opt[axis] <= hi[axis]:
            raise ExportError(f"--image-size {text!r}: needs min <= opt <= max in each dimension")
        if lo[axis] < _PAD:
            raise ExportError(f"--image-size {text!r}: sizes must be at least {_PAD}")
    return ImageProfile(lo, opt, hi)


def _round_up(value: int) -> int:
    return -(-value // _PAD) * _PAD


def _default_profile(model: torch.nn.Module) -> ImageProfile:
    short = int(model.transform.min_size[-1])
    long = int(model.transform.max_size)
    opt = (_round_up(short), _round_up(long))
    return ImageProfile(min=(_PAD * 2, _PAD * 2), opt=opt, max=(_round_up(long), _round_up(long)))


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


def _versions() -> dict[str, str]:
    import personsearch_train

    return {"trainer": personsearch_train.__version__, "torch": torch.__version__, "onnx": onnx.__version__}


def export_graphs(
    loaded: LoadedCheckpoint,
    folder: Path,
    *,
    opset: int,
    precision: str,
    max_detections: int | None,
    profile: ImageProfile | None,
    max_batch: int = 4,
) -> Manifest:
    """Write the detector, query encoder and split graphs and ``manifest.json`` into ``folder``.

    Args:
        loaded: The checkpoint.
        folder: Existing (empty) folder.
        opset: ONNX opset (>= 16).
        precision: ``"fp32"`` or ``"fp16"`` (see :mod:`personsearch_export.precision`).
        max_detections: K; default the model's ``box_detections_per_img``.
        profile: Fed image sizes; default from the model's resize settings.
        max_batch: Largest detector batch.

    Returns:
        The manifest written.
    """
    check_opset(opset)
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    model = loaded.model
    k = int(max_detections or model.box_detections_per_img)
    if k < 1:
        raise ExportError(f"--max-detections must be >= 1, got {k}")
    profile = profile or _default_profile(model)
    specs = _specs(model, k, profile, max_batch)
    # Trace sizes chosen to differ from every static size in the graphs.
    trace_h, trace_w = profile.opt
    detector = DetectorAdapter(model, max_detections=k).eval()
    query = QueryEncoderAdapter(model).eval()
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
    modules = {"detector": detector, "query_encoder": query}
    models = {}
    for role, (inputs, outputs, dims) in specs.items():
        path = folder / f"{role}.onnx"
        export_module(modules[role], examples[role], path, inputs=inputs, outputs=outputs, opset=opset)
        if precision == "fp16":
            # Strongly typed: fp16 lives in the graph; inputs and outputs stay float32.
            convert_file_to_fp16(path)
        models[role] = ModelSpec(role, path.name, file_sha256(path), inputs, outputs, dims)
    batch_dim, height_dim, width_dim = specs["detector"][2]
    split_models, split = export_split_graphs(
        model,
        folder,
        opset=opset,
        batch=batch_dim,
        height=height_dim,
        width=width_dim,
        convert=convert_file_to_fp16 if precision == "fp16" else None,
    )
    models.update(split_models)
    transform = model.transform
    versions = _versions()
    manifest = Manifest(
        models=models,
        precision=precision,
        opset=opset,
        preprocessing=Preprocessing(
            resize_policy="shorter_side",
            min_size=int(transform.min_size[-1]),
            max_size=int(transform.max_size),
            mean=tuple(float(v) for v in transform.image_mean),
            std=tuple(float(v) for v in transform.image_std),
            normalize_in_graph=False,
            pad_divisor=_PAD,
            pad_value=0.0,
        ),
        postprocessing=Postprocessing(
            score_threshold=float(model.box_score_thresh),
            nms_threshold=float(model.box_nms_thresh),
            reid_nms_threshold=float(model.reid_nms_thresh),
            max_detections=k,
        ),
        split=split,
        embedding=EmbeddingSpec(dim=int(model.embedding_dim), normalized=True),
        provenance=Provenance(
            checkpoint_sha256=loaded.weights_sha256,
            model_name=loaded.model_name,
            trainer_version=str(loaded.metadata.get("versions", {}).get("personsearch", versions["trainer"])),
            torch_version=versions["torch"],
            onnx_version=versions["onnx"],
            exported_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        ),
    )
    write_manifest(folder, manifest)
    return manifest


def export_bundle(
    checkpoint: str | Path,
    out: str | Path,
    *,
    opset: int = 17,
    precision: str = "fp32",
    max_detections: int | None = None,
    image_size: str | None = None,
    max_batch: int = 4,
    scenes_dir: str | Path | None = None,
    parity_cases: int = 3,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a checkpoint to a bundle folder, with ``parity.json``.

    Args:
        checkpoint: Run folder or checkpoint file.
        out: Bundle folder to create.
        opset: ONNX opset (>= 16).
        precision: ``"fp32"`` or ``"fp16"`` (see :mod:`personsearch_export.precision`).
        max_detections: Fixed top-K.
        image_size: ``H,W`` or ``h,w/h,w/h,w`` fed-size profile.
        max_batch: Largest detector batch.
        scenes_dir: Images for the parity check (default: generate the tiny synthetic set).
        parity_cases: Random-size parity cases besides the opt-size one.
        overwrite: Replace an existing bundle at ``out``.

    Returns:
        The parity report.

    Raises:
        ExportError: Bad options, an existing ``out`` without ``overwrite``, or a
            checkpoint that cannot be exported (the message says which and why).
    """
    out = Path(out)
    check_opset(opset)
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    profile = parse_image_size(image_size) if image_size else None
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or pass --overwrite")
    loaded = load_checkpoint(checkpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        export_graphs(
            loaded,
            tmp,
            opset=opset,
            precision=precision,
            max_detections=max_detections,
            profile=profile,
            max_batch=max_batch,
        )
        report = run_parity(
            tmp, loaded.model, scenes=load_scene_images(scenes_dir), random_cases=parity_cases
        )
        write_json_atomic(tmp / PARITY_FILE, report)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, trash / out.name)
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def verify_bundle(
    bundle: str | Path, checkpoint: str | Path, *, scenes_dir: str | Path | None = None, parity_cases: int = 3
) -> dict[str, Any]:
    """Re-run the parity check of an existing bundle and rewrite its ``parity.json``.

    Raises:
        ExportError: When the checkpoint is not the one the bundle was exported from.
    """
    from personsearch_runtime.bundle import Bundle

    loaded_bundle = Bundle.load(bundle)
    loaded = load_checkpoint(checkpoint)
    if loaded.weights_sha256 != loaded_bundle.model_hash:
        raise ExportError(
            f"{loaded.weights_path} is not the checkpoint {bundle} was exported from "
            f"(weights hash {loaded.weights_sha256[:12]}..., "
            f"bundle records {loaded_bundle.model_hash[:12]}...)"
        )
    report = run_parity(bundle, loaded.model, scenes=load_scene_images(scenes_dir), random_cases=parity_cases)
    write_json_atomic(Path(bundle) / PARITY_FILE, report)
    return report


def format_parity(report: dict[str, Any]) -> str:
    """One line per checked output: worst seen vs tolerance."""
    lines = [
        f"parity ({report['precision']}, {report['backend']}): {'PASSED' if report['passed'] else 'FAILED'}"
    ]
    for name, row in report["outputs"].items():
        lines.append(
            f"  {name:<32} worst {row['worst']:<12.6g} tolerance {row['tolerance']:<10g} "
            f"{'ok' if row['passed'] else 'FAIL'}"
        )
    lines.append(
        f"  compared {report['compared_detections']} detections, {report['compared_queries']} query boxes"
    )
    return "\n".join(lines)


def parity_summary_json(report: dict[str, Any]) -> str:
    """The report as indented JSON text."""
    return json.dumps(report, indent=2)
