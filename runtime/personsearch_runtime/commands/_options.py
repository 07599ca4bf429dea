"""Options several runtime subcommands share (one definition each)."""

from __future__ import annotations

import argparse

__all__ = ["add_model_options", "non_negative_int", "positive_int"]


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """Argparse type for counts that must be at least 1 (``--top-k``, ``--frames``, ``--batch``)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """Argparse type for counts that may be 0 (``--warmup``)."""
    return _whole_number(text, 0)


def add_model_options(parser: argparse.ArgumentParser, *, bundle_required: bool = True) -> None:
    """Add --bundle, --backend, --device and --pipeline.

    Args:
        parser: The subcommand's parser.
        bundle_required: Whether ``--bundle`` must be given (``info`` takes it optionally).
    """
    parser.add_argument(
        "--bundle", required=bundle_required, help="bundle directory written by 'personsearch export'"
    )
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
        help="one-graph detector, split graphs with our RoIAlign, or auto (default): split only with "
        "TensorRT engines on the GPU, where every stage stays on the device; the one graph otherwise "
        "(with IOBinding for ONNX Runtime on the GPU). bench and info print the choice and why",
    )
