"""Errors the trainer raises for problems a user can fix."""

from __future__ import annotations

from collections.abc import Sequence


class TrainerError(Exception):
    """A problem with the user's data, recipe or files, reported without a traceback.

    ``is_user_error`` tells the ``personsearch`` command line to print the message
    and exit non-zero instead of showing a stack trace.
    """

    is_user_error = True


class DatasetFormatError(TrainerError):
    """A dataset file is missing or does not have the layout its reader expects."""


class PredictionsFormatError(TrainerError):
    """A predictions file is missing keys, has wrong shapes or does not fit the dataset."""


class ConfigError(TrainerError):
    """A recipe or override names an unknown key, has a wrong type, or a missing path."""


def require_choice(key: str, value: str, choices: Sequence[str]) -> None:
    """Check a setting that takes one of a fixed set of values.

    Args:
        key: The setting as a recipe spells it (``"method_args.alignment"``).
        value: The value given.
        choices: The values allowed.

    Raises:
        ConfigError: ``value`` is not in ``choices``; the message names the key and lists them.
    """
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
