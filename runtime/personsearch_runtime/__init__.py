"""personsearch_runtime: torch-free person search (detect, embed, index, query).

Only numpy is imported at the top level; ONNX Runtime, TensorRT, CuPy, faiss and
OpenCV are imported where they are used, so ``import personsearch_runtime`` is cheap
and never loads torch.
"""

from __future__ import annotations

from personsearch_runtime.errors import BundleError, GalleryError, PersonSearchError

__version__ = "0.1.0"

__all__ = ["BundleError", "GalleryError", "PersonSearchError", "__version__"]
