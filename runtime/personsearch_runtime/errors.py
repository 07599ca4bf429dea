"""Errors the runtime raises for problems a user can fix (bad input, wrong bundle, ...)."""

from __future__ import annotations


class PersonSearchError(Exception):
    """A problem with the user's input or environment, reported without a traceback.

    The ``personsearch`` command line prints the message and exits non-zero for any
    exception whose class sets ``is_user_error = True``; each package defines its own
    base class with that flag so none of them has to import another.
    """

    is_user_error = True


class BundleError(PersonSearchError):
    """The bundle directory is missing, incomplete or does not match the schema."""


class GalleryError(PersonSearchError):
    """The gallery is missing, empty, corrupt or was built with another model."""


class EngineError(BundleError):
    """A TensorRT engine does not match this machine, its bundle or the requested shapes."""


class SourceError(PersonSearchError):
    """An input image, folder, glob or video cannot be used (nothing readable found)."""


class InputError(PersonSearchError, ValueError):
    """An argument given to the runtime has the wrong type, shape, dtype or value.

    It is a ``ValueError`` for Python callers and a user error (message, exit code 2)
    for the command line; the message names the argument, what was given and what is
    expected.
    """
