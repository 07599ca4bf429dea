"""Trace the adapters into ONNX files with the tensor names and shapes the manifest lists.

We use the TorchScript-based exporter (``dynamo=False``): our NMS and RoIAlign are
``torch.autograd.Function`` s with ``symbolic`` methods, which is how that exporter lets
us write every ``RoiAlign`` attribute ourselves (deployment digest, sections 1.2-1.3 and
design implication 14). RoIAlign needs opset >= 16: below it ONNX has no
``coordinate_transformation_mode`` and ``aligned=True`` models are silently unshifted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import onnx
import torch
from personsearch_runtime.bundle import (
    BoxCoderSpec,
    DimRange,
    ModelSpec,
    RoIAlignSpec,
    SplitSpec,
    TensorSpec,
    file_sha256,
)

from personsearch_export.adapters import BackboneRpnAdapter, BoxHeadAdapter, ReidHeadAdapter
from personsearch_export.errors import ExportError

__all__ = [
    "MIN_OPSET",
    "RPN_PRE_NMS_KEY",
    "RPN_PRE_NMS_MODEL_KEY",
    "check_opset",
    "export_module",
    "export_split_graphs",
    "read_rpn_pre_nms_top_n",
    "rpn_metadata",
]

#: Largest log size ratio the trainer's BoxCoder decodes (torchvision's bbox_xform_clip).
_BOX_CODER_CLIP = math.log(1000.0 / 16)
#: Boxes with a side under this (pixels) are dropped after each decoding (SeqNet, adapters).
_MIN_BOX_SIZE = 1e-2

#: Lowest opset with RoiAlign's ``coordinate_transformation_mode``.
MIN_OPSET = 16
#: Highest opset the exporter is tested with (onnx's RoiAlign-22 has the same attributes).
MAX_OPSET = 20

#: ONNX ``metadata_props`` key of a graph that runs the RPN: the pre-NMS top-N (TopK K)
#: it was exported with. The bundle manifest has no field for it; the graph carries it,
#: so parity (and ``verify``) can run the PyTorch reference with the same count.
RPN_PRE_NMS_KEY = "personsearch.rpn_pre_nms_top_n"
#: ``metadata_props`` key: the model's own test-time pre-NMS top-N, for comparison.
RPN_PRE_NMS_MODEL_KEY = "personsearch.rpn_pre_nms_top_n_model"


def rpn_metadata(exported: int, model_value: int) -> dict[str, str]:
    """``metadata_props`` entries recording the RPN pre-NMS top-N of a graph and of its model."""
    return {RPN_PRE_NMS_KEY: str(int(exported)), RPN_PRE_NMS_MODEL_KEY: str(int(model_value))}


def read_rpn_pre_nms_top_n(path: str | Path) -> tuple[int, int] | None:
    """The (exported, model) pre-NMS top-N recorded in an ONNX file, or None when absent.

    Only the metadata is read (external data is not loaded). Bundles written before the
    exporter recorded it have no entry; their RPN ran the model's own count.

    Raises:
        ExportError: The entry is present but not an integer.
    """
    model = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    if RPN_PRE_NMS_KEY not in props:
        return None
    try:
        exported = int(props[RPN_PRE_NMS_KEY])
        model_value = int(props.get(RPN_PRE_NMS_MODEL_KEY, props[RPN_PRE_NMS_KEY]))
    except ValueError:
        raise ExportError(
            f"{path}: metadata {RPN_PRE_NMS_KEY}={props[RPN_PRE_NMS_KEY]!r} is not an integer"
        ) from None
    return exported, model_value


def check_opset(opset: int) -> None:
    """Refuse opsets that would change RoIAlign's numbers or that we do not test.

    Raises:
        ExportError: With the reason.
    """
    if opset < MIN_OPSET:
        raise ExportError(
            f"--opset {opset} is too low: ONNX RoiAlign gained coordinate_transformation_mode in opset 16. "
            "Below it the half-pixel (aligned) setting cannot be written, so an aligned=True model would be "
            f"exported unshifted and silently give different features. Use --opset {MIN_OPSET} or newer."
        )
    if opset > MAX_OPSET:
        raise ExportError(f"--opset {opset} is newer than the exporter supports ({MIN_OPSET}..{MAX_OPSET})")


def _set_shapes(values: Sequence[onnx.ValueInfoProto], specs: Sequence[TensorSpec]) -> None:
    for value, spec in zip(values, specs, strict=True):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for d in spec.shape:
            dim = value.type.tensor_type.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            else:
                dim.dim_param = d


def export_module(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    opset: int,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Export ``module`` to ``path`` with the manifest's names, symbolic dims and static sizes.

    Args:
        module: A tensor-in/tensor-out adapter in eval mode.
        example_inputs: Inputs to trace with (their sizes must not coincide with a
            static size of the graph, or the tracer could merge them).
        path: ONNX file to write.
        inputs: Manifest tensor specs of the inputs, in order.
        outputs: Manifest tensor specs of the outputs, in order.
        opset: ONNX opset (checked by :func:`check_opset`).
        metadata: Written into the file's ``metadata_props`` (e.g. :func:`rpn_metadata`),
            before the file is hashed.
    """
    check_opset(opset)
    dynamic_axes: dict[str, dict[int, str]] = {}
    for spec in (*inputs, *outputs):
        axes = {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
        if axes:
            dynamic_axes[spec.name] = axes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            dynamo=False,
            opset_version=opset,
            do_constant_folding=True,
            input_names=[s.name for s in inputs],
            output_names=[s.name for s in outputs],
            dynamic_axes=dynamic_axes,
        )
    model = onnx.load(str(path))
    _set_shapes(model.graph.input, inputs)
    _set_shapes(model.graph.output, outputs)
    model.producer_name = "personsearch_export"
    if metadata:
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **metadata})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _trace_rows(static: set[int]) -> int:
    """A RoI count for tracing that equals no static size of the graph (the tracer could merge them)."""
    return next(r for r in (13, 17, 19, 23, 29, 31, 37, 41, 43) if r not in static)


