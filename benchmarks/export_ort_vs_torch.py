"""ONNX Runtime CPU vs PyTorch eager CPU for the exported detector, as ratios in one run.

Both sides run the same model with the same thread count on the same fed tensors
(already resized and padded to a multiple of 32, as the runtime feeds them): PyTorch
runs ``SeqNet.predict`` with its resize made an identity, ONNX Runtime runs the
bundle's ``detector.onnx``. Reported: median seconds per call over ``--repeats`` after
``--warmup`` calls, images/s, and speed-up = torch time / ORT time (target >= 1.3).

Usage::

    nice -n 10 python benchmarks/export_ort_vs_torch.py [--model seqnet_r18] [--checkpoint CKPT]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _fed(size: int) -> int:
    return -(-size // 32) * 32


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="seqnet_r18", help="registered model (random weights) if no checkpoint"
    )
    parser.add_argument("--checkpoint", help="export this checkpoint instead of a random model")
    parser.add_argument("--sizes", default="576x768,900x1500", help="HxW list")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import onnxruntime as ort
    from personsearch_export.adapters import DetectorAdapter
    from personsearch_export.onnx_export import export_module
    from personsearch_export.parity import _native_resolution
    from personsearch_runtime.bundle import TensorSpec

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.checkpoint:
        from personsearch_export.checkpoint_io import load_checkpoint

        model = load_checkpoint(args.checkpoint).model
        name = Path(args.checkpoint).name
    else:
        from personsearch_train.models import create_model

        model = create_model(args.model).eval()
        name = f"{args.model} (random weights)"
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    k = int(model.box_detections_per_img)
    d = int(model.embedding_dim)
    fed_sizes = [(_fed(h), _fed(w)) for h, w in sizes]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "detector.onnx"
        export_module(
            DetectorAdapter(model, max_detections=k).eval(),
            (torch.rand(2, 3, 160, 224),),
            path,
            inputs=(TensorSpec("images", "float32", ("B", 3, "H", "W")),),
            outputs=(
                TensorSpec("boxes", "float32", ("B", k, 4)),
                TensorSpec("scores", "float32", ("B", k)),
                TensorSpec("embeddings", "float32", ("B", k, d)),
                TensorSpec("valid_counts", "int64", ("B",)),
            ),
            opset=17,
        )
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        print(
            f"detector: {name}, {args.threads} threads, median of {args.repeats} after {args.warmup} warm-up"
        )
        print(f"onnxruntime {ort.__version__}, torch {torch.__version__}")
        print(
            f"{'size (fed)':<22}{'batch':>6}{'torch s':>10}{'ORT s':>10}"
            f"{'torch img/s':>13}{'ORT img/s':>11}{'speed-up':>10}"
        )
        ratios = []
        rng = np.random.default_rng(0)
        for (h, w), (fh, fw) in zip(sizes, fed_sizes, strict=True):
            for batch in batches:
                fed = rng.random((batch, 3, fh, fw), dtype=np.float32)
                tensors = [torch.from_numpy(x) for x in fed]

                def run_torch(tensors=tensors, fh=fh, fw=fw) -> None:
                    with torch.no_grad(), _native_resolution(model, fh, fw):
                        model.predict(tensors)

                def run_ort(fed=fed) -> None:
                    session.run(None, {"images": fed})

                timings = {}
                for label, fn in (("torch", run_torch), ("ort", run_ort)):
                    for _ in range(args.warmup):
                        fn()
                    samples = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        fn()
                        samples.append(time.perf_counter() - start)
                    timings[label] = statistics.median(samples)
                ratio = timings["torch"] / timings["ort"]
                ratios.append(ratio)
                print(
                    f"{f'{h}x{w} ({fh}x{fw})':<22}{batch:>6}{timings['torch']:>10.3f}{timings['ort']:>10.3f}"
                    f"{batch / timings['torch']:>13.2f}{batch / timings['ort']:>11.2f}{ratio:>9.2f}x"
                )
        geo = float(np.exp(np.mean(np.log(ratios))))
        print(f"geometric-mean speed-up ORT vs torch: {geo:.2f}x (target >= 1.3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
