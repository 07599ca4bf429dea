from __future__ import annotations

import numpy as np
from personsearch_runtime.bundle import Preprocessing
from personsearch_runtime.preprocess import batch_images, prepare_image, resized_size, to_original, to_resized


def test_resized_size_policy() -> None:
    spec = Preprocessing(min_size=800, max_size=1333)
    assert resized_size(576, 768, spec) == (800, 1066)  # shorter side drives
    assert resized_size(500, 2000, spec) == (333, 1333)  # longer side capped
    assert resized_size(10, 10, Preprocessing(resize_policy="none")) == (10, 10)


def test_prepare_converts_bgr_to_rgb_and_normalises() -> None:
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 255  # blue in BGR
    spec = Preprocessing(resize_policy="none", normalize_in_graph=True)
    p = prepare_image(image, spec)
    assert p.tensor.shape == (3, 4, 6)
    np.testing.assert_allclose(p.tensor[2], 1.0)
    np.testing.assert_allclose(p.tensor[0], 0.0)
    spec = Preprocessing(
        resize_policy="none", normalize_in_graph=False, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    np.testing.assert_allclose(prepare_image(image, spec).tensor[2], 1.0)
    np.testing.assert_allclose(prepare_image(image, spec).tensor[0], -1.0)


def test_batch_pads_to_divisor_and_boxes_map_back() -> None:
    spec = Preprocessing(min_size=64, max_size=200, pad_divisor=32, pad_value=0.25)
    a = prepare_image(np.zeros((50, 100, 3), np.uint8), spec)  # -> 64 x 128
    b = prepare_image(np.zeros((100, 80, 3), np.uint8), spec)  # -> 80 x 64
    batch = batch_images([a, b], spec)
    assert batch.shape == (2, 3, 96, 128)
    assert batch[1, 0, 90, 100] == np.float32(0.25) and batch[0, 0, 10, 10] == 0.0
    boxes = np.array([[10, 5, 90, 45]], np.float32)
    np.testing.assert_allclose(to_original(to_resized(boxes, a), a), boxes, atol=1e-4)
    np.testing.assert_allclose(to_original(np.array([[0, 0, 1000, 1000]], np.float32), a), [[0, 0, 100, 50]])
