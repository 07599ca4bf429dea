"""``personsearch export``: checkpoint -> ONNX bundle (manifest, graphs, parity.json)."""

from __future__ import annotations

import argparse

from personsearch_export.exporter import export_bundle, format_parity


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="run folder or checkpoint file")
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to create")
    parser.add_argument(
        "--opset", type=int, default=17, help="ONNX opset (>= 16, for RoiAlign's coordinate mode)"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=("fp32", "fp16"),
        help="graph precision; fp16 is written into the graphs (rois, box decoding, NMS and the "
        "embedding L2 norm stay float32)",
    )
    parser.add_argument("--max-detections", type=int, metavar="K", help="fixed top-K per image")
    parser.add_argument("--image-size", metavar="H,W|h,w/h,w/h,w", help="fed image size or min/opt/max")
    parser.add_argument("--max-batch", type=int, default=4, help="largest detector batch")
    parser.add_argument(
        "--scenes", metavar="DIR", help="images for the parity check (default: tiny synthetic set)"
    )
    parser.add_argument("--parity-cases", type=int, default=3, help="random-size parity cases")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def run(args: argparse.Namespace) -> int:
    """Export; return 1 when the bundle was written but parity failed its tolerances."""
    report = export_bundle(
        args.checkpoint,
        args.out,
        opset=args.opset,
        precision=args.precision,
        max_detections=args.max_detections,
        image_size=args.image_size,
        max_batch=args.max_batch,
        scenes_dir=args.scenes,
        parity_cases=args.parity_cases,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out}")
    print(format_parity(report))
    return 0 if report["passed"] else 1
