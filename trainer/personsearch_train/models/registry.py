"""Name -> builder registry for the trainer's models.

A builder is a function taking keyword overrides and returning a model; registering
two builders under one name is an error, so a typo cannot silently replace a model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from personsearch_train.errors import ConfigError

__all__ = ["create_model", "list_models", "register_model"]

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator registering a model builder under ``name`` (default: the function name).

    Args:
        name: Registry key, conventionally ``<method>_<backbone>`` (``seqnet_r50``).

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: if the name is already registered.
    """

    def decorate(builder: Builder) -> Builder:
        key = name or builder.__name__
        if key in _BUILDERS:
            raise ValueError(f"model {key!r} is already registered (by {_BUILDERS[key].__module__})")
        _BUILDERS[key] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_BUILDERS)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model, replacing any of its constructor defaults.

    Args:
        name: A name from :func:`list_models`.
        **overrides: Constructor keyword arguments (e.g. ``num_labelled_ids=482``).

    Returns:
        The model, in training mode, with randomly initialised weights.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones) or an
            override the model's constructor does not accept.
    """
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; available models: {', '.join(list_models()) or '(none)'}")
    try:
        return _BUILDERS[name](**overrides)
    except TypeError as error:
        if "unexpected keyword argument" in str(error):
            raise ConfigError(f"model {name!r}: {error}") from error
        raise
