"""Drawing articulated people (head, torso, arms, legs, accessories) with OpenCV.

A figure is drawn on its own small canvas (a *sprite*: colour image plus a binary
mask of the pixels the person covers) and later pasted into a scene. The mask is
what the annotation boxes are computed from, so a box is always tight around the
drawn person.

Geometry is written in body units: 1.0 is the distance from the top of the head to
the soles; x grows to the viewer's right, y downwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from personsearch_train.data.synthetic.identities import (
    CLOTHING_COLOURS,
    HAIR_COLOURS,
    SHOE_COLOURS,
    SKIN_TONES,
    Identity,
)

__all__ = ["VIEWS", "Pose", "Sprite", "draw_person", "sample_pose"]

VIEWS: tuple[str, ...] = ("front", "back", "left", "right")


@dataclass(frozen=True)
class Pose:
    """How a figure stands in one appearance.

    Attributes:
        view: ``"front"``, ``"back"``, ``"left"`` or ``"right"`` (the side it faces).
        phase: Walking-cycle phase in radians.
        stride: 0 for standing still, up to 1 for a long stride.
        phone_arm: Whether one forearm is raised (holding a phone / cup).
        lean: Forward lean of the upper body in body units.
    """

    view: str
    phase: float
    stride: float
    phone_arm: bool
    lean: float


@dataclass(frozen=True)
class Sprite:
    """A drawn person on its own canvas.

    Attributes:
        rgb: ``[h, w, 3]`` uint8 colour image.
        mask: ``[h, w]`` bool, True where the person (with accessories) is drawn.
        foot: ``(x, y)`` int pixel position of the point between the soles, in sprite
            coordinates; scenes place figures by this point.
    """

    rgb: np.ndarray
    mask: np.ndarray
    foot: tuple[int, int]


def sample_pose(rng: np.random.Generator) -> Pose:
    """Draw a random pose.

    Args:
        rng: Source of randomness.

    Returns:
        A :class:`Pose`.
    """
    walking = rng.random() < 0.7
    return Pose(
        view=str(rng.choice(VIEWS)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        stride=float(rng.uniform(0.4, 1.0)) if walking else float(rng.uniform(0.0, 0.15)),
        phone_arm=bool(rng.random() < 0.15),
        lean=float(rng.uniform(-0.01, 0.03)),
    )


def _jitter(rgb: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """One appearance's version of a palette colour (dye, fading, white balance)."""
    base = np.asarray(rgb, dtype=np.float32)
    gain = 1.0 + rng.normal(0.0, strength, size=3) + rng.normal(0.0, strength)
    return np.clip(base * gain + rng.normal(0.0, 255 * strength * 0.5, size=3), 0, 255)


