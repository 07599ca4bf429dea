"""Whole-or-nothing file writes for everything the runtime and the exporter save.

A reader of ``manifest.json``, a gallery's index cache or an engine must never see a
file that a crash, ``kill -9`` or a full disk cut short. Every such write therefore
goes to a fresh file in the target's folder (same file system, so the final rename is
atomic) and is renamed over the target only once it is complete; until then the old
file, if any, stays as it was. Optionally the data (``sync``) and the rename itself
(``sync_dir``) are flushed to disk, so the new contents also survive a power loss.

Standard library only: importing this module loads neither numpy nor torch, so the
exporter and the lightest runtime commands can share it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_replace", "atomic_write_bytes", "fsync_dir"]

# Temporary names start with a dot (hidden from globbing for the real files) and end in
# ".tmp", so a file left behind by a killed process is recognisable and never mistaken
# for a bundle's model or manifest.
_TEMP_SUFFIX = ".tmp"
_NAME_ATTEMPTS = 100


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush ``folder``'s directory entries, so a rename inside it survives a power loss.

    Does nothing where a directory cannot be opened or synced (Windows, some network
    and FUSE file systems); the rename itself has happened either way.

    Args:
        folder: The folder whose entries changed.
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        descriptor = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _new_temp_file(target: Path) -> Path:
    """Create an empty, uniquely named file beside ``target`` and return its path."""
    for _ in range(_NAME_ATTEMPTS):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
        try:
            # Mode 0o666 lets the umask decide, so the final file gets the permissions
            # any ordinarily written file would (tempfile.mkstemp would force 0o600).
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(descriptor)
        return candidate
    raise FileExistsError(f"could not find a free temporary name beside {target}")


def _fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk, whichever handle wrote it."""
    # Read-write, not read-only: Windows refuses to flush a file opened for reading.
    descriptor = os.open(path, os.O_RDWR)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextmanager
def atomic_replace(
    path: str | os.PathLike[str], *, sync: bool = True, sync_dir: bool = False
) -> Iterator[Path]:
    """Write a file under a temporary name and move it over ``path`` when done.

    The body of the ``with`` block writes the new contents to the yielded path (by
    name, or by opening it). When the block ends normally the temporary file is
    renamed over ``path`` in one step; when it raises (including ``KeyboardInterrupt``)
    the temporary file is deleted and ``path`` keeps its old contents.

    Example:
        >>> with atomic_replace("out/report.json") as tmp:  # doctest: +SKIP
        ...     tmp.write_text(text)

    Args:
        path: The file to create or replace; missing parent folders are created.
        sync: Flush the new data to disk before the rename. Turn off only for files a
            crash may lose but must never leave half written (caches, bulk outputs).
        sync_dir: Also flush the folder after the rename, so that after a power loss
            the new file, not the old one, is there (checkpoints, manifests).

    Yields:
        The temporary file: empty, in ``path``'s folder, with a hidden ``.tmp`` name.

    Raises:
        IsADirectoryError: ``path`` is an existing folder.
        FileNotFoundError: The body removed or renamed the temporary file.
        OSError: The folder cannot be created or written.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"cannot replace {target} with a file: it is a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = _new_temp_file(target)
    try:
        yield temp
        if not temp.is_file():
            raise FileNotFoundError(
                f"the temporary file {temp} was removed inside the with-block; {target} was not written"
            )
        if sync:
            _fsync_file(temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(target.parent)


def atomic_write_bytes(
    path: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    sync: bool = True,
    sync_dir: bool = False,
) -> Path:
    """Replace ``path`` with ``data`` as one step (see :func:`atomic_replace`).

    Args:
        path: The file to create or replace; missing parent folders are created.
        data: The complete new contents (any bytes-like object; encode text first).
        sync: Flush the data to disk before the rename.
        sync_dir: Also flush the folder after the rename.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``data`` is not bytes-like (e.g. a ``str``).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes needs bytes-like data, got {type(data).__name__}")
    target = Path(path)
    with atomic_replace(target, sync=sync, sync_dir=sync_dir) as temp, open(temp, "wb") as handle:
        handle.write(data)
    return target
