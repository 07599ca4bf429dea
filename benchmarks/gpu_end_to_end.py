"""End-to-end frames/s on a CUDA GPU: PyTorch eager and the runtime's device split pipeline.

Part of ``benchmarks/gpu_check.sh``. ``runtime_vs_torch.py`` times the CPU only, so this
script covers the GPU with the same model and export helpers (imported from it): a
``seqnet_r18`` with random weights (seed 0; resize short side 900, long side <= 1500)
exported with ``export_graphs``, fed noise frames of ``--size`` (default 900x1500, the
search path's frame), batch 1:

* ``torch``: the checkpoint model's ``predict`` on the device, fp32 (our
  ``personsearch_ops`` RoIAlign op runs inside it);
* ``runtime device split``: ``device_split_detector``, i.e. the split graphs on ONNX
  Runtime (its CUDA provider when the installed onnxruntime has one, else the CPU provider
  through host copies), with box decoding, our NVRTC RoIAlign and NMS on the GPU in CuPy;
* ``runtime detector (CPU)``: the one-graph ``detector.onnx`` on ONNX Runtime's CPU
  provider, the reference the split path is compared with (detection counts per frame and
  the largest box difference where the counts agree; reported, not asserted, since random
  weights put many scores next to the thresholds; the tests assert agreement on bundles
  built for it).

With a CPU-only onnxruntime and no TensorRT (as on the GPU check machine), ONNX Runtime on
the CPU dominates the runtime rows: they show that the device path runs at full size, not
how fast it is with engines. Exit status 0 when every part ran; 1 otherwise.

Usage:
    python benchmarks/gpu_end_to_end.py [--frames 3] [--warmup 1] [--json e2e.json]
    python benchmarks/gpu_end_to_end.py --device cpu --frames 1   # smoke run, no GPU parts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime_vs_torch import _export, _make_checkpoint  # noqa: E402  (benchmarks/runtime_vs_torch.py)

SPLIT_ROLES = ("backbone_rpn", "box_head", "reid_head")


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HxW, e.g. 900x1500; got {text!r}") from None
    return h, w


def noise_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``count`` BGR uint8 noise frames of ``size`` (H, W), seed 0."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]


def time_frames(detect: Any, frames: list[Any], warmup: int, device: str) -> tuple[float, list[Any]]:
    """Frames/s of ``detect`` over the frames after ``warmup``, and every frame's result."""
    results = []
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        if i == warmup:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
        results.append(detect(frame))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return (len(frames) - warmup) / (time.perf_counter() - start), results


def torch_detect(model: torch.nn.Module, device: str) -> Any:
    """Per-frame detection with the checkpoint model on ``device`` (BGR uint8 in, boxes out)."""
    model = model.to(device).eval()

    def detect(bgr: np.ndarray) -> int:
        rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).to(device)
        tensor = rgb.permute(2, 0, 1).float().div_(255.0)
        with torch.no_grad():
            det = model.predict([tensor])[0]
        return len(det.boxes.cpu())

    return detect


def runtime_detectors(bundle: Path, device: str, threads: int) -> dict[str, Any]:
    """The runtime's CPU one-graph detector and (on CUDA) its device split detector.

    Returns:
        name -> (callable on a BGR frame returning BatchDetections, description).
    """
    import onnxruntime as ort
    from personsearch_runtime.backends import create_backend
    from personsearch_runtime.preprocess import batch_images, prepare_image
    from personsearch_runtime.searcher import PersonSearcher

    reference = PersonSearcher(
        bundle=bundle, backend="ort", device="cpu", pipeline="detector", intra_op_threads=threads
    )
    spec = reference.manifest.preprocessing
    out: dict[str, Any] = {
        "runtime detector (CPU)": (
            lambda bgr: reference.detect_prepared([prepare_image(bgr, spec)])[0],
            f"detector.onnx on onnxruntime {ort.__version__} CPU, {threads} threads",
        )
    }
    if device.startswith("cuda"):
        from personsearch_runtime.gpu.device_pipeline import device_split_detector

        ort_device = "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"
        stages = {
            role: create_backend(
                "ort", reference.bundle.model_path(role), device=ort_device, intra_op_threads=threads
            )
            for role in SPLIT_ROLES
        }
        split = device_split_detector(manifest=reference.manifest, stages=stages, device=device)

        def split_detect(bgr: np.ndarray) -> Any:
            prepared = prepare_image(bgr, spec)
            sizes = np.array([prepared.size], dtype=np.float32)
            return split(batch_images([prepared], spec), sizes)[0]

        out["runtime device split"] = (
            split_detect,
            f"split graphs on onnxruntime {ort_device.upper()} provider"
            + (" (through the host)" if ort_device == "cpu" else "")
            + "; decoding, NVRTC RoIAlign and NMS on the GPU",
        )
    return out


