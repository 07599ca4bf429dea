"""SSL's multi-scale exemplars: masked person crops, the K + 1 exemplar batches, k-means scales.

The label-map convention is :mod:`personsearch_train.data.person_masks`'s: ``k + 1`` on
the pixels of box ``k``, ``255`` (``MASK_ANY_PERSON``) on unattributed person pixels,
0 on background.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from personsearch_train.data.person_masks import MASK_ANY_PERSON, MASK_BACKGROUND
from personsearch_train.weak_supervision.exemplars import (
    box_scales_kmeans,
    masked_person_crops,
    multi_scale_exemplars,
)

# --------------------------------------------------------------------------- helpers


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 12x16 scene with two overlapping people and a hand-made label map.

    Box 0 is x 2..9, y 1..10; box 1 is x 6..14, y 3..11 (they overlap on x 6..9,
    y 3..10). Each box holds its own person's pixels, some of the other person's,
    background (0), and box 0 also unattributed person pixels (255).
    """
    torch.manual_seed(0)
    image = torch.rand(3, 12, 16) + 0.1  # never 0, so "kept" and "zeroed" differ
    boxes = torch.tensor([[2.0, 1.0, 9.0, 10.0], [6.0, 3.0, 14.0, 11.0]])
    labels = torch.zeros(12, 16, dtype=torch.uint8)
    labels[2:9, 3:7] = 1  # person 0's body, column 6 inside box 1
    labels[4:11, 7:13] = 2  # person 1, partly inside box 0
    labels[1:3, 2:4] = MASK_ANY_PERSON  # unattributed pixels inside box 0 (and not box 1)
    labels[0, 15] = MASK_ANY_PERSON  # outside both boxes
    labels[5, 2] = 1  # person 0 pixel at the box's left edge
    return image, boxes, labels


def _expected_crop(
    image: torch.Tensor, labels: torch.Tensor, box: tuple[int, int, int, int], k: int
) -> torch.Tensor:
    """Pixel loop over the label map: keep ``k + 1`` and 255, zero the rest."""
    left, top, right, bottom = box
    out = torch.zeros(3, bottom - top, right - left)
    for y in range(top, bottom):
        for x in range(left, right):
            if int(labels[y, x]) in (k + 1, MASK_ANY_PERSON):
                out[:, y - top, x - left] = image[:, y, x]
    return out


# --------------------------------------------------------------------------- masked_person_crops


def test_label_map_keeps_own_and_any_person_pixels_only() -> None:
    image, boxes, labels = _scene()
    crops = masked_person_crops(image, boxes, labels)
    assert len(crops) == 2
    assert crops[0].shape == (3, 9, 7) and crops[1].shape == (3, 8, 8)
    assert crops[0].dtype == image.dtype
    torch.testing.assert_close(crops[0], _expected_crop(image, labels, (2, 1, 9, 10), 0), rtol=0, atol=0)
    torch.testing.assert_close(crops[1], _expected_crop(image, labels, (6, 3, 14, 11), 1), rtol=0, atol=0)
    # Spot checks in crop 0 (offset x 2, y 1): own pixel kept, 255 kept, person 1's
    # pixel inside box 0 zeroed, background zeroed.
    torch.testing.assert_close(crops[0][:, 4, 2], image[:, 5, 4])  # label 1
    torch.testing.assert_close(crops[0][:, 0, 0], image[:, 1, 2])  # label 255
    assert labels[5, 8] == 2 and torch.all(crops[0][:, 4, 6] == 0)  # the other person
    assert labels[9, 2] == MASK_BACKGROUND and torch.all(crops[0][:, 8, 0] == 0)
    # And the other way round: person 0's pixels inside box 1 are zeroed in crop 1.
    assert labels[3, 6] == 1 and torch.all(crops[1][:, 0, 0] == 0)
    labels_1 = labels[3:11, 6:14]
    kept_1 = (crops[1] != 0).all(dim=0)
    assert torch.equal(kept_1, (labels_1 == 2) | (labels_1 == MASK_ANY_PERSON))


