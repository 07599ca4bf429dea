"""Bundle folders given to the exporter's commands: opening one, and replacing one on ``--overwrite``.

What is ours in a bundle folder: what ``personsearch export`` writes (``manifest.json``,
the graphs and tokenizer the manifest lists, ``parity.json``), what the other exporter
commands write into it by default (``engines/ROLE.plan`` and its ``.plan.json`` sidecar
from ``build-engine``; ``engines/ROLE.trtN.plan`` and ``trtexec/ROLE.trtN.{times,profile}.json``
from the ``trtexec-cmd`` scripts), and the hidden ``.NAME.XXXXXXXXXXXX.tmp`` files an
atomic writer leaves when it is killed. ``--overwrite`` replaces a folder only when it
holds our manifest and nothing that is not ours: anything else (a user's notes, a
sub-folder) makes it refuse and list what it found, so replacing a bundle never deletes
a file the exporter did not write.

Replacing is crash-safe: the new bundle is written into a hidden sibling folder and
swapped in with one atomic ``renameat2(RENAME_EXCHANGE)`` on Linux (elsewhere: the old
folder is renamed aside, the new one renamed in, and the old one renamed back if that
fails), and only then are the old bundle's files deleted, one by one by name. A crash at
any point leaves either the old bundle or the new one at ``--out``, never a mix, and never
neither.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import sys
import warnings
from pathlib import Path, PurePosixPath

from personsearch_runtime.atomic_files import fsync_dir
from personsearch_runtime.bundle import MANIFEST_NAME, Bundle, Manifest
from personsearch_runtime.errors import BundleError

from personsearch_export.errors import ExportError

__all__ = [
    "ENGINE_DIR",
    "PARITY_FILE",
    "TRTEXEC_DIR",
    "check_output_folder",
    "install_bundle",
    "new_bundle_folder",
    "not_ours",
    "open_bundle",
]

#: The parity report ``export`` and ``verify`` write into the bundle.
PARITY_FILE = "parity.json"
#: Where ``build-engine`` and the ``trtexec-cmd`` scripts put engines by default.
ENGINE_DIR = "engines"
#: Where the ``trtexec-cmd`` scripts put trtexec's JSON exports by default.
TRTEXEC_DIR = "trtexec"
#: TensorRT major versions the ``trtexec-cmd`` scripts name their files after.
_TRT_MAJORS = (10, 11)
#: An atomic writer's temporary file for NAME (personsearch_runtime.atomic_files).
_TEMP_FILE = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp$")
_MAX_LISTED = 10


def open_bundle(path: str | os.PathLike[str], *, verify_hashes: bool = True) -> Bundle:
    """Load a bundle named on the command line, checking every graph's recorded SHA-256.

    The exporter's commands open bundles through this one function so each of them
    checks the graphs' hashes by default; the checks and their messages (a path that is
    a file, a missing manifest or graph, a graph whose bytes do not match: "corrupted")
    are the runtime's (:meth:`personsearch_runtime.bundle.Bundle.load`).

    Args:
        path: The bundle folder (or its ``manifest.json``).
        verify_hashes: Check each graph file against the manifest's SHA-256.

    Returns:
        The bundle.

    Raises:
        BundleError: ``path`` is a file other than a manifest, no folder, no or an invalid
            manifest, a missing graph file, or a corrupted graph.
    """
    return Bundle.load(path, verify_hashes=verify_hashes)


def _owned_files(manifest: Manifest) -> set[str]:
    """Relative (POSIX) paths of every file the exporter's commands may have written for ``manifest``."""
    owned = {MANIFEST_NAME, PARITY_FILE}
    owned.update(PurePosixPath(model.file).as_posix() for model in manifest.models.values())
    if manifest.tokenizer is not None:
        owned.add(PurePosixPath(manifest.tokenizer.file).as_posix())
    if manifest.text is not None and manifest.text.int8_file is not None:
        owned.add(PurePosixPath(manifest.text.int8_file).as_posix())
    for role in manifest.models:
        owned.update((f"{ENGINE_DIR}/{role}.plan", f"{ENGINE_DIR}/{role}.plan.json"))
        for major in _TRT_MAJORS:
            tag = f"{role}.trt{major}"
            owned.update(
                (
                    f"{ENGINE_DIR}/{tag}.plan",
                    f"{TRTEXEC_DIR}/{tag}.times.json",
                    f"{TRTEXEC_DIR}/{tag}.profile.json",
                )
            )
    return owned


def _owned_folders(owned_files: set[str]) -> set[str]:
    return {str(PurePosixPath(f).parent) for f in owned_files} - {"."}


def _is_owned_file(relative: str, owned: set[str]) -> bool:
    if relative in owned:
        return True
    path = PurePosixPath(relative)
    temp = _TEMP_FILE.match(path.name)
    return temp is not None and str(path.with_name(temp.group("name"))) in owned


