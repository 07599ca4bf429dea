"""``personsearch export``: checkpoint -> ONNX bundle (manifest, graphs, parity.json).

``--text-checkpoint`` adds sentence search: the text and crop encoders of a text-to-image
run (``method: irra`` or ``cfam``) and its tokenizer, measured like the detector.
"""

from __future__ import annotations

import argparse
from typing import Any

from personsearch_export.exporter import export_bundle, format_parity
from personsearch_export.trt_support import TRT_TOPK_K_MAX, TRT_TOPK_MAX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's options."""
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="run folder or checkpoint file")
    parser.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to create")
    parser.add_argument(
        "--text-checkpoint",
        metavar="T2I_RUN",
        help="run folder or checkpoint of a text-to-image model (method: irra or cfam): adds "
        "text_encoder.onnx, crop_encoder.onnx and tokenizer.json for sentence search, with their "
        "parity; --opset, --precision and --max-batch apply to them too",
    )
    parser.add_argument(
        "--text-int8",
        action="store_true",
        help="with --text-checkpoint: also write text_encoder.int8.onnx, an int8 CPU variant of the text "
        "encoder (dynamic quantisation) that the runtime uses with ONNX Runtime on the CPU",
    )
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
    parser.add_argument(
        "--max-batch", type=int, default=4, help="largest detector batch (and text / crop encoder batch)"
    )
    parser.add_argument(
        "--rpn-pre-nms-top-n",
        type=int,
        metavar="N",
        help=f"anchors the RPN keeps before NMS (the graphs' TopK K); default the model's "
        f"test-time value capped at {TRT_TOPK_K_MAX}, since TensorRT's TopK takes K < {TRT_TOPK_MAX}. "
        "The parity check runs the PyTorch model with the same N",
    )
    parser.add_argument(
        "--scenes", metavar="DIR", help="images for the parity check (default: tiny synthetic set)"
    )
    parser.add_argument("--parity-cases", type=int, default=3, help="random-size parity cases")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing bundle")


def rpn_note(report: dict[str, Any]) -> str | None:
    """A note for a parity report whose graphs keep another pre-NMS top-N than the model, or None."""
    pre_nms = report.get("rpn_pre_nms_top_n") or {}
    graphs, model = pre_nms.get("graphs"), pre_nms.get("model")
    if graphs is None or graphs == model:
        return None
    if graphs >= TRT_TOPK_MAX:
        return (
            f"warning: the RPN keeps its {graphs} best anchors before NMS (model: {model}); TensorRT's "
            f"TopK takes K < {TRT_TOPK_MAX}, so these graphs run in ONNX Runtime but cannot become "
            "TensorRT engines (lint-trt reports topk-k)"
        )
    why = f": TensorRT's TopK takes K < {TRT_TOPK_MAX}" if graphs == TRT_TOPK_K_MAX < model else ""
    return (
        f"note: the graphs' RPN keeps its {graphs} best anchors before NMS where the model keeps "
        f"{model}{why}; parity compared them with the PyTorch model run at {pre_nms.get('reference')} "
        "(--rpn-pre-nms-top-n sets it)"
    )


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
        rpn_pre_nms_top_n=args.rpn_pre_nms_top_n,
        text_checkpoint=args.text_checkpoint,
        text_int8=args.text_int8,
    )
    print(f"wrote {args.out}")
    note = rpn_note(report)
    if note is not None:
        print(note)
    print(format_parity(report))
    return 0 if report["passed"] else 1
