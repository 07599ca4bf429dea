"""Pseudo scenes: re-id crops pasted on canvases, so a crop dataset trains like a scene dataset.

Hybrid pre-training (PPS) trains a one-step person-search model on sub-task data. A
re-id crop folder (Market-1501 layout) has identities but no scenes, so its crops are
*composed*: each pseudo scene is a canvas holding a few crops of different identities,
pasted at several scales, and records every pasted rectangle as a person box with the
crop's training label. The result is an ordinary training :class:`PersonSearchSplit`
that ``data.mix`` can mix with real scene sets. Layout of the output folder::

    OUT/
      scenes/000000.jpg ...   the composed canvases (JPEG)
      pseudo_scenes.json      settings, digest of the source crops, per scene the file,
                              boxes, labels and source crop names (written last)

Composition rules:

* Every readable crop is used exactly once: the crops are walked in a seeded
  permutation. A scene takes the next crops in that order, skipping (and keeping
  for the following scenes) any crop whose labelled identity is already in the scene,
  so a scene never holds two crops of one identity. Unlabelled crops (label ``-1``,
  Market-1501 distractors and junk) may appear any number of times in a scene.
* People per scene are drawn from ``settings.people_per_scene``; the last scenes may
  hold fewer when only crops of one identity are left.
* Each person's height is a uniform fraction of the canvas height (``person_height``);
  the width follows the crop's aspect ratio (shrunk if it would not fit the canvas).
* Position is drawn uniformly, by rejection sampling: up to ``placement_tries`` draws
  for one whose IoU with every person already in the scene is at most ``max_iou``
  and that leaves at least ``min_visible`` of every earlier person's box uncovered.
  (IoU alone is not enough: a small person wholly inside a tall one's box has an IoU
  of only their area ratio, and would vanish under the later paste while keeping a
  labelled box.) If none is found the person is dropped *from this scene* and goes first into the
  next one (the scene is considered full), where it always fits because the first
  person of an empty canvas has nothing to overlap. So no crop is lost.
* Boxes are the pasted rectangles in canvas pixels (``xyxy``, ``x2 = x1 + width``),
  always inside the canvas, listed in paste order: a later person is pasted over an
  earlier one where their boxes overlap (at most ``max_iou``).
* Crop files that cannot be decoded are skipped, counted and named in the manifest,
  never fatal; a set without a single usable crop raises :class:`DatasetFormatError`.

Backgrounds: by default each canvas is procedural, a smooth two-colour gradient in a
random direction plus low-frequency brightness/colour noise, drawn from a generator
seeded by ``(seed, scene index)``. With a folder of background images, each canvas is
a random crop (canvas aspect ratio, 50 to 100 % of the largest such crop) of one of
them, resized to the canvas. Neither makes the pasted people look natural: a crop
keeps its own background rectangle, with a hard edge where it meets the canvas, and
on a smooth procedural canvas "a sharp-edged textured rectangle" is a shortcut the
detector can learn instead of "a person". The box *is* that rectangle, so the
detector is still told the truth, but what it learns from pseudo scenes about
person boundaries is weak; that is why they are a pre-training source mixed with
real scenes (and detection-only sets), not a replacement for them. Real background
photographs without people reduce the shortcut and are preferred when available.

Caching: :func:`compose_pseudo_scenes` reads an existing manifest back instead of
recomposing when its settings, the digest of the source crop list (names, labels,
file sizes) and of the background list all match and every scene file is present.
Anything else recomposes: the old manifest is removed first (so an interrupted run
is never mistaken for a finished one), every scene is rewritten, stale scene files
are deleted and the manifest is written last. Files are written atomically; two
processes composing the same inputs into the same folder (DDP ranks) write the same
bytes and do not corrupt each other. The same crops, settings and backgrounds give a
byte-identical manifest wherever it is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.data.images import read_bgr
from personsearch_train.data.reid_folders import ReidCropSet, load_market1501
from personsearch_train.data.structures import UNLABELLED, ImageRecord, PersonSearchSplit
from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = [
    "CACHE_DIR",
    "MANIFEST_NAME",
    "PseudoSceneSet",
    "PseudoSceneSettings",
    "compose_pseudo_scenes",
    "load_market1501_scenes",
    "load_unlabelled_crop_scenes",
]

#: Manifest file name inside the output folder.
MANIFEST_NAME = "pseudo_scenes.json"
#: Folder of the composed images inside the output folder.
SCENES_DIR = "scenes"
#: Cache folder, inside a Market-1501 root, used by :func:`load_market1501_scenes`.
CACHE_DIR = "pseudo_scenes"
#: Sub-folder of an unlabelled crop set that holds the crops (LUPerson-style layout).
UNLABELLED_CROPS_DIR = "images"
_CROP_SUFFIXES = (".jpg", ".jpeg", ".png")

_FORMAT = "personsearch-pseudo-scenes"
# Bump when the composition changes for the same settings, so old caches are rebuilt.
_VERSION = 1
_BACKGROUND_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
# Purposes mixed into seeds so the planning and per-scene streams never coincide.
_PLAN_STREAM = 1
_SCENE_STREAM = 2
# Bound on crops skipped for an identity clash while filling one scene: with many
# crops of one identity left in a row, the scene is closed instead of scanning on.
_MAX_HELD = 256
_MIN_CANVAS_SIDE = 32


def _pair(value: Any, name: str, kind: type) -> tuple[Any, Any]:
    """Check a ``(low, high)`` setting and return it as a tuple of ``kind``."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ConfigError(f"pseudo scenes: {name} must be a pair (low, high), got {value!r}.")
    out = []
    for item in value:
        # bool is an int subclass; True is never a meaningful count or size.
        ok = isinstance(item, int | float) and not isinstance(item, bool)
        if kind is int:
            ok = ok and float(item).is_integer()
        if not ok:
            raise ConfigError(f"pseudo scenes: {name} must hold two {kind.__name__}s, got {value!r}.")
        out.append(kind(item))
    return out[0], out[1]


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"pseudo scenes: {name} must be an integer, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class PseudoSceneSettings:
    """How crops are composed into pseudo scenes.

    Attributes:
        people_per_scene: ``(min, max)`` people drawn per scene, ``1 <= min <= max``.
        canvas_size: ``(height, width)`` of every canvas in pixels, each at least 32.
            The default 480x800 is landscape like the synthetic CUHK-SYSU (3:4 to
            9:16) and PRW (9:16) scenes, between their aspect ratios.
        person_height: ``(low, high)`` person height as a fraction of the canvas
            height, ``0 < low <= high <= 1``; drawn uniformly, so several scales occur.
        max_iou: Largest IoU allowed between two people of a scene, in ``[0, 1)``.
        min_visible: Smallest fraction of a person's box that must stay uncovered by
            the people pasted after them, in ``(0, 1]``.
        placement_tries: Position draws per person before it is moved to the next scene.
        jpeg_quality: JPEG quality of the written scenes, 1..100.
        seed: Seed of the crop order, the counts, sizes, positions and backgrounds.

    Raises:
        ConfigError: A value has the wrong type or is out of range (the message names it).
    """

    people_per_scene: tuple[int, int] = (2, 5)
    canvas_size: tuple[int, int] = (480, 800)
    person_height: tuple[float, float] = (0.3, 0.85)
    max_iou: float = 0.2
    min_visible: float = 0.5
    placement_tries: int = 30
    jpeg_quality: int = 95
    seed: int = 0

    def __post_init__(self) -> None:
        people = _pair(self.people_per_scene, "people_per_scene", int)
        if not 1 <= people[0] <= people[1]:
            raise ConfigError(
                f"pseudo scenes: people_per_scene must be (min, max) with 1 <= min <= max, got {people}."
            )
        canvas = _pair(self.canvas_size, "canvas_size", int)
        if min(canvas) < _MIN_CANVAS_SIDE:
            raise ConfigError(
                f"pseudo scenes: canvas_size (height, width) must be at least {_MIN_CANVAS_SIDE} "
                f"pixels each, got {canvas}."
            )
        height = _pair(self.person_height, "person_height", float)
        if not 0.0 < height[0] <= height[1] <= 1.0:
            raise ConfigError(
                "pseudo scenes: person_height must be fractions of the canvas height with "
                f"0 < low <= high <= 1, got {height}."
            )
        if isinstance(self.max_iou, bool) or not isinstance(self.max_iou, int | float):
            raise ConfigError(f"pseudo scenes: max_iou must be a number, got {self.max_iou!r}.")
        if not 0.0 <= self.max_iou < 1.0:
            raise ConfigError(f"pseudo scenes: max_iou must be in [0, 1), got {self.max_iou}.")
        if isinstance(self.min_visible, bool) or not isinstance(self.min_visible, int | float):
            raise ConfigError(f"pseudo scenes: min_visible must be a number, got {self.min_visible!r}.")
        if not 0.0 < self.min_visible <= 1.0:
            raise ConfigError(f"pseudo scenes: min_visible must be in (0, 1], got {self.min_visible}.")
        tries = _integer(self.placement_tries, "placement_tries")
        if tries < 1:
            raise ConfigError(f"pseudo scenes: placement_tries must be at least 1, got {tries}.")
        quality = _integer(self.jpeg_quality, "jpeg_quality")
        if not 1 <= quality <= 100:
            raise ConfigError(f"pseudo scenes: jpeg_quality must be in 1..100, got {quality}.")
        if _integer(self.seed, "seed") < 0:
            raise ConfigError(f"pseudo scenes: seed must not be negative, got {self.seed}.")
        # Lists from YAML/JSON become tuples, so equal settings compare and serialise equal.
        object.__setattr__(self, "people_per_scene", people)
        object.__setattr__(self, "canvas_size", canvas)
        object.__setattr__(self, "person_height", height)
        object.__setattr__(self, "max_iou", float(self.max_iou))
        object.__setattr__(self, "min_visible", float(self.min_visible))

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON types (pairs as lists), as the manifest stores them."""
        return {key: list(v) if isinstance(v, tuple) else v for key, v in dataclasses.asdict(self).items()}


@dataclass(frozen=True)
class PseudoSceneSet:
    """Composed (or read-back) pseudo scenes and what happened to the crops.

    Attributes:
        split: The training split: one :class:`ImageRecord` per scene with
            ``boxes`` ``[M, 4]`` float32 ``xyxy`` canvas pixels and ``pids`` ``[M]``
            int64 crop training labels (``-1`` unlabelled); ``label_to_pid`` is the
            crop set's.
        manifest: Path of the manifest file.
        sources: Per scene (same order as ``split.images``) the source crop file
            name of each box.
        scenes_written: Scene images written by this call (0 when read back).
        crops_used: Crops pasted, over all scenes (each exactly once).
        unreadable: Names of crop files that could not be decoded, sorted.
        read_back: True when an up-to-date manifest was read instead of composing.
    """

    split: PersonSearchSplit
    manifest: Path
    sources: tuple[tuple[str, ...], ...]
    scenes_written: int
    crops_used: int
    unreadable: tuple[str, ...]
    read_back: bool

    @property
    def num_scenes(self) -> int:
        """Number of pseudo scenes."""
        return len(self.split.images)


def _source_digest(crops: ReidCropSet) -> str:
    """SHA-256 over the crop names, labels, file sizes and the label table."""
    digest = hashlib.sha256()
    for name, path, pid in zip(crops.names, crops.paths, crops.pids.tolist(), strict=True):
        try:
            size = Path(path).stat().st_size
        except OSError:
            size = -1
        digest.update(f"{name}\t{pid}\t{size}\n".encode())
    digest.update(("labels:" + ",".join(str(p) for p in crops.label_to_pid.tolist())).encode())
    return digest.hexdigest()


def _background_files(folder: str | Path | None) -> tuple[Path, ...]:
    if folder is None:
        return ()
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: background folder not found.")
    files = tuple(p for p in sorted(root.iterdir()) if p.suffix.lower() in _BACKGROUND_SUFFIXES)
    if not files:
        raise DatasetFormatError(
            f"{root}: no background images ({', '.join(_BACKGROUND_SUFFIXES)}) in this folder."
        )
    return files


def _files_digest(files: Sequence[Path]) -> str | None:
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def _procedural_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: two-colour gradient in a random direction plus smooth noise."""
    start, end = rng.uniform(40.0, 215.0, size=(2, 3))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1.0)
    image = start + ramp[..., None] * (end - start)
    # Noise on a coarse grid, smoothly upsampled: shading, not texture.
    grid = (max(2, height // 32), max(2, width // 32))
    noise = rng.normal(0.0, 12.0, size=(*grid, 1)) + rng.normal(0.0, 4.0, size=(*grid, 3))
    image += cv2.resize(noise.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _photo_background(rng: np.random.Generator, files: Sequence[Path], height: int, width: int) -> np.ndarray:
    """``[H, W, 3]`` uint8: a random canvas-shaped crop of one background image, resized."""
    image = read_bgr(files[int(rng.integers(len(files)))])
    ih, iw = image.shape[:2]
    aspect = width / height
    crop_w = min(float(iw), ih * aspect)
    scale = rng.uniform(0.5, 1.0)
    cw = max(1, int(crop_w * scale))
    ch = max(1, min(ih, int(round(cw / aspect))))
    x0 = int(rng.integers(0, iw - cw + 1))
    y0 = int(rng.integers(0, ih - ch + 1))
    patch = image[y0 : y0 + ch, x0 : x0 + cw]
    interpolation = cv2.INTER_AREA if cw > width else cv2.INTER_LINEAR
    return cv2.resize(patch, (width, height), interpolation=interpolation)


def _person_size(
    rng: np.random.Generator, crop_hw: tuple[int, int], settings: PseudoSceneSettings
) -> tuple[int, int]:
    """Pasted ``(height, width)`` of a crop: drawn height, crop aspect, fitted to the canvas."""
    canvas_h, canvas_w = settings.canvas_size
    crop_h, crop_w = crop_hw
    height = max(2, int(round(rng.uniform(*settings.person_height) * canvas_h)))
    width = max(1, int(round(height * crop_w / crop_h)))
    if width > canvas_w:  # very wide crops: keep the aspect ratio, give up some height
        width = canvas_w
        height = max(1, min(canvas_h, int(canvas_w * crop_h / crop_w)))
    return height, width


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``[4]`` box with ``[K, 4]`` boxes (``xyxy``, float64) -> ``[K]``."""
    ix = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / (area + areas - inter)


class _Layout:
    """The people placed on one canvas so far: boxes and who is seen at each pixel.

    Args:
        settings: Canvas size and the overlap limits.
    """

    def __init__(self, settings: PseudoSceneSettings) -> None:
        self.settings = settings
        self.boxes: list[np.ndarray] = []  # [4] float64 xyxy each, in paste order
        self.owner = np.full(settings.canvas_size, -1, dtype=np.int32)  # [H, W] box index on top
        self.visible: list[int] = []  # pixels of each box not covered by later boxes

    def place(self, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray | None:
        """Find a free spot for a person of ``size`` = ``(height, width)`` and claim it.

        Returns:
            The ``[4]`` float64 ``xyxy`` box, or None when ``placement_tries`` draws
            all overlapped the people already placed too much.
        """
        canvas_h, canvas_w = self.settings.canvas_size
        height, width = size
        others = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
        for _ in range(self.settings.placement_tries):
            x1 = int(rng.integers(0, canvas_w - width + 1))
            y1 = int(rng.integers(0, canvas_h - height + 1))
            box = np.array([x1, y1, x1 + width, y1 + height], dtype=np.float64)
            if len(others):
                iou = _iou(box, others)
                if float(iou.max()) > self.settings.max_iou:
                    continue
                if float(iou.max()) > 0.0:
                    # Count, per earlier person, the pixels still visible that this box would cover.
                    region = self.owner[y1 : y1 + height, x1 : x1 + width]
                    covered = np.bincount(region[region >= 0], minlength=len(others))
                    left = np.asarray(self.visible, dtype=np.float64) - covered
                    if np.any(left < self.settings.min_visible * areas - 1e-9):
                        continue
                    self.visible = left.astype(np.int64).tolist()
            self.owner[y1 : y1 + height, x1 : x1 + width] = len(self.boxes)
            self.boxes.append(box)
            self.visible.append(height * width)
            return box
        return None


def _read_crop(path: Path) -> np.ndarray | None:
    try:
        image = read_bgr(path)
    except DatasetFormatError:
        return None
    return image if image.shape[0] > 0 and image.shape[1] > 0 else None


def _split_of(
    records: list[ImageRecord], crops: ReidCropSet, out_dir: Path, dataset: str
) -> PersonSearchSplit:
    return PersonSearchSplit(
        dataset=dataset,
        split="train",
        root=out_dir,
        images=tuple(records),
        label_to_pid=crops.label_to_pid.copy(),
    )


def _read_back(
    manifest_path: Path, expected: dict[str, Any], crops: ReidCropSet, out_dir: Path, dataset: str
) -> PseudoSceneSet | None:
    """The manifest's scenes if it was made from the same inputs and is complete, else None."""
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or any(data.get(key) != value for key, value in expected.items()):
            return None
        records, sources = [], []
        for scene in data["scenes"]:
            path = out_dir / scene["file"]
            if not path.is_file():
                return None
            records.append(ImageRecord(name=path.name, path=path, boxes=scene["boxes"], pids=scene["pids"]))
            sources.append(tuple(str(n) for n in scene["crops"]))
        unreadable = tuple(str(n) for n in data["summary"]["unreadable"])
    except (OSError, ValueError, KeyError, TypeError):
        # It is our own cache: anything unreadable is simply rebuilt.
        return None
    return PseudoSceneSet(
        split=_split_of(records, crops, out_dir, dataset),
        manifest=manifest_path,
        sources=tuple(sources),
        scenes_written=0,
        crops_used=sum(len(s) for s in sources),
        unreadable=unreadable,
        read_back=True,
    )


def compose_pseudo_scenes(
    crops: ReidCropSet,
    out_dir: str | Path,
    *,
    settings: PseudoSceneSettings | None = None,
    backgrounds: str | Path | None = None,
    dataset: str = "pseudo_scenes",
    progress: Callable[[str], None] | None = None,
) -> PseudoSceneSet:
    """Compose re-id crops into pseudo scenes (or read up-to-date ones back).

    See the module docstring for the composition rules, backgrounds and caching.

    Args:
        crops: Crops with *training labels*: ``crops.pids`` ``[N]`` int64 in
            ``0..K-1`` or ``-1``, ``crops.label_to_pid`` ``[K]`` int64 (what
            ``load_market1501(folder, "bounding_box_train")`` returns).
        out_dir: Output folder (created if missing); scenes go to ``out_dir/scenes``,
            the manifest to ``out_dir/pseudo_scenes.json``.
        settings: Composition settings; None = the defaults.
        backgrounds: Folder of background images (``.jpg``, ``.jpeg``, ``.png``,
            ``.bmp``); None = procedural canvases.
        dataset: ``dataset`` name of the returned split.
        progress: Called with a short message now and then (e.g. ``print``).

    Returns:
        The scenes as a training split, with the source crops of every box and the
        names of crops that could not be read.

    Raises:
        ConfigError: The crops carry dataset ids instead of training labels.
        DatasetFormatError: Not one crop can be decoded (names the crop folder), or
            ``backgrounds`` is not a folder of images or holds an undecodable image.
    """
    settings = PseudoSceneSettings() if settings is None else settings
    say = progress or (lambda message: None)
    out_dir = Path(out_dir).expanduser().resolve()
    pids = crops.pids
    num_labels = crops.num_identities
    if np.any(pids < UNLABELLED) or np.any(pids >= num_labels):
        raise ConfigError(
            f"{crops.root}: pseudo scenes need training labels 0..K-1 (or -1) with label_to_pid; "
            "read the crops with relabel=True."
        )
    background_files = _background_files(backgrounds)
    expected = {
        "format": _FORMAT,
        "version": _VERSION,
        "settings": settings.to_json(),
        "source": {
            "crops": len(crops.names),
            "digest": _source_digest(crops),
            "backgrounds": _files_digest(background_files),
        },
    }
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.is_file():
        cached = _read_back(manifest_path, expected, crops, out_dir, dataset)
        if cached is not None:
            say(f"pseudo scenes: read {cached.num_scenes} scenes back from {manifest_path}")
            return cached
        # Different inputs: drop the old manifest before touching any scene, so an
        # interrupted recomposition can never be read back as complete.
        manifest_path.unlink(missing_ok=True)

    canvas_h, canvas_w = settings.canvas_size
    scenes_dir = out_dir / SCENES_DIR
    scenes_dir.mkdir(parents=True, exist_ok=True)
    plan_rng = np.random.default_rng([settings.seed, _PLAN_STREAM])
    queue = deque(int(i) for i in plan_rng.permutation(len(crops.names)))
    encode = [cv2.IMWRITE_JPEG_QUALITY, settings.jpeg_quality]
    records: list[ImageRecord] = []
    entries: list[dict[str, Any]] = []
    sources: list[tuple[str, ...]] = []
    unreadable: list[str] = []
    say(f"pseudo scenes: composing {len(crops.names)} crops into {scenes_dir}")
    while queue:
        index = len(records)
        want = int(plan_rng.integers(settings.people_per_scene[0], settings.people_per_scene[1] + 1))
        rng = np.random.default_rng([settings.seed, _SCENE_STREAM, index])
        if background_files:
            canvas = _photo_background(rng, background_files, canvas_h, canvas_w)
        else:
            canvas = _procedural_background(rng, canvas_h, canvas_w)
        layout = _Layout(settings)
        boxes = layout.boxes
        labels: list[int] = []
        names: list[str] = []
        held: list[int] = []  # identity clashes, kept for the next scenes in order
        unplaced: int | None = None
        while queue and len(boxes) < want and len(held) < _MAX_HELD:
            i = queue.popleft()
            pid = int(pids[i])
            if pid != UNLABELLED and pid in labels:
                held.append(i)
                continue
            crop = _read_crop(crops.paths[i])
            if crop is None:
                unreadable.append(crops.names[i])
                continue
            height, width = _person_size(rng, crop.shape[:2], settings)
            box = layout.place(rng, (height, width))
            if box is None:
                unplaced = i
                break
            x1, y1, x2, y2 = (int(v) for v in box)
            shrink = height < crop.shape[0]
            resized = cv2.resize(
                crop, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
            )
            canvas[y1:y2, x1:x2] = resized
            labels.append(pid)
            names.append(crops.names[i])
        # The unplaced crop goes first: on an empty canvas it always fits.
        queue.extendleft(reversed(held))
        if unplaced is not None:
            queue.appendleft(unplaced)
        if not boxes:  # only unreadable crops were left
            break
        name = f"{index:06d}.jpg"
        ok, data = cv2.imencode(".jpg", canvas, encode)
        if not ok:
            raise DatasetFormatError(f"{scenes_dir / name}: OpenCV could not encode the scene as JPEG.")
        # Bulk files: no fsync each; the manifest (fsynced, last) is what marks them complete.
        atomic_write_bytes(scenes_dir / name, data.tobytes(), sync=False)
        box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        records.append(ImageRecord(name=name, path=scenes_dir / name, boxes=box_array, pids=labels))
        sources.append(tuple(names))
        entries.append(
            {
                "file": f"{SCENES_DIR}/{name}",
                "boxes": [[int(v) for v in box] for box in boxes],
                "pids": labels,
                "crops": names,
            }
        )
        if len(records) % 500 == 0:
            say(f"pseudo scenes: {len(records)} scenes, {len(queue)} crops left")

    if not records:
        raise DatasetFormatError(
            f"{crops.root}: none of the {len(crops.names)} crops could be read; no pseudo scene was composed."
        )
    written = {record.name for record in records}
    for stale in scenes_dir.glob("*.jpg"):
        if stale.name not in written:
            stale.unlink(missing_ok=True)
    crops_used = sum(len(s) for s in sources)
    unreadable.sort()
    manifest = {
        **expected,
        "summary": {"scenes": len(records), "crops_used": crops_used, "unreadable": unreadable},
        "label_to_pid": crops.label_to_pid.tolist(),
        "scenes": entries,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    atomic_write_bytes(manifest_path, text.encode("utf-8"), sync=True, sync_dir=True)
    say(f"pseudo scenes: {len(records)} scenes from {crops_used} crops ({len(unreadable)} unreadable)")
    return PseudoSceneSet(
        split=_split_of(records, crops, out_dir, dataset),
        manifest=manifest_path,
        sources=tuple(sources),
        scenes_written=len(records),
        crops_used=crops_used,
        unreadable=tuple(unreadable),
        read_back=False,
    )


def load_market1501_scenes(
    root: str | Path,
    split: str,
    *,
    settings: PseudoSceneSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> PersonSearchSplit:
    """The ``market1501_scenes`` reader: Market-1501 training crops as pseudo scenes.

    Reads ``root/bounding_box_train`` (training labels) and composes it into the cache
    folder ``root/pseudo_scenes`` on first use (at the defaults about 15 ms per scene on
    one CPU core: a minute or two for the full Market-1501, some 3,800 scenes and a few
    hundred MB); later calls read the manifest back in well under a second. ``root``
    must therefore be writable the first time.

    Args:
        root: The Market-1501 folder.
        split: Must be ``"train"``: this is a pre-training source with no test split.
        settings: Composition settings; None = the defaults.
        progress: Called with a short message now and then (e.g. ``print``).

    Returns:
        The training split (``dataset="market1501_scenes"``, ``root`` the Market-1501
        folder); see :class:`PseudoSceneSet` for the records.

    Raises:
        ConfigError: ``split`` is not ``"train"``.
        DatasetFormatError: The crop folder is missing, misnamed or has no readable crop.
    """
    _require_train_split("market1501_scenes", split)
    crops = load_market1501(root, "bounding_box_train")
    folder = Path(root).expanduser().resolve()
    return _cached_scene_split(crops, folder, "market1501_scenes", settings, progress)


def _require_train_split(dataset: str, split: str) -> None:
    if split != "train":
        raise ConfigError(
            f"{dataset} is a pre-training source with a train split only, not {split!r}; "
            "evaluate on a person-search dataset with a test split (cuhk_sysu, prw)."
        )


def _cached_scene_split(
    crops: ReidCropSet,
    folder: Path,
    dataset: str,
    settings: PseudoSceneSettings | None,
    progress: Callable[[str], None] | None,
) -> PersonSearchSplit:
    """Compose (or read back) ``crops`` into ``folder/pseudo_scenes``; warn about unreadable crops."""
    result = compose_pseudo_scenes(
        crops, folder / CACHE_DIR, settings=settings, dataset=dataset, progress=progress
    )
    if result.unreadable:
        shown = ", ".join(result.unreadable[:5]) + (", ..." if len(result.unreadable) > 5 else "")
        # stacklevel 3: the warning points at the reader's caller, not at this helper.
        warnings.warn(
            f"{crops.root}: {len(result.unreadable)} crops could not be decoded and are left out "
            f"of the pseudo scenes ({shown}).",
            stacklevel=3,
        )
    return dataclasses.replace(result.split, root=folder)


def _unlabelled_crops(root: Path) -> ReidCropSet:
    """The crops of an unlabelled crop folder: ``root/images/*`` (or ``root/*``), all pid ``-1``."""
    folder = root / UNLABELLED_CROPS_DIR if (root / UNLABELLED_CROPS_DIR).is_dir() else root
    paths = tuple(sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _CROP_SUFFIXES))
    if not paths:
        raise DatasetFormatError(
            f"{folder}: no crop images ({', '.join(_CROP_SUFFIXES)}); an unlabelled crop set holds "
            f"its crops in {UNLABELLED_CROPS_DIR}/ (or directly in the folder)."
        )
    count = len(paths)
    zeros = np.zeros(count, dtype=np.int64)
    return ReidCropSet(
        root=folder,
        names=tuple(p.name for p in paths),
        paths=paths,
        pids=np.full(count, UNLABELLED, dtype=np.int64),
        cameras=zeros,
        sequences=zeros,
        frames=zeros,
    )


def load_unlabelled_crop_scenes(
    root: str | Path,
    split: str,
    *,
    settings: PseudoSceneSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> PersonSearchSplit:
    """The ``luperson_scenes`` reader: unlabelled person crops (LUPerson-style) as pseudo scenes.

    Reads the crops of ``root/images/`` (the layout ``personsearch synth
    --subtask-sets`` writes for ``LUPerson-synthetic/``; crops directly in ``root`` are
    accepted too) and composes them like :func:`load_market1501_scenes`, into the cache
    folder ``root/pseudo_scenes``. Nobody has an identity: every box gets pid ``-1``, so
    a scene may hold any number of them (nothing says two crops are not one person, but
    an unlabelled set has no way to tell either).

    Args:
        root: The crop folder.
        split: Must be ``"train"``: a pre-training source has no test split.
        settings: Composition settings; None = the defaults.
        progress: Called with a short message now and then.

    Returns:
        The training split (``dataset="luperson_scenes"``, no identities).

    Raises:
        ConfigError: ``split`` is not ``"train"``.
        DatasetFormatError: The folder holds no crop image, or none can be decoded.
    """
    _require_train_split("luperson_scenes", split)
    folder = Path(root).expanduser().resolve()
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: not a folder of unlabelled person crops.")
    return _cached_scene_split(_unlabelled_crops(folder), folder, "luperson_scenes", settings, progress)
