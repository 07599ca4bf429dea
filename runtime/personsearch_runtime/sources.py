"""Where frames come from: images, folders, globs and videos, decoded in a background thread.

``expand_sources`` turns what the user typed into an ordered list of files (folders are
walked recursively, globs expanded, everything sorted so a resumed run sees the same
order). ``FrameReader`` decodes them with OpenCV in one background thread into a bounded
queue (so decoding overlaps inference without buffering a whole video) and yields
``Frame`` objects.

Bad items never stop a run. A file that cannot be read at all (empty, corrupt,
unsupported, unreadable) is skipped and listed in ``ReadStats.skipped``; a video frame
that does not decode is skipped while the frames after it are still read (OpenCV moves
past a damaged frame), and a video that ends before the frame count in its header
(a truncated file) is reported too; both are listed in ``ReadStats.bad_frames``. Every
such skip is also logged once as a WARNING on this module's logger with the record
attributes ``skipped_item = (path, reason)`` and ``skipped_kind`` (``"file"`` or
``"frames"``), so a caller that prints them in its own summary (``personsearch index``,
from ``IndexSummary``) can filter them out of the log instead of printing them twice.

``SourceFingerprint`` identifies a file's content for the gallery: its size, its
``mtime_ns`` and the SHA-256 of its first MiB (the whole file when smaller). A file whose
size and mtime are what the gallery recorded is taken as unchanged without being read
(as git and rsync do); otherwise the first MiB is hashed. A file of at most 1 MiB whose
hash is unchanged is unchanged whatever its mtime (a copy keeps its rows); a larger file
with a new mtime counts as changed, since its hash covers only the beginning.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

import numpy as np

from personsearch_runtime.errors import SourceError

_LOG = logging.getLogger(__name__)

__all__ = [
    "FINGERPRINT_HEAD_BYTES",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "FrameReader",
    "ReadStats",
    "SourceFingerprint",
    "compare_fingerprint",
    "expand_sources",
    "is_video",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"})
#: Bytes of a file that its fingerprint hashes (the whole file when it is smaller).
FINGERPRINT_HEAD_BYTES = 1 << 20
#: A video whose frames fail to decode this many times in a row is taken to end there,
#: whatever its header says (a damaged header can claim any frame count).
_MAX_BAD_FRAMES_IN_A_ROW = 250


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
class SourceFingerprint:
    """What identifies the content of a source file.

    Attributes:
        size: File size in bytes.
        mtime_ns: Modification time in nanoseconds.
        head_sha256: Hex SHA-256 of the first ``FINGERPRINT_HEAD_BYTES`` bytes (all of a
            smaller file).
    """

    size: int
    mtime_ns: int
    head_sha256: str

    @property
    def whole_file_hashed(self) -> bool:
        """True when the hash covers the whole file."""
        return self.size <= FINGERPRINT_HEAD_BYTES

    def to_text(self) -> str:
        """Return the form stored in the gallery: ``"SIZE:MTIME_NS:SHA256"``."""
        return f"{self.size}:{self.mtime_ns}:{self.head_sha256}"

    @classmethod
    def from_text(cls, text: str | None) -> SourceFingerprint | None:
        """Parse ``to_text``'s form; None for None or anything malformed (unknown)."""
        if not isinstance(text, str):
            return None
        size, _, rest = text.partition(":")
        mtime, _, digest = rest.partition(":")
        if not (size.isdigit() and mtime.lstrip("-").isdigit() and len(digest) == 64):
            return None
        return cls(int(size), int(mtime), digest)

    @classmethod
    def of_file(cls, path: str | os.PathLike[str], stat: os.stat_result | None = None) -> SourceFingerprint:
        """Fingerprint a file (reads at most its first MiB).

        Raises:
            OSError: The file cannot be opened or read, or is not a regular file.
        """
        stat = stat if stat is not None else os.stat(path)
        if not S_ISREG(stat.st_mode):
            # A pipe or device would block or never end; only regular files are sources.
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with open(path, "rb") as handle:
            head = handle.read(FINGERPRINT_HEAD_BYTES)
        return cls(stat.st_size, stat.st_mtime_ns, hashlib.sha256(head).hexdigest())


