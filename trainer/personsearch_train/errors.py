"""Errors the trainer raises for problems a user can fix."""

from __future__ import annotations


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
