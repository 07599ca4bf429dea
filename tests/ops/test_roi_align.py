"""personsearch_ops.roi_align against a float64 reference from the definition and torchvision."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import personsearch_ops
import pytest
import torch
import torchvision
from personsearch_ops import extension
from roi_align_reference import reference_roi_align

needs_ops = pytest.mark.skipif(not personsearch_ops.has_ops(), reason="personsearch_ops._C is not built")

# Per-dtype tolerance (atol, rtol) against the float64 reference evaluated on the same
# (rounded) input; fp16/bf16 include the rounding of the output.
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 1e-5),
    torch.float16: (4e-3, 2e-3),
    torch.bfloat16: (3e-2, 1e-2),
}


def make_rois(num: int, batch: int, width: float, height: float, seed: int) -> torch.Tensor:
    """Random rois (in 1/8-pixel steps, exact in float32) incl. partly/wholly outside and degenerate."""
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randint(int(-0.3 * width * 8), int(1.1 * width * 8), (num,), generator=g) / 8
    y1 = torch.randint(int(-0.3 * height * 8), int(1.1 * height * 8), (num,), generator=g) / 8
    w = torch.randint(0, int(0.8 * width * 8), (num,), generator=g) / 8
    h = torch.randint(0, int(0.8 * height * 8), (num,), generator=g) / 8
    b = torch.randint(0, batch, (num,), generator=g).float()
    rois = torch.stack([b, x1, y1, x1 + w, y1 + h], dim=1)
    # Fixed edge cases: whole image, wholly outside, zero size, inverted (x2 < x1), tiny.
    extra = torch.tensor(
        [
            [0, 0, 0, width, height],
            [batch - 1, width + 5, height + 5, width + 20, height + 9],
            [0, 3.5, 2.25, 3.5, 2.25],
            [batch - 1, 6.0, 5.0, 2.0, 1.0],
            [0, 1.0, 1.0, 1.125, 1.25],
            [0, -9.0, -7.0, -1.5, -0.5],
        ],
        dtype=torch.float32,
    )
    return torch.cat([rois, extra])


def features_for(
    dtype: torch.dtype, channels_last: bool, seed: int = 0, shape=(2, 5, 11, 13)
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def check_against_reference(x, rois, pooled, scale, sr, aligned, device="cpu"):
    out = personsearch_ops.roi_align(x.to(device), rois.to(device), pooled, scale, sr, aligned=aligned)
    expected = reference_roi_align(x.double().numpy(), rois.numpy(), pooled, scale, sr, aligned)
    atol, rtol = TOLERANCE[x.dtype]
    assert out.dtype == x.dtype
    assert out.shape == expected.shape
    torch.testing.assert_close(out.cpu().double(), torch.from_numpy(expected), atol=atol, rtol=rtol)
    return out


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 1, 2, 3])
def test_matches_reference(dtype, channels_last, aligned, sampling_ratio):
    x = features_for(dtype, channels_last)
    for scale, seed in ((1.0, 1), (0.5, 2), (0.25, 3)):
        rois = make_rois(6, 2, 13 / scale, 11 / scale, seed)
        out = check_against_reference(x, rois, (3, 4), scale, sampling_ratio, aligned)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 2])
def test_matches_torchvision(dtype, aligned, sampling_ratio):
    x = features_for(dtype, False, seed=4, shape=(3, 16, 20, 24))
    rois = make_rois(40, 3, 24 * 16, 20 * 16, seed=5)
    ours = personsearch_ops.roi_align(x, rois, 7, 1 / 16, sampling_ratio, aligned=aligned)
    theirs = torchvision.ops.roi_align(x, rois.to(dtype), 7, 1 / 16, sampling_ratio, aligned)
    torch.testing.assert_close(ours, theirs, atol=TOLERANCE[dtype][0], rtol=TOLERANCE[dtype][1])
    ours_cl = personsearch_ops.roi_align(
        x.contiguous(memory_format=torch.channels_last), rois, 7, 1 / 16, sampling_ratio, aligned=aligned
    )
    torch.testing.assert_close(ours_cl, theirs, atol=TOLERANCE[dtype][0], rtol=TOLERANCE[dtype][1])


def linear_map() -> torch.Tensor:
    """[1, 1, 4, 4] with f(y, x) = 4y + x: bilinear sampling of it is exact."""
    return torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)


@pytest.mark.parametrize(
    ("box", "pooled", "aligned", "expected"),
    [
        # centre (2, 2) -> 10; half-pixel shift moves it to (1.5, 1.5) -> 7.5
        ((1, 1, 3, 3), 1, False, [[10.0]]),
        ((1, 1, 3, 3), 1, True, [[7.5]]),
        # 2x2 bins, one sample each at bin centres
        ((1, 1, 3, 3), 2, False, [[7.5, 8.5], [11.5, 12.5]]),
        ((1, 1, 3, 3), 2, True, [[5.0, 6.0], [9.0, 10.0]]),
        # x = 4 lies in (W - 1, W]: clamped to the last column -> 4 * 0.5 + 3
        ((3.5, 0, 4.5, 1), 1, False, [[5.0]]),
        # legacy mode forces a tiny box to 1 px: centre (1.5, 1.5) -> 7.5
        ((1, 1, 1.25, 1.25), 1, False, [[7.5]]),
        # aligned keeps it tiny: centre (0.625, 0.625) -> 3.125
        ((1, 1, 1.25, 1.25), 1, True, [[3.125]]),
        # wholly outside the map -> 0
        ((10, 10, 12, 12), 1, False, [[0.0]]),
        # centre (-0.75, -0.75) is inside [-1, H]: clamped to (0, 0) -> 0; centre -2.25 -> 0
        ((-1.5, -1.5, 0, 0), 1, False, [[0.0]]),
        ((-3, 0, -1.5, 1.5), 1, False, [[0.0]]),
        # centre (y=1.5, x=-0.75): x clamped to 0 -> 4 * 1.5 = 6
        ((-1.5, 1, 0, 2), 1, False, [[6.0]]),
    ],
)
def test_hand_computed(box, pooled, aligned, expected):
    rois = torch.tensor([[0.0, *box]])
    out = personsearch_ops.roi_align(linear_map(), rois, pooled, 1.0, 1, aligned=aligned)
    torch.testing.assert_close(out[0, 0], torch.tensor(expected), atol=1e-6, rtol=0)


def test_hand_computed_adaptive_grid():
    # Box 4 px wide with a 1x1 output: ceil(4 / 1) = 4 samples per axis, at 0.5, 1.5, 2.5, 3.5
    # -> x clamps 3.5 to 3: mean over x of {0.5, 1.5, 2.5, 3} = 1.875; same in y times 4.
    out = personsearch_ops.roi_align(
        linear_map(), torch.tensor([[0.0, 0, 0, 4, 4]]), 1, 1.0, 0, aligned=False
    )
    assert out.item() == pytest.approx(4 * 1.875 + 1.875, abs=1e-6)


@needs_ops
def test_list_of_boxes_equals_k5():
    x = features_for(torch.float32, False)
    boxes = [
        torch.tensor([[1.0, 2.0, 8.0, 9.0]]),
        torch.tensor([[0.0, 0.0, 5.0, 5.0], [2.0, 3.0, 12.0, 10.0]]),
    ]
    rois = torch.tensor([[0, 1.0, 2, 8, 9], [1, 0, 0, 5, 5], [1, 2, 3, 12, 10]])
    a = personsearch_ops.roi_align(x, boxes, (2, 3), 1.0, 2, aligned=True)
    b = personsearch_ops.roi_align(x, rois, (2, 3), 1.0, 2, aligned=True)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True])
def test_empty_rois_forward_and_backward(channels_last):
    x = features_for(torch.float32, channels_last).requires_grad_(True)
    out = personsearch_ops.roi_align(x, torch.zeros((0, 5)), 7, 0.5, 2, aligned=False)
    assert out.shape == (0, 5, 7, 7)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert personsearch_ops.roi_align(x, [], 7, 0.5, 2, aligned=False).shape == (0, 5, 7, 7)


@needs_ops
@pytest.mark.parametrize("bad_index", [2.0, -1.0, 7.0])
def test_batch_index_out_of_range_is_an_error(bad_index):
    x = features_for(torch.float32, False)
    rois = torch.tensor([[0, 1.0, 1, 4, 4], [bad_index, 1.0, 1, 4, 4]])
    with pytest.raises((RuntimeError, ValueError), match=r"roi 1 has batch index .* \[0, 1\]"):
        personsearch_ops.roi_align(x, rois, 2, 1.0, 2, aligned=False)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"features": torch.zeros(2, 3, 4)}, ValueError),
        ({"features": torch.zeros(1, 3, 4, 4, dtype=torch.int32)}, TypeError),
        ({"rois": torch.zeros(3, 4)}, ValueError),
        ({"output_size": 0}, ValueError),
        ({"output_size": (2, 2, 2)}, ValueError),
        ({"spatial_scale": 0.0}, ValueError),
        ({"aligned": 1}, TypeError),
    ],
)
def test_argument_validation(kwargs, error):
    args = {
        "features": torch.zeros(1, 3, 4, 4),
        "rois": torch.zeros(1, 5),
        "output_size": 2,
        "spatial_scale": 1.0,
        "sampling_ratio": 2,
        "aligned": False,
    }
    args.update(kwargs)
    with pytest.raises(error):
        personsearch_ops.roi_align(**args)


def test_aligned_is_required():
    with pytest.raises(TypeError):
        personsearch_ops.roi_align(torch.zeros(1, 1, 4, 4), torch.zeros(1, 5), 2, 1.0, 2)  # type: ignore[call-arg]


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize(("aligned", "sampling_ratio"), [(False, 2), (True, 0), (True, 3)])
def test_gradcheck(channels_last, aligned, sampling_ratio):
    x = features_for(torch.float64, channels_last, seed=7, shape=(2, 3, 6, 7)).requires_grad_(True)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.9, 5.3], [1, 1.1, 0.2, 6.6, 3.9], [1, -1.3, -0.6, 2.2, 7.7], [0, 2.0, 2.0, 1.0, 1.5]]
    )
    assert torch.autograd.gradcheck(
        lambda t: personsearch_ops.roi_align(t, rois, (2, 3), 1.0, sampling_ratio, aligned=aligned),
        (x,),
        fast_mode=True,
    )


@needs_ops
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_backward_matches_torchvision(dtype):
    x = features_for(torch.float32, False, seed=8, shape=(2, 4, 12, 15))
    rois = make_rois(10, 2, 15 * 4, 12 * 4, seed=9)
    grad_out = torch.randn(rois.shape[0], 4, 5, 5, generator=torch.Generator().manual_seed(3))
    xt = x.clone().requires_grad_(True)
    torchvision.ops.roi_align(xt, rois, 5, 0.25, 2, False).backward(grad_out)
    for channels_last in (False, True):
        xo = x.detach().to(dtype).clone()
        if channels_last:
            xo = xo.contiguous(memory_format=torch.channels_last)
        xo.requires_grad_(True)
        personsearch_ops.roi_align(xo, rois, 5, 0.25, 2, aligned=False).backward(grad_out.to(dtype))
        assert xo.grad.dtype == dtype
        atol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
        torch.testing.assert_close(xo.grad.float(), xt.grad, atol=atol, rtol=1e-2)


@needs_ops
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x = features_for(torch.float32, channels_last, seed=10).requires_grad_(True)
    rois = make_rois(5, 2, 13, 11, seed=11)
    for args in [(x, rois, 1.0, 3, 2, 2, False), (x, rois, 0.5, 2, 4, 0, True)]:
        torch.library.opcheck(torch.ops.personsearch_ops.roi_align.default, args)
    grad = torch.randn(rois.shape[0], 5, 3, 2)
    torch.library.opcheck(
        torch.ops.personsearch_ops.roi_align_backward.default,
        (grad, rois, 1.0, 3, 2, 2, False, 2, 5, 11, 13, channels_last),
    )


@needs_ops
def test_torch_compile_and_export():
    class Pool(torch.nn.Module):
        def forward(self, x: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
            return personsearch_ops.roi_align(x, rois, 3, 0.5, 2, aligned=True) * 2

    x = features_for(torch.float32, False)
    rois = make_rois(4, 2, 26, 22, seed=12)
    expected = Pool()(x, rois)
    compiled = torch.compile(Pool(), backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, rois), expected)
    exported = torch.export.export(Pool(), (x, rois))
    assert any("personsearch_ops.roi_align" in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x, rois), expected)


def test_torchvision_fallback(monkeypatch):
    monkeypatch.setattr(extension, "_LOADED", False)
    monkeypatch.setattr(extension, "_warned", False)
    x = features_for(torch.float32, False)
    rois = make_rois(5, 2, 13, 11, seed=13)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = personsearch_ops.roi_align(x, rois, 3, 1.0, 2, aligned=True)
        personsearch_ops.roi_align(x, rois, 3, 1.0, 2, aligned=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "pip install --no-build-isolation" in messages[0]
    expected = reference_roi_align(x.double().numpy(), rois.numpy(), (3, 3), 1.0, 2, True)
    torch.testing.assert_close(out.double(), torch.from_numpy(expected), atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="batch index"):
        personsearch_ops.roi_align(x, torch.tensor([[5.0, 0, 0, 2, 2]]), 3, 1.0, 2, aligned=True)


def test_import_without_torch_is_a_clear_error():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n import personsearch_ops\nexcept ImportError as e: print(e)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "personsearch_ops needs PyTorch" in result.stdout


def test_reference_agrees_with_torchvision_on_its_own():
    # Guards the reference itself (so a shared misunderstanding cannot pass both sides).
    x = features_for(torch.float64, False, seed=14)
    rois = make_rois(8, 2, 13, 11, seed=15).double()
    for aligned in (False, True):
        expected = torchvision.ops.roi_align(x, rois, (3, 2), 1.0, 0, aligned).numpy()
        np.testing.assert_allclose(
            reference_roi_align(x.numpy(), rois.numpy(), (3, 2), 1.0, 0, aligned), expected, atol=1e-12
        )
