"""Training methods, one module each, registered by name (``method: NAME`` in a recipe).

A method bundles a model, the losses and hooks it trains with, the data it reads, its
evaluator and its export description (:class:`~personsearch_train.methods.base.TrainingMethod`).
``personsearch train --list-methods`` lists the registered ones.

Every module of this package is imported here, so a method module dropped into it is
registered without editing any other file. Code outside the package registers its
methods by importing its own module before it builds a trainer or loads a checkpoint.

Example:
    >>> from personsearch_train.methods import available_methods, build_method
    >>> available_methods()  # doctest: +SKIP
    ('seqnet_oim',)
    >>> method = build_method("seqnet_oim", {"queue_size": 500})
"""

import importlib as _importlib
import pkgutil as _pkgutil

from personsearch_train.methods.base import Evaluator as Evaluator
from personsearch_train.methods.base import ExportDescription as ExportDescription
from personsearch_train.methods.base import MethodLosses as MethodLosses
from personsearch_train.methods.base import NoArgs as NoArgs
from personsearch_train.methods.base import TrainingData as TrainingData
from personsearch_train.methods.base import TrainingMethod as TrainingMethod
from personsearch_train.methods.registry import available_methods as available_methods
from personsearch_train.methods.registry import build_method as build_method
from personsearch_train.methods.registry import get_method as get_method
from personsearch_train.methods.registry import register_method as register_method

__all__ = [
    "Evaluator",
    "ExportDescription",
    "MethodLosses",
    "NoArgs",
    "TrainingData",
    "TrainingMethod",
    "available_methods",
    "build_method",
    "get_method",
    "register_method",
]


def _import_method_modules() -> None:
    """Import every method module of this package (each registers its methods)."""
    for info in _pkgutil.iter_modules(__path__):
        if info.name not in ("base", "registry") and not info.name.startswith("_"):
            _importlib.import_module(f"{__name__}.{info.name}")


_import_method_modules()
