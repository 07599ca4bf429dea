"""Crash-safe file replacement: write beside the target, fsync, then rename over it.

Every file the trainer and exporter hand to a user (checkpoints, predictions, plots,
reports, synthetic datasets, engines) goes through :func:`atomic_replace`, so an
interrupted run leaves either the old file or the new one, never half of either. The
module needs only the standard library; importing it loads neither torch nor numpy.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_replace", "atomic_write_bytes", "fsync_dir", "fsync_file"]


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk, where the OS allows it.

    Args:
        folder: The folder whose directory entry changed.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory; the rename still happened
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a file's contents to disk.

    Args:
        path: The file (it is opened for writing, so it must be writable).
    """
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@contextmanager
def atomic_replace(
    path: str | os.PathLike[str], *, sync: bool = True, sync_dir: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit, rename it over ``path``.

    Write the new contents to the yielded path (by name or by opening it). If the
    ``with`` body raises, the temporary file is removed and ``path`` is untouched.

    Args:
        path: Destination file; its folder is created if needed.
        sync: fsync the temporary file before the rename (False only for bulk files
            where a crash may lose a file but must not leave a half-written one).
        sync_dir: Also fsync the folder after the rename, so the rename itself
            survives a power loss (checkpoints).

    Yields:
        The temporary file's path (it exists, empty, in ``path``'s folder).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if sync:
            fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, sync: bool = True, sync_dir: bool = False
) -> None:
    """Replace ``path`` with ``data`` through :func:`atomic_replace`.

    Args:
        path: Destination file; its folder is created if needed.
        data: File contents.
        sync: See :func:`atomic_replace`.
        sync_dir: See :func:`atomic_replace`.
    """
    with atomic_replace(path, sync=sync, sync_dir=sync_dir) as tmp:
        tmp.write_bytes(data)
