"""``personsearch export-triton``: write a Triton model repository from a bundle."""

from __future__ import annotations

import argparse

from personsearch_export.triton import BACKENDS, write_repository


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory")
    parser.add_argument("--out", required=True, metavar="REPO", help="model repository to create")
    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    parser.add_argument(
        "--engine-dir", metavar="DIR", help="engines for --backend tensorrt (default BUNDLE/engines)"
    )
    parser.add_argument("--models", nargs="+", metavar="ROLE", help="only these roles (default: all)")
    parser.add_argument("--instance-kind", choices=["KIND_GPU", "KIND_CPU"], help="default GPU for TensorRT")
    parser.add_argument("--instances", type=int, default=1, help="instances per device")
    parser.add_argument("--max-queue-delay-us", type=int, default=100, help="dynamic batching delay")


def run(args: argparse.Namespace) -> int:
    """Write the repository and list its models."""
    from personsearch_export.bundle_folder import open_bundle

    bundle = open_bundle(args.bundle)
    configs = write_repository(
        bundle,
        args.out,
        backend=args.backend,
        engine_dir=args.engine_dir,
        roles=args.models,
        instance_kind=args.instance_kind,
        instance_count=args.instances,
        max_queue_delay_us=args.max_queue_delay_us,
    )
    for name, config in configs.items():
        print(f"{args.out}/{name}: {config.platform}, max_batch_size {config.max_batch_size}")
    return 0
