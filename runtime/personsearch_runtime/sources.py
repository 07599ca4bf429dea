"""Where frames come from: images, folders, globs and videos, decoded in a background thread.

``expand_sources`` turns what the user typed into an ordered list of files (folders are
walked recursively, globs expanded, everything sorted so a resumed run sees the same
order). ``FrameReader`` decodes them with OpenCV in one background thread into a bounded
queue (so decoding overlaps inference without buffering a whole video), yields
``Frame`` objects, and skips unreadable or corrupt files with a warning, counting them.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from personsearch_runtime.errors import SourceError

_LOG = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameReader",
    "ReadStats",
    "expand_sources",
    "is_video",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})


def is_video(path: str | os.PathLike[str]) -> bool:
    """Return True when the file extension is a video container."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS


def expand_sources(specs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated file list.

    Args:
        specs: Paths of images or videos, folders (walked recursively for image and video
            files), or glob patterns (``"cams/*.mp4"``, ``"**"`` allowed).

    Returns:
        Files in a stable order: each spec's files sorted, specs in the order given.

    Raises:
        SourceError: A spec matches nothing (the message names it).
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _media(p))
        elif path.is_file():
            found = [path]
        elif glob.has_magic(text):
            found = sorted(
                Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file() and _media(Path(p))
            )
        else:
            raise SourceError(
                f"source {text} does not exist (expected an image, a video, a folder or a glob)"
            )
        if not found:
            raise SourceError(
                f"source {text} contains no images or videos "
                f"(image types: {', '.join(sorted(IMAGE_EXTENSIONS))}; "
                f"video types: {', '.join(sorted(VIDEO_EXTENSIONS))})"
            )
        for p in found:
            resolved = p.resolve()
            if resolved not in seen:
                seen.add(resolved)
                out.append(resolved)
    return out


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        source: The file it came from (resolved path as a string).
        frame_index: 0 for an image; the frame number in a video.
        timestamp: Seconds from the start of the video (None for images).
        image: [H, W, 3] uint8 BGR.
        is_last: True for the last frame the reader will yield from this source.
    """

    source: str
    frame_index: int
    timestamp: float | None
    image: np.ndarray = field(repr=False)
    is_last: bool = False


@dataclass
class ReadStats:
    """What the reader did, for the summary line.

    Attributes:
        frames: Frames yielded.
        sources: Sources that yielded at least one frame.
        skipped: (path, reason) of every file skipped as unreadable.
    """

    frames: int = 0
    sources: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


_END = object()


class FrameReader:
    """Decode sources in a background thread and iterate over their frames.

    Args:
        sources: Files from ``expand_sources``.
        every_nth_frame: Keep frames 0, n, 2n, ... of each video (images are always kept).
        start_frame: ``start_frame(source) -> first frame index still wanted`` (resume);
            frames below it are skipped without decoding where possible.
        queue_size: Frames decoded ahead at most (bounds memory).
    """

    def __init__(
        self,
        sources: Sequence[Path],
        *,
        every_nth_frame: int = 1,
        start_frame: Callable[[str], int] | None = None,
        queue_size: int = 16,
    ) -> None:
        if every_nth_frame < 1:
            raise SourceError(f"--every-nth-frame must be >= 1, got {every_nth_frame}")
        self.sources = list(sources)
        self.every_nth_frame = every_nth_frame
        self.start_frame = start_frame or (lambda _source: 0)
        self.stats = ReadStats()
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _skip(self, path: Path, reason: str) -> None:
        self.stats.skipped.append((str(path), reason))
        # Logged, not raised: one bad file must not stop a long indexing run; the CLI
        # also lists every skipped file in its summary.
        _LOG.warning("skipping %s: %s", path, reason)

    def _read_image(self, path: Path) -> None:
        import cv2

        data = np.fromfile(str(path), dtype=np.uint8) if path.stat().st_size else np.zeros(0, np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None or image.size == 0:
            self._skip(path, "not a readable image (corrupt or unsupported)")
            return
        self.stats.sources += 1
        self._put(Frame(str(path), 0, None, image, is_last=True))

    def _read_video(self, path: Path, first: int) -> None:
        import cv2

        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                self._skip(path, "not a readable video (corrupt or unsupported codec)")
                return
            fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
            index, pending, yielded = 0, None, False
            while not self._stop.is_set():
                wanted = index >= first and index % self.every_nth_frame == 0
                if not wanted:
                    if not capture.grab():
                        break
                    index += 1
                    continue
                ok, image = capture.read()
                if not ok or image is None:
                    break
                msec = capture.get(cv2.CAP_PROP_POS_MSEC)
                timestamp = index / fps if fps > 0 else (msec / 1000.0 if msec else None)
                if pending is not None:
                    self._put(pending)
                    yielded = True
                pending = Frame(str(path), index, timestamp, image)
                index += 1
            if pending is not None:
                self._put(
                    Frame(pending.source, pending.frame_index, pending.timestamp, pending.image, is_last=True)
                )
                yielded = True
            if yielded:
                self.stats.sources += 1
            elif index == 0 and first == 0:
                self._skip(path, "no decodable frames (corrupt or empty video)")
        finally:
            capture.release()

    def _work(self) -> None:
        try:
            for path in self.sources:
                if self._stop.is_set():
                    break
                first = self.start_frame(str(path))
                if first < 0:
                    continue
                try:
                    if is_video(path):
                        self._read_video(path, first)
                    else:
                        self._read_image(path)
                except OSError as exc:
                    self._skip(path, f"cannot read ({exc.strerror or exc})")
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer thread
            self._put(exc)
        finally:
            self._put(_END)

    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in source order; re-raises a decoder-thread failure."""
        self._thread = threading.Thread(target=self._work, name="personsearch-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                self.stats.frames += 1
                yield item  # type: ignore[misc]
        finally:
            self.close()

    def close(self) -> None:
        """Stop the decoder thread (also called when iteration ends or is abandoned)."""
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.05)
            self._thread = None