def test_fractional_boxes_round_outwards_and_are_clamped_to_the_image() -> None:
    image, _, labels = _scene()
    boxes = torch.tensor(
        [
            [2.3, 1.7, 8.2, 9.01],  # -> x 2..9, y 1..10
            [-3.5, -2.0, 20.5, 14.2],  # -> the whole 12x16 image
            [5.0, 4.0, 7.0, 6.0],  # whole numbers stay as they are
        ]
    )
    raw = masked_person_crops(image, boxes, labels, remove_background=False)
    assert [tuple(c.shape) for c in raw] == [(3, 9, 7), (3, 12, 16), (3, 2, 2)]
    torch.testing.assert_close(raw[0], image[:, 1:10, 2:9], rtol=0, atol=0)
    torch.testing.assert_close(raw[1], image, rtol=0, atol=0)
    torch.testing.assert_close(raw[2], image[:, 4:6, 5:7], rtol=0, atol=0)
    masked = masked_person_crops(image, boxes, labels)
    torch.testing.assert_close(masked[0], _expected_crop(image, labels, (2, 1, 9, 10), 0), rtol=0, atol=0)
    torch.testing.assert_close(masked[1], _expected_crop(image, labels, (0, 0, 16, 12), 1), rtol=0, atol=0)


def test_remove_background_false_returns_the_raw_slice() -> None:
    image, boxes, labels = _scene()
    for mask in (labels, None):
        crops = masked_person_crops(image, boxes, mask, remove_background=False)
        torch.testing.assert_close(crops[0], image[:, 1:10, 2:9], rtol=0, atol=0)
        torch.testing.assert_close(crops[1], image[:, 3:11, 6:14], rtol=0, atol=0)


def test_ellipse_fallback_keeps_the_centre_and_drops_the_corners() -> None:
    image = torch.ones(3, 100, 120)
    box = torch.tensor([[10.0, 20.0, 70.0, 100.0]])  # 60 wide, 80 tall
    (crop,) = masked_person_crops(image, box, None)
    assert crop.shape == (3, 80, 60)
    kept = crop[0] != 0
    assert torch.equal(kept, (crop != 0).all(dim=0))  # the same mask on every channel
    assert torch.all(crop[:, 35:45, 25:35] == 1)  # the centre
    for y, x in [(0, 0), (0, 59), (79, 0), (79, 59)]:
        assert torch.all(crop[:, y, x] == 0), (y, x)
    # The edge midpoints lie on the ellipse and are kept.
    assert kept[0, 30] and kept[79, 30] and kept[40, 0] and kept[40, 59]
    fraction = kept.float().mean().item()
    assert fraction == pytest.approx(math.pi / 4, rel=0.03)


@pytest.mark.parametrize(
    ("image_shape", "boxes_shape", "mask_shape", "message"),
    [
        ((1, 12, 16), (2, 4), (12, 16), r"image must be \[3, H, W\], got \(1, 12, 16\)"),
        ((12, 16), (2, 4), (12, 16), r"image must be \[3, H, W\], got \(12, 16\)"),
        ((3, 12, 16), (4,), (12, 16), r"boxes must be \[M, 4\] xyxy, got \(4,\)"),
        ((3, 12, 16), (2, 5), (12, 16), r"boxes must be \[M, 4\] xyxy, got \(2, 5\)"),
        ((3, 12, 16), (2, 4), (16, 12), r"person mask is \(16, 12\) but the image is \(12, 16\)"),
        ((3, 12, 16), (2, 4), (1, 12, 16), r"a mask must have its scene's size"),
    ],
)
def test_wrong_shapes_raise_a_helpful_value_error(
    image_shape: tuple[int, ...], boxes_shape: tuple[int, ...], mask_shape: tuple[int, ...], message: str
) -> None:
    image = torch.rand(image_shape)
    boxes = torch.zeros(boxes_shape)
    mask = torch.zeros(mask_shape, dtype=torch.uint8)
    with pytest.raises(ValueError, match=message):
        masked_person_crops(image, boxes, mask)


def test_crops_are_differentiable_with_respect_to_the_image() -> None:
    image, boxes, labels = _scene()
    image.requires_grad_(True)
    crops = masked_person_crops(image, boxes[:1], labels)
    crops[0].sum().backward()
    assert image.grad is not None
    expected = torch.zeros(12, 16)
    window = labels[1:10, 2:9]
    expected[1:10, 2:9] = ((window == 1) | (window == MASK_ANY_PERSON)).float()
    # d(sum)/d(pixel) = 1 where the pixel is kept, 0 where masked out or outside the box.
    torch.testing.assert_close(image.grad, expected.expand(3, -1, -1), rtol=0, atol=0)


