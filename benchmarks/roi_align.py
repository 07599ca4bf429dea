"""RoIAlign benchmark: personsearch_ops vs torchvision in the same run, as ratios.

Shapes are the search path's: features [8, 1024, 57, 94] (batch 8 at 900x1500, stride 16),
300 and 2000 RoIs per image, 14x14 output, sampling_ratio 2, aligned=False; plus an FPN case
(P2..P5 of 256 channels at 900x1500, 512 RoIs per image, 7x7) against torchvision's
MultiScaleRoIAlign. On CUDA it also reports achieved bytes/s against a device-to-device copy
measured in the same run (bytes = output written + feature map read once: a lower bound on
the traffic, so the fraction is the kernel's distance from the bandwidth floor).

CPU runs fp32 only: CPU fp16/bf16 RoIAlign has no hardware benefit (values are converted to
float32 for the arithmetic) and torchvision's CPU kernel has no fast half path to compare to.

Usage:
    nice python benchmarks/roi_align.py --device cpu
    python benchmarks/roi_align.py --device cuda
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import personsearch_ops
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign

IMAGE_H, IMAGE_W = 900, 1500


def make_rois(per_image: int, batch: int, device: str, seed: int = 0) -> torch.Tensor:
    """Detector-like boxes: sizes 16..600 px (log-uniform), aspect 0.3..1, inside the image."""
    g = torch.Generator().manual_seed(seed)
    n = per_image * batch
    h = torch.exp(torch.empty(n).uniform_(2.8, 6.4, generator=g))
    w = h * torch.empty(n).uniform_(0.3, 1.0, generator=g)
    x1 = torch.rand(n, generator=g) * (IMAGE_W - w)
    y1 = torch.rand(n, generator=g) * (IMAGE_H - h)
    b = torch.arange(batch).repeat_interleave(per_image).float()
    return torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1).to(device)


def timeit(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def copy_bandwidth(device: str) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write)."""
    src = torch.empty(256 * 1024 * 1024 // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    seconds = timeit(lambda: dst.copy_(src), device, 10)
    return 2 * src.numel() * 4 / seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument(
        "--repeats", type=int, default=0, help="timed calls per case (default 3 CPU, 20 CUDA)"
    )
    parser.add_argument(
        "--rois", default="", help="RoIs per image, comma separated (default 300,2000 on CUDA, 300 on CPU)"
    )
    parser.add_argument("--skip-fpn", action="store_true")
    args = parser.parse_args()
    device = args.device
    repeats = args.repeats or (3 if device == "cpu" else 20)
    # The 2000-RoI case takes minutes per call on a small CPU; ask for it with --rois 300,2000.
    rois_per_image = args.rois or ("300" if device == "cpu" else "300,2000")
    if not personsearch_ops.has_ops():
        raise SystemExit("personsearch_ops._C is not built; the benchmark compares the compiled kernels")
    dtypes = [torch.float32] if device == "cpu" else [torch.float32, torch.float16]
    bandwidth = copy_bandwidth(device) if device == "cuda" else None
    print(f"device={device} threads={torch.get_num_threads()} repeats={repeats} torch={torch.__version__}")
    if bandwidth:
        print(f"copy bandwidth: {bandwidth / 1e9:.0f} GB/s")
    header = (
        f"{'case':<34} {'dtype':<8} {'torchvision ms':>14} {'ours ms':>9} {'ratio':>6} "
        f"{'ours CL ms':>10} {'ratio CL':>8}"
    )
    if bandwidth:
        header += f" {'GB/s':>6} {'of copy':>7}"
    print(header)
    g = torch.Generator().manual_seed(1)
    for dtype in dtypes:
        feats = torch.randn(8, 1024, 57, 94, generator=g).to(device=device, dtype=dtype)
        feats_cl = feats.contiguous(memory_format=torch.channels_last)
        for per_image in [int(v) for v in rois_per_image.split(",")]:
            rois = make_rois(per_image, 8, device)
            tv_rois = rois.to(dtype)
            ours = partial(personsearch_ops.roi_align, output_size=14, spatial_scale=1 / 16, sampling_ratio=2)
            t_tv = timeit(
                partial(torchvision.ops.roi_align, feats, tv_rois, 14, 1 / 16, 2, False), device, repeats
            )
            t_ours = timeit(partial(ours, feats, rois, aligned=False), device, repeats)
            t_cl = timeit(partial(ours, feats_cl, rois, aligned=False), device, repeats)
            line = (
                f"{f'single-level {per_image} rois/img 14x14 sr2':<34} {str(dtype).split('.')[-1]:<8} "
                f"{t_tv * 1e3:>14.2f} {t_ours * 1e3:>9.2f} {t_tv / t_ours:>6.2f} "
                f"{t_cl * 1e3:>10.2f} {t_tv / t_cl:>8.2f}"
            )
            if bandwidth:
                moved = (
                    rois.shape[0] * 1024 * 14 * 14 * feats.element_size()
                    + feats.numel() * feats.element_size()
                )
                best = min(t_ours, t_cl)
                line += f" {moved / best / 1e9:>6.0f} {moved / best / bandwidth:>7.1%}"
            print(line, flush=True)
        del feats, feats_cl
        if args.skip_fpn:
            continue
        strides = (4, 8, 16, 32)
        levels = [
            torch.randn(8, 256, -(-IMAGE_H // s), -(-IMAGE_W // s), generator=g).to(
                device=device, dtype=dtype
            )
            for s in strides
        ]
        levels_cl = [f.contiguous(memory_format=torch.channels_last) for f in levels]
        rois = make_rois(512, 8, device)
        boxes = [rois[rois[:, 0] == i, 1:].to(dtype) for i in range(8)]
        pooler = MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=7, sampling_ratio=2)
        named = dict(zip(["p2", "p3", "p4", "p5"], levels, strict=True))
        sizes = [(IMAGE_H, IMAGE_W)] * 8
        ours_ml = partial(
            personsearch_ops.multi_level_roi_align, sampling_ratio=2, aligned=False, strides=strides
        )
        t_tv = timeit(partial(pooler, named, boxes, sizes), device, repeats)
        t_ours = timeit(partial(ours_ml, levels, rois, 7), device, repeats)
        t_cl = timeit(partial(ours_ml, levels_cl, rois, 7), device, repeats)
        line = (
            f"{'FPN P2-P5 512 rois/img 7x7 sr2':<34} {str(dtype).split('.')[-1]:<8} "
            f"{t_tv * 1e3:>14.2f} {t_ours * 1e3:>9.2f} {t_tv / t_ours:>6.2f} "
            f"{t_cl * 1e3:>10.2f} {t_tv / t_cl:>8.2f}"
        )
        if bandwidth:
            moved = rois.shape[0] * 256 * 49 * levels[0].element_size() + sum(
                f.numel() * f.element_size() for f in levels
            )
            best = min(t_ours, t_cl)
            line += f" {moved / best / 1e9:>6.0f} {moved / best / bandwidth:>7.1%}"
        print(line, flush=True)
    print("ratio = torchvision time / our time (> 1: ours faster); CL = channels-last features")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
