"""Trace the adapters into ONNX files with the tensor names and shapes the manifest lists.

We use the TorchScript-based exporter (``dynamo=False``): our NMS and RoIAlign are
``torch.autograd.Function`` s with ``symbolic`` methods, which is how that exporter lets
us write every ``RoiAlign`` attribute ourselves (deployment digest, sections 1.2-1.3 and
design implication 14). RoIAlign needs opset >= 16: below it ONNX has no
``coordinate_transformation_mode`` and ``aligned=True`` models are silently unshifted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
from personsearch_runtime.bundle import TensorSpec

from personsearch_export.errors import ExportError

__all__ = ["MIN_OPSET", "check_opset", "export_module"]

#: Lowest opset with RoiAlign's ``coordinate_transformation_mode``.
MIN_OPSET = 16
#: Highest opset the exporter is tested with (onnx's RoiAlign-22 has the same attributes).
MAX_OPSET = 20


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
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