def test_gradients_reach_the_image_through_all_exemplar_batches() -> None:
    image = torch.rand(3, 40, 50, requires_grad=True)
    boxes = torch.tensor([[10.0, 5.0, 30.0, 35.0]])
    crops = masked_person_crops(image, boxes, None)
    batches = multi_scale_exemplars(crops, [(8, 4), (64, 32)], min_height=16)
    for batch in batches:
        image.grad = None
        batch.sum().backward(retain_graph=True)
        grad = image.grad
        assert grad is not None and grad[:, 5:35, 10:30].abs().sum() > 0
        outside = grad.clone()
        outside[:, 5:35, 10:30] = 0
        assert torch.all(outside == 0)


# --------------------------------------------------------------------------- multi_scale_exemplars


def test_original_scale_centres_each_crop_on_a_black_canvas() -> None:
    torch.manual_seed(1)
    crops = [torch.rand(3, 10, 6) + 0.1, torch.rand(3, 23, 9) + 0.1]
    batches = multi_scale_exemplars(crops, [(8, 4)], min_height=16, size_multiple=16)
    assert len(batches) == 2
    canvas = batches[0]
    # Height max(23, 16) = 23 -> 32; width 9 -> 16.
    assert canvas.shape == (2, 3, 32, 16)
    for p, (crop, top, left) in enumerate([(crops[0], 11, 5), (crops[1], 4, 3)]):
        h, w = crop.shape[1:]
        torch.testing.assert_close(canvas[p, :, top : top + h, left : left + w], crop, rtol=0, atol=0)
        rest = canvas[p].clone()
        rest[:, top : top + h, left : left + w] = 0
        assert torch.all(rest == 0), p


def test_canvas_is_at_least_min_height_and_rounded_up_to_the_size_multiple() -> None:
    crops = [torch.ones(3, 5, 4), torch.ones(3, 7, 3)]
    (canvas,) = multi_scale_exemplars(crops, [], min_height=40, size_multiple=16)
    assert canvas.shape == (2, 3, 48, 16)  # max(7, 40) = 40 -> 48; 4 -> 16
    (canvas,) = multi_scale_exemplars(crops, [], min_height=40, size_multiple=8)
    assert canvas.shape == (2, 3, 40, 8)  # already a multiple of 8
    # The crop is centred on the tall canvas: rows (40 - 5) // 2 = 17 .. 22.
    assert torch.all(canvas[0, :, 17:22, 2:6] == 1)
    assert canvas[0].sum() == 3 * 5 * 4
    (canvas,) = multi_scale_exemplars([torch.ones(3, 50, 33)], [], min_height=40, size_multiple=16)
    assert canvas.shape == (1, 3, 64, 48)


def test_scale_batches_have_the_requested_sizes() -> None:
    crops = [torch.rand(3, 10, 6), torch.rand(3, 23, 9), torch.rand(3, 70, 30)]
    scales = [(8, 4), (64, 32), (20, 40)]
    batches = multi_scale_exemplars(crops, scales, min_height=16)
    assert len(batches) == len(scales) + 1
    for batch, (h, w) in zip(batches[1:], scales, strict=True):
        assert batch.shape == (3, 3, h, w)
        assert batch.dtype == torch.float32


def test_constant_colour_stays_that_colour_at_every_scale() -> None:
    colour = torch.tensor([0.2, 0.5, 0.9])
    crops = [colour[:, None, None].expand(3, 23, 9).clone(), colour[:, None, None].expand(3, 40, 40).clone()]
    # Shrinking, enlarging, and shrinking one side while enlarging the other.
    scales = [(8, 4), (64, 32), (12, 48)]
    batches = multi_scale_exemplars(crops, scales, min_height=16)
    for batch in batches[1:]:
        torch.testing.assert_close(batch, colour[None, :, None, None].expand_as(batch), atol=1e-5, rtol=0)


def test_shrinking_is_antialiased() -> None:
    # A one-pixel checkerboard shrunk 3x: plain bilinear sampling lands on pixel
    # centres and returns 0s and 1s; an antialiased resize averages to about 0.5.
    ys, xs = torch.meshgrid(torch.arange(30), torch.arange(30), indexing="ij")
    checker = ((ys + xs) % 2).float().expand(3, -1, -1).clone()
    _, small = multi_scale_exemplars([checker], [(10, 10)], min_height=16)
    assert (small - 0.5).abs().max() < 0.05


