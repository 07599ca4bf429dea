"""The ``personsearch`` command line: one front door, subcommands loaded on demand.

Every subcommand lives in a module of the package that owns the work and exposes two
functions, ``add_arguments(parser)`` and ``run(args) -> int``. This front door only
knows the module *names*; it imports a module when its subcommand runs, so
``personsearch --help``, ``index``, ``query`` and ``info`` never load torch, and a
missing optional dependency is reported as the pip extra to install.

What goes wrong is reported as one line and an exit code, never a traceback, when the
user can fix it: a user error (an exception class with ``is_user_error = True``) and an
operating-system error from the user's environment (permission denied, read-only or full
disk, a file where a folder belongs, a path that vanished) exit with 2, Ctrl-C with 130.
Anything else is a bug and raises.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "environment_error_message", "main"]


@dataclass(frozen=True)
class Command:
    """One subcommand of ``personsearch``.

    Attributes:
        name: What the user types, e.g. ``"synth"``.
        module: Import path of the module providing ``add_arguments`` and ``run``.
        summary: One line shown by ``personsearch --help``.
        extra: The pip extra (``pip install "personsearch[EXTRA]"``) whose packages it needs.
    """

    name: str
    module: str
    summary: str
    extra: str


COMMANDS: tuple[Command, ...] = (
    Command("demo", "personsearch_export.demo", "run the end-to-end demo on synthetic data", "dev"),
    Command(
        "synth", "personsearch_train.commands.synth", "generate a synthetic person-search dataset", "train"
    ),
    Command(
        "baseline-hist",
        "personsearch_train.commands.baseline_hist",
        "colour-histogram re-id baseline on ground-truth boxes (writes a predictions file)",
        "train",
    ),
    Command(
        "eval",
        "personsearch_export.commands.evaluate",
        "score a predictions file, checkpoint or bundle with the exact protocol",
        "export",
    ),
    Command("train", "personsearch_train.commands.train", "train a model from a YAML recipe", "train"),
    Command(
        "pseudo-caption",
        "personsearch_train.commands.pseudo_caption",
        "write UniPT pseudo-captions for a folder of person crops",
        "train",
    ),
    Command(
        "export", "personsearch_export.commands.export", "export a checkpoint to an ONNX bundle", "export"
    ),
    Command(
        "verify", "personsearch_export.commands.verify", "re-run the ONNX/PyTorch parity check", "export"
    ),
    Command(
        "build-engine", "personsearch_export.commands.build_engine", "build TensorRT engines", "tensorrt"
    ),
    Command(
        "trtexec-cmd", "personsearch_export.commands.trtexec_cmd", "write trtexec command lines", "export"
    ),
    Command(
        "trtexec-report", "personsearch_export.commands.trtexec_report", "summarise trtexec timings", "export"
    ),
    Command(
        "lint-trt", "personsearch_export.commands.lint_trt", "check ONNX graphs against TensorRT", "export"
    ),
    Command(
        "export-triton",
        "personsearch_export.commands.export_triton",
        "write a Triton model repository",
        "export",
    ),
    Command("index", "personsearch_runtime.commands.index", "detect, embed and index a gallery", "runtime"),
    Command("query", "personsearch_runtime.commands.query", "search a gallery for a person", "runtime"),
    Command("info", "personsearch_runtime.commands.info", "describe a gallery", "runtime"),
    Command("bench", "personsearch_runtime.commands.bench", "time the runtime on a bundle", "runtime"),
)

_BY_NAME = {command.name: command for command in COMMANDS}
if len(_BY_NAME) != len(COMMANDS):
    raise RuntimeError("duplicate subcommand names in personsearch_runtime.cli.COMMANDS")

#: OS errors caused by the user's environment: errno -> (what happened, what to do).
#: Atomic writers leave no half-written file, and resumable work commits as it goes.
_ENVIRONMENT_ERRORS = {
    errno.ENOSPC: ("no space left on device", "free some space and rerun; work saved so far is kept"),
    errno.EDQUOT: (
        "disk quota exceeded",
        "free some space or raise the quota and rerun; work saved so far is kept",
    ),
    errno.EFBIG: ("file too large for this file system", "write to another file system and rerun"),
    errno.EROFS: ("read-only file system", "write somewhere writable (another output folder) and rerun"),
    errno.EACCES: (
        "permission denied",
        "check the permissions of the file and its folder, or use another path",
    ),
    errno.EPERM: (
        "operation not permitted",
        "check the permissions of the file and its folder, or use another path",
    ),
    errno.EISDIR: ("it is a folder where a file is expected", "give a file path, or move the folder away"),
    errno.ENOTDIR: ("a part of the path is a file where a folder is expected", "check the path"),
    errno.ENOENT: ("no such file or folder", "check the path (was something moved or deleted while it ran?)"),
    errno.EEXIST: ("it already exists", "remove it or give another path"),
    errno.ENAMETOOLONG: ("the file name is too long", "use a shorter path"),
    errno.ELOOP: ("too many levels of symbolic links", "check the symbolic links in the path"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n) and rerun"),
    errno.EIO: ("input/output error", "check the disk or network share and rerun; work saved so far is kept"),
}
#: The errno an OSError subclass stands for, for those raised with a message and no errno.
_ERRNO_OF_KIND = {
    PermissionError: errno.EACCES,
    IsADirectoryError: errno.EISDIR,
    NotADirectoryError: errno.ENOTDIR,
    FileNotFoundError: errno.ENOENT,
    FileExistsError: errno.EEXIST,
}
#: SQLite primary result codes (``sqlite3.Error.sqlite_errorname``) of the same kind.
_SQLITE_ENVIRONMENT_ERRORS = {
    "SQLITE_FULL": ("the disk is full", "free some space and rerun; work saved so far is kept"),
    "SQLITE_READONLY": (
        "it is read-only (file permissions or a read-only disk)",
        "make the folder writable or use another one",
    ),
    "SQLITE_CANTOPEN": ("it cannot be opened", "check that its folder exists and is readable and writable"),
    "SQLITE_PERM": ("permission denied", "check the permissions of the database file and its folder"),
    "SQLITE_IOERR": (
        "input/output error",
        "check the disk or network share and rerun; work saved so far is kept",
    ),
}
#: What argparse should read as a value, not an option: "-5", "-.5", "-5,10,50,100", "-1e-3".
#: This is Python 3.13's rule; 3.10 to 3.12 took only plain numbers, so
#: ``--box -5,10,50,100`` failed with "expected one argument".
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def environment_error_message(exc: BaseException) -> str | None:
    """One line for an OS (or SQLite) error the user's environment caused; None for anything else.

    Args:
        exc: The exception a command raised.

    Returns:
        ``cannot write PATH: WHAT; WHAT TO DO`` (or ``cannot use ...``), or None when
        ``exc`` is not such an error.
    """
    if isinstance(exc, OSError):
        code = exc.errno
        if code is None:
            # Raised by our own code with a message only, e.g. IsADirectoryError("cannot
            # replace X with a file: it is a folder"): the message says what, add what to do.
            code = next((c for kind, c in _ERRNO_OF_KIND.items() if isinstance(exc, kind)), None)
            return f"{exc}; {_ENVIRONMENT_ERRORS[code][1]}" if code is not None and str(exc) else None
        if code not in _ENVIRONMENT_ERRORS:
            return None
        what, todo = _ENVIRONMENT_ERRORS[code]
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        verb = (
            "cannot write" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS) else "cannot use"
        )
        return f"{verb} {' -> '.join(paths)}: {what}; {todo}" if paths else f"{verb}: {what}; {todo}"
    name = getattr(exc, "sqlite_errorname", None)  # e.g. SQLITE_IOERR_WRITE: its primary is SQLITE_IOERR
    entry = _SQLITE_ENVIRONMENT_ERRORS.get("_".join(name.split("_")[:2])) if isinstance(name, str) else None
    if entry is None:
        return None
    what, todo = entry
    return f"cannot use a database file ({exc}): {what}; {todo}"


def _top_level_parser() -> argparse.ArgumentParser:
    lines = [f"  {c.name:<16}{c.summary}" for c in COMMANDS]
    parser = argparse.ArgumentParser(
        prog="personsearch",
        description="Person search from training to deployment.",
        epilog="commands:\n"
        + "\n".join(lines)
        + "\n\nRun 'personsearch COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", metavar="COMMAND", help="one of the commands below")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _import_command(command: Command):  # noqa: ANN202 - returns a module
    try:
        return importlib.import_module(command.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        if missing == command.module or command.module.startswith(f"{missing}."):
            raise SystemExit(
                f"personsearch {command.name}: this command is not available in this installation "
                f"(module {command.module} not found)."
            ) from None
        raise SystemExit(
            f"personsearch {command.name}: needs the Python package '{missing}', which is not installed.\n"
            f'Install it with: pip install "personsearch[{command.extra}]"'
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``personsearch`` with the given arguments.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code: 0 on success, 1 when the work found a problem, 2 for
        user errors (bad input files, bad options), 130 when interrupted.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_level_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    if argv[0] == "--version":
        from personsearch_runtime import __version__

        print(f"personsearch {__version__}")
        return 0
    command = _BY_NAME.get(argv[0])
    if command is None:
        top.error(f"unknown command {argv[0]!r}; choose from: {', '.join(_BY_NAME)}")
    module = _import_command(command)
    parser = argparse.ArgumentParser(prog=f"personsearch {command.name}", description=command.summary)
    module.add_arguments(parser)
    # Set on the parser argparse reads it from (a private attribute since Python 2.7; on
    # versions without it the assignment is harmless).
    parser._negative_number_matcher = _NEGATIVE_VALUE
    args = parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print(f"\npersonsearch {command.name}: interrupted; work saved so far is kept.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - only user errors are turned into messages
        if getattr(type(exc), "is_user_error", False):
            print(f"personsearch {command.name}: error: {exc}", file=sys.stderr)
            return 2
        message = environment_error_message(exc)
        if message is not None:
            print(f"personsearch {command.name}: error: {message}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
