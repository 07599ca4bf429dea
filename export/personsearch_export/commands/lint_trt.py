"""``personsearch lint-trt``: check a bundle's ONNX graphs against TensorRT's ONNX parser.

A bundle's graphs are checked against the SHA-256 its manifest records before they are
linted (a truncated or damaged copy is reported as corrupted, exit 2); a bare ``.onnx``
file has no recorded hash, so only its readability is checked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from personsearch_export.bundle_folder import open_bundle
from personsearch_export.engine_build import write_json_atomic
from personsearch_export.errors import ExportError
from personsearch_export.trt_support import TRT_TABLE_SOURCE, Finding, lint_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument(
        "paths", nargs="+", metavar="BUNDLE_OR_ONNX", help="bundle directories or .onnx files"
    )
    parser.add_argument("--models", nargs="+", metavar="ROLE", help="only these bundle roles (e.g. box_head)")
    parser.add_argument("--strict", action="store_true", help="treat warnings as problems too")
    parser.add_argument("--json", metavar="FILE", help="also write the findings as JSON")


def _targets(path: Path, roles: list[str] | None) -> list[Path]:
    if path.is_dir():
        bundle = open_bundle(path)
        chosen = roles or list(bundle.manifest.models)
        return [bundle.model_path(role) for role in chosen]
    if path.suffix != ".onnx" or not path.is_file():
        what = "does not exist" if not path.exists() else "is neither a bundle directory nor an .onnx file"
        raise ExportError(f"{path} {what}; pass bundle folders or .onnx files")
    return [path]


def lint_targets(paths: list[Path], roles: list[str] | None = None) -> dict[str, list[Finding]]:
    """Lint every model named by ``paths`` (bundles expand to their models).

    Every path is opened (and a bundle's hashes checked) before any graph is linted, so a
    bad path is reported before minutes of work.

    Args:
        paths: Bundle folders and ``.onnx`` files.
        roles: Only these roles of each bundle; all when None.

    Returns:
        File path -> findings.

    Raises:
        ExportError: A path that is neither, or an unreadable ONNX file.
        BundleError: A bundle without a valid manifest, with a corrupted graph, or without
            a requested role.
    """
    targets = [target for path in paths for target in _targets(path, roles)]
    return {str(target): lint_path(target) for target in targets}


def run(args: argparse.Namespace) -> int:
    """Print findings; return 1 when any error (or, with --strict, any warning) was found."""
    results = lint_targets([Path(p) for p in args.paths], args.models)
    problems = 0
    for target, findings in results.items():
        errors = sum(f.severity == "error" for f in findings)
        warnings = len(findings) - errors
        status = "FAIL" if errors or (args.strict and warnings) else "ok"
        print(f"{status:<5}{target}: {errors} error(s), {warnings} warning(s)")
        for f in findings:
            where = f" [{f.node}]" if f.node else ""
            print(f"    {f.severity:<8}{f.code}{where}: {f.message}")
        problems += errors + (warnings if args.strict else 0)
    print(f"checked against {TRT_TABLE_SOURCE}")
    if args.json:
        write_json_atomic(args.json, {t: [f.to_dict() for f in fs] for t, fs in results.items()})
    if problems:
        print(f"lint-trt: {problems} problem(s) found", file=sys.stderr)
        return 1
    return 0
