"""GPU parity at search-path sizes: the runtime's NVRTC RoIAlign and device NMS against torch.

Part of ``benchmarks/gpu_check.sh``; needs a CUDA GPU, CuPy and cuda-python.

``--check roi_align``: three implementations pool the same features [8, 1024, 57, 94]
(batch 8 of 900x1500 frames at stride 16) with 2,400 RoIs (300 per image, detector-like
sizes from ``roi_align.py``'s ``make_rois``, every 20th moved by half a frame so that it
crosses the frame border),
14x14 output, in fp32 and fp16, aligned on and off, sampling ratio 2 and adaptive (0):

* the runtime's kernel, compiled at run time with NVRTC from the installed
  ``roi_align_kernels.cuh`` and launched through CuPy (``RoIAlignKernel``);
* the compiled torch op ``personsearch_ops.roi_align``, NCHW and channels-last features;
* ``torchvision.ops.roi_align`` in float32, the reference. For fp16 features it pools the
  features cast to float32, which is what torchvision's autocast kernel does, so the fp16
  rows measure the rounding of our fp16 output.

``--check nms``: the runtime's device NMS (``personsearch_runtime.box_ops.batched_nms`` on
CuPy arrays, what the split pipeline runs between its graphs) against
``torchvision.ops.batched_nms`` on CUDA, and torchvision's CUDA NMS against its CPU NMS, on
8 images x 300 clustered boxes at the runtime's two thresholds (0.4, 0.5), three seeds. The
kept sets must be equal; where they differ, the first diverging decision is accepted only if
its IoU is within ``NMS_IOU_SLACK`` of the threshold (a floating-point tie, since the
implementations round IoU differently), and it is reported either way.

Prints one line per case with max abs errors, the worst error / tolerance ratio and
PASS/FAIL, median times, and writes everything to ``--json``. Exit status 1 if any case
fails.

Usage:
    python benchmarks/gpu_kernel_parity.py --check all --json parity.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import personsearch_ops
import torch
import torchvision
from personsearch_runtime import box_ops
from personsearch_runtime.bundle import RoIAlignSpec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roi_align import IMAGE_H, IMAGE_W, make_rois  # noqa: E402  (benchmarks/roi_align.py)

FEATURES_SHAPE = (8, 1024, 57, 94)
ROIS_PER_IMAGE = 300
OUTPUT_SIZE = 14
SPATIAL_SCALE = 1 / 16
SAMPLING_RATIOS = (2, 0)

#: (atol, rtol) per feature dtype for |ours - reference| <= atol + rtol * |reference|.
#: Against torchvision: fp32 has the same formula and summation order, so only contraction
#: differences remain; fp16 adds the rounding of the fp16 output (half an ulp is 2**-11
#: relative) to values of a few units.
TOL_VS_TORCHVISION = {torch.float32: (2e-5, 1e-5), torch.float16: (4e-3, 2e-3)}
#: NVRTC kernel vs compiled op: the same source through two compilers; fp16 allows a one-ulp
#: flip of the output rounding.
TOL_NVRTC_VS_OP = {torch.float32: (1e-6, 1e-6), torch.float16: (1e-3, 1e-3)}
#: NMS: a differing keep decision is a tie when its IoU is this close to the threshold.
NMS_IOU_SLACK = 1e-4
NMS_THRESHOLDS = (0.4, 0.5)
NMS_SEEDS = (0, 1, 2)
REPEATS = 5


def median_ms(fn: Callable[[], object], repeats: int = REPEATS) -> float:
    """Median wall time of ``fn`` in ms on the GPU (after one warm-up call), synchronised."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def compare(ours: torch.Tensor, ref: torch.Tensor, tol: tuple[float, float]) -> dict[str, float]:
    """Max abs error and max error/tolerance ratio (pass iff <= 1; inf if ``ours`` is not finite).

    In float32 on the GPU: the difference of two float32 values of similar size is exact
    enough for errors of 1e-6 and above, and float64 copies of these outputs would take 4 GB each.
    """
    atol, rtol = tol
    ref = ref.float()
    diff = (ours.float() - ref).abs()
    if not bool(torch.isfinite(diff).all()):
        return {"max_abs": float("inf"), "worst_ratio": float("inf")}
    ratio = diff / (atol + rtol * ref.abs())
    return {"max_abs": float(diff.max()), "worst_ratio": float(ratio.max())}


def search_path_rois(device: str) -> torch.Tensor:
    """2,400 detector-like RoIs over 8 frames; every 20th moved by half a frame, across its border."""
    rois = make_rois(ROIS_PER_IMAGE, FEATURES_SHAPE[0], "cpu", seed=3)
    rois[::20, 1:] += torch.tensor([IMAGE_W, IMAGE_H, IMAGE_W, IMAGE_H], dtype=torch.float32) * 0.5
    return rois.to(device)


COMPARISONS = ("nvrtc_vs_torchvision", "op_vs_torchvision", "op_channels_last_vs_torchvision", "nvrtc_vs_op")


