"""``crop_people``: RoIAlign crops through our op, half-pixel aligned, differentiable."""

from __future__ import annotations

import pytest
import torch
import torchvision
from personsearch_train.layers import uses_personsearch_ops
from personsearch_train.weak_supervision import crop_people


def _reference(image: torch.Tensor, boxes: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
    """torchvision's aligned RoIAlign with the same adaptive grid, as an independent reference."""
    return torchvision.ops.roi_align(
        image[None], [boxes.to(image.dtype)], output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True
    )


def test_matches_torchvision_aligned_roi_align() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 37, 53)
    boxes = torch.tensor(
        [
            [10.25, 5.5, 30.75, 25.0],  # fractional, enlarged to the output size
            [0.0, 0.0, 53.0, 37.0],  # the whole image, shrunk (several samples per bin)
            [-4.0, 20.0, 12.0, 45.0],  # partly outside the image
            [40.0, 3.0, 41.0, 4.0],  # one pixel
        ]
    )
    for size in [(8, 4), (16, 8)]:
        crops = crop_people([image], [boxes], output_size=size)
        assert crops.shape == (4, 3, *size) and crops.dtype == torch.float32
        torch.testing.assert_close(crops, _reference(image, boxes, size), atol=1e-5, rtol=1e-5)


def test_samples_a_linear_image_at_half_pixel_centres() -> None:
    # Bilinear interpolation reproduces a linear function exactly, so every output bin
    # equals the ramp at the bin's centre; with aligned=True box coordinate u sits at
    # pixel index u - 0.5. aligned=False would be off by 0.5 * (2 + 3) = 2.5.
    height, width = 40, 60
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    image = (2.0 * xs + 3.0 * ys + 1.0)[None]
    x1, y1, x2, y2 = 10.25, 5.5, 30.75, 25.0
    out_h, out_w = 6, 4
    crops = crop_people([image], [torch.tensor([[x1, y1, x2, y2]])], output_size=(out_h, out_w))
    yc = y1 + (torch.arange(out_h) + 0.5) * (y2 - y1) / out_h
    xc = x1 + (torch.arange(out_w) + 0.5) * (x2 - x1) / out_w
    expected = 2.0 * (xc[None, :] - 0.5) + 3.0 * (yc[:, None] - 0.5) + 1.0
    torch.testing.assert_close(crops[0, 0], expected, atol=1e-4, rtol=0)


def test_gradient_reaches_the_pixels_inside_the_box_only() -> None:
    image = torch.rand(3, 40, 60, requires_grad=True)
    x1, y1, x2, y2 = 20.0, 10.0, 30.0, 30.0
    crops = crop_people([image], [torch.tensor([[x1, y1, x2, y2]])], output_size=(8, 4))
    crops.sum().backward()
    grad = image.grad
    assert grad is not None
    # Every pixel well inside the box feeds some bilinear sample.
    assert (grad[:, int(y1) + 1 : int(y2) - 1, int(x1) + 1 : int(x2) - 1] > 0).all()
    # Samples lie in [x1 - 0.5, x2 - 0.5] pixel indices; bilinear weights reach one
    # pixel further, so nothing two or more pixels outside the box gets gradient.
    far = torch.ones(40, 60, dtype=torch.bool)
    far[int(y1) - 2 : int(y2) + 2, int(x1) - 2 : int(x2) + 2] = False
    assert grad[:, far].abs().max() == 0
    # Each output is an average of samples whose bilinear weights sum to one.
    assert float(grad.sum()) == pytest.approx(3 * 8 * 4, rel=1e-5)


def test_gradient_flows_through_an_image_computed_in_the_graph() -> None:
    # A method may augment scenes on the fly; the crop loss must train what made them.
    gain = torch.tensor(2.0, requires_grad=True)
    base = torch.rand(3, 20, 20)
    crops = crop_people([base * gain], [torch.tensor([[2.0, 2.0, 12.0, 18.0]])], output_size=(4, 2))
    crops.sum().backward()
    expected = crop_people([base], [torch.tensor([[2.0, 2.0, 12.0, 18.0]])], output_size=(4, 2)).sum()
    assert gain.grad is not None and float(gain.grad) == pytest.approx(float(expected), rel=1e-5)


