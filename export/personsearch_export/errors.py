"""Errors the exporter raises for problems a user can fix (wrong checkpoint, bad options, ...)."""

from __future__ import annotations


class ExportError(Exception):
    """A problem with the user's input or options, reported without a traceback.

    The ``personsearch`` command line prints the message and exits 2 for any exception
    whose class sets ``is_user_error = True``.
    """

    is_user_error = True


class CheckpointError(ExportError):
    """The checkpoint is missing, corrupt or belongs to another model."""


class TrtexecReportError(ExportError):
    """A trtexec ``--exportTimes`` / ``--exportProfile`` file is not in trtexec's format."""
