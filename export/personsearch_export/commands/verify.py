"""``personsearch verify``: re-run a bundle's ONNX Runtime vs PyTorch parity check.

A bundle with text graphs is verified with both checkpoints: ``--checkpoint`` (the
detector's) and ``--text-checkpoint`` (the text-to-image run its text graphs came from).
"""

from __future__ import annotations

import argparse

from personsearch_export.exporter import format_parity, verify_bundle


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle folder")
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="the checkpoint it was exported from"
    )
    parser.add_argument(
        "--text-checkpoint",
        metavar="T2I_RUN",
        help="the text checkpoint the bundle's text graphs were exported with (required when it has them)",
    )
    parser.add_argument("--scenes", metavar="DIR", help="images for the check (default: tiny synthetic set)")
    parser.add_argument("--parity-cases", type=int, default=3, help="random-size cases")


def run(args: argparse.Namespace) -> int:
    """Print the parity table; return 1 when a tolerance is exceeded."""
    report = verify_bundle(
        args.bundle,
        args.checkpoint,
        scenes_dir=args.scenes,
        parity_cases=args.parity_cases,
        text_checkpoint=args.text_checkpoint,
    )
    print(format_parity(report))
    return 0 if report["passed"] else 1