def _pattern(
    shape: tuple[int, int], c1: np.ndarray, c2: np.ndarray, pattern: str, period: int, offset: int
) -> np.ndarray:
    """A canvas-sized fabric image: solid, horizontal stripes or checks."""
    h, w = shape
    out = np.empty((h, w, 3), dtype=np.float32)
    out[:] = c1
    if pattern == "solid":
        return out
    ys = ((np.arange(h) + offset) // period) % 2
    if pattern == "stripes":
        out[ys == 1] = c2
        return out
    xs = ((np.arange(w) + offset) // period) % 2
    out[(ys[:, None] + xs[None, :]) % 2 == 1] = c2
    return out


class _Canvas:
    """Painter's-algorithm canvas: each layer is a binary mask filled with a colour or fabric."""

    def __init__(self, height_px: int) -> None:
        self.h_px = float(height_px)
        self.width = int(math.ceil(height_px * 0.9)) + 6
        self.height = int(math.ceil(height_px * 1.08)) + 6
        self.x0 = self.width / 2.0
        self.y0 = math.ceil(height_px * 0.07) + 3.0
        self.rgb = np.zeros((self.height, self.width, 3), dtype=np.float32)
        self.mask = np.zeros((self.height, self.width), dtype=bool)

    def pt(self, x: float, y: float) -> tuple[int, int]:
        return (int(round(self.x0 + x * self.h_px)), int(round(self.y0 + y * self.h_px)))

    def px(self, length: float) -> int:
        return max(1, int(round(length * self.h_px)))

    def new_layer(self) -> np.ndarray:
        return np.zeros((self.height, self.width), dtype=np.uint8)

    def paint(self, layer: np.ndarray, fill: np.ndarray) -> None:
        on = layer > 0
        if fill.ndim == 1:
            self.rgb[on] = fill
        else:
            self.rgb[on] = fill[on]
        self.mask |= on

    def limb(self, layer: np.ndarray, pts: list[tuple[float, float]], thickness: float) -> None:
        t = self.px(thickness)
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            cv2.line(layer, self.pt(*a), self.pt(*b), 255, t, cv2.LINE_8)
            cv2.circle(layer, self.pt(*b), max(1, t // 2), 255, -1, cv2.LINE_8)

    def poly(self, layer: np.ndarray, pts: list[tuple[float, float]]) -> None:
        cv2.fillPoly(layer, [np.asarray([self.pt(*p) for p in pts], dtype=np.int32)], 255, cv2.LINE_8)

    def ellipse(
        self, layer: np.ndarray, c: tuple[float, float], rx: float, ry: float, a0: float = 0, a1: float = 360
    ) -> None:
        cv2.ellipse(layer, self.pt(*c), (self.px(rx), self.px(ry)), 0, a0, a1, 255, -1, cv2.LINE_8)


def _leg_points(
    side: float, pose: Pose, hw: float, profile: bool, facing: float
) -> list[tuple[float, float]]:
    """Hip, knee, ankle of one leg (side = -1 left / +1 right in front view, or phase sign in profile)."""
    swing = pose.stride * 0.42 * math.sin(pose.phase) * side
    if profile:
        hip = (0.0, 0.50)
        bend = 0.35 * pose.stride * max(0.0, -math.sin(pose.phase) * side)
        knee = (hip[0] + facing * 0.23 * math.sin(swing), hip[1] + 0.23 * math.cos(swing))
        shin = swing - bend
        ankle = (knee[0] + facing * 0.225 * math.sin(shin), knee[1] + 0.225 * math.cos(shin))
        return [hip, knee, ankle]
    x = side * hw * 0.55
    fore = 0.012 * pose.stride * math.sin(pose.phase) * side
    return [(x, 0.50), (x + side * 0.01, 0.725 + fore), (x + side * 0.015, 0.955 + fore)]


def _arm_points(
    side: float, pose: Pose, sw: float, profile: bool, facing: float, phone: bool
) -> list[tuple[float, float]]:
    """Shoulder, elbow, hand of one arm."""
    swing = -pose.stride * 0.5 * math.sin(pose.phase) * side
    if profile:
        shoulder = (facing * pose.lean, 0.185)
        elbow = (shoulder[0] + facing * 0.16 * math.sin(swing), shoulder[1] + 0.16 * math.cos(swing))
        fore = swing + 0.25 + (1.6 if phone else 0.0)
        hand = (elbow[0] + facing * 0.155 * math.sin(fore), elbow[1] + 0.155 * math.cos(fore))
        return [shoulder, elbow, hand]
    shoulder = (side * sw * 0.92, 0.185)
    out = 0.1 + 0.04 * abs(swing)
    elbow = (shoulder[0] + side * 0.16 * math.sin(out), shoulder[1] + 0.16 * math.cos(out))
    if phone:
        hand = (elbow[0] - side * 0.06, elbow[1] - 0.11)
    else:
        hand = (elbow[0] + side * 0.02, elbow[1] + 0.15 + 0.01 * swing)
    return [shoulder, elbow, hand]


def draw_person(identity: Identity, height_px: int, pose: Pose, rng: np.random.Generator) -> Sprite:
    """Draw one appearance of a person.

    Args:
        identity: Who is drawn (clothing, hair, skin, build, accessories).
        height_px: Head-to-sole height in pixels (a hat adds a little on top).
        pose: View, walking phase and arm pose.
        rng: Randomness for this appearance: per-appearance colour jitter, shading side.

    Returns:
        The :class:`Sprite`.
    """
    cv = _Canvas(height_px)
    jit = 0.05
    up1 = _jitter(CLOTHING_COLOURS[identity.upper_colour], rng, jit)
    up2 = _jitter(CLOTHING_COLOURS[identity.upper_colour2], rng, jit)
    lo1 = _jitter(CLOTHING_COLOURS[identity.lower_colour], rng, jit)
    lo2 = _jitter(CLOTHING_COLOURS[identity.lower_colour2], rng, jit)
    skin = _jitter(SKIN_TONES[identity.skin], rng, 0.04)
    hair = _jitter(HAIR_COLOURS[identity.hair_colour], rng, 0.05)
    shoes = _jitter(SHOE_COLOURS[identity.shoe_colour], rng, 0.05)
    period = max(2, int(round(height_px * rng.uniform(0.03, 0.045))))
    offset = int(rng.integers(0, 2 * period))
    upper_fabric = _pattern((cv.height, cv.width), up1, up2, identity.upper_pattern, period, offset)
    lower_fabric = _pattern((cv.height, cv.width), lo1, lo2, identity.lower_pattern, period, offset)

    b = identity.build
    profile = pose.view in ("left", "right")
    facing = -1.0 if pose.view == "left" else 1.0
    sw = (0.075 if profile else 0.13) * b
    hw = (0.08 if profile else 0.105) * b
    arm_t, leg_t = 0.056 * b, 0.076 * b
    lean = facing * pose.lean if profile else 0.0

    def bag_layers(front: bool) -> None:
        if identity.backpack is not None:
            colour = _jitter(CLOTHING_COLOURS[identity.backpack], rng, jit)
            layer = cv.new_layer()
            if pose.view == "back" and front:
                cv.poly(
                    layer,
                    [(-sw * 0.8 + lean, 0.2), (sw * 0.8 + lean, 0.2), (sw * 0.75, 0.43), (-sw * 0.75, 0.43)],
                )
            elif profile and front:
                back = -facing
                cv.poly(
                    layer,
                    [
                        (back * sw * 0.8 + lean, 0.2),
                        (back * (sw + 0.09) + lean, 0.21),
                        (back * (sw + 0.08), 0.42),
                        (back * sw * 0.8, 0.43),
                    ],
                )
            elif pose.view == "front" and front:
                for s in (-1, 1):
                    cv.limb(layer, [(s * sw * 0.55, 0.175), (s * sw * 0.6, 0.36)], 0.018)
            cv.paint(layer, colour)
        if identity.bag is not None and front:
            colour = _jitter(CLOTHING_COLOURS[identity.bag], rng, jit)
            side = -facing if profile else 1.0
            layer = cv.new_layer()
            x = side * (hw + 0.035) if not profile else 0.0
            cv.poly(layer, [(x - 0.05, 0.43), (x + 0.05, 0.43), (x + 0.055, 0.55), (x - 0.055, 0.55)])
            cv.limb(layer, [(-side * sw * 0.7 + lean, 0.175), (x, 0.44)], 0.012)
            cv.paint(layer, colour)

    legs = [_leg_points(s, pose, hw, profile, facing) for s in (-1.0, 1.0)]
    arms = [_arm_points(s, pose, sw, profile, facing, pose.phone_arm and s > 0) for s in (-1.0, 1.0)]
    # In profile the far arm is hidden behind the torso: draw it first.
    if profile:
        far_arm = arms[0]
        layer = cv.new_layer()
        cv.limb(layer, far_arm, arm_t)
        cv.paint(layer, up1 * 0.8 if identity.long_sleeves else skin * 0.85)

    # Legs: lower garment down to the knee (shorts/skirt) or the ankle, skin below.
    for pts in legs:
        hip, knee, ankle = pts
        covered = cv.new_layer()
        bare = cv.new_layer()
        if identity.lower_kind == "trousers":
            cv.limb(covered, [hip, knee, ankle], leg_t)
        else:
            mid = (knee[0] * 0.75 + hip[0] * 0.25, knee[1] * 0.75 + hip[1] * 0.25)
            cv.limb(covered, [hip, mid], leg_t)
            cv.limb(bare, [mid, knee, ankle], leg_t * 0.8)
        cv.paint(bare, skin)
        cv.paint(covered, lower_fabric)
        layer = cv.new_layer()
        toe = (ankle[0] + (facing * 0.045 if profile else 0.0), ankle[1] + 0.03)
        cv.ellipse(layer, ((ankle[0] + toe[0]) / 2, toe[1] - 0.005), 0.045 if profile else 0.03, 0.022)
        cv.paint(layer, shoes)
    layer = cv.new_layer()
    if identity.lower_kind == "skirt":
        cv.poly(layer, [(-hw, 0.43), (hw, 0.43), (hw * 1.75, 0.67), (-hw * 1.75, 0.67)])
    else:
        cv.poly(layer, [(-hw, 0.43), (hw, 0.43), (hw * 1.02, 0.53), (-hw * 1.02, 0.53)])
    cv.paint(layer, lower_fabric)

    if identity.long_hair and pose.view != "back":
        layer = cv.new_layer()
        cv.poly(
            layer, [(-0.055 + lean, 0.05), (0.055 + lean, 0.05), (0.06 + lean, 0.22), (-0.06 + lean, 0.22)]
        )
        cv.paint(layer, hair * 0.85)

    # Torso (the top), then the accessories worn over it.
    layer = cv.new_layer()
    cv.poly(layer, [(-sw + lean, 0.165), (sw + lean, 0.165), (hw * 1.05, 0.47), (-hw * 1.05, 0.47)])
    cv.paint(layer, upper_fabric)
    bag_layers(front=True)

    near_arms = arms[1:] if profile else arms
    for pts in near_arms:
        shoulder, elbow, hand = pts
        sleeve = cv.new_layer()
        bare = cv.new_layer()
        if identity.long_sleeves:
            cv.limb(sleeve, [shoulder, elbow, hand], arm_t)
        else:
            cv.limb(sleeve, [shoulder, elbow], arm_t * 1.1)
            cv.limb(bare, [elbow, hand], arm_t * 0.8)
        cv.paint(bare, skin)
        cv.paint(sleeve, upper_fabric)
        layer = cv.new_layer()
        cv.ellipse(layer, hand, 0.022, 0.026)
        cv.paint(layer, skin)

    head = (lean * 1.5, 0.065)
    layer = cv.new_layer()
    cv.limb(layer, [(lean, 0.17), (head[0], 0.11)], 0.04)
    cv.ellipse(layer, head, 0.05, 0.064)
    cv.paint(layer, skin)
    layer = cv.new_layer()
    if pose.view == "back":
        cv.ellipse(layer, (head[0], head[1] - 0.004), 0.053, 0.065)
        if identity.long_hair:
            cv.poly(
                layer,
                [(head[0] - 0.055, 0.07), (head[0] + 0.055, 0.07), (0.06 + lean, 0.23), (-0.06 + lean, 0.23)],
            )
    elif profile:
        cv.ellipse(layer, (head[0] - facing * 0.008, head[1] - 0.01), 0.052, 0.058, 0, 360)
        cv.ellipse(layer, (head[0] + facing * 0.02, head[1] + 0.02), 0.04, 0.05)
        layer2 = cv.new_layer()
        cv.ellipse(layer2, (head[0] + facing * 0.025, head[1] + 0.02), 0.035, 0.045)
        layer[layer2 > 0] = 0
    else:
        cv.ellipse(layer, (head[0], head[1] - 0.012), 0.054, 0.056, 180, 360)
        cv.ellipse(layer, (head[0], head[1] - 0.02), 0.054, 0.03)
    cv.paint(layer, hair)
    if identity.hat is not None:
        layer = cv.new_layer()
        cv.ellipse(layer, (head[0], head[1] - 0.03), 0.047, 0.045, 180, 360)
        cv.ellipse(layer, (head[0] + (facing * 0.02 if profile else 0.0), head[1] - 0.03), 0.07, 0.012)
        cv.paint(layer, _jitter(CLOTHING_COLOURS[identity.hat], rng, jit))

    # Cylinder-like shading with a per-appearance light side, and fabric grain.
    xs = (np.arange(cv.width, dtype=np.float32) - cv.x0) / (0.16 * cv.h_px)
    light = float(rng.uniform(-0.6, 0.6))
    shade = np.clip(1.05 - 0.22 * (xs - light) ** 2, 0.6, 1.08).astype(np.float32)
    rgb = cv.rgb * shade[None, :, None]
    rgb += rng.standard_normal(size=rgb.shape, dtype=np.float32) * np.float32(4.0)
    foot = cv.pt(0.0, 1.0)
    return Sprite(rgb=np.clip(rgb, 0, 255).astype(np.uint8), mask=cv.mask, foot=foot)
