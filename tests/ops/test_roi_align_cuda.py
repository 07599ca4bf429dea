"""CUDA kernels: NVRTC compilation of the torch-free source (no GPU needed) and, on a GPU,
the CUDA op against the CPU op and torchvision."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import personsearch_ops
import pytest
import torch
import torchvision
from personsearch_ops.kernel_source import DTYPE_SUFFIXES, kernel_entry_point
from roi_align_reference import reference_roi_align

needs_ops = pytest.mark.skipif(not personsearch_ops.has_ops(), reason="personsearch_ops._C is not built")


def cuda_include_dir() -> Path | None:
    """A directory holding cuda_fp16.h: CUDA_HOME, /usr/local/cuda, or the nvidia pip wheels."""
    candidates = []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    spec = importlib.util.find_spec("nvidia")
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            candidates += sorted(Path(root).glob("*/include"))
    for path in candidates:
        if (path / "cuda_fp16.h").is_file() and (path / "cuda_bf16.h").is_file():
            return path
    return None


ALL_ENTRY_POINTS = [
    kernel_entry_point(direction=d, layout=layout, dtype=dt, multi_level=m)
    for d in ("fwd", "bwd")
    for layout in ("nchw", "nhwc")
    for dt in DTYPE_SUFFIXES
    for m in (False, True)
]


def test_kernel_source_is_torch_free_and_packaged():
    path = personsearch_ops.kernel_source_path()
    assert path.parts[-4:] == ("personsearch_ops", "csrc", "cuda", "roi_align_kernels.cuh")
    text = path.read_text()
    assert not re.search(r"#include\s*[<\"](torch|ATen|c10)", text)
    assert 'extern "C" __global__' in text
    # setup.py ships it: package_data has csrc/*/*.cuh for personsearch_ops.
    setup_py = (Path(__file__).resolve().parents[2] / "setup.py").read_text()
    assert '"csrc/*/*.cuh"' in setup_py


def test_nvrtc_compiles_the_kernel_source():
    if importlib.util.find_spec("cuda") is None or importlib.util.find_spec("cuda.bindings") is None:
        pytest.skip("cuda-python is not installed")
    from cuda.bindings import nvrtc

    include = cuda_include_dir()
    if include is None:
        pytest.skip("no CUDA include directory with cuda_fp16.h / cuda_bf16.h found")
    source = personsearch_ops.kernel_source_path().read_bytes()
    err, prog = nvrtc.nvrtcCreateProgram(source, b"roi_align_kernels.cu", 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    from personsearch_ops.kernel_source import nvrtc_options

    # compute_80 (virtual) compiles to PTX without needing a GPU or a specific driver.
    options = [o.encode() for o in nvrtc_options(cuda_include_dir=include, compute_capability=(8, 0))]
    options[-1] = b"--gpu-architecture=compute_80"
    (err,) = nvrtc.nvrtcCompileProgram(prog, len(options), options)
    err_log, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = bytearray(size)
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    err, ptx_size = nvrtc.nvrtcGetPTXSize(prog)
    ptx = bytearray(ptx_size)
    nvrtc.nvrtcGetPTX(prog, ptx)
    entries = set(re.findall(rb"\.entry\s+(\w+)", ptx))
    missing = [name for name in ALL_ENTRY_POINTS if name.encode() not in entries]
    assert not missing, f"entry points missing from the PTX: {missing}"
    nvrtc.nvrtcDestroyProgram(prog)


# ---- GPU tests (skipped without one) ----

TOL = {
    torch.float32: (1e-5, 1e-5),
    torch.float16: (4e-3, 2e-3),
    torch.bfloat16: (3e-2, 1e-2),
    torch.float64: (1e-10, 1e-10),
}


def _rois(num, batch, width, height, seed):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_roi_align import make_rois

    return make_rois(num, batch, width, height, seed)


@needs_ops
@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(False, 2), (True, 0), (False, 0), (True, 3)])
def test_cuda_matches_reference_and_cpu(dtype, channels_last, aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, 11, 13, generator=g, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = _rois(30, 2, 26, 22, seed=1)
    out = personsearch_ops.roi_align(x.cuda(), rois.cuda(), (3, 4), 0.5, sampling_ratio, aligned=aligned)
    assert out.is_cuda and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    expected = reference_roi_align(x.double().numpy(), rois.numpy(), (3, 4), 0.5, sampling_ratio, aligned)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out.cpu().double(), torch.from_numpy(expected), atol=atol, rtol=rtol)
    cpu = personsearch_ops.roi_align(x, rois, (3, 4), 0.5, sampling_ratio, aligned=aligned)
    torch.testing.assert_close(out.cpu().double(), cpu.double(), atol=atol, rtol=rtol)


@needs_ops
@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_matches_torchvision_forward_backward(channels_last):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 64, 30, 40, generator=g).cuda()
    rois = _rois(200, 2, 40 * 16, 30 * 16, seed=3).cuda()
    grad = torch.randn(rois.shape[0], 64, 7, 7, generator=g).cuda()
    xt = x.clone().requires_grad_(True)
    ref = torchvision.ops.roi_align(xt, rois, 7, 1 / 16, 2, False)
    ref.backward(grad)
    xo = x.contiguous(memory_format=torch.channels_last) if channels_last else x.clone()
    xo.requires_grad_(True)
    out = personsearch_ops.roi_align(xo, rois, 7, 1 / 16, 2, aligned=False)
    out.backward(grad)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xo.grad, xt.grad, atol=1e-4, rtol=1e-4)


@needs_ops
@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_multi_level_matches_cpu(channels_last, dtype):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_multi_level_roi_align import STRIDES, pyramid, pyramid_rois

    levels = pyramid(dtype=dtype, channels_last=channels_last, channels=32)
    rois = pyramid_rois(num=60)
    cpu = personsearch_ops.multi_level_roi_align(
        levels, rois, 7, sampling_ratio=2, aligned=False, strides=STRIDES
    )
    gpu_levels = [f.cuda().requires_grad_(True) for f in levels]
    gpu = personsearch_ops.multi_level_roi_align(
        gpu_levels, rois.cuda(), 7, sampling_ratio=2, aligned=False, strides=STRIDES
    )
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(gpu.cpu().float(), cpu.float(), atol=atol, rtol=rtol)
    grad = torch.randn(gpu.shape, dtype=torch.float32).to(dtype)
    gpu.backward(grad.cuda())
    cpu_levels = [f.clone().requires_grad_(True) for f in levels]
    personsearch_ops.multi_level_roi_align(
        cpu_levels, rois, 7, sampling_ratio=2, aligned=False, strides=STRIDES
    ).backward(grad)
    for a, b in zip(gpu_levels, cpu_levels, strict=True):
        torch.testing.assert_close(a.grad.cpu().float(), b.grad.float(), atol=10 * atol, rtol=10 * rtol)


@needs_ops
@pytest.mark.needs_cuda
def test_cuda_gradcheck_and_opcheck():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64).cuda().requires_grad_(True)
    rois = torch.tensor([[0, 0.3, 0.7, 4.9, 5.3], [1, 1.1, 0.2, 6.6, 3.9], [1, -1.3, -0.6, 2.2, 7.7]]).cuda()
    assert torch.autograd.gradcheck(
        lambda t: personsearch_ops.roi_align(t, rois, 2, 1.0, 2, aligned=True), (x,)
    )
    torch.library.opcheck(torch.ops.personsearch_ops.roi_align.default, (x, rois, 1.0, 2, 2, 2, True))


@needs_ops
@pytest.mark.needs_cuda
def test_cuda_empty_rois():
    x = torch.zeros(1, 4, 8, 8, device="cuda")
    assert personsearch_ops.roi_align(
        x, torch.zeros(0, 5, device="cuda"), 2, 1.0, 2, aligned=False
    ).shape == (0, 4, 2, 2)


def _bad_rows(rois: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rois with every third batch index out of range (incl. NaN and huge); the good-row mask."""
    bad_values = torch.tensor([-1.0, float(batch), float("nan"), 1e9, -3.5, batch + 0.5])
    rois = rois.clone()
    good = torch.ones(rois.shape[0], dtype=torch.bool)
    good[::3] = False
    rois[~good, 0] = bad_values[torch.arange(int((~good).sum())) % len(bad_values)]
    # In-range values that truncate to an image: -0.5 -> 0 and batch - 0.25 -> batch - 1.
    rois[1, 0], rois[2, 0] = -0.5, batch - 0.25
    return rois, good