def agreement(results: list[Any], reference: list[Any]) -> dict[str, Any]:
    """Frames with equal detection counts, and the largest box difference (px) among those."""
    same = [(a, b) for a, b in zip(results, reference, strict=True) if len(a.boxes) == len(b.boxes)]
    worst = max((float(np.abs(a.boxes - b.boxes).max()) for a, b in same if len(a.boxes)), default=0.0)
    return {
        "same_counts": f"{len(same)}/{len(results)}",
        "worst_box_px": worst,
        "counts": [len(r.boxes) for r in results],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="seqnet_r18", help="registered model (random weights)")
    parser.add_argument("--frames", type=int, default=3, help="timed frames per path")
    parser.add_argument("--warmup", type=int, default=1, help="untimed frames per path first")
    parser.add_argument("--size", type=_size, default=(900, 1500), help="noise frame size HxW")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ONNX Runtime CPU threads")
    parser.add_argument("--device", default="cuda", help="cuda[:N], or cpu for a smoke run without GPU parts")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_end_to_end: needs a CUDA GPU (or --device cpu for a smoke run)")

    frames = noise_frames(args.warmup + args.frames, args.size)
    results: dict[str, Any] = {"model": args.model, "size": list(args.size), "frames": args.frames}
    failed = []
    with tempfile.TemporaryDirectory(prefix="gpu-e2e-") as tmp:
        root = Path(tmp)
        (root / "bundle").mkdir()
        started = time.perf_counter()
        model, name = _export(_make_checkpoint(root / "ckpt", args.model), root / "bundle")
        results["export_s"] = round(time.perf_counter() - started, 1)
        print(
            f"model {name} (random weights, seed 0), {args.size[0]}x{args.size[1]} noise frames, batch 1, "
            f"{args.frames} timed after {args.warmup}; export took {results['export_s']} s; "
            f"torch {torch.__version__} on {args.device}",
            flush=True,
        )
        rows = {}
        fps, _ = time_frames(torch_detect(model, args.device), frames, args.warmup, args.device)
        rows["torch eager fp32"] = {"fps": fps, "what": f"model.predict on {args.device}"}
        del model
        detectors = runtime_detectors(root / "bundle", args.device, args.threads)
        outputs = {}
        for label, (detect, what) in detectors.items():
            try:
                fps, outputs[label] = time_frames(detect, frames, args.warmup, args.device)
                rows[label] = {"fps": fps, "what": what}
            except Exception as exc:  # report the failing path and keep timing the others
                failed.append(label)
                rows[label] = {"fps": None, "what": what, "error": f"{type(exc).__name__}: {exc}"}
        if "runtime device split" in outputs:
            rows["runtime device split"]["vs_cpu_detector"] = agreement(
                outputs["runtime device split"], outputs["runtime detector (CPU)"]
            )
    results["rows"] = rows
    print(f"{'path':<26}{'frames/s':>10}  what")
    for label, row in rows.items():
        fps_text = f"{row['fps']:.2f}" if row["fps"] is not None else "failed"
        print(f"{label:<26}{fps_text:>10}  {row['what']}")
        if "error" in row:
            print(f"{'':<38}{row['error']}")
        if "vs_cpu_detector" in row:
            a = row["vs_cpu_detector"]
            print(
                f"{'':<38}vs the CPU detector: same detection count on {a['same_counts']} frames, "
                f"worst box difference {a['worst_box_px']:.3g} px"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