def roi_align_case(
    kernel: Any, feats: torch.Tensor, rois: torch.Tensor, aligned: bool, sr: int
) -> dict[str, Any]:
    """Compare and time the three implementations on one (dtype, aligned, sampling ratio) case."""
    import cupy

    dtype = feats.dtype
    spec = RoIAlignSpec(
        output_size=OUTPUT_SIZE, spatial_scale=SPATIAL_SCALE, sampling_ratio=sr, aligned=aligned
    )
    feats_cl = feats.contiguous(memory_format=torch.channels_last)
    feats_ref = feats.float()  # what torchvision's autocast kernel pools for fp16 features
    feats_cp, rois_cp = cupy.from_dlpack(feats), cupy.from_dlpack(rois)

    def nvrtc() -> torch.Tensor:
        return torch.from_dlpack(kernel(feats_cp, rois_cp, spec))

    def op(f: torch.Tensor) -> torch.Tensor:
        return personsearch_ops.roi_align(f, rois, OUTPUT_SIZE, SPATIAL_SCALE, sr, aligned=aligned)

    def tv() -> torch.Tensor:
        return torchvision.ops.roi_align(feats_ref, rois, OUTPUT_SIZE, SPATIAL_SCALE, sr, aligned)

    ref = tv()
    torch.cuda.synchronize()
    # The runtime launches on CuPy's current stream: finish it before torch reads the output.
    ours_nvrtc = nvrtc()
    cupy.cuda.get_current_stream().synchronize()
    tol = TOL_VS_TORCHVISION[dtype]
    row: dict[str, Any] = {"dtype": str(dtype).split(".")[-1], "aligned": aligned, "sampling_ratio": sr}
    row["nvrtc_vs_torchvision"] = compare(ours_nvrtc, ref, tol)
    ours_op = op(feats)
    row["op_vs_torchvision"] = compare(ours_op, ref, tol)
    row["nvrtc_vs_op"] = compare(ours_nvrtc, ours_op, TOL_NVRTC_VS_OP[dtype])
    del ours_op, ours_nvrtc  # each output of this size is 1.9 GB in fp32
    row["op_channels_last_vs_torchvision"] = compare(op(feats_cl), ref, tol)
    del ref
    row["ms"] = {
        "nvrtc": median_ms(nvrtc),
        "op": median_ms(lambda: op(feats)),
        "op_channels_last": median_ms(lambda: op(feats_cl)),
        "torchvision_fp32": median_ms(tv),
    }
    row["pass"] = all(row[name]["worst_ratio"] <= 1.0 for name in COMPARISONS)
    return row


def check_roi_align() -> list[dict[str, Any]]:
    """Run every RoIAlign case; return one result row per (dtype, aligned, sampling ratio)."""
    from personsearch_runtime.gpu.roi_align_kernel import RoIAlignKernel

    kernel = RoIAlignKernel(torch.cuda.current_device())
    base = torch.randn(FEATURES_SHAPE, device="cuda", generator=torch.Generator(device="cuda").manual_seed(0))
    rois = search_path_rois("cuda")
    rows = []
    for dtype in (torch.float32, torch.float16):
        feats = base.to(dtype)
        for aligned in (False, True):
            for sr in SAMPLING_RATIOS:
                row = roi_align_case(kernel, feats, rois, aligned, sr)
                rows.append(row)
                print_roi_row(row)
                torch.cuda.empty_cache()
    return rows


def print_roi_row(row: dict[str, Any]) -> None:
    """One line: max abs errors of each comparison, the worst ratio, PASS/FAIL and times."""
    errors = " ".join(f"{n}={row[n]['max_abs']:.2e}" for n in COMPARISONS)
    worst = max(row[n]["worst_ratio"] for n in COMPARISONS)
    ms = " ".join(f"{k}={v:.2f}" for k, v in row["ms"].items())
    print(
        f"roi_align {row['dtype']:<8} aligned={row['aligned']!s:<5} sr={row['sampling_ratio']} | max abs: "
        f"{errors} | worst err/tol {worst:.2f} | {'PASS' if row['pass'] else 'FAIL'} | ms: {ms}",
        flush=True,
    )