@needs_ops
@pytest.mark.needs_cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_out_of_range_batch_index_pools_zeros_and_no_gradient(channels_last):
    # Documented CUDA behaviour (no host check there): such a RoI's output is 0 and it adds no
    # gradient; every other RoI is pooled exactly as the CPU op pools it.
    x = torch.randn(2, 16, 11, 13, generator=torch.Generator().manual_seed(5))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois, good = _bad_rows(_rois(30, 2, 26, 22, seed=6), batch=2)
    xg = x.cuda().requires_grad_(True)
    out = personsearch_ops.roi_align(xg, rois.cuda(), (3, 4), 0.5, 2, aligned=True)
    assert torch.count_nonzero(out[~good.cuda()]) == 0
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    out.backward(grad.cuda())
    xc = x.clone().requires_grad_(True)
    expected = personsearch_ops.roi_align(xc, rois[good], (3, 4), 0.5, 2, aligned=True)
    expected.backward(grad[good])
    torch.testing.assert_close(out[good.cuda()].cpu(), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, atol=1e-4, rtol=1e-4)
    # The CPU op refuses the same rois.
    with pytest.raises(RuntimeError, match="batch index"):
        personsearch_ops.roi_align(x, rois, (3, 4), 0.5, 2, aligned=True)


@needs_ops
@pytest.mark.needs_cuda
def test_cuda_multi_level_out_of_range_batch_index_pools_zeros_and_no_gradient():
    sys.path.insert(0, str(Path(__file__).parent))
    from test_multi_level_roi_align import STRIDES, pyramid, pyramid_rois

    levels = pyramid(channels=8)
    rois, good = _bad_rows(pyramid_rois(num=40), batch=2)
    args = {"sampling_ratio": 2, "aligned": False, "strides": STRIDES}
    gpu_levels = [f.cuda().requires_grad_(True) for f in levels]
    out = personsearch_ops.multi_level_roi_align(gpu_levels, rois.cuda(), 5, **args)
    assert torch.count_nonzero(out[~good.cuda()]) == 0
    out.sum().backward()
    cpu_levels = [f.clone().requires_grad_(True) for f in levels]
    expected = personsearch_ops.multi_level_roi_align(cpu_levels, rois[good], 5, **args)
    expected.sum().backward()
    torch.testing.assert_close(out[good.cuda()].cpu(), expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(gpu_levels, cpu_levels, strict=True):
        torch.testing.assert_close(a.grad.cpu(), b.grad, atol=1e-4, rtol=1e-4)


@needs_ops
@pytest.mark.needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_ops_never_synchronise(dtype, channels_last):
    # set_sync_debug_mode("error") raises on every host-device synchronisation torch performs
    # (.item(), nonzero, a copy from or to pageable host memory): forward and backward of both
    # ops must only enqueue work, also with an out-of-range batch index among the rois.
    sys.path.insert(0, str(Path(__file__).parent))
    from test_multi_level_roi_align import STRIDES, pyramid, pyramid_rois

    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 32, 20, 24, device="cuda", dtype=dtype).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    rois, _ = _bad_rows(_rois(40, 2, 24 * 8, 20 * 8, seed=8), batch=2)
    rois = rois.cuda()
    boxes = [rois[:10, 1:].clone(), rois[10:25, 1:].clone()]
    levels = [
        f.to("cuda", dtype).contiguous(memory_format=fmt).requires_grad_(True) for f in pyramid(channels=8)
    ]
    ml_rois = pyramid_rois(num=30).cuda()
    grad = torch.randn(rois.shape[0], 32, 7, 7, device="cuda", dtype=dtype)
    ml_grad = torch.randn(ml_rois.shape[0], 8, 7, 7, device="cuda", dtype=dtype)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = personsearch_ops.roi_align(x, rois, 7, 1 / 8, 2, aligned=False)
        out.backward(grad)
        personsearch_ops.roi_align(x.detach(), boxes, 7, 1 / 8, 0, aligned=True)
        ml = personsearch_ops.multi_level_roi_align(
            levels, ml_rois, 7, sampling_ratio=2, aligned=False, strides=STRIDES
        )
        ml.backward(ml_grad)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    assert x.grad is not None and all(f.grad is not None for f in levels)
    # The check is live: a read-back in the same mode does raise.
    torch.cuda.set_sync_debug_mode("error")
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            rois[0, 0].item()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_ops
@pytest.mark.needs_cuda
def test_cuda_multi_level_more_levels_than_the_kernel_argument_holds():
    strides = tuple(2**k for k in range(9))  # 9 levels; the by-value level table holds 8
    levels = [torch.zeros(1, 2, max(512 // s, 1), max(512 // s, 1), device="cuda") for s in strides]
    rois = torch.tensor([[0.0, 0, 0, 64, 64]], device="cuda")
    with pytest.raises(RuntimeError, match="at most 8 pyramid levels"):
        personsearch_ops.multi_level_roi_align(
            levels, rois, 2, sampling_ratio=2, aligned=False, strides=strides
        )
