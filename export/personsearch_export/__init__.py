"""personsearch_export: checkpoints to ONNX bundles, TensorRT engines and Triton repositories."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
