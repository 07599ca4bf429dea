"""The one registry of training methods, by name.

A recipe selects a method with ``method: NAME`` and sets it with ``method_args``; both
are checked here, against the registered class and its ``Args`` dataclass, when the
recipe is read, so a typo fails before any data or model is loaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from personsearch_train.errors import ConfigError
from personsearch_train.methods.base import TrainingMethod

__all__ = ["available_methods", "build_method", "get_method", "register_method"]

MethodClass = TypeVar("MethodClass", bound=type[TrainingMethod])

_METHODS: dict[str, type[TrainingMethod]] = {}


def register_method(cls: MethodClass) -> MethodClass:
    """Class decorator adding a :class:`TrainingMethod` subclass under its ``name``.

    Returns:
        The class, unchanged.

    Raises:
        ValueError: The class has no ``name``, its ``Args`` is not a dataclass, or the
            name is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, TrainingMethod)):
        raise ValueError(f"register_method takes a TrainingMethod subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no 'name'; set the class attribute name = '...'")
    if not dataclasses.is_dataclass(cls.Args):
        raise ValueError(f"{cls.__qualname__}.Args must be a dataclass of the method's settings")
    if cls.name in _METHODS:
        raise ValueError(
            f"a method named {cls.name!r} is already registered (by {_METHODS[cls.name].__module__})"
        )
    _METHODS[cls.name] = cls
    return cls


def available_methods() -> tuple[str, ...]:
    """Names of the registered methods, sorted."""
    return tuple(sorted(_METHODS))


def get_method(name: str) -> type[TrainingMethod]:
    """The method class registered as ``name``.

    Raises:
        ConfigError: Unknown name; the message lists the registered ones.
    """
    if name not in _METHODS:
        raise ConfigError(
            f"method: unknown method {name!r}; registered methods: {', '.join(available_methods())}"
        )
    return _METHODS[name]


def build_method(name: str, args: Mapping[str, Any] | None = None) -> TrainingMethod:
    """Instantiate method ``name`` with ``method_args`` checked against its ``Args``.

    Args:
        name: A registered method name.
        args: The recipe's ``method_args`` (unknown keys and wrong types are errors).

    Returns:
        The method, holding its typed settings.

    Raises:
        ConfigError: Unknown method, unknown key (the message lists the valid ones) or a
            value of the wrong type, named as ``method_args.KEY``.
    """
    from personsearch_train.engine.config import build_dataclass

    cls = get_method(name)
    if args is not None and not isinstance(args, Mapping):
        raise ConfigError(f"method_args: expected a mapping of {name}'s settings, got {type(args).__name__}")
    try:
        typed = build_dataclass(cls.Args, dict(args or {}), "method_args")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (method {name!r})") from None
    return cls(typed)