def _read_manifest(folder: Path) -> Manifest:
    """The folder's manifest, or ExportError saying why the folder is not one of our bundles."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ExportError(f"it has no {MANIFEST_NAME}")
    try:
        return Manifest.loads(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, BundleError) as exc:
        raise ExportError(f"its {MANIFEST_NAME} is not a valid bundle manifest ({exc})") from None


def not_ours(folder: Path, manifest: Manifest) -> list[str]:
    """List what in a bundle folder the exporter did not write.

    Args:
        folder: The bundle folder.
        manifest: Its manifest.

    Returns:
        Relative paths (folders with a trailing ``/``, not descended into), sorted; empty
        when every entry is a file the exporter's commands write or their folders.
    """
    owned = _owned_files(manifest)
    owned_dirs = _owned_folders(owned)
    foreign: list[str] = []

    def unreadable(exc: OSError) -> None:
        # A folder that cannot be listed cannot be shown to hold only our files.
        raise ExportError(f"cannot list {exc.filename} ({exc.strerror}); check its permissions") from None

    for current, dirs, files in os.walk(folder, onerror=unreadable):
        base = PurePosixPath(Path(current).relative_to(folder).as_posix())
        for name in list(dirs):
            relative = str(base / name) if str(base) != "." else name
            # A linked folder is never ours: deleting "our" files through it would reach
            # into wherever it points.
            if relative not in owned_dirs or (Path(current) / name).is_symlink():
                foreign.append(relative + "/")
                dirs.remove(name)
        for name in files:
            relative = str(base / name) if str(base) != "." else name
            if not _is_owned_file(relative, owned):
                foreign.append(relative)
    return sorted(foreign)


def _describe(entries: list[str]) -> str:
    shown = ", ".join(entries[:_MAX_LISTED])
    more = len(entries) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def check_output_folder(out: Path, *, overwrite: bool) -> None:
    """Refuse an ``--out`` the export must not write to, before any work is done.

    Accepted: a path that does not exist (under folders that exist or can be made), an
    empty folder, and with ``overwrite`` a bundle folder holding only what the exporter
    writes (:func:`not_ours` is empty).

    Args:
        out: The bundle folder to create or replace.
        overwrite: Whether ``--overwrite`` was given.

    Raises:
        ExportError: ``out`` or one of its parents is a file, ``out`` is a symbolic link,
            it is a non-empty folder without ``overwrite``, or with ``overwrite`` it is not
            a bundle of ours or holds files that are not ours (the message lists them).
    """
    for parent in out.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ExportError(
                    f"--out {out}: {parent} is a file, so no folder can be made under it; "
                    "choose another --out"
                )
            break
    if out.is_symlink():
        raise ExportError(
            f"--out {out} is a symbolic link; pass the folder it points to ({out.resolve()}) or another path"
        )
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder path for the bundle")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ExportError(
            f"{out} already exists and is not empty; choose another --out, or pass --overwrite to replace "
            "the bundle in it"
        )
    try:
        manifest = _read_manifest(out)
    except ExportError as exc:
        raise ExportError(
            f"--overwrite refused: {out} is not a bundle made by 'personsearch export' ({exc}), and "
            "--overwrite only replaces bundles; choose another --out, or empty the folder yourself"
        ) from None
    foreign = not_ours(out, manifest)
    if foreign:
        raise ExportError(
            f"--overwrite refused: {out} holds files the exporter did not write: {_describe(foreign)}; "
            "move them out of the bundle folder (or choose another --out) and rerun"
        )


def new_bundle_folder(out: Path) -> Path:
    """Create the hidden sibling folder a new output folder (a bundle, a Triton repository) is written into.

    Unlike :func:`tempfile.mkdtemp` the folder gets the permissions the umask gives any
    new folder, since it is renamed into the output (a 0700 bundle would be unreadable to
    a serving account).

    Args:
        out: The folder to create or replace (its parents are made if missing).

    Returns:
        The new, empty folder ``.NAME.partial-XXXXXXXXXXXX`` beside ``out``.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = out.with_name(f".{out.name}.partial-{secrets.token_hex(6)}")
        try:
            folder.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return folder


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    renameat2.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # old kernel or a file system without exchange: fall back to two renames
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def _remove_old(old: Path, manifest: Manifest | None) -> None:
    """Delete a replaced bundle's files by name, then its (now empty) folders.

    Never raises: the new bundle is already in place, so whatever cannot be deleted (a file
    that appeared after the last check, a permission) is left in ``old`` with a warning.
    """
    owned = _owned_files(manifest) if manifest is not None else set()
    try:
        for relative in sorted(owned):
            path = old / relative
            for candidate in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
                if _TEMP_FILE.match(candidate.name) or candidate == path:
                    candidate.unlink(missing_ok=True)
        for folder in sorted(_owned_folders(owned), key=lambda f: -f.count("/")):
            if (old / folder).is_dir() and not any((old / folder).iterdir()):
                (old / folder).rmdir()
        old.rmdir()
    except OSError as exc:
        warnings.warn(
            f"the new bundle is in place, but the replaced one could not be removed completely ({exc}); "
            f"what is left is in {old}: move anything you need and delete the folder",
            stacklevel=3,
        )


def install_bundle(new: Path, out: Path, *, overwrite: bool) -> None:
    """Move a finished bundle from its hidden sibling folder to ``out``, replacing what is there.

    ``out`` is checked again (:func:`check_output_folder`) right before the swap, since the
    export may have run for minutes; on refusal ``new`` is left for the caller to remove.

    Args:
        new: The finished bundle (from :func:`new_bundle_folder`).
        out: Where it goes.
        overwrite: Whether ``--overwrite`` was given.

    Raises:
        ExportError: ``out`` may no longer be replaced (see :func:`check_output_folder`).
    """
    check_output_folder(out, overwrite=overwrite)
    if not out.exists():
        os.replace(new, out)
        fsync_dir(out.parent)
        return
    manifest = _read_manifest(out) if (out / MANIFEST_NAME).is_file() else None
    if _exchange(new, out):
        old = new
    else:
        old = out.with_name(f".{out.name}.old-{secrets.token_hex(6)}")
        os.replace(out, old)
        try:
            os.replace(new, out)
        except BaseException:
            os.replace(old, out)
            raise
    fsync_dir(out.parent)
    _remove_old(old, manifest)
