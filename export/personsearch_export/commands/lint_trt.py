"""``personsearch lint-trt``: check a bundle's ONNX graphs against TensorRT's ONNX parser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
        from personsearch_runtime.bundle import Bundle

        bundle = Bundle.load(path, verify_hashes=False)
        chosen = roles or list(bundle.manifest.models)
        return [bundle.model_path(role) for role in chosen]
    if path.suffix != ".onnx" or not path.is_file():
        raise ExportError(f"{path} is neither a bundle directory nor an .onnx file")
    return [path]


def lint_targets(paths: list[Path], roles: list[str] | None = None) -> dict[str, list[Finding]]:
    """Lint every model named by ``paths`` (bundles expand to their models).

    Returns:
        File path -> findings.
    """
    results: dict[str, list[Finding]] = {}
    for path in paths:
        for target in _targets(path, roles):
            results[str(target)] = lint_path(target)
    return results


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
        payload = {t: [f.to_dict() for f in fs] for t, fs in results.items()}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if problems:
        print(f"lint-trt: {problems} problem(s) found", file=sys.stderr)
        return 1
    return 0
