"""personsearch_train: the PyTorch trainer, datasets and evaluation protocols.

Data readers, the synthetic generator and the evaluation protocols need only numpy
and scipy, so this package does not import torch at the top level; the model
factory is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]


def __getattr__(name: str) -> Any:
    # The model registry imports torch; defer it so data/evaluation users never pay for it.
    if name in ("create_model", "list_models"):
        from personsearch_train import models

        return getattr(models, name)
    raise AttributeError(f"module 'personsearch_train' has no attribute {name!r}")
