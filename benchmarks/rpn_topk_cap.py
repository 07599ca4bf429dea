"""Accuracy effect of capping the RPN's pre-NMS top-N at 3839, TensorRT's largest TopK.

The exporter keeps ``min(rpn_pre_nms_top_n_test, 3839)`` anchors before the RPN's NMS,
because TensorRT's TopK takes K < 3840 (``personsearch export --rpn-pre-nms-top-n``).
This script measures what that costs on a trained checkpoint: it evaluates the PyTorch
model with the trainer's evaluation (``predict_split`` + ``score_predictions``, the
protocol of the dataset) once per pre-NMS count - by default the model's own and the
cap - and prints mAP, top-1, detection AP and recall for each, the differences, and
how many gallery images got different detections. Only the RPN's count changes between
the runs; query boxes are embedded without the RPN, so they are the same in both.

It also counts the images on which the RPN returned fewer proposals than its post-NMS
top-N. Greedy NMS visits boxes best first, so when NMS over the best 3839 anchors keeps
at least post-NMS top-N boxes, they are exactly the first survivors of the best 6000:
an image with a full set of proposals in the capped run has the uncapped proposals.

Usage::

    nice python benchmarks/rpn_topk_cap.py --checkpoint runs/small_cuhk --dataset cuhk_sysu \\
        --root data/small/CUHK-SYSU [--append]

The report is printed and written to ``--out`` (default
``benchmarks/results/rpn_topk_cap.txt``; ``--append`` adds to it, for a second dataset).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

#: Same cap as the exporter's default (``personsearch_export.trt_support.TRT_TOPK_K_MAX``),
#: restated so the script needs only the trainer.
CAP = 3839
METRICS = (("mAP", "mAP"), ("top1", "top-1"), ("det_ap", "det AP"), ("det_recall", "det recall"))


def _changed_images(a, b) -> int:  # noqa: ANN001  (two SearchPredictions)
    """Gallery images whose detections (boxes or scores) differ between two prediction sets."""
    changed = 0
    for g in range(a.num_gallery):
        sa, sb = a.image_slice(g), b.image_slice(g)
        boxes_a, boxes_b = a.det_boxes[sa], b.det_boxes[sb]
        same = (
            boxes_a.shape == boxes_b.shape
            and np.allclose(boxes_a, boxes_b, atol=1e-4)
            and np.allclose(a.det_scores[sa], b.det_scores[sb], atol=1e-6)
        )
        changed += not same
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run folder or checkpoint file")
    parser.add_argument("--dataset", required=True, choices=("cuhk_sysu", "prw"), help="test protocol")
    parser.add_argument("--root", required=True, help="dataset folder (CUHK-SYSU or PRW layout)")
    parser.add_argument(
        "--counts",
        help=f"comma-separated pre-NMS counts, the first the baseline; default the model's test-time "
        f"value and min(it, {CAP}), what the exporter keeps",
    )
    parser.add_argument("--batch-size", type=int, default=4, help="images per predict call (recipe eval)")
    parser.add_argument("--gallery-size", type=int, default=100, help="CUHK-SYSU gallery size")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--out", default="benchmarks/results/rpn_topk_cap.txt", help="report file")
    parser.add_argument("--append", action="store_true", help="add to --out instead of replacing it")
    args = parser.parse_args(argv)

    from personsearch_train.data.registry import load_split
    from personsearch_train.engine.checkpoint import read_checkpoint
    from personsearch_train.engine.inference import predict_split
    from personsearch_train.evaluation.scoring import DEFAULT_GALLERY_SIZE, EvalOptions, score_predictions

    torch.set_num_threads(args.threads)
    # PRW has no gallery-size option: EvalOptions refuses one, as `personsearch eval` does.
    gallery_size = args.gallery_size if args.dataset == "cuhk_sysu" else DEFAULT_GALLERY_SIZE
    EvalOptions(dataset=args.dataset, gallery_size=gallery_size)
    loaded = read_checkpoint(args.checkpoint)
    model = loaded.model
    table = model.rpn._pre_nms_top_n
    model_count = int(table["testing"])
    if args.counts:
        counts = [int(c) for c in args.counts.split(",")]
    else:
        # Under the cap the export keeps the model's own count: nothing to compare.
        counts = [model_count] if model_count <= CAP else [model_count, CAP]
    if any(c < 1 for c in counts):
        parser.error(f"--counts must be positive, got {counts}")
    split = load_split(args.dataset, args.root, "test")

    post_nms = int(model.rpn._post_nms_top_n["testing"])
    proposal_counts: list[int] = []
    # predict_split calls the RPN on gallery images only (query boxes are embedded directly).
    hook = model.rpn.register_forward_hook(
        lambda module, inputs, output: proposal_counts.extend(len(b) for b in output[0])
    )
    results = {}
    for count in counts:
        table["testing"] = count
        proposal_counts.clear()
        start = time.perf_counter()
        predictions = predict_split(model, split, batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - start
        scores = score_predictions(split, predictions, gallery_size=gallery_size)
        short = sum(n < post_nms for n in proposal_counts)
        results[count] = (scores, predictions, seconds, short, len(proposal_counts))
        print(f"pre-NMS {count}: {scores['mAP'] * 100:.2f} % mAP in {seconds:.0f} s", file=sys.stderr)
    table["testing"] = model_count
    hook.remove()

    command = " ".join(["python", *map(shlex.quote, [sys.argv[0], *(argv or sys.argv[1:])])])
    protocol = f"gallery {gallery_size}" if args.dataset == "cuhk_sysu" else "all frames"
    meta = loaded.metadata
    kwargs = meta["model"].get("kwargs") or {}
    shown = ("res4_stride", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_nms_thresh")
    settings = ", ".join(f"{k}={kwargs[k]}" for k in shown if k in kwargs)
    trained = meta.get("metrics") or {}
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [
        f"$ {command}",
        f"# {now}, {os.cpu_count()} CPU cores, load {load}",
        f"checkpoint: {loaded.files.weights} (epoch {meta.get('epoch')}), {meta['model']['name']} {settings}",
        f"protocol: {args.dataset} test ({len(split.images)} gallery images, {protocol}), "
        f"batch {args.batch_size}, {args.threads} threads, values in %",
        f"{'pre-NMS top-N':<18}"
        + "".join(f"{label:>12}" for _, label in METRICS)
        + f"{'time s':>10}{f'images < {post_nms} proposals':>28}",
    ]
    if "mAP" in trained:
        lines.insert(
            -1,
            f"the trainer's evaluation when it saved this checkpoint: mAP {trained['mAP'] * 100:.2f}, "
            f"top-1 {trained.get('top1', float('nan')) * 100:.2f}",
        )
    for count, (scores, _, seconds, short, images) in results.items():
        tag = " (model)" if count == model_count else " (cap)" if count == CAP else ""
        lines.append(
            f"{f'{count}{tag}':<18}"
            + "".join(f"{scores[key] * 100:>12.2f}" for key, _ in METRICS)
            + f"{seconds:>10.0f}{f'{short} / {images}':>28}"
        )
    base_count = counts[0]
    base_scores, base_predictions = results[base_count][:2]
    for count in counts[1:]:
        scores, predictions = results[count][:2]
        lines.append(
            f"{f'{count} - {base_count}':<18}"
            + "".join(f"{(scores[key] - base_scores[key]) * 100:>+12.2f}" for key, _ in METRICS)
        )
        lines.append(
            f"gallery images whose detections changed ({count} vs {base_count}): "
            f"{_changed_images(base_predictions, predictions)} / {base_predictions.num_gallery}"
        )
    if len(counts) == 1:
        lines.append(f"(pre-NMS {model_count} is within the cap {CAP}: the export keeps it unchanged)")
    lines.append("(time s: wall time of the split's predictions on a shared CPU, not a speed comparison)")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = out.read_text(encoding="utf-8") + "\n" if args.append and out.exists() else ""
    out.write_text(previous + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