def clustered_boxes(seed: int, images: int = 8, per_image: int = 300) -> tuple[np.ndarray, ...]:
    """Boxes in clusters of 10 jittered copies (heavy overlap), distinct scores, image ids."""
    rng = np.random.default_rng(seed)
    n = images * per_image
    centres = rng.uniform([50, 50], [IMAGE_W - 50, IMAGE_H - 50], (n // 10, 2)).repeat(10, 0)
    sizes = np.exp(rng.uniform(np.log(20), np.log(400), (n // 10, 1))).repeat(10, 0) * [0.4, 1.0]
    centres += rng.normal(0, 0.08, (n, 2)) * sizes
    sizes *= np.exp(rng.normal(0, 0.1, (n, 2)))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], 1).astype(np.float32)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct: no order ties between implementations
    groups = np.arange(n) // per_image
    return boxes, scores, groups.astype(np.int64)


def first_divergence(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, keep_a: np.ndarray, keep_b: np.ndarray
) -> tuple[int, float] | None:
    """The highest-scoring box kept by one result only, and its max IoU with the boxes kept before it.

    Up to that box both results made the same decisions, so that IoU is the one each compared
    with the threshold.
    """
    a, b = set(keep_a.tolist()), set(keep_b.tolist())
    if a == b:
        return None
    kept_before: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if (i in a) != (i in b):
            same = [j for j in kept_before if groups[j] == groups[i]]
            if not same:
                return int(i), 0.0
            iou = box_ops.box_iou(boxes[i : i + 1].astype(np.float64), boxes[same].astype(np.float64))
            return int(i), float(iou.max())
        if i in a:
            kept_before.append(int(i))
    return None


def nms_case(seed: int, threshold: float, data: tuple[np.ndarray, ...], arrays: dict[str, Any]) -> list[dict]:
    """Compare the runtime's device NMS and torchvision's CUDA and CPU NMS on one case."""
    import cupy

    boxes, scores, groups = data
    tb, ts, tg = arrays["cpu"]
    gb, gs, gg = arrays["cuda"]
    cb, cs, cg = arrays["cupy"]
    tv_cuda = torchvision.ops.batched_nms(gb, gs, gg, threshold).cpu().numpy()
    tv_cpu = torchvision.ops.batched_nms(tb, ts, tg, threshold).numpy()
    runtime = cupy.asnumpy(box_ops.batched_nms(cb, cs, cg, threshold))
    ms = {
        "runtime_cupy": median_ms(lambda: box_ops.batched_nms(cb, cs, cg, threshold)),
        "torchvision_cuda": median_ms(lambda: torchvision.ops.batched_nms(gb, gs, gg, threshold)),
    }
    rows = []
    for name, ours, ref in (
        ("runtime_cupy_vs_torchvision_cuda", runtime, tv_cuda),
        ("torchvision_cuda_vs_torchvision_cpu", tv_cuda, tv_cpu),
    ):
        diverged = first_divergence(boxes, scores, groups, ours, ref)
        tie = diverged is not None and abs(diverged[1] - threshold) <= NMS_IOU_SLACK
        row = {
            "seed": seed,
            "threshold": threshold,
            "pair": name,
            "kept": [int(len(ours)), int(len(ref))],
            "identical": diverged is None and bool(np.array_equal(ours, ref)),
            "first_divergence": None
            if diverged is None
            else {"box": diverged[0], "iou": diverged[1], "tie": tie},
            "pass": diverged is None or tie,
            "ms": ms,
        }
        rows.append(row)
        if diverged is None:
            note = "same kept set"
        else:
            note = f"first divergence at box {diverged[0]}, IoU {diverged[1]:.6f}" + (
                " (a tie)" if tie else ""
            )
        times = " ".join(f"{k}={v:.2f}" for k, v in ms.items())
        print(
            f"nms seed={seed} thr={threshold} {name}: kept {len(ours)} vs {len(ref)}, {note} | "
            f"{'PASS' if row['pass'] else 'FAIL'} | ms: {times}",
            flush=True,
        )
    return rows


def check_nms() -> list[dict[str, Any]]:
    """Run every NMS case; return one result row per (seed, threshold, pair compared)."""
    import cupy

    rows = []
    for seed in NMS_SEEDS:
        data = clustered_boxes(seed)
        cpu = tuple(torch.from_numpy(v) for v in data)
        arrays = {
            "cpu": cpu,
            "cuda": tuple(t.cuda() for t in cpu),
            "cupy": tuple(cupy.asarray(v) for v in data),
        }
        for threshold in NMS_THRESHOLDS:
            rows += nms_case(seed, threshold, data, arrays)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", choices=("roi_align", "nms", "all"), default="all")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_kernel_parity: needs a CUDA GPU")
    if args.check != "nms" and not personsearch_ops.has_ops():
        raise SystemExit("gpu_kernel_parity: personsearch_ops._C is not built (build it with CUDA first)")
    print(
        f"torch {torch.__version__}, torchvision {torchvision.__version__}, {torch.cuda.get_device_name()}; "
        f"tolerances (atol, rtol) vs torchvision {TOL_VS_TORCHVISION}, NVRTC vs op {TOL_NVRTC_VS_OP}, "
        f"NMS IoU slack {NMS_IOU_SLACK}",
        flush=True,
    )
    results: dict[str, Any] = {}
    if args.check in ("roi_align", "all"):
        results["roi_align"] = check_roi_align()
    if args.check in ("nms", "all"):
        results["nms"] = check_nms()
    failed = [r for rows in results.values() for r in rows if not r["pass"]]
    total = sum(len(rows) for rows in results.values())
    print(f"{total - len(failed)}/{total} cases pass", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
