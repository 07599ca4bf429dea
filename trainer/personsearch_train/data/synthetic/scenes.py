"""Scene rendering: backgrounds, PRW-like scale spread, occlusion, lighting and blur.

:func:`render_scene` turns a :class:`ScenePlan` (who is in the picture, the image size,
the seeds) into pixels plus the ground truth actually drawn: one tight integer box per
person, computed from the person's own mask (occluded parts included, as annotators
box the whole person), clipped to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from personsearch_train.data.synthetic.figures import draw_person, sample_pose
from personsearch_train.data.synthetic.identities import Identity

__all__ = ["DOMAINS", "SCALES", "RenderedScene", "ScenePlan", "make_background", "render_scene"]

#: Rendering domains: ``"standard"`` is what every training layout uses; ``"shifted"``
#: (UFine3C's cross-domain split) draws other backgrounds under dim, tinted light.
DOMAINS: tuple[str, ...] = ("standard", "shifted")
#: Person-height spreads of street scenes, name -> ``(smallest height in pixels, smallest
#: and largest height as fractions of the image height, tallest allowed fraction)``; the
#: smallest height is ``min(pixels, fraction * H)``. ``"standard"`` is PRW-like (40 px to
#: 0.7 H) and what every layout of the full set uses; ``"wide"`` (16 px to 0.9 H, CrowdHuman-
#: or CityPersons-like far pedestrians and close-ups) is the hybrid pre-training
#: detection set's, so pre-training sees scales the target never shows.
SCALES: dict[str, tuple[float, float, float, float]] = {
    "standard": (40.0, 0.3, 0.7, 0.75),
    "wide": (16.0, 0.1, 0.9, 0.95),
}

_FACADES = np.array(
    [
        [150, 140, 130],
        [120, 110, 100],
        [170, 160, 140],
        [100, 100, 110],
        [140, 120, 110],
        [90, 95, 90],
        [180, 175, 170],
    ],
    dtype=np.float32,
)
_GROUNDS = np.array(
    [[110, 110, 110], [90, 85, 80], [130, 125, 115], [80, 95, 75], [150, 145, 135]], dtype=np.float32
)
# The shifted domain: saturated shop fronts and painted walls over dark asphalt or
# coloured tiles, colours the standard palette never produces.
_SHIFTED_FACADES = np.array(
    [
        [200, 60, 50],
        [40, 120, 170],
        [210, 170, 40],
        [60, 150, 120],
        [150, 70, 160],
        [230, 220, 200],
        [50, 50, 60],
    ],
    dtype=np.float32,
)
_SHIFTED_GROUNDS = np.array(
    [[45, 45, 50], [160, 60, 50], [60, 110, 140], [200, 190, 150], [35, 60, 40]], dtype=np.float32
)
# Light colours of the shifted domain: sodium street lamps, cold fluorescent light, dusk.
_SHIFTED_TINTS = np.array([[1.25, 0.95, 0.6], [0.75, 0.95, 1.3], [1.1, 0.8, 1.05]], dtype=np.float32)


@dataclass(frozen=True)
class ScenePlan:
    """Everything needed to render one image, decided before rendering.

    Attributes:
        width: Image width in pixels.
        height: Image height in pixels.
        people: Identities drawn in the image, in annotation order.
        seed: Seed of this image's randomness (poses, positions, lighting, blur).
        background_seed: Seed of the background; images of one camera share it so the
            camera's view stays the same from frame to frame.
        style: ``"street"`` (many people, scale spread, occluders) or ``"crop"`` (one
            person centred, filling the height; for re-id / text crops).
        domain: One of :data:`DOMAINS`; ``"shifted"`` changes the background palette,
            the lighting and the blur, never who is drawn or how.
        scale: A key of :data:`SCALES`: the range of person heights of a street scene
            (crops always fill their height).
    """

    width: int
    height: int
    people: tuple[Identity, ...]
    seed: int
    background_seed: int
    style: str = "street"
    domain: str = "standard"
    scale: str = "standard"

    def __post_init__(self) -> None:
        if self.domain not in DOMAINS:
            raise ValueError(f"unknown rendering domain {self.domain!r}; choose one of {', '.join(DOMAINS)}")
        if self.scale not in SCALES:
            raise ValueError(
                f"unknown person-height spread {self.scale!r}; choose one of {', '.join(SCALES)}"
            )


@dataclass(frozen=True)
class RenderedScene:
    """A rendered image and what was drawn in it.

    Attributes:
        image: ``[H, W, 3]`` uint8 RGB.
        boxes: ``[M, 4]`` int64 ``xyxy`` pixels (``x2``/``y2`` exclusive, so
            ``w = x2 - x1``), one per planned person, in plan order.
        visibility: ``[M]`` float32, fraction of each person's pixels left visible
            after occlusion.
        owner: ``[H, W]`` int32, index of the person seen at each pixel, -1 for
            background and occluding objects.
    """

    image: np.ndarray
    boxes: np.ndarray
    visibility: np.ndarray
    owner: np.ndarray


def _low_frequency_noise(rng: np.random.Generator, width: int, height: int, amplitude: float) -> np.ndarray:
    # Mostly brightness (dirt, shade), with a little colour.
    shape = (max(2, height // 24), max(2, width // 24))
    small = rng.normal(0.0, amplitude, size=(*shape, 1)) + rng.normal(0.0, amplitude * 0.25, size=(*shape, 3))
    return cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def make_background(
    rng: np.random.Generator, width: int, height: int, domain: str = "standard"
) -> tuple[np.ndarray, int]:
    """Draw a street-like background: building facades with windows over a tiled ground.

    Args:
        rng: Source of randomness (a fixed seed gives a fixed camera view).
        width: Image width.
        height: Image height.
        domain: ``"standard"`` or ``"shifted"`` (another facade and ground palette;
            the random draws are the same, so only the colours differ).

    Returns:
        ``([H, W, 3] float32 RGB in 0..255, horizon row)``.
    """
    facades, grounds = (_FACADES, _GROUNDS) if domain == "standard" else (_SHIFTED_FACADES, _SHIFTED_GROUNDS)
    img = np.empty((height, width, 3), dtype=np.float32)
    horizon = int(height * rng.uniform(0.3, 0.5))
    # Facades: a few buildings side by side, each with its own colour and window grid.
    cuts = np.sort(rng.uniform(0, width, size=int(rng.integers(1, 4)))).astype(int)
    edges = [0, *cuts.tolist(), width]
    for x0, x1 in zip(edges[:-1], edges[1:], strict=True):
        colour = facades[rng.integers(len(facades))] * rng.uniform(0.8, 1.2, size=3)
        img[:horizon, x0:x1] = colour
        win = colour * rng.uniform(0.35, 0.7)
        step_x = int(rng.integers(14, 40))
        step_y = int(rng.integers(16, 44))
        ww, wh = int(step_x * rng.uniform(0.35, 0.6)), int(step_y * rng.uniform(0.35, 0.6))
        for y in range(int(rng.integers(2, 10)), max(0, horizon - wh - 6), step_y):
            for x in range(x0 + int(rng.integers(2, 10)), x1 - ww, step_x):
                img[y : y + wh, x : x + ww] = win
    ground = grounds[rng.integers(len(grounds))] * rng.uniform(0.85, 1.15, size=3)
    img[horizon:] = ground
    line = tuple(float(c) for c in ground * rng.uniform(0.7, 0.9))
    vx = int(rng.uniform(0.2, 0.8) * width)
    for k in range(-6, 7):
        cv2.line(img, (vx, horizon), (vx + k * width // 3, height), line, 1, cv2.LINE_AA)
    y, gap = float(horizon + 3), 3.0
    while y < height:
        cv2.line(img, (0, int(y)), (width, int(y)), line, 1, cv2.LINE_AA)
        gap *= 1.35
        y += gap
    # Street furniture and trees along the horizon.
    for _ in range(int(rng.integers(2, 8))):
        cx = int(rng.uniform(0, width))
        size = int(rng.uniform(0.04, 0.12) * height)
        if rng.random() < 0.5:
            tree = tuple(float(c) for c in rng.uniform([30, 80, 30], [70, 140, 70]))
            cv2.ellipse(img, (cx, horizon - size), (size, int(size * 1.3)), 0, 0, 360, tree, -1, cv2.LINE_AA)
        else:
            sign = tuple(float(c) for c in rng.uniform(40, 220, size=3))
            cv2.rectangle(img, (cx, horizon - 2 * size), (cx + size, horizon), sign, -1)
    img += _low_frequency_noise(rng, width, height, 10.0)
    return img, horizon


def _place(
    rng: np.random.Generator, plan: ScenePlan, horizon: int, heights: list[int], hmax: float
) -> list[tuple[int, int]]:
    """Foot positions: nearer (lower) people are taller, ``hmax`` at the bottom; avoid stacking people."""
    w, h = plan.width, plan.height
    feet: list[tuple[int, int]] = []
    boxes: list[tuple[float, float, float, float]] = []
    for height_px in heights:
        if plan.style == "crop":
            foot = (w // 2 + int(rng.integers(-2, 3)), int(h - rng.uniform(0.01, 0.04) * h))
            feet.append(foot)
            continue
        # Ground-plane perspective: the distance of the feet below the horizon grows in
        # proportion to the person's image height (the tallest stand at the bottom).
        t = height_px / hmax
        best, best_overlap = None, math.inf
        for _ in range(10):
            fy = horizon + t * (h - horizon) + rng.normal(0.0, 0.03 * h)
            fy = float(np.clip(fy, height_px * 0.92, h + 0.02 * height_px))
            fx = rng.uniform(0.04 * w, 0.96 * w)
            half = 0.3 * height_px
            cand = (fx - half, fy - height_px, fx + half, fy)
            area = (cand[2] - cand[0]) * (cand[3] - cand[1])
            overlap = 0.0
            for o in boxes:
                iw = max(0.0, min(cand[2], o[2]) - max(cand[0], o[0]))
                ih = max(0.0, min(cand[3], o[3]) - max(cand[1], o[1]))
                overlap = max(overlap, iw * ih / area)
            if overlap < best_overlap:
                best, best_overlap = (int(fx), int(fy)), overlap
            if overlap < 0.3:
                break
        assert best is not None
        feet.append(best)
        boxes.append((best[0] - 0.3 * height_px, best[1] - height_px, best[0] + 0.3 * height_px, best[1]))
    return feet


def _occlude(rng: np.random.Generator, img: np.ndarray, owner: np.ndarray, box: np.ndarray) -> None:
    """Draw one foreground object (post, bin/car body or shrub) over part of a person."""
    h, w = owner.shape
    x1, y1, x2, y2 = (int(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    layer = np.zeros((h, w), dtype=np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        cx = int(rng.uniform(x1, x2))
        half = max(1, int(bw * rng.uniform(0.08, 0.18)))
        cv2.rectangle(layer, (cx - half, 0), (cx + half, h), 255, -1)
        colour = rng.uniform(40, 120, size=3)
    elif kind == 1:
        top = int(y2 - bh * rng.uniform(0.2, 0.5))
        left = int(x1 - bw * rng.uniform(0.2, 1.5))
        right = int(x1 + bw * rng.uniform(0.3, 1.2))
        cv2.rectangle(layer, (left, top), (right, h), 255, -1)
        colour = rng.uniform(20, 230, size=3)
    else:
        cy = int(y2 - bh * rng.uniform(0.05, 0.2))
        cx = int(rng.uniform(x1, x2))
        cv2.ellipse(
            layer,
            (cx, cy),
            (int(bw * rng.uniform(0.5, 1.0)), int(bh * rng.uniform(0.15, 0.35))),
            0,
            0,
            360,
            255,
            -1,
        )
        colour = rng.uniform([20, 70, 20], [80, 150, 80])
    on = layer > 0
    img[on] = colour + rng.normal(0.0, 8.0, size=(int(on.sum()), 3))
    owner[on] = -1


def _light_and_blur(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    gain = rng.uniform(0.72, 1.2) * rng.uniform(0.93, 1.07, size=3)
    img *= gain.astype(np.float32)
    if rng.random() < 0.35:
        # A shadow or light fall-off across the image.
        ramp = np.linspace(rng.uniform(0.55, 1.0), rng.uniform(0.9, 1.2), w, dtype=np.float32)
        img *= ramp[None, :, None] if rng.random() < 0.5 else ramp[::-1][None, :, None]
    img += rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 6.0))
    out = np.clip(img, 0, 255).astype(np.uint8)
    # Exposure curve through a lookup table (cheaper than a float power per pixel).
    gamma = rng.uniform(0.85, 1.18)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** gamma + 0.5, 0, 255).astype(np.uint8)
    out = cv2.LUT(out, lut)
    if rng.random() < 0.35:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.6))
    elif rng.random() < 0.2:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), dtype=np.float32)
        kernel[k // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        out = cv2.filter2D(out, -1, kernel / max(float(kernel.sum()), 1e-6))
    return out


def _shift_light(rng: np.random.Generator, img: np.ndarray) -> None:
    """Dim, tinted light of the shifted domain, applied before the usual light and blur."""
    tint = _SHIFTED_TINTS[rng.integers(len(_SHIFTED_TINTS))]
    img *= (tint * np.float32(rng.uniform(0.5, 0.75))).astype(np.float32)


def _shift_blur(rng: np.random.Generator, out: np.ndarray) -> np.ndarray:
    """A softer lens than the standard domain ever has (sigma 1.2-2.2)."""
    return cv2.GaussianBlur(out, (0, 0), rng.uniform(1.2, 2.2))


def render_scene(plan: ScenePlan) -> RenderedScene:
    """Render one image and measure the boxes of the people drawn in it.

    Args:
        plan: The scene to draw.

    Returns:
        The :class:`RenderedScene`; ``boxes[i]`` belongs to ``plan.people[i]``.
    """
    rng = np.random.default_rng(plan.seed)
    bg_rng = np.random.default_rng(plan.background_seed)
    img, horizon = make_background(bg_rng, plan.width, plan.height, plan.domain)
    # Per-image variation of a fixed camera view: a slightly different exposure.
    img *= rng.uniform(0.92, 1.08)
    h, w = plan.height, plan.width
    n = len(plan.people)
    min_pixels, min_fraction, max_fraction, top_fraction = SCALES[plan.scale]
    hmin, hmax = min(min_pixels, min_fraction * h), max_fraction * h
    heights = []
    for person in plan.people:
        if plan.style == "crop":
            base = rng.uniform(0.86, 0.94) * h
        else:
            base = math.exp(rng.uniform(math.log(hmin), math.log(hmax)))
        top = 0.97 * h if plan.style == "crop" else top_fraction * h
        heights.append(int(round(np.clip(base * person.height, 0.9 * hmin, top))))
    sprites = [draw_person(p, hp, sample_pose(rng), rng) for p, hp in zip(plan.people, heights, strict=True)]
    feet = _place(rng, plan, horizon, heights, hmax)

    owner = np.full((h, w), -1, dtype=np.int32)
    boxes = np.zeros((n, 4), dtype=np.int64)
    areas = np.zeros(n, dtype=np.int64)
    # Far people first so that nearer ones occlude them.
    for i in sorted(range(n), key=lambda k: (feet[k][1], k)):
        sprite = sprites[i]
        sh, sw = sprite.mask.shape
        ox, oy = feet[i][0] - sprite.foot[0], feet[i][1] - sprite.foot[1]
        x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + sw, w), min(oy + sh, h)
        mask = sprite.mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        ys, xs = np.nonzero(mask)
        shade = float(rng.uniform(0.85, 1.05))
        region = img[y0:y1, x0:x1]
        region[mask] = sprite.rgb[y0 - oy : y1 - oy, x0 - ox : x1 - ox][mask].astype(np.float32) * shade
        owner[y0:y1, x0:x1][mask] = i
        areas[i] = len(ys)
        boxes[i] = (x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1)
    if plan.style == "street" and n and rng.random() < 0.35:
        for _ in range(int(rng.integers(1, 3))):
            _occlude(rng, img, owner, boxes[int(rng.integers(n))])
    counts = np.bincount(owner[owner >= 0].ravel(), minlength=n)[:n]
    visibility = (counts / np.maximum(areas, 1)).astype(np.float32)
    # The shifted domain draws from its own stream so the standard draws stay as they were.
    shift_rng = np.random.default_rng([plan.seed, 11]) if plan.domain == "shifted" else None
    if shift_rng is not None:
        _shift_light(shift_rng, img)
    image = _light_and_blur(rng, img)
    if shift_rng is not None:
        image = _shift_blur(shift_rng, image)
    return RenderedScene(image=image, boxes=boxes, visibility=visibility, owner=owner)