def export_split_graphs(
    model: torch.nn.Module,
    folder: str | Path,
    *,
    opset: int,
    batch: DimRange,
    height: DimRange,
    width: DimRange,
    convert: Callable[[Path], object] | None = None,
    rpn_pre_nms_top_n: int | None = None,
) -> tuple[dict[str, ModelSpec], SplitSpec]:
    """Write ``backbone_rpn.onnx``, ``box_head.onnx`` and ``reid_head.onnx`` (the GPU path's graphs).

    ``backbone_rpn`` has dynamic batch and image size and, like the detector, takes
    ``image_sizes`` [B, 2] float32 to clip to; its proposals are padded to the
    RPN's post-NMS top-N ``P`` with zero rows (``proposal_counts`` says how many are real).
    The heads take a dynamic number of pooled RoIs ``R``. The returned ``SplitSpec``
    carries the model's RoIAlign settings and box coders, so the runtime's composition
    reproduces ``detector.onnx`` (contract: ``personsearch_runtime.bundle``).

    Args:
        model: A ``SeqNet`` in eval mode.
        folder: Bundle folder to write into.
        opset: ONNX opset (checked by :func:`check_opset`).
        batch: Range of B (as the detector's).
        height: Range of the fed height H.
        width: Range of the fed width W.
        convert: Applied to each written file before it is hashed (e.g. the fp16 pass,
            ``personsearch_export.precision.convert_file_to_fp16``).
        rpn_pre_nms_top_n: The RPN's pre-NMS top-N (TopK K) in ``backbone_rpn``; None
            for the model's own test-time value. Recorded in the graph's metadata
            (:func:`rpn_metadata`).

    Returns:
        Role -> model spec for the three graphs, and the manifest's ``split`` section.

    Raises:
        ExportError: When the feature map does not have the size the RoIAlign scale implies.
    """
    folder = Path(folder)
    roi = model.roi_align
    size = int(roi.output_size[0]) if isinstance(roi.output_size, (tuple, list)) else int(roi.output_size)
    stride = round(1.0 / float(roi.spatial_scale))
    with torch.no_grad():
        probe = model.extract_features(torch.zeros(1, 3, height.min, width.min))
    channels = int(probe.shape[1])
    if tuple(probe.shape[2:]) != (math.ceil(height.min / stride), math.ceil(width.min / stride)):
        raise ExportError(
            f"the backbone maps {height.min}x{width.min} to {tuple(probe.shape[2:])}, not the "
            f"1/{stride} the RoIAlign spatial_scale assumes; this model cannot be split-exported"
        )
    hf = DimRange("Hf", *(math.ceil(v / stride) for v in (height.min, height.opt, height.max)))
    wf = DimRange("Wf", *(math.ceil(v / stride) for v in (width.min, width.opt, width.max)))
    p = int(model.rpn.post_nms_top_n())
    first_k = int(model.box_detections_per_img)
    d = int(model.embedding_dim)
    specs = {
        "backbone_rpn": (
            (
                TensorSpec("images", "float32", ("B", 3, "H", "W")),
                TensorSpec("image_sizes", "float32", ("B", 2)),
            ),
            (
                TensorSpec("features", "float32", ("B", channels, "Hf", "Wf")),
                TensorSpec("proposals", "float32", ("B", p, 4)),
                TensorSpec("proposal_counts", "int64", ("B",)),
            ),
            (batch, height, width, hf, wf),
        ),
        "box_head": (
            (TensorSpec("roi_features", "float32", ("R", channels, size, size)),),
            (TensorSpec("box_deltas", "float32", ("R", 4)), TensorSpec("box_scores", "float32", ("R",))),
            (DimRange("R", 1, p * batch.opt, p * batch.max),),
        ),
        "reid_head": (
            (TensorSpec("roi_features", "float32", ("R", channels, size, size)),),
            (
                TensorSpec("embeddings", "float32", ("R", d)),
                TensorSpec("person_scores", "float32", ("R",)),
                TensorSpec("box_deltas", "float32", ("R", 4)),
            ),
            (DimRange("R", 1, min(first_k, 16), first_k * batch.max),),
        ),
    }
    model_pre = int(model.rpn._pre_nms_top_n["testing"])
    pre = model_pre if rpn_pre_nms_top_n is None else int(rpn_pre_nms_top_n)
    metadata = {"backbone_rpn": rpn_metadata(pre, model_pre)}
    rows = _trace_rows({channels, size, d, p, first_k, 2, 4})
    modules = {
        "backbone_rpn": (
            BackboneRpnAdapter(model, pre_nms_top_n=pre).eval(),
            (
                torch.rand(2, 3, height.opt, width.opt),
                torch.tensor(
                    [[height.opt, width.opt], [height.opt - 8, width.opt - 24]], dtype=torch.float32
                ),
            ),
        ),
        "box_head": (BoxHeadAdapter(model).eval(), (torch.rand(rows, channels, size, size),)),
        "reid_head": (ReidHeadAdapter(model).eval(), (torch.rand(rows, channels, size, size),)),
    }
    models = {}
    for role, (inputs, outputs, dims) in specs.items():
        module, example = modules[role]
        path = folder / f"{role}.onnx"
        export_module(
            module, example, path, inputs=inputs, outputs=outputs, opset=opset, metadata=metadata.get(role)
        )
        if convert is not None:
            convert(path)
        models[role] = ModelSpec(role, path.name, file_sha256(path), inputs, outputs, dims)
    roi_spec = RoIAlignSpec(
        output_size=size,
        spatial_scale=float(roi.spatial_scale),
        sampling_ratio=int(roi.sampling_ratio),
        aligned=bool(roi.aligned),
    )
    # SeqNet decodes both heads' deltas with its one BoxCoder.
    coder = BoxCoderSpec(weights=tuple(float(w) for w in model.box_coder.weights), clip=_BOX_CODER_CLIP)
    split = SplitSpec(
        box_roi_align=roi_spec,
        reid_roi_align=roi_spec,
        box_coder=coder,
        reid_box_coder=coder,
        min_box_size=_MIN_BOX_SIZE,
        first_stage_max_detections=first_k,
    )
    return models, split
