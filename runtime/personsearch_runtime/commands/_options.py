"""Options several runtime subcommands share (one definition each)."""

from __future__ import annotations

import argparse


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add --bundle, --backend, --device and --pipeline."""
    parser.add_argument("--bundle", required=True, help="bundle directory written by 'personsearch export'")
    parser.add_argument(
        "--backend",
        choices=("ort", "trt"),
        default="ort",
        help="ONNX Runtime (default) or TensorRT engines from BUNDLE/engines",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument(
        "--pipeline",
        choices=("auto", "detector", "split"),
        default="auto",
        help="one-graph detector, split graphs with our RoIAlign, or auto (split on GPU)",
    )