def test_empty_crop_list_gives_empty_batches_with_their_sizes() -> None:
    batches = multi_scale_exemplars([], [(8, 4), (32, 16)], min_height=20, size_multiple=16)
    assert len(batches) == 3
    canvas, first, second = batches
    assert canvas.shape[:3] == (0, 3, 32) and canvas.shape[3] > 0 and canvas.shape[3] % 16 == 0
    assert first.shape == (0, 3, 8, 4)
    assert second.shape == (0, 3, 32, 16)


# --------------------------------------------------------------------------- box_scales_kmeans


def _boxes_around(centres: list[tuple[float, float]], per_centre: int, seed: int) -> np.ndarray:
    """xyxy boxes whose (h, w) scatter symmetrically around each centre.

    Every offset is used with both signs, so each cluster's mean is exactly its centre.
    """
    rng = np.random.default_rng(seed)
    sizes = []
    for h, w in centres:
        dh = rng.uniform(-0.1 * h, 0.1 * h, per_centre)
        dw = rng.uniform(-0.1 * w, 0.1 * w, per_centre)
        sizes.append(np.stack([h + dh, w + dw], axis=1))
        sizes.append(np.stack([h - dh, w - dw], axis=1))
    hw = np.concatenate(sizes)
    hw = hw[rng.permutation(len(hw))]
    x1 = rng.uniform(0, 500, len(hw))
    y1 = rng.uniform(0, 300, len(hw))
    return np.stack([x1, y1, x1 + hw[:, 1], y1 + hw[:, 0]], axis=1)


def test_kmeans_recovers_three_known_sizes_sorted_by_height() -> None:
    centres = [(256.0, 104.0), (64.0, 24.0), (128.0, 48.0)]
    boxes = _boxes_around(centres, per_centre=20, seed=0)
    for seed in range(4):  # k-means numbers its clusters arbitrarily; the output is sorted
        scales = box_scales_kmeans(boxes, 3, min_height=32, seed=seed)
        assert scales == [(64, 24), (128, 48), (256, 104)], seed


def test_kmeans_sizes_are_rounded_up_to_the_multiple() -> None:
    boxes = _boxes_around([(100.0, 41.0), (300.0, 130.0)], per_centre=20, seed=1)
    assert box_scales_kmeans(boxes, 2, min_height=32) == [(104, 48), (304, 136)]
    assert box_scales_kmeans(boxes, 2, min_height=32, multiple=16) == [(112, 48), (304, 144)]


def test_kmeans_raises_a_short_centre_to_min_height_keeping_its_aspect() -> None:
    boxes = _boxes_around([(32.0, 12.0), (160.0, 64.0)], per_centre=20, seed=2)
    # 32x12 scaled by 64 / 32 = 2 -> 64x24 (not 64x16: the width is scaled too).
    assert box_scales_kmeans(boxes, 2, min_height=64) == [(64, 24), (160, 64)]


def test_kmeans_needs_at_least_as_many_boxes_as_scales() -> None:
    boxes = np.array([[0.0, 0.0, 10.0, 30.0], [5.0, 5.0, 25.0, 65.0]])
    with pytest.raises(ValueError, match="2 boxes cannot give 3 scales"):
        box_scales_kmeans(boxes, 3, min_height=16)
    assert len(box_scales_kmeans(boxes, 2, min_height=16)) == 2


def test_kmeans_is_deterministic_for_a_fixed_seed() -> None:
    # Sizes without cluster structure, where the result does depend on initialisation.
    rng = np.random.default_rng(3)
    hw = rng.uniform([40.0, 15.0], [400.0, 160.0], size=(300, 2))
    boxes = np.concatenate([np.zeros((300, 2)), hw[:, ::-1]], axis=1)  # x2 = w, y2 = h
    first = box_scales_kmeans(boxes, 4, min_height=32, seed=7)
    assert box_scales_kmeans(boxes, 4, min_height=32, seed=7) == first
    assert len(first) == 4
    heights = [h for h, _ in first]
    assert heights == sorted(heights)
    assert all(h % 8 == 0 and w % 8 == 0 and h >= 32 for h, w in first)
