"""Checks of the output paths the trainer's commands are given, made before any work.

A command that would find out only at the end of its work (after minutes of scoring or
rendering) that its output path is a folder, or sits under a file, checks it first with
these, so the user hears about it at once and no work is lost.
"""

from __future__ import annotations

from pathlib import Path

from personsearch_train.errors import TrainerError

__all__ = ["check_output_file", "check_output_folder"]


def _blocking_ancestor(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (so ``path`` cannot be made)."""
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            return None if ancestor.is_dir() else ancestor
    return None


def check_output_file(path: str | Path, option: str) -> None:
    """Refuse an output file path that is a folder or lies under a file.

    Args:
        path: Where the command will write a file (its folders may not exist yet).
        option: The option's name (``--out``), for the message.

    Raises:
        TrainerError: ``path`` is a folder, or one of its parents is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise TrainerError(f"{option} {path} is a folder; give a file path (e.g. {path / 'result.npz'})")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        raise TrainerError(
            f"{option} {path}: {blocker} is a file, so it cannot hold {path.name}; give another path"
        )


def check_output_folder(path: str | Path, option: str) -> None:
    """Refuse an output folder path that is a file or lies under a file.

    Args:
        path: Where the command will write its files (it may not exist yet).
        option: The option's name (``--out``), for the message.

    Raises:
        TrainerError: ``path`` is a file, or one of its parents is.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TrainerError(f"{option} {path} is a file, not a folder; give a folder path")
    blocker = _blocking_ancestor(path)
    if blocker is not None:
        raise TrainerError(
            f"{option} {path}: {blocker} is a file, so it cannot hold a folder; give another path"
        )
