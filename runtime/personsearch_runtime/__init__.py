"""personsearch_runtime: torch-free person search (detect, embed, index, query).

Only numpy is imported at the top level; ONNX Runtime, TensorRT, CuPy, faiss and
OpenCV are imported where they are used, so ``import personsearch_runtime`` is cheap
and never loads torch. The main entry points are loaded on first access::

    from personsearch_runtime import Bundle, GalleryIndex, PersonSearcher
"""

from __future__ import annotations

import importlib
from typing import Any

from personsearch_runtime.errors import (
    BundleError,
    EngineError,
    GalleryError,
    InputError,
    PersonSearchError,
    SourceError,
)

__version__ = "0.1.0"

#: Public name -> module that defines it (imported on first attribute access).
_LAZY = {
    "Bundle": "personsearch_runtime.bundle",
    "Manifest": "personsearch_runtime.bundle",
    "Detections": "personsearch_runtime.results",
    "SearchHit": "personsearch_runtime.results",
    "GalleryIndex": "personsearch_runtime.gallery",
    "GalleryInfo": "personsearch_runtime.gallery",
    "PersonSearcher": "personsearch_runtime.searcher",
    "IndexSummary": "personsearch_runtime.searcher",
    "NoPersonFoundError": "personsearch_runtime.searcher",
    "create_backend": "personsearch_runtime.backends",
}

__all__ = [
    "BundleError",
    "EngineError",
    "GalleryError",
    "InputError",
    "PersonSearchError",
    "SourceError",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'personsearch_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
