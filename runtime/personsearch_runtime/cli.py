"""The ``personsearch`` command line: one front door, subcommands loaded on demand.

Every subcommand lives in a module of the package that owns the work and exposes two
functions, ``add_arguments(parser)`` and ``run(args) -> int``. This front door only
knows the module *names*; it imports a module when its subcommand runs, so
``personsearch --help``, ``index``, ``query`` and ``info`` never load torch, and a
missing optional dependency is reported as the pip extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["COMMANDS", "Command", "main"]


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
    Command("demo", "personsearch_runtime.demo", "run the end-to-end demo on synthetic data", "dev"),
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
        raise


if __name__ == "__main__":
    sys.exit(main())