def test_several_images_of_different_sizes_keep_image_then_box_order() -> None:
    torch.manual_seed(1)
    images = [torch.rand(3, 30, 50), torch.rand(3, 44, 28), torch.rand(3, 25, 25)]
    boxes = [
        torch.tensor([[1.0, 2.0, 20.0, 28.0], [30.5, 0.0, 49.0, 29.0]]),
        torch.zeros(0, 4),
        torch.tensor([[3.0, 3.0, 22.0, 24.0]]),
    ]
    crops = crop_people(images, boxes, output_size=(8, 4))
    assert crops.shape == (3, 3, 8, 4)
    expected = torch.cat([_reference(images[0], boxes[0], (8, 4)), _reference(images[2], boxes[2], (8, 4))])
    torch.testing.assert_close(crops, expected, atol=1e-5, rtol=1e-5)
    # The same crops as cutting each image alone (no batch index mix-up).
    torch.testing.assert_close(crops[2:], crop_people(images[2:], boxes[2:], output_size=(8, 4)))


def test_keeps_the_images_dtype() -> None:
    image = torch.rand(3, 20, 30, dtype=torch.float64)
    boxes = torch.tensor([[2.0, 3.0, 15.0, 18.0]])
    crops = crop_people([image], [boxes], output_size=(4, 2))
    assert crops.dtype == torch.float64
    torch.testing.assert_close(crops, _reference(image, boxes, (4, 2)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("device", "dtype"), [("cpu", torch.float64), ("meta", torch.float16), ("cpu", torch.bfloat16)]
)
def test_no_boxes_gives_an_empty_batch_on_the_images_device_and_dtype(
    device: str, dtype: torch.dtype
) -> None:
    images = [
        torch.zeros(4, 10, 12, device=device, dtype=dtype),
        torch.zeros(4, 8, 8, device=device, dtype=dtype),
    ]
    crops = crop_people(images, [torch.zeros(0, 4), torch.zeros(0, 4)], output_size=(6, 3))
    assert crops.shape == (0, 4, 6, 3)
    assert crops.device.type == device and crops.dtype == dtype


@pytest.mark.needs_cuda
def test_no_boxes_on_cuda_stays_on_cuda() -> None:
    image = torch.zeros(3, 10, 10, device="cuda", dtype=torch.float16)
    crops = crop_people([image], [torch.zeros(0, 4, device="cuda")], output_size=(4, 2))
    assert crops.shape == (0, 3, 4, 2) and crops.is_cuda and crops.dtype == torch.float16


@pytest.mark.needs_cuda
def test_cuda_crops_match_the_reference_and_keep_gradients() -> None:
    torch.manual_seed(2)
    image = torch.rand(3, 37, 53, device="cuda", requires_grad=True)
    boxes = torch.tensor([[10.25, 5.5, 30.75, 25.0], [0.0, 0.0, 53.0, 37.0]], device="cuda")
    crops = crop_people([image], [boxes], output_size=(8, 4))
    torch.testing.assert_close(crops, _reference(image.detach(), boxes, (8, 4)), atol=1e-5, rtol=1e-5)
    crops.sum().backward()
    assert float(image.grad.sum()) == pytest.approx(2 * 3 * 8 * 4, rel=1e-4)


def test_no_images_gives_an_empty_batch() -> None:
    assert crop_people([], [], output_size=(6, 3)).shape == (0, 3, 6, 3)


@pytest.mark.skipif(not uses_personsearch_ops(), reason="personsearch_ops is not built")
def test_pools_through_our_op_not_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("crop_people called torchvision.ops.roi_align")

    monkeypatch.setattr(torchvision.ops, "roi_align", refuse)
    crops = crop_people([torch.rand(3, 20, 20)], [torch.tensor([[2.0, 2.0, 12.0, 18.0]])], output_size=(4, 2))
    assert crops.shape == (1, 3, 4, 2)


def test_bad_input_is_reported() -> None:
    image = torch.rand(3, 20, 20)
    with pytest.raises(ValueError, match="2 images but 1 box"):
        crop_people([image, image], [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match=r"boxes of image 1 must be \[M, 4\]"):
        crop_people([image, image], [torch.zeros(1, 4), torch.zeros(2, 5)])
    with pytest.raises(ValueError, match=r"image 0 must be \[C, H, W\]"):
        crop_people([image[None]], [torch.zeros(1, 4)])
    with pytest.raises(ValueError, match="output_size"):
        crop_people([image], [torch.zeros(1, 4)], output_size=(0, 4))
