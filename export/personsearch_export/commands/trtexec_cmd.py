"""``personsearch trtexec-cmd``: the exact trtexec command lines per model of a bundle."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from personsearch_runtime.atomic_files import atomic_write_bytes

from personsearch_export.bundle_folder import ENGINE_DIR, TRTEXEC_DIR, open_bundle
from personsearch_export.engine_build import model_profile
from personsearch_export.errors import ExportError
from personsearch_export.trtexec import TRT_MAJORS, TrtexecCommands, trtexec_commands


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    parser.add_argument("--trt", choices=["10", "11", "both"], default="both", help="TensorRT flag set")
    parser.add_argument("--out", metavar="DIR", help="write trtexec_trt<N>.sh scripts into DIR")
    parser.add_argument("--models", nargs="+", metavar="ROLE", help="only these roles (default: all)")
    parser.add_argument("--engine-dir", default=ENGINE_DIR, help="where plans go, relative to the bundle")
    parser.add_argument(
        "--results-dir", default=TRTEXEC_DIR, help="where JSON exports go, relative to the bundle"
    )
    parser.add_argument("--timing-cache", metavar="FILE", help="--timingCacheFile for every build")
    parser.add_argument("--workspace-mb", type=int, default=4096)
    parser.add_argument("--version-compatible", action="store_true")
    parser.add_argument("--include-transfers", action="store_true", help="time H2D/D2H copies too")
    parser.add_argument("--trtexec", default="trtexec", help="trtexec executable")


def commands_for_bundle(args: argparse.Namespace) -> list[TrtexecCommands]:
    """Build the command pairs the options ask for.

    The bundle's graphs are checked against their recorded hashes first: a build from a
    corrupted copy would fail only after trtexec had run for minutes.
    """
    if args.workspace_mb < 1:
        raise ExportError(f"--workspace-mb must be >= 1, got {args.workspace_mb}")
    bundle = open_bundle(args.bundle)
    majors = TRT_MAJORS if args.trt == "both" else (int(args.trt),)
    roles = args.models or list(bundle.manifest.models)
    root = bundle.root
    out: list[TrtexecCommands] = []
    for major in majors:
        for role in roles:
            spec = bundle.manifest.models[role] if role in bundle.manifest.models else None
            if spec is None:
                bundle.model_path(role)  # raises BundleError naming the present roles
            tag = f"{role}.trt{major}"
            out.append(
                trtexec_commands(
                    role=role,
                    onnx_path=root / spec.file,
                    profile=model_profile(spec),
                    trt_major=major,
                    engine_path=root / args.engine_dir / f"{tag}.plan",
                    times_path=root / args.results_dir / f"{tag}.times.json",
                    profile_path=root / args.results_dir / f"{tag}.profile.json",
                    timing_cache=args.timing_cache,
                    workspace_mb=args.workspace_mb,
                    version_compatible=args.version_compatible,
                    include_transfers=args.include_transfers,
                    trtexec=args.trtexec,
                )
            )
    return out


def run(args: argparse.Namespace) -> int:
    """Print the commands; with --out also write one shell script per TensorRT major."""
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise ExportError(f"--out {args.out} is a file; give a folder for the trtexec_trt<N>.sh scripts")
    commands = commands_for_bundle(args)
    root = Path(args.bundle)
    scripts: dict[int, list[str]] = {}
    for c in commands:
        block = [
            f"# {c.role} (TensorRT {c.trt_major}.x); items/s = qps x batch {c.batch}",
            shlex.join(c.build),
            shlex.join(c.benchmark),
            shlex.join(
                [
                    "personsearch",
                    "trtexec-report",
                    c.times_path,
                    c.profile_path,
                    "--batch",
                    str(c.batch),
                ]
            ),
            "",
        ]
        scripts.setdefault(c.trt_major, []).extend(block)
    for major, lines in scripts.items():
        text = "\n".join(lines)
        print(text)
        if args.out:
            out_dir = Path(args.out)
            header = [
                "#!/usr/bin/env bash",
                f"# trtexec commands for TensorRT {major}.x, bundle {root}",
                "set -euo pipefail",
                shlex.join(["mkdir", "-p", str(root / args.engine_dir), str(root / args.results_dir)]),
                "",
            ]
            script = atomic_write_bytes(
                out_dir / f"trtexec_trt{major}.sh", ("\n".join(header) + text).encode()
            )
            os.chmod(script, 0o755)
    return 0
