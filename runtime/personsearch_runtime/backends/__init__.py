"""Inference backends behind one small protocol, and the registry that names them.

A backend runs one model (one ONNX file or one TensorRT engine)::

    backend = create_backend("ort", model_path, device="cpu")
    outputs = backend.run({"images": batch})     # dict name -> numpy array

Implementations register themselves by name; their heavy imports (onnxruntime,
tensorrt, cuda-python) happen inside the methods that need them, so importing this
package costs nothing. Built-in names: ``"ort"`` (ONNX Runtime) and ``"trt"`` (TensorRT).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from personsearch_runtime.errors import PersonSearchError

__all__ = [
    "Backend",
    "BackendFactory",
    "TensorInfo",
    "available_backends",
    "backend_names",
    "create_backend",
    "register_backend",
]


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the backend sees it.

    Attributes:
        name: Tensor name.
        dtype: numpy dtype name, e.g. ``"float32"``.
        shape: Sizes; ``None`` or a symbol string where the size is dynamic.
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]


@runtime_checkable
class Backend(Protocol):
    """What every backend provides."""

    def inputs(self) -> tuple[TensorInfo, ...]:
        """Return the model inputs in graph order."""
        ...

    def outputs(self) -> tuple[TensorInfo, ...]:
        """Return the model outputs in graph order."""
        ...

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once.

        Args:
            feed: Input name -> host array with the input's dtype and a shape the model accepts.

        Returns:
            Output name -> host array.
        """
        ...

    @classmethod
    def is_available(cls) -> bool:
        """Return True when the packages this backend needs are installed."""
        ...


#: Builds a backend: ``factory(model_path, device=..., **options)``.
BackendFactory = Callable[..., Backend]


@dataclass(frozen=True)
class _Entry:
    module: str
    attribute: str
    extra: str


_REGISTRY: dict[str, _Entry] = {}


def register_backend(name: str, module: str, attribute: str, *, extra: str) -> None:
    """Register a backend class by import path (imported only when the backend is used).

    Args:
        name: Short name users pass (``--backend NAME``).
        module: Module defining the class.
        attribute: Class name inside ``module``.
        extra: The pip extra that installs what it needs (for error messages).

    Raises:
        ValueError: When ``name`` is already registered.
    """
    if name in _REGISTRY:
        raise ValueError(f"backend {name!r} is already registered")
    _REGISTRY[name] = _Entry(module, attribute, extra)


def backend_names() -> tuple[str, ...]:
    """Return the registered backend names."""
    return tuple(_REGISTRY)


def backend_class(name: str) -> type:
    """Return the class registered as ``name`` (imports its module).

    Raises:
        PersonSearchError: Unknown name.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise PersonSearchError(f"unknown backend {name!r}; choose from {', '.join(_REGISTRY)}")
    return getattr(importlib.import_module(entry.module), entry.attribute)


def available_backends() -> tuple[str, ...]:
    """Return the registered backends whose packages are installed."""
    return tuple(n for n in _REGISTRY if backend_class(n).is_available())


def create_backend(name: str, model_path: str | Path, **options: object) -> Backend:
    """Create backend ``name`` for one model file.

    Args:
        name: Registered backend name.
        model_path: ONNX file (``ort``) or engine file (``trt``).
        **options: Backend keyword arguments (e.g. ``device="cuda"``).

    Raises:
        PersonSearchError: Unknown backend, or its packages are not installed.
    """
    cls = backend_class(name)
    if not cls.is_available():
        raise PersonSearchError(
            f"backend {name!r} needs packages that are not installed; "
            f'install them with: pip install "personsearch[{_REGISTRY[name].extra}]"'
        )
    return cls(model_path=model_path, **options)


register_backend("ort", "personsearch_runtime.backends.onnx_runtime", "OnnxRuntimeBackend", extra="runtime")
register_backend("trt", "personsearch_runtime.backends.tensorrt_engine", "TensorRTBackend", extra="tensorrt")