def compare_fingerprint(
    path: str | os.PathLike[str], stored: SourceFingerprint | None
) -> tuple[SourceFingerprint, bool]:
    """Fingerprint ``path`` and tell whether its content differs from ``stored``.

    Args:
        path: The source file.
        stored: What the gallery recorded; None when unknown (then nothing counts as changed).

    Returns:
        (current fingerprint, changed). ``current`` is ``stored`` itself when size and
        mtime are unchanged (the file is not read then).

    Raises:
        OSError: The file cannot be stat'ed or read.
    """
    stat = os.stat(path)
    if stored is not None and stored.size == stat.st_size and stored.mtime_ns == stat.st_mtime_ns:
        return stored, False
    current = SourceFingerprint.of_file(path, stat)
    if stored is None:
        return current, False
    changed = current.size != stored.size or current.head_sha256 != stored.head_sha256
    if not current.whole_file_hashed and current.mtime_ns != stored.mtime_ns:
        changed = True
    return current, changed


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
        bad_frames: (path, reason) of every video whose frames were partly undecodable
            (the reason names the frames); its other frames were yielded.
    """

    frames: int = 0
    sources: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    bad_frames: list[tuple[str, str]] = field(default_factory=list)


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

    def _report(self, path: Path, reason: str, kind: str) -> None:
        """Record a skip (``kind``: ``"file"`` or ``"frames"``) in the stats and log it once."""
        item = (str(path), reason)
        (self.stats.skipped if kind == "file" else self.stats.bad_frames).append(item)
        # Logged, not raised: one bad file must not stop a long indexing run.
        _LOG.warning("skipping %s: %s", path, reason, extra={"skipped_item": item, "skipped_kind": kind})

    def _skip(self, path: Path, reason: str) -> None:
        self._report(path, reason, "file")

    def _bad_frames(self, path: Path, frames: list[int], total: int, ended_early: bool) -> None:
        reason = f"{_frame_ranges(frames)} could not be decoded"
        if ended_early:
            reason += f" (the video ends before the {total} frames its header lists: truncated or damaged)"
        self._report(path, reason + "; its other frames were read", "frames")

    def _read_image(self, path: Path) -> None:
        import cv2

        if path.stat().st_size == 0:
            self._skip(path, "empty file (0 bytes)")
            return
        image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
        if image is None or image.size == 0:
            self._skip(path, "not a readable image (corrupt or unsupported)")
            return
        self.stats.sources += 1
        self._put(Frame(str(path), 0, None, image, is_last=True))

    def _read_video(self, path: Path, first: int) -> None:
        import cv2

        if path.stat().st_size == 0:
            self._skip(path, "empty file (0 bytes)")
            return
        capture = cv2.VideoCapture(str(path))
        try:
            if not capture.isOpened():
                self._skip(path, "not a readable video (corrupt or unsupported codec)")
                return
            fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
            # The header's frame count (0 when unknown, as for streams) tells a damaged
            # frame, after which OpenCV goes on with the next one, from the real end.
            total = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)
            index, pending, yielded = 0, None, False
            bad: list[int] = []
            failures_in_a_row = 0
            while not self._stop.is_set():
                wanted = index >= first and index % self.every_nth_frame == 0
                ok = capture.grab()
                image = None
                if ok and wanted:
                    ok, image = capture.retrieve()
                    ok = bool(ok) and image is not None and image.size > 0
                if not ok:
                    if index >= total or failures_in_a_row >= _MAX_BAD_FRAMES_IN_A_ROW:
                        break
                    failures_in_a_row += 1
                    if wanted:
                        bad.append(index)
                    index += 1
                    continue
                failures_in_a_row = 0
                if wanted:
                    msec = capture.get(cv2.CAP_PROP_POS_MSEC)
                    timestamp = index / fps if fps > 0 else (msec / 1000.0 if msec else None)
                    if pending is not None:
                        self._put(pending)
                        yielded = True
                    pending = Frame(str(path), index, timestamp, image)
                index += 1
            if self._stop.is_set():
                return
            if pending is not None:
                self._put(
                    Frame(pending.source, pending.frame_index, pending.timestamp, pending.image, is_last=True)
                )
                yielded = True
            if yielded:
                self.stats.sources += 1
                if bad:
                    self._bad_frames(path, bad, total, ended_early=failures_in_a_row > 0)
            elif first == 0:
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
                except Exception as exc:  # noqa: BLE001 - a decoder failure on one file must not end the run
                    # OpenCV raises cv2.error (and numpy MemoryError/ValueError) on some
                    # hostile files instead of returning None.
                    self._skip(path, f"cannot decode ({type(exc).__name__}: {str(exc).strip()[:200]})")
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


def _frame_ranges(frames: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"frames 3-5, 9"`` (``"frame 3"`` for one)."""
    parts: list[str] = []
    start = prev = frames[0]
    for value in [*frames[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    label = "frame" if len(frames) == 1 else "frames"
    return f"{label} {', '.join(parts)}"
