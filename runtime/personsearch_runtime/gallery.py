"""The persistent gallery: detections and embeddings in SQLite, a faiss (or numpy) index over them.

Layout of a gallery directory ``G/``::

    G/gallery.sqlite   the truth: meta (model, settings), sources (path, content fingerprint,
                       resume progress), frames, detections (box, score, float32 embedding
                       blob); WAL journal mode
    G/index.npz        a cache of the search index (serialised faiss index or numpy matrix,
                       row ids, which rows it covers, and the SHA-256 of each blob); rebuilt
                       or extended from SQLite when stale or damaged
    G/gallery.lock     the writers' lock file (holds the pid of the last writer)
    G/.gallery.sqlite.creating   exists only while the gallery is being created

Why this split: every batch of frames is one SQLite transaction (detections, frames and
the source's resume point together), so a crash, ``kill -9``, Ctrl-C or a full disk loses
nothing that was committed and a resumed run continues exactly after the last committed
frame. The search index is derived data: it is saved atomically (temp file, fsync,
rename) and reloaded only when it matches the database (same delete generation); rows
added since are appended on open. WAL lets readers search while a writer adds;
``refresh()`` picks up what was committed since.

Creation: ``gallery.sqlite`` is built as ``.gallery.sqlite.creating`` and renamed when
complete, under the writers' lock. A folder that holds nothing but such leftovers (and
the lock file) is a creation a kill interrupted; the next writer removes the leftovers,
says so in one line, and creates the gallery again.

One writer at a time: a writer (``readonly=False``) holds an exclusive ``fcntl.flock`` on
``gallery.lock`` from open to ``close()``; a second writer is refused at once with the
first one's pid (it does not wait). The lock dies with its process, so a killed writer
never leaves a stale lock. Readers take no lock. Where ``fcntl`` is missing (Windows)
writers are not serialised and a warning says so.

Content hashes: ``index.npz`` records the SHA-256 of its ``ids`` and ``index`` blobs in its
own ``meta`` entry, so the file and its digests are replaced by one rename and never
disagree after a crash. On load the digests, the shapes and the rows covered are
checked; a truncated, bit-flipped or otherwise damaged file is reported in one line
(logged as a warning) and the index is rebuilt from the embeddings in ``gallery.sqlite``
(nothing is lost; a writer's next ``save()`` rewrites the file, e.g.
``personsearch index --rebuild-index``). A damaged ``gallery.sqlite`` is a
``GalleryError``.

Sources are keyed by path and content fingerprint (``sources.SourceFingerprint``: size,
mtime_ns, SHA-256 of the first MiB). When a writer asks for a source's resume point and
the file at that path has other content than what was indexed, the source's old frames
and detections are deleted (in one transaction, with the index invalidated) and it is
indexed again from frame 0; ``replaced_sources`` lists them.

Settings: the embedding dimension and the model (the bundle's checkpoint hash) are fixed
at creation; the video frame stride (``every_nth_frame``) is recorded by the first index
run (``check_settings``). A later run with other settings is refused, never mixed.

Schema versions: 2 (this one) added ``sources.fingerprint``. A version-1 gallery opens
read-only as it is; a writer migrates it in place (adds the column, empty). An empty
fingerprint means unknown: the source is kept as it is (not re-indexed, since nothing
tells whether it changed), and the file's current fingerprint is recorded the next time
an index run sees it, so later changes are detected. A stride missing from an older
gallery is recorded by the next index run in the same way.

Index kinds (``index_factory``): ``"Flat"`` (exact inner product, the default), any faiss
factory string such as ``"IVF4096,Flat"`` or ``"IVF4096,PQ32"`` (trained on the stored
embeddings once there are enough of them, exact until then), and ``"numpy"`` (exact, no
faiss needed; also used for ``"Flat"`` when faiss is not installed). GPU faiss is used for
searching when installed and ``use_gpu`` is set.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import importlib.util
import io
import json
import logging
import numbers
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_runtime.atomic_files import atomic_write_bytes, fsync_dir
from personsearch_runtime.errors import GalleryError
from personsearch_runtime.results import Detections, SearchHit
from personsearch_runtime.sources import SourceFingerprint, compare_fingerprint, is_video

__all__ = ["GALLERY_SCHEMA_VERSION", "SPACES", "GalleryIndex", "GalleryInfo"]

_LOG = logging.getLogger(__name__)

GALLERY_SCHEMA_VERSION = 3
#: Schemas this runtime opens (older ones are migrated by a writer).
_READABLE_SCHEMAS = (1, 2, 3)
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.npz"
TEXT_INDEX_NAME = "index_text.npz"
#: The embedding spaces a gallery can search: the detector's re-id embeddings (image
#: queries) and the crop encoder's cross-modal ones (sentence queries).
SPACES = ("reid", "text")
LOCK_NAME = "gallery.lock"
#: ``gallery.sqlite`` while it is being created; SQLite may add a ``-journal`` beside it.
CREATING_NAME = f".{DB_NAME}.creating"
#: faiss needs about this many training vectors per IVF list; below it we stay exact.
_TRAIN_PER_LIST = 39
#: Classic GPU faiss indexes cannot select more than this many neighbours.
_GPU_MAX_K = 2048
#: How long an SQLite statement waits for another connection's lock, in seconds.
_BUSY_TIMEOUT_S = 60
#: The settings an index run records, with the command-line option that sets each.
_SETTING_OPTIONS = {"every_nth_frame": "--every-nth-frame", "index_factory": "--index-factory"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    next_frame INTEGER NOT NULL DEFAULT 0,
    fingerprint TEXT
);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
    frame_index INTEGER NOT NULL,
    timestamp REAL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    UNIQUE (source_id, frame_index)
);
CREATE TABLE IF NOT EXISTS detections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    frame_id INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    score REAL NOT NULL,
    embedding BLOB NOT NULL,
    text_embedding BLOB
);
CREATE INDEX IF NOT EXISTS frames_by_source ON frames(source_id);
CREATE INDEX IF NOT EXISTS detections_by_frame ON detections(frame_id);
"""


@dataclass(frozen=True)
class GalleryInfo:
    """What ``personsearch info`` prints.

    Attributes:
        path: Gallery directory.
        embedding_dim: D of the stored embeddings.
        model_hash: Checkpoint hash of the bundle that built it.
        bundle: Bundle directory it was built with (informational).
        model_name: Model name from the bundle's provenance.
        index_factory: Requested index kind.
        num_sources: Sources with at least one indexed frame or marked done.
        num_frames: Frames indexed (including frames with no detection).
        num_detections: Stored detections.
        created_at: ISO-8601 UTC creation time.
        every_nth_frame: Video frame stride of its index runs (None before the first run).
        schema_version: Version of the gallery's database layout.
        text_embedding_dim: E of the stored sentence-search embeddings; None when the
            gallery has none (indexed with a bundle without the text encoder).
        text_model_hash: Checkpoint hash of the text model that made them ("" when none).
    """

    path: str
    embedding_dim: int
    model_hash: str
    bundle: str
    model_name: str
    index_factory: str
    num_sources: int
    num_frames: int
    num_detections: int
    created_at: str
    every_nth_frame: int | None = None
    schema_version: int = GALLERY_SCHEMA_VERSION
    text_embedding_dim: int | None = None
    text_model_hash: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dict(self.__dict__)


def _faiss() -> Any | None:
    if importlib.util.find_spec("faiss") is None:
        return None
    import faiss

    return faiss


# ---- folder checks, the writers' lock, error messages ----------------------------------------


def _check_not_a_file(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise GalleryError(
            f"gallery path {path} is a file, not a folder; give the path of a gallery folder "
            "(a new one is created when missing)"
        )


def _creation_leftovers(path: Path) -> list[Path]:
    """Files a creation that was killed leaves behind (the temporary database and its journal)."""
    return [p for p in path.iterdir() if p.name.startswith(CREATING_NAME)] if path.is_dir() else []


def _foreign_entries(path: Path) -> list[str]:
    """Names in ``path`` that neither a gallery nor an interrupted creation put there."""
    if not path.is_dir():
        return []
    return sorted(
        p.name for p in path.iterdir() if p.name != LOCK_NAME and not p.name.startswith(CREATING_NAME)
    )


def _refuse_foreign_folder(path: Path) -> None:
    names = _foreign_entries(path)
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        raise GalleryError(
            f"cannot create a gallery at {path}: it exists and is not an empty gallery folder "
            f"(it holds {shown} but no {DB_NAME}); give a new or empty folder"
        )


def _os_failure(exc: OSError, path: Path, doing: str) -> GalleryError:
    """One message for a failed file operation on a gallery: what failed and what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return GalleryError(
            f"no space left on the disk while {doing} ({reason}); everything indexed so far is "
            f"committed in {path / DB_NAME}: free some space and run the same command again to resume"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return GalleryError(
            f"gallery folder {path} is not writable ({reason}) while {doing}; index into a folder you "
            "can write to (a read-only gallery can still be queried)"
        )
    return GalleryError(f"gallery {path}: failed while {doing} ({reason})")


def _sqlite_failure(exc: sqlite3.Error, path: Path, doing: str) -> GalleryError:
    """Turn an SQLite error into a message that says what happened and what to do."""
    text = str(exc)
    low = text.lower()
    if "full" in low:
        return GalleryError(
            f"no space left on the disk while {doing} gallery {path} ({text}); the batch in progress "
            "was rolled back and everything committed before it is kept: free some space and run the "
            "same command again to resume"
        )
    if "readonly" in low or "read-only" in low:
        return GalleryError(
            f"gallery {path} is read-only ({text}) while {doing}; index into a folder you can write to "
            "(a read-only gallery can still be queried)"
        )
    if "malformed" in low or "not a database" in low or "no such table" in low or "no such column" in low:
        return GalleryError(
            f"{path / DB_NAME} is damaged or is not a gallery database ({text}); its contents cannot be "
            "trusted: index the sources again into a new gallery folder"
        )
    if "locked" in low or "busy" in low:
        return GalleryError(
            f"gallery {path} stayed busy for {_BUSY_TIMEOUT_S} s while {doing} ({text}); another process "
            "keeps it locked: try again when it is done"
        )
    if "unable to open" in low:
        return GalleryError(
            f"cannot open {path / DB_NAME} ({text}); check that the folder and the file can be read"
        )
    return GalleryError(f"gallery {path}: SQLite failed while {doing} ({text})")


class _WriterLock:
    """An exclusive, non-blocking ``flock`` on ``G/gallery.lock`` held by one writer."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self._descriptor: int | None = None

    def acquire(self) -> None:
        """Take the lock or refuse at once.

        Raises:
            GalleryError: Another writer holds it, or the folder cannot be written.
        """
        try:
            import fcntl
        except ImportError:
            _LOG.warning(
                "cannot lock gallery %s on this platform (no fcntl); make sure only one "
                "'personsearch index' writes it at a time",
                self.folder,
            )
            return
        if not os.access(self.folder, os.W_OK | os.X_OK):
            # Checked first: an existing lock file may be writable in a folder that is not,
            # and SQLite would then fail later with a vaguer message.
            denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            raise _os_failure(denied, self.folder, "opening it for writing")
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _os_failure(exc, self.folder, f"opening its lock file {self.path}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(descriptor)
            os.close(descriptor)
            raise GalleryError(
                f"another personsearch index is writing gallery {self.folder} (pid {holder}); wait for "
                "it to finish, or index into another folder"
            ) from None
        except OSError as exc:
            # Some network file systems have no flock (ENOLCK): go on, but say it.
            _LOG.warning(
                "cannot lock gallery %s (%s); make sure only one 'personsearch index' writes it at a time",
                self.folder,
                exc.strerror or exc,
            )
        try:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is only for the message another writer prints
        self._descriptor = descriptor

    def release(self) -> None:
        """Give the lock back (the file stays: deleting it would race with a new writer)."""
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing the descriptor releases the flock
            self._descriptor = None


def _read_pid(descriptor: int) -> str:
    try:
        text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"


@dataclass
class _SearchSpace:
    """One embedding space of a gallery and its in-memory search index.

    Attributes:
        name: ``"reid"`` or ``"text"``.
        column: The ``detections`` column holding the space's float32 blobs.
        dim: Embedding width.
        cache_name: File name of the space's index cache.
        index: faiss index or [N, dim] float32 matrix (numpy kind); None until built.
        ids: [N] int64 detection ids, in index order.
        covered: Largest detection id in the index.
        generation: Delete generation the index was built for.
        cache_warned: A damaged cache was already reported once.
        gpu_index: Copy of ``index`` on the GPU, or None.
        gpu_covered: (generation, covered) the GPU copy was made at.
    """

    name: str
    column: str
    dim: int
    cache_name: str
    index: Any = None
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    covered: int = 0
    generation: int = -1
    cache_warned: bool = False
    gpu_index: Any = None
    gpu_covered: tuple[int, int] | None = None


def _check_top_k(top_k: object) -> None:
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise GalleryError(f"top_k must be a whole number >= 1, got {top_k!r}")


def _hit(rank: int, similarity: float, ranking_score: float, row: dict[str, Any]) -> SearchHit:
    return SearchHit(
        rank=rank,
        similarity=similarity,
        ranking_score=ranking_score,
        detection_id=row["id"],
        source=row["source"],
        frame_index=row["frame_index"],
        timestamp=row["timestamp"],
        box=row["box"],
        score=row["score"],
    )


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


class GalleryIndex:
    """A gallery directory opened for reading or writing.

    Use ``GalleryIndex.create`` / ``GalleryIndex.open`` / ``GalleryIndex.open_for_bundle``
    rather than the constructor.

    Args:
        path: Gallery directory.
        readonly: Open the database read-only (many readers can search while one writer
            adds). A writer takes the gallery's lock until ``close()``.
        use_gpu: Search on GPU faiss when available.

    Attributes:
        replaced_sources: Sources whose file changed since they were indexed and whose old
            rows this writer deleted (see ``resume_point``).

    Raises:
        GalleryError: Not a gallery, another writer holds it, the folder is read-only (for
            a writer), or the database is damaged or from a newer runtime.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, use_gpu: bool = False
    ) -> None:
        self.path = Path(path)
        _check_not_a_file(self.path)
        db = self.path / DB_NAME
        if not db.is_file():
            if _creation_leftovers(self.path):
                raise GalleryError(
                    f"{self.path} is not a gallery: its creation was interrupted (no {DB_NAME}); run "
                    "'personsearch index' on it again to create it"
                )
            raise GalleryError(
                f"{self.path} is not a gallery (no {DB_NAME}); create one with 'personsearch index'"
            )
        if db.stat().st_size == 0:
            raise GalleryError(
                f"{db} is empty (0 bytes), not a gallery database; delete the folder and index the "
                "sources again"
            )
        self.readonly = readonly
        self.use_gpu = use_gpu
        self.replaced_sources: list[str] = []
        self._lock = threading.RLock()
        self._writer = None if readonly else _WriterLock(self.path)
        if self._writer is not None:
            self._writer.acquire()
        try:
            self._db = self._connect(db)
        except BaseException:
            self._release_writer()
            raise
        try:
            # Read (and so validated) before a writer changes anything in the file.
            self._meta = self._read_meta(db)
            if not readonly:
                with self._sql("opening"):
                    self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=FULL")
                if self._meta["schema_version"] != str(GALLERY_SCHEMA_VERSION):
                    self._migrate()
                    self._meta["schema_version"] = str(GALLERY_SCHEMA_VERSION)
        except BaseException:
            self._db.close()
            self._release_writer()
            raise
        self._spaces: dict[str, _SearchSpace] = {
            "reid": _SearchSpace("reid", "embedding", self.embedding_dim, INDEX_NAME)
        }
        if self.text_embedding_dim is not None:
            self._spaces["text"] = _SearchSpace(
                "text", "text_embedding", self.text_embedding_dim, TEXT_INDEX_NAME
            )
        self._gpu_resources: Any = None
        self._fingerprints: dict[str, SourceFingerprint] = {}  # current ones, per source path
        if self._writer is not None:
            self._remove_stale_index_temps()

    def _connect(self, db: Path) -> sqlite3.Connection:
        try:
            if self.readonly:
                uri = f"{db.resolve().as_uri()}?mode=ro"
                connection = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
                try:
                    connection.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
                except sqlite3.OperationalError:
                    connection.close()
                    if os.access(self.path, os.W_OK):
                        raise
                    # A WAL database in a folder nobody can write to (read-only media): SQLite
                    # cannot create its shared-memory file, and no writer can change it either.
                    connection = sqlite3.connect(
                        f"{uri}&immutable=1", uri=True, timeout=_BUSY_TIMEOUT_S, check_same_thread=False
                    )
            else:
                connection = sqlite3.connect(str(db), timeout=_BUSY_TIMEOUT_S, check_same_thread=False)
            connection.execute("PRAGMA foreign_keys=ON")
            return connection
        except sqlite3.Error as exc:
            raise _sqlite_failure(exc, self.path, "opening") from None

    def _read_meta(self, db: Path) -> dict[str, str]:
        try:
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.Error as exc:
            raise _sqlite_failure(exc, self.path, "opening") from None
        version = meta.get("schema_version", "")
        if not version.isdigit() or int(version) not in _READABLE_SCHEMAS:
            newer = version.isdigit() and int(version) > GALLERY_SCHEMA_VERSION
            raise GalleryError(
                f"{db} has gallery schema {version or 'none'!r}, this runtime reads "
                f"{', '.join(map(str, _READABLE_SCHEMAS))}; "
                + ("upgrade personsearch to use it" if newer else "re-index into a new gallery")
            )
        try:
            self.embedding_dim = int(meta["embedding_dim"])
            self.model_hash = meta["model_hash"]
            self.index_factory = meta["index_factory"]
            if self.embedding_dim < 1:
                raise ValueError(f"embedding_dim {self.embedding_dim}")
            text_dim = meta.get("text_embedding_dim")
            self.text_embedding_dim: int | None = int(text_dim) if text_dim else None
            self.text_model_hash: str = meta.get("text_model_hash", "")
            if self.text_embedding_dim is not None and (
                self.text_embedding_dim < 1 or not self.text_model_hash
            ):
                raise ValueError(f"text_embedding_dim {self.text_embedding_dim} without a text model hash")
        except (KeyError, ValueError) as exc:
            raise GalleryError(
                f"{db} has damaged metadata ({type(exc).__name__}: {exc}); index the sources again "
                "into a new gallery folder"
            ) from None
        meta["schema_version"] = str(int(version))
        return meta

    def _migrate(self) -> None:
        """Bring an older database to this schema in one transaction.

        Version 2 added ``sources.fingerprint`` (empty: unknown), version 3
        ``detections.text_embedding`` (empty: the gallery has no text space until an
        index run adds one).
        """
        with self._sql("upgrading the database of"), self._db:
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(sources)")}
            if "fingerprint" not in columns:
                self._db.execute("ALTER TABLE sources ADD COLUMN fingerprint TEXT")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(detections)")}
            if "text_embedding" not in columns:
                self._db.execute("ALTER TABLE detections ADD COLUMN text_embedding BLOB")
            self._db.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(GALLERY_SCHEMA_VERSION),)
            )

    def _remove_stale_index_temps(self) -> None:
        # atomic_files names its temporaries ".NAME.<hex>.tmp"; one left here is from a
        # writer killed while saving, and only the lock holder saves.
        for name in (INDEX_NAME, TEXT_INDEX_NAME):
            for leftover in self.path.glob(f".{name}.*.tmp"):
                leftover.unlink(missing_ok=True)

    @contextmanager
    def _sql(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _sqlite_failure(exc, self.path, doing) from None

    # ---- creation and opening -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        embedding_dim: int,
        model_hash: str,
        bundle: str = "",
        model_name: str = "",
        index_factory: str = "Flat",
        text_embedding_dim: int | None = None,
        text_model_hash: str = "",
    ) -> GalleryIndex:
        """Create an empty gallery directory and open it for writing.

        A folder left by a creation that was killed (only ``.gallery.sqlite.creating``
        files and the lock file in it) is cleaned up and used, with a one-line notice.

        Args:
            path: Directory to create (may exist if empty).
            embedding_dim: D of the embeddings it will hold.
            model_hash: The bundle's checkpoint hash; other bundles are refused later.
            bundle: Bundle path, recorded for ``info``.
            model_name: Model name, recorded for ``info``.
            index_factory: ``"Flat"``, ``"numpy"`` or a faiss factory string.
            text_embedding_dim: E of the cross-modal crop embeddings stored beside the
                re-id ones (a bundle with the text encoder); None for none.
            text_model_hash: The text checkpoint's hash (required with ``text_embedding_dim``).

        Raises:
            GalleryError: The path is a file or a folder holding other things, another
                writer is creating it, the folder cannot be written, or the factory
                string is invalid.
        """
        if text_embedding_dim is not None and (text_embedding_dim < 1 or not text_model_hash):
            raise GalleryError(
                "a gallery with text embeddings needs text_embedding_dim >= 1 and text_model_hash"
            )
        path = Path(path)
        _check_not_a_file(path)
        if (path / DB_NAME).exists():
            raise GalleryError(f"cannot create a gallery at {path}: it already holds a gallery")
        _refuse_foreign_folder(path)
        _check_factory(index_factory, embedding_dim)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_failure(exc, path, "creating the gallery folder") from None
        lock = _WriterLock(path)
        lock.acquire()
        try:
            # Checked again under the lock: another writer may have finished meanwhile.
            if (path / DB_NAME).exists():
                raise GalleryError(f"cannot create a gallery at {path}: it already holds a gallery")
            _refuse_foreign_folder(path)
            leftovers = _creation_leftovers(path)
            if leftovers:
                _LOG.warning(
                    "%s: removed %d file(s) left by an interrupted gallery creation; creating it again",
                    path,
                    len(leftovers),
                )
                for leftover in leftovers:
                    leftover.unlink()
            meta = {
                "schema_version": str(GALLERY_SCHEMA_VERSION),
                "embedding_dim": str(embedding_dim),
                "model_hash": model_hash,
                "bundle": bundle,
                "model_name": model_name,
                "index_factory": index_factory,
                "generation": "0",
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            }
            if text_embedding_dim is not None:
                meta["text_embedding_dim"] = str(int(text_embedding_dim))
                meta["text_model_hash"] = text_model_hash
            _write_new_database(path, meta)
        finally:
            lock.release()
        return cls(path)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, readonly: bool = False, use_gpu: bool = False
    ) -> GalleryIndex:
        """Open an existing gallery (see the class arguments)."""
        return cls(path, readonly=readonly, use_gpu=use_gpu)

    @classmethod
    def open_for_bundle(
        cls,
        path: str | os.PathLike[str],
        bundle: Any,
        *,
        index_factory: str = "Flat",
        readonly: bool = False,
        use_gpu: bool = False,
        create: bool = True,
    ) -> GalleryIndex:
        """Open the gallery at ``path`` for ``bundle``, creating it for writers when missing.

        Args:
            path: Gallery directory.
            bundle: The ``Bundle`` whose embeddings go in or are searched.
            index_factory: Index kind of a gallery created here.
            readonly: Open for reading only (never creates).
            use_gpu: Search on GPU faiss when available.
            create: Create a missing gallery (writers only); False refuses a missing one.

        Raises:
            GalleryError: The gallery was built with another model (hash or dimension
                differ), or it cannot be opened or created (see ``create`` and the class).
        """
        path = Path(path)
        _check_not_a_file(path)
        if not (path / DB_NAME).is_file():
            if readonly or not create:
                raise GalleryError(f"{path} is not a gallery; build one with 'personsearch index'")
            manifest = bundle.manifest
            text = getattr(manifest, "text", None)
            gallery = cls.create(
                path,
                embedding_dim=manifest.embedding.dim,
                model_hash=bundle.model_hash,
                bundle=str(Path(bundle.root).resolve()),
                model_name=manifest.provenance.model_name,
                index_factory=index_factory,
                text_embedding_dim=text.embedding_dim if text is not None else None,
                text_model_hash=text.checkpoint_sha256 if text is not None else "",
            )
        else:
            gallery = cls(path, readonly=readonly, use_gpu=use_gpu)
        try:
            gallery.check_bundle(bundle)
        except BaseException:
            gallery.close()
            raise
        return gallery

    def check_bundle(self, bundle: Any) -> None:
        """Refuse a bundle whose embeddings are not comparable with this gallery's.

        Raises:
            GalleryError: Different embedding dimension or model hash.
        """
        if bundle.embedding_dim != self.embedding_dim:
            raise GalleryError(
                f"gallery {self.path} holds {self.embedding_dim}-d embeddings but bundle {bundle.root} makes "
                f"{bundle.embedding_dim}-d ones; use the bundle it was built with "
                f"({self._meta.get('bundle')}) "
                "or index into a new gallery"
            )
        if bundle.model_hash != self.model_hash:
            raise GalleryError(
                f"gallery {self.path} was built with another model (checkpoint "
                f"{self.model_hash[:12]}, bundle "
                f"{self._meta.get('bundle')}) than bundle {bundle.root} (checkpoint "
                f"{bundle.model_hash[:12]}); "
                "embeddings of different models cannot be compared - use the matching bundle or re-index"
            )

    @property
    def has_text(self) -> bool:
        """True when every detection also has a cross-modal (sentence-search) embedding."""
        return self.text_embedding_dim is not None

    def _no_text_message(self) -> str:
        return (
            f"gallery {self.path} has no text embeddings (it was indexed with a bundle without the text "
            "encoder), so sentences cannot search it; add them with 'personsearch index --bundle BUNDLE "
            f"--gallery {self.path} --add-text-embeddings' using a bundle exported with --text-checkpoint"
        )

    def check_text_bundle(self, bundle: Any, *, indexing: bool) -> None:
        """Refuse a bundle whose text side does not fit this gallery's.

        A writer about to index with a text bundle into an empty gallery without a text
        space gives it one (records the text model); a non-empty one must be back-filled
        first (``add_text_space``), so that no detection ever lacks its text embedding.

        Args:
            bundle: The ``Bundle``.
            indexing: True for an index run (writes), False for a sentence search.

        Raises:
            GalleryError: Sentence search on a gallery or bundle without text embeddings;
                a text model other than the gallery's; indexing a text gallery with a
                bundle without the text encoder; or a text bundle on a filled gallery
                without a text space.
        """
        text = getattr(bundle.manifest, "text", None)
        if text is None:
            if not indexing:
                raise GalleryError(
                    f"bundle {bundle.root} has no text encoder; export one with 'personsearch export "
                    "--checkpoint DET_RUN --text-checkpoint T2I_RUN --out BUNDLE' to search by sentence"
                )
            if self.has_text:
                raise GalleryError(
                    f"gallery {self.path} stores a text embedding for every person, but bundle {bundle.root} "
                    "has no text encoder; index with the bundle it was built with (exported with "
                    "--text-checkpoint) or into a new gallery folder"
                )
            return
        if self.has_text:
            if (
                text.checkpoint_sha256 != self.text_model_hash
                or text.embedding_dim != self.text_embedding_dim
            ):
                raise GalleryError(
                    f"gallery {self.path}'s text embeddings come from another text model (checkpoint "
                    f"{self.text_model_hash[:12]}, {self.text_embedding_dim}-d) than bundle {bundle.root}'s "
                    f"({text.checkpoint_sha256[:12]}, {text.embedding_dim}-d); sentences embedded by one "
                    "text model cannot search another's crops - use the matching bundle or re-index"
                )
            return
        if not indexing:
            raise GalleryError(self._no_text_message())
        if len(self):
            raise GalleryError(self._no_text_message())
        self._record_text_space(text.embedding_dim, text.checkpoint_sha256)

    def _record_text_space(self, dim: int, model_hash: str) -> None:
        with self._lock, self._sql("recording the text model of"), self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                (("text_embedding_dim", str(int(dim))), ("text_model_hash", model_hash)),
            )
        self._meta["text_embedding_dim"], self._meta["text_model_hash"] = str(int(dim)), model_hash
        self.text_embedding_dim, self.text_model_hash = int(dim), model_hash
        self._spaces["text"] = _SearchSpace("text", "text_embedding", int(dim), TEXT_INDEX_NAME)

    def frames_missing_text(self) -> list[tuple[str, int, np.ndarray, np.ndarray]]:
        """Frames whose detections have no text embedding yet, for back-filling.

        Returns:
            One ``(source, frame_index, detection ids [N] int64, boxes [N, 4] float32)``
            per frame, in source and frame order.
        """
        with self._lock, self._sql("reading the detections of"):
            rows = self._db.execute(
                "SELECT s.path, f.frame_index, d.id, d.x1, d.y1, d.x2, d.y2 FROM detections d "
                "JOIN frames f ON d.frame_id = f.id JOIN sources s ON f.source_id = s.id "
                "WHERE d.text_embedding IS NULL ORDER BY s.path, f.frame_index, d.id"
            ).fetchall()
        frames: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
        for row in rows:
            frames.setdefault((row[0], row[1]), []).append(row[2:])
        return [
            (
                source,
                frame_index,
                np.array([r[0] for r in items], np.int64),
                np.array([r[1:] for r in items], np.float32).reshape(-1, 4),
            )
            for (source, frame_index), items in frames.items()
        ]

    def add_text_space(self, bundle: Any, embeddings_for: Any, *, progress: Any = None) -> int:
        """Give an indexed gallery its text space: every stored person gets a crop embedding.

        Each frame's embeddings are committed in one transaction, so an interrupted
        back-fill keeps what it wrote and a rerun continues with the frames still missing.
        The gallery becomes searchable by sentence once every detection has one.

        Args:
            bundle: A ``Bundle`` with the text encoder (the model recorded from then on).
            embeddings_for: ``(source, frame_index, boxes [N, 4] float32) -> [N, E]``
                float32 unit embeddings (the searcher reads the frame and runs the crop
                encoder).
            progress: Called with the number of frames done after each frame, or None.

        Returns:
            The number of detections that got an embedding.

        Raises:
            GalleryError: Read-only gallery, a bundle without text graphs or with another
                text model than the one already recorded, or bad embeddings.
        """
        if self.readonly:
            raise GalleryError(f"gallery {self.path} is open read-only")
        text = getattr(bundle.manifest, "text", None)
        if text is None:
            raise GalleryError(
                f"bundle {bundle.root} has no text encoder; export it with --text-checkpoint to add text "
                "embeddings"
            )
        pending = self._meta.get("text_backfill_hash")
        if self.has_text:
            self.check_text_bundle(bundle, indexing=True)
        elif pending and pending != text.checkpoint_sha256:
            raise GalleryError(
                f"gallery {self.path} is being given text embeddings by another text model "
                f"({pending[:12]}); finish with that bundle, or index into a new gallery"
            )
        else:
            with self._lock, self._sql("recording the text model of"), self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('text_backfill_hash', ?)",
                    (text.checkpoint_sha256,),
                )
            self._meta["text_backfill_hash"] = text.checkpoint_sha256
        done = 0
        for count, (source, frame_index, ids, boxes) in enumerate(self.frames_missing_text(), 1):
            emb = np.ascontiguousarray(embeddings_for(source, frame_index, boxes), np.float32)
            if emb.shape != (len(ids), text.embedding_dim) or not np.isfinite(emb).all():
                raise GalleryError(
                    f"text embeddings of {source} frame {frame_index} have shape {list(emb.shape)} or are "
                    f"not finite; expected [{len(ids)}, {text.embedding_dim}] finite values"
                )
            with self._lock, self._sql("adding text embeddings to"), self._db:
                self._db.executemany(
                    "UPDATE detections SET text_embedding = ? WHERE id = ?",
                    [(vector.tobytes(), int(i)) for vector, i in zip(emb, ids, strict=True)],
                )
            done += len(ids)
            if progress is not None:
                progress(count)
        if not self.has_text:
            self._record_text_space(text.embedding_dim, text.checkpoint_sha256)
        return done

    def check_settings(self, *, every_nth_frame: int | None = None, index_factory: str | None = None) -> None:
        """Refuse an index run whose settings differ from the gallery's; record new ones.

        The first index run records its frame stride (also in a gallery made before
        strides were recorded); later runs must use the same one, so the frames of one
        gallery are never taken at mixed strides.

        Args:
            every_nth_frame: The run's video frame stride (>= 1); None for a run that
                reads no frames (nothing is checked or recorded then).
            index_factory: The index kind the run asked for; None when it did not ask.

        Raises:
            GalleryError: A setting differs (the message names it, both values and what
                to do), or the stride is not a whole number >= 1.
        """
        wanted: dict[str, str] = {}
        if every_nth_frame is not None:
            if (
                isinstance(every_nth_frame, bool)
                or not isinstance(every_nth_frame, numbers.Integral)
                or every_nth_frame < 1
            ):
                raise GalleryError(f"every_nth_frame must be a whole number >= 1, got {every_nth_frame!r}")
            wanted["every_nth_frame"] = str(int(every_nth_frame))
        if index_factory is not None:
            wanted["index_factory"] = index_factory
        for key, value in wanted.items():
            stored = self._meta.get(key)
            if stored is None or stored == value:
                continue
            option = _SETTING_OPTIONS[key]
            raise GalleryError(
                f"gallery {self.path} was indexed with {option} {stored}, this run asks for {option} "
                f"{value}; one gallery never mixes them: run with {option} {stored}, or index into a "
                "new gallery folder"
            )
        if "every_nth_frame" in wanted and "every_nth_frame" not in self._meta and not self.readonly:
            with self._lock, self._sql("recording the settings of"), self._db:
                self._db.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('every_nth_frame', ?)",
                    (wanted["every_nth_frame"],),
                )
            self._meta["every_nth_frame"] = wanted["every_nth_frame"]

    def close(self) -> None:
        """Close the database connection and, for a writer, release the lock."""
        with self._lock:
            self._db.close()
            self._release_writer()

    def _release_writer(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> GalleryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing ----------------------------------------------------------------------------

    def resume_point(self, source: str) -> int:
        """Return the first frame index still to index for ``source``; -1 when it is done.

        For a writer this also checks the file's content fingerprint (once per source and
        open): when the file changed since it was indexed, its old frames and detections
        are deleted, the source is listed in ``replaced_sources`` and 0 is returned. A
        missing or unreadable file is left as it is (the reader reports it).

        Raises:
            GalleryError: The database cannot be read or written.
        """
        with self._lock, self._sql("reading the sources of"):
            row = self._db.execute(
                "SELECT id, done, next_frame, "
                + ("fingerprint" if self._has_fingerprints() else "NULL")
                + " FROM sources WHERE path = ?",
                (source,),
            ).fetchone()
        if self.readonly or source in self._fingerprints:
            return 0 if row is None else (-1 if row[1] else int(row[2]))
        stored_text = row[3] if row is not None else None
        try:
            current, changed = compare_fingerprint(source, SourceFingerprint.from_text(stored_text))
        except OSError:
            current, changed = None, False
        if current is not None:
            self._fingerprints[source] = current
        if row is None:
            return 0
        if changed and current is not None:
            self._replace_source(int(row[0]), source, current)
            return 0
        if current is not None and current.to_text() != stored_text:
            # Unknown before (an older gallery) or same content with a new mtime: record it,
            # so the next run compares against the file as it is now.
            with self._lock, self._sql("recording a source fingerprint in"), self._db:
                self._db.execute(
                    "UPDATE sources SET fingerprint = ? WHERE id = ?", (current.to_text(), int(row[0]))
                )
        return -1 if row[1] else int(row[2])

    def _has_fingerprints(self) -> bool:
        return int(self._meta.get("schema_version", GALLERY_SCHEMA_VERSION)) >= 2

    def _replace_source(self, source_id: int, source: str, current: SourceFingerprint) -> None:
        with self._lock, self._sql("replacing a changed source in"), self._db:
            self._db.execute("DELETE FROM sources WHERE id = ?", (source_id,))
            self._db.execute(
                "INSERT INTO sources(path, kind, fingerprint) VALUES (?, ?, ?)",
                (source, "video" if is_video(source) else "image", current.to_text()),
            )
            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self._invalidate_indexes()
        self.replaced_sources.append(source)

    def add(self, batch: Sequence[Detections], *, finished: Iterable[str] = ()) -> list[int]:
        """Store the detections of several frames in one transaction.

        Args:
            batch: One ``Detections`` per frame (frames with no detection count as indexed).
            finished: Sources whose last frame is in this batch (marked done atomically).

        Returns:
            The new detection ids, in order.

        Raises:
            GalleryError: Read-only gallery, an embedding of the wrong shape or not finite,
                a frame stored twice, or the disk is full (the batch is rolled back).
        """
        if self.readonly:
            raise GalleryError(f"gallery {self.path} is open read-only")
        ids: list[int] = []
        with self._lock, self._sql("adding to"), self._db:
            for det in batch:
                emb = np.ascontiguousarray(det.embeddings, np.float32)
                if len(det) and (emb.ndim != 2 or emb.shape != (len(det), self.embedding_dim)):
                    raise GalleryError(
                        f"embeddings of {det.source} frame {det.frame_index} have shape {emb.shape}; the "
                        f"gallery stores [{len(det)}, {self.embedding_dim}] (embedding dimension "
                        f"{self.embedding_dim})"
                    )
                if len(det) and not np.isfinite(emb).all():
                    raise GalleryError(
                        f"embeddings of {det.source} frame {det.frame_index} are not finite (NaN or inf); "
                        "the model or its input is broken: check the bundle with 'personsearch verify'"
                    )
                text_blobs = self._text_blobs(det)
                kind = "image" if det.timestamp is None else "video"
                self._insert_source(det.source, kind)
                source_id = self._db.execute(
                    "SELECT id FROM sources WHERE path = ?", (det.source,)
                ).fetchone()[0]
                try:
                    cur = self._db.execute(
                        "INSERT INTO frames(source_id, frame_index, timestamp, height, width) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (source_id, det.frame_index, det.timestamp, det.image_size[0], det.image_size[1]),
                    )
                except sqlite3.IntegrityError:
                    raise GalleryError(
                        f"frame {det.frame_index} of {det.source} is already in gallery {self.path}; "
                        "nothing of this batch was stored"
                    ) from None
                frame_id = cur.lastrowid
                for box, score, vector, text_blob in zip(
                    det.boxes.tolist(), det.scores.tolist(), emb, text_blobs, strict=True
                ):
                    cur = self._db.execute(
                        "INSERT INTO detections(frame_id, x1, y1, x2, y2, score, embedding, text_embedding) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (frame_id, *box, score, vector.tobytes(), text_blob),
                    )
                    ids.append(int(cur.lastrowid))
                self._db.execute(
                    "UPDATE sources SET next_frame = MAX(next_frame, ?) WHERE id = ?",
                    (det.frame_index + 1, source_id),
                )
            for source in finished:
                self._insert_source(source, "image")
                self._db.execute("UPDATE sources SET done = 1 WHERE path = ?", (source,))
        return ids

    def _text_blobs(self, det: Detections) -> list[bytes | None]:
        """The text embedding blob of each detection; all None for a gallery without a text space."""
        text = getattr(det, "text_embeddings", None)
        if not self.has_text:
            return [None] * len(det)
        if text is None:
            raise GalleryError(
                f"{det.source} frame {det.frame_index} has no text embeddings, but gallery {self.path} "
                "stores one for every person; index with a bundle that has the text encoder"
            )
        text = np.ascontiguousarray(text, np.float32)
        if text.shape != (len(det), self.text_embedding_dim) or not np.isfinite(text).all():
            raise GalleryError(
                f"text embeddings of {det.source} frame {det.frame_index} have shape {list(text.shape)} "
                f"or are not finite; the gallery stores [{len(det)}, {self.text_embedding_dim}] finite values"
            )
        return [row.tobytes() for row in text]

    def _insert_source(self, source: str, kind: str) -> None:
        fingerprint = self._fingerprints.get(source)
        if self._has_fingerprints():
            self._db.execute(
                "INSERT OR IGNORE INTO sources(path, kind, fingerprint) VALUES (?, ?, ?)",
                (source, kind, fingerprint.to_text() if fingerprint else None),
            )
        else:
            self._db.execute("INSERT OR IGNORE INTO sources(path, kind) VALUES (?, ?)", (source, kind))

    def delete_source(self, source: str) -> int:
        """Remove a source with its frames and detections; returns how many detections went.

        Raises:
            GalleryError: Unknown source or read-only gallery.
        """
        if self.readonly:
            raise GalleryError(f"gallery {self.path} is open read-only")
        with self._lock, self._sql("deleting a source from"):
            resolved = str(Path(source).resolve()) if not self._has_source(source) else source
            with self._db:
                row = self._db.execute("SELECT id FROM sources WHERE path = ?", (resolved,)).fetchone()
                if row is None:
                    raise GalleryError(
                        f"gallery {self.path} has no source {source}; 'personsearch info --gallery "
                        f"{self.path}' shows what it holds"
                    )
                count = self._db.execute(
                    "SELECT COUNT(*) FROM detections JOIN frames ON detections.frame_id = frames.id "
                    "WHERE frames.source_id = ?",
                    (row[0],),
                ).fetchone()[0]
                self._db.execute("DELETE FROM sources WHERE id = ?", (row[0],))
                self._db.execute(
                    "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'"
                )
        self._fingerprints.pop(resolved, None)
        self._invalidate_indexes()
        return int(count)

    def _has_source(self, source: str) -> bool:
        return self._db.execute("SELECT 1 FROM sources WHERE path = ?", (source,)).fetchone() is not None

    # ---- information --------------------------------------------------------------------------

    def info(self) -> GalleryInfo:
        """Return the gallery's model, settings and counts."""
        with self._lock, self._sql("reading"):
            q = self._db.execute
            num_sources = q("SELECT COUNT(*) FROM sources WHERE done = 1 OR next_frame > 0").fetchone()[0]
            num_frames = q("SELECT COUNT(*) FROM frames").fetchone()[0]
            num_detections = q("SELECT COUNT(*) FROM detections").fetchone()[0]
        stride = self._meta.get("every_nth_frame", "")
        return GalleryInfo(
            path=str(self.path),
            embedding_dim=self.embedding_dim,
            model_hash=self.model_hash,
            bundle=self._meta.get("bundle", ""),
            model_name=self._meta.get("model_name", ""),
            index_factory=self.index_factory,
            num_sources=int(num_sources),
            num_frames=int(num_frames),
            num_detections=int(num_detections),
            created_at=self._meta.get("created_at", ""),
            every_nth_frame=int(stride) if stride.isdigit() else None,
            schema_version=int(self._meta["schema_version"]),
            text_embedding_dim=self.text_embedding_dim,
            text_model_hash=self.text_model_hash,
        )

    def __len__(self) -> int:
        with self._lock, self._sql("reading"):
            return int(self._db.execute("SELECT COUNT(*) FROM detections").fetchone()[0])

    def embeddings(self, after_id: int = 0, *, space: str = "reid") -> tuple[np.ndarray, np.ndarray]:
        """Return (ids [N] int64, embeddings [N, dim] float32) of detections with id > ``after_id``.

        Args:
            after_id: Only rows with a larger id.
            space: ``"reid"`` (re-id embeddings, ``embedding_dim`` wide) or ``"text"``
                (cross-modal crop embeddings, ``text_embedding_dim`` wide).

        Raises:
            GalleryError: The database cannot be read or holds blobs of the wrong size, or
                the gallery has no such space.
        """
        target = self._space(space)
        with self._lock, self._sql("reading the embeddings of"):
            rows = self._db.execute(
                f"SELECT id, {target.column} FROM detections WHERE id > ? AND {target.column} IS NOT NULL "
                "ORDER BY id",
                (after_id,),
            ).fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        blob = b"".join(r[1] for r in rows)
        if len(blob) != len(rows) * target.dim * 4:
            raise GalleryError(
                f"{self.path / DB_NAME} is damaged: its {space} embedding blobs are not {target.dim} "
                "float32 values each; index the sources again into a new gallery folder"
            )
        emb = np.frombuffer(blob, np.float32).reshape(len(rows), target.dim)
        return ids, emb

    # ---- the search indexes ----------------------------------------------------------------------

    def _space(self, space: str) -> _SearchSpace:
        """The search space ``space`` (``"reid"`` or ``"text"``), or a clear error."""
        if space not in SPACES:
            raise GalleryError(f"unknown search space {space!r}; use one of {', '.join(SPACES)}")
        found = self._spaces.get(space)
        if found is None:
            raise GalleryError(self._no_text_message())
        return found

    def _current_generation(self) -> int:
        with self._sql("reading"):
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def refresh(self) -> None:
        """Bring the search indexes up to date with the database (new rows, deletions)."""
        with self._lock:
            generation = self._current_generation()
            for space in self._spaces.values():
                if space.index is None or generation != space.generation:
                    self._load_or_build(space, generation)
                ids, emb = self.embeddings(space.covered, space=space.name)
                if len(ids):
                    self._append(space, ids, emb)

    def rebuild_index(self) -> None:
        """Build the search indexes from the database alone, ignoring the cached files.

        ``save()`` afterwards replaces the files (``personsearch index --rebuild-index``).
        """
        with self._lock:
            generation = self._current_generation()
            for space in self._spaces.values():
                self._build(space, generation)

    def _invalidate_indexes(self) -> None:
        for space in self._spaces.values():
            space.index = None

    def _load_or_build(self, space: _SearchSpace, generation: int) -> None:
        if not self._load_cache(space, generation):
            self._build(space, generation)

    def _build(self, space: _SearchSpace, generation: int) -> None:
        ids, emb = self.embeddings(0, space=space.name)
        space.index = self._new_index(space, emb)
        space.ids, space.covered, space.generation = np.zeros(0, np.int64), 0, generation
        if len(ids):
            self._append(space, ids, emb)

    def _load_cache(self, space: _SearchSpace, generation: int) -> bool:
        """Load the space's cache file when it is current and intact; False to rebuild instead."""
        cache = self.path / space.cache_name
        if not cache.exists():
            return False
        try:
            with np.load(cache, allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                if not isinstance(meta, dict):
                    raise ValueError("its meta entry is not a JSON object")
                digests = meta.get("sha256")
                if not isinstance(digests, dict):
                    return False  # written before indexes carried hashes: rebuilt quietly
                if meta.get("generation") != generation or meta.get("factory") != self.index_factory:
                    return False  # stale (rows deleted since, or another index kind)
                ids, blob = data["ids"], data["index"]
            problem = self._cache_problem(space, meta, digests, ids, blob)
            if problem is None:
                index = self._deserialize(meta["kind"], blob)
                problem = self._index_problem(space, index, len(ids))
        except GalleryError:
            raise  # the database, not the cache, failed
        except Exception as exc:  # noqa: BLE001 - any failure to read a cache means: rebuild it
            # numpy, zipfile and faiss raise many types (BadZipFile, EOFError, ValueError,
            # RuntimeError, ...) on damaged bytes; the index is rebuilt from SQLite whatever it was.
            problem = f"unreadable: {type(exc).__name__}: {str(exc).strip()[:200]}"
        if problem is not None:
            if not space.cache_warned:
                then = (
                    "it is rewritten when this run saves"
                    if not self.readonly
                    else f"rewrite it with 'personsearch index --bundle BUNDLE --gallery {self.path} "
                    "--rebuild-index'"
                )
                _LOG.warning(
                    "%s is corrupted (%s); searching an index rebuilt from %s instead (nothing is lost); %s",
                    cache,
                    problem,
                    DB_NAME,
                    then,
                )
                space.cache_warned = True
            return False
        space.index, space.ids = index, ids.astype(np.int64)
        space.covered, space.generation = int(meta["covered"]), generation
        return True

    def _cache_problem(
        self,
        space: _SearchSpace,
        meta: dict[str, Any],
        digests: dict[str, Any],
        ids: np.ndarray,
        blob: np.ndarray,
    ) -> str | None:
        """What is wrong with a loaded cache's blobs, or None when they check out."""
        for name, array in (("ids", ids), ("index", blob)):
            if digests.get(name) != _sha256(array):
                return f"the SHA-256 of its '{name}' blob does not match the one recorded when it was saved"
        if ids.dtype != np.int64 or ids.ndim != 1:
            return f"its ids are {ids.dtype}{list(ids.shape)}, expected a 1-d int64 array"
        if len(ids) > 1 and not bool(np.all(np.diff(ids) > 0)):
            return "its ids are not strictly increasing"
        covered = meta.get("covered")
        last = int(ids[-1]) if len(ids) else 0
        if not isinstance(covered, int) or last != covered:
            return f"it claims to cover rows up to {covered!r} but its last id is {last}"
        with self._sql("reading"):
            query = f"SELECT COUNT(*) FROM detections WHERE id <= ? AND {space.column} IS NOT NULL"
            in_db = self._db.execute(query, (covered,)).fetchone()[0]
        if in_db != len(ids):
            return f"it indexes {len(ids)} rows where {DB_NAME} holds {in_db} (a cache of another gallery?)"
        if meta.get("kind") not in ("numpy", "faiss"):
            return f"unknown index kind {meta.get('kind')!r}"
        return None

    @staticmethod
    def _index_problem(space: _SearchSpace, index: Any, count: int) -> str | None:
        if isinstance(index, np.ndarray):
            if index.shape != (count, space.dim):
                return f"its matrix is {list(index.shape)}, expected [{count}, {space.dim}]"
            return None
        if int(index.d) != space.dim or int(index.ntotal) != count:
            return (
                f"its faiss index holds {index.ntotal} vectors of {index.d} dimensions, expected "
                f"{count} of {space.dim}"
            )
        return None

    def _kind(self) -> str:
        if self.index_factory == "numpy" or (_faiss() is None and self.index_factory == "Flat"):
            return "numpy"
        return "faiss"

    def _new_index(self, space: _SearchSpace, training: np.ndarray) -> Any:
        if self._kind() == "numpy":
            return np.zeros((0, space.dim), np.float32)
        faiss = _faiss()
        if faiss is None:
            raise GalleryError(
                f"index '{self.index_factory}' needs faiss: pip install \"personsearch[faiss]\""
            )
        factory = self.index_factory
        index = faiss.index_factory(space.dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            needed = _TRAIN_PER_LIST * _nlist(factory)
            if len(training) < needed:
                # Too few vectors to train the requested index: exact search until there are.
                return faiss.IndexFlatIP(space.dim)
            index.train(np.ascontiguousarray(training, np.float32))
            _set_nprobe(faiss, index)
        return index

    def _append(self, space: _SearchSpace, ids: np.ndarray, emb: np.ndarray) -> None:
        if isinstance(space.index, np.ndarray):
            space.index = np.concatenate([space.index, emb]) if len(space.index) else emb.copy()
        else:
            faiss = _faiss()
            wanted_trained = self.index_factory not in ("Flat", "numpy")
            if wanted_trained and isinstance(space.index, faiss.IndexFlatIP):
                total = len(space.ids) + len(ids)
                if total >= _TRAIN_PER_LIST * _nlist(self.index_factory):
                    # Enough vectors now: train the requested index on everything and rebuild.
                    all_ids, all_emb = self.embeddings(0, space=space.name)
                    space.index = self._new_index(space, all_emb)
                    space.index.add(np.ascontiguousarray(all_emb))
                    space.ids, space.covered = all_ids, int(all_ids.max())
                    return
            space.index.add(np.ascontiguousarray(emb, np.float32))
        space.ids = np.concatenate([space.ids, ids])
        space.covered = max(space.covered, int(ids.max()))

    def _deserialize(self, kind: str, blob: np.ndarray) -> Any:
        if kind == "numpy":
            if blob.dtype != np.float32 or blob.ndim != 2:
                raise ValueError(f"numpy index blob is {blob.dtype}{list(blob.shape)}, expected 2-d float32")
            return blob
        faiss = _faiss()
        if faiss is None:
            raise ValueError("it holds a faiss index and faiss is not installed")
        if blob.dtype != np.uint8 or blob.ndim != 1:
            raise ValueError(f"faiss index blob is {blob.dtype}{list(blob.shape)}, expected 1-d uint8")
        return faiss.deserialize_index(blob)

    def save(self) -> Path:
        """Write the search index caches atomically (temp file, fsync, rename), with their hashes.

        Returns:
            The re-id index cache path (``index.npz``; the text index, when the gallery
            has one, is ``index_text.npz`` beside it).

        Raises:
            GalleryError: The gallery is open read-only, or a file cannot be written
                (disk full, read-only folder); the previous file is then left as it was.
        """
        if self.readonly:
            raise GalleryError(
                f"gallery {self.path} is open read-only; only its writer saves the index "
                "(open it with readonly=False)"
            )
        self.refresh()
        written = self.path / INDEX_NAME
        with self._lock:
            for space in self._spaces.values():
                if isinstance(space.index, np.ndarray):
                    kind, blob = "numpy", np.ascontiguousarray(space.index, np.float32)
                else:
                    kind, blob = "faiss", _faiss().serialize_index(space.index)
                ids = np.ascontiguousarray(space.ids, np.int64)
                meta = {
                    "generation": space.generation,
                    "covered": space.covered,
                    "factory": self.index_factory,
                    "kind": kind,
                    "space": space.name,
                    "sha256": {"ids": _sha256(ids), "index": _sha256(blob)},
                }
                buffer = io.BytesIO()
                np.savez(buffer, ids=ids, index=blob, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
                target = self.path / space.cache_name
                try:
                    atomic_write_bytes(target, buffer.getbuffer(), sync_dir=True)
                except OSError as exc:
                    raise _os_failure(exc, self.path, f"saving {target}") from None
        return written

    def search(
        self, queries: np.ndarray, *, top_k: int = 10, score_weighted: bool = False, space: str = "reid"
    ) -> list[list[SearchHit]]:
        """Find the gallery detections most similar to each query.

        Args:
            queries: [Q, D] float32 L2-normalised query embeddings (or [D]); D is the
                space's width (``embedding_dim`` for ``"reid"``, ``text_embedding_dim``
                for ``"text"``).
            top_k: Hits per query.
            score_weighted: Rank by ``similarity * detection score`` (confidence-weighted
                similarity) instead of similarity; faiss first fetches ``max(4 * top_k, 100)``
                candidates by similarity, then re-ranks them.
            space: ``"reid"`` (image queries: the detector's re-id embeddings) or
                ``"text"`` (sentence queries: the crop encoder's cross-modal embeddings).

        Returns:
            One list of hits per query, best first.

        Raises:
            GalleryError: The gallery is empty or has no such space (a gallery indexed
                without the text encoder has no ``"text"`` space; the message says how to
                add it), the queries are not finite or of the wrong dimension, or
                ``top_k`` is not a whole number >= 1.
        """
        _check_top_k(top_k)
        target = self._space(space)
        queries = self._check_queries(queries, target)
        if not len(queries):
            return []
        fetch_at_least = max(4 * top_k, 100) if score_weighted else top_k
        self.refresh()
        ids, cand_sims = self._candidates(target, queries, fetch_at_least)
        rows = self._rows({int(i) for i in ids.ravel() if i >= 0})
        results = []
        for q_ids, q_sims in zip(ids, cand_sims, strict=True):
            cands = [(float(s), rows[int(i)]) for i, s in zip(q_ids, q_sims, strict=True) if int(i) in rows]
            key = (lambda c: c[0] * c[1]["score"]) if score_weighted else (lambda c: c[0])
            cands.sort(key=lambda c: (-key(c), c[1]["id"]))
            results.append([_hit(r + 1, s, key((s, row)), row) for r, (s, row) in enumerate(cands[:top_k])])
        return results

    def _check_queries(self, queries: np.ndarray, space: _SearchSpace) -> np.ndarray:
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if queries.ndim != 2 or queries.shape[1] != space.dim:
            raise GalleryError(
                f"query embeddings have shape {list(queries.shape)}; the gallery's {space.name} space holds "
                f"{space.dim}-d embeddings: give [Q, {space.dim}] or [{space.dim}]"
            )
        if not np.isfinite(queries).all():
            raise GalleryError("query embeddings are not finite (NaN or inf); check the query and the model")
        return queries

    def _candidates(
        self, space: _SearchSpace, queries: np.ndarray, fetch: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``fetch`` most similar rows per query: (detection ids [Q, F] int64, -1 = none; sims [Q, F]).

        The caller refreshes the indexes first (once for all the spaces it searches).
        """
        with self._lock:
            n = len(space.ids)
            if n == 0:
                raise GalleryError(f"gallery {self.path} is empty; index some images or videos first")
            fetch = min(n, fetch)
            if isinstance(space.index, np.ndarray):
                sims = queries @ space.index.T
                part = (
                    np.argpartition(-sims, fetch - 1, axis=1)[:, :fetch]
                    if fetch < n
                    else np.tile(np.arange(n), (len(queries), 1))
                )
                cand_sims = np.take_along_axis(sims, part, axis=1)
                positions = part
            else:
                index = self._search_index(space, fetch)
                cand_sims, positions = index.search(queries, fetch)
            ids = np.where(positions >= 0, space.ids[np.clip(positions, 0, max(n - 1, 0))], -1)
        return ids, cand_sims

    def search_fused(
        self,
        reid_query: np.ndarray,
        text_query: np.ndarray,
        *,
        text_weight: float = 0.5,
        top_k: int = 10,
        candidates: int | None = None,
    ) -> list[SearchHit]:
        """Rank by a weighted sum of an image query's and a sentence query's similarities.

        Fusion: ``fused = text_weight * cos_text + (1 - text_weight) * cos_reid``, each a
        cosine in ``[-1, 1]`` of unit vectors in its own space. A weighted sum of the
        two cosines (late fusion) needs no calibration data and keeps each modality's
        ranking when the other's weight is 0. Candidates are the union of each space's
        ``candidates`` nearest rows (default ``max(4 * top_k, 100)``); both cosines are
        then computed exactly for every candidate from the stored embeddings, so a
        person found by only one of the two queries is still scored by both.
        ``SearchHit.similarity`` is the fused value.

        Args:
            reid_query: [D] (or [1, D]) float32 unit re-id embedding of the image query.
            text_query: [E] (or [1, E]) float32 unit sentence embedding.
            text_weight: Weight of the sentence in ``[0, 1]``.
            top_k: Hits to return.
            candidates: Rows fetched from each index before fusing.

        Returns:
            Up to ``top_k`` hits, best fused similarity first.

        Raises:
            GalleryError: No text space, bad queries, ``text_weight`` outside ``[0, 1]``.
        """
        _check_top_k(top_k)
        if not isinstance(text_weight, numbers.Real) or not 0.0 <= float(text_weight) <= 1.0:
            raise GalleryError(f"text_weight must be a number in [0, 1], got {text_weight!r}")
        reid, text = self._space("reid"), self._space("text")
        reid_q = self._check_queries(reid_query, reid)[:1]
        text_q = self._check_queries(text_query, text)[:1]
        fetch = candidates if candidates is not None else max(4 * top_k, 100)
        self.refresh()
        reid_ids, _ = self._candidates(reid, reid_q, fetch)
        text_ids, _ = self._candidates(text, text_q, fetch)
        ids = np.unique(np.concatenate([reid_ids.ravel(), text_ids.ravel()]))
        ids = ids[ids >= 0]
        reid_vectors = self.vectors(ids, space="reid")
        text_vectors = self.vectors(ids, space="text")
        w = float(text_weight)
        fused = w * (text_vectors @ text_q[0]) + (1.0 - w) * (reid_vectors @ reid_q[0])
        rows = self._rows({int(i) for i in ids})
        order = sorted(range(len(ids)), key=lambda j: (-float(fused[j]), int(ids[j])))[:top_k]
        return [
            _hit(rank + 1, float(fused[j]), float(fused[j]), rows[int(ids[j])])
            for rank, j in enumerate(order)
        ]

    def vectors(self, ids: np.ndarray, *, space: str = "reid") -> np.ndarray:
        """The stored embeddings of detection ``ids`` ([N] int64) in ``space``: [N, dim] float32.

        Raises:
            GalleryError: An id that is not in the gallery, or no such space.
        """
        target = self._space(space)
        id_list = [int(i) for i in np.asarray(ids).ravel()]
        found: dict[int, bytes] = {}
        with self._lock, self._sql("reading the embeddings of"):
            for start in range(0, len(id_list), 500):
                chunk = id_list[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    self._db.execute(
                        f"SELECT id, {target.column} FROM detections WHERE id IN ({marks})", chunk
                    ).fetchall()
                )
        missing = [i for i in id_list if found.get(i) is None]
        if missing:
            raise GalleryError(f"gallery {self.path} has no {space} embedding for detection {missing[0]}")
        blob = b"".join(found[i] for i in id_list)
        return np.frombuffer(blob, np.float32).reshape(len(id_list), target.dim)

    def _search_index(self, space: _SearchSpace, k: int) -> Any:
        faiss = _faiss()
        if (
            self.use_gpu
            and k <= _GPU_MAX_K
            and hasattr(faiss, "StandardGpuResources")
            and faiss.get_num_gpus() > 0
        ):
            if space.gpu_index is None or space.gpu_covered != (space.generation, space.covered):
                if self._gpu_resources is None:
                    self._gpu_resources = faiss.StandardGpuResources()
                space.gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, 0, space.index)
                space.gpu_covered = (space.generation, space.covered)
            return space.gpu_index
        return space.index

    def _rows(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        out: dict[int, dict[str, Any]] = {}
        id_list = sorted(ids)
        with self._lock, self._sql("reading the detections of"):
            for start in range(0, len(id_list), 500):
                chunk = id_list[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for row in self._db.execute(
                    "SELECT d.id, s.path, f.frame_index, f.timestamp, d.x1, d.y1, d.x2, d.y2, d.score "
                    "FROM detections d JOIN frames f ON d.frame_id = f.id JOIN sources s ON "
                    "f.source_id = s.id "
                    f"WHERE d.id IN ({marks})",
                    chunk,
                ):
                    out[row[0]] = {
                        "id": row[0],
                        "source": row[1],
                        "frame_index": row[2],
                        "timestamp": row[3],
                        "box": (row[4], row[5], row[6], row[7]),
                        "score": row[8],
                    }
        return out

    def dump(self) -> list[tuple[Any, ...]]:
        """Return every detection as (id, source, frame_index, timestamp, box..., score, embedding bytes).

        Used to compare galleries (e.g. a resumed run against an uninterrupted one).
        """
        with self._lock, self._sql("reading"):
            return self._db.execute(
                "SELECT d.id, s.path, f.frame_index, f.timestamp, d.x1, d.y1, d.x2, d.y2, "
                "d.score, d.embedding "
                "FROM detections d JOIN frames f ON d.frame_id = f.id JOIN sources s ON f.source_id = s.id "
                "ORDER BY d.id"
            ).fetchall()


def _write_new_database(folder: Path, meta: dict[str, str]) -> None:
    """Build ``gallery.sqlite`` under its creating name and rename it when complete.

    The caller holds the writers' lock, so the fixed temporary name is safe and a file
    with that name found later is known to be from a creation that was killed.
    """
    creating = folder / CREATING_NAME
    try:
        db = sqlite3.connect(str(creating))
        try:
            db.executescript(_SCHEMA)
            db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
            db.commit()
        finally:
            db.close()
        descriptor = os.open(creating, os.O_RDWR)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(creating, folder / DB_NAME)
    except BaseException as exc:
        for leftover in _creation_leftovers(folder):
            leftover.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise _sqlite_failure(exc, folder, "creating") from None
        if isinstance(exc, OSError):
            raise _os_failure(exc, folder, "creating the gallery") from None
        raise
    fsync_dir(folder)


def _nlist(factory: str) -> int:
    for part in factory.split(","):
        part = part.strip()
        if part.startswith("IVF"):
            digits = "".join(ch for ch in part[3:] if ch.isdigit())
            if digits:
                return int(digits)
    return 1


def _set_nprobe(faiss: Any, index: Any) -> None:
    """Default nprobe: a sixteenth of the lists (at least 1), a common recall/speed trade-off."""
    try:
        nlist = int(faiss.extract_index_ivf(index).nlist)
    except (RuntimeError, AttributeError):
        return
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", max(1, nlist // 16))


def _check_factory(factory: str, dim: int) -> None:
    if not isinstance(factory, str) or not factory.strip():
        raise GalleryError(f"index factory must be a non-empty string (Flat, numpy, IVF...), got {factory!r}")
    if factory in ("Flat", "numpy"):
        return
    faiss = _faiss()
    if faiss is None:
        raise GalleryError(
            f"index '{factory}' needs faiss: pip install \"personsearch[faiss]\" (or use Flat)"
        )
    try:
        faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise GalleryError(
            f"invalid faiss index factory string {factory!r}: {str(exc).strip().splitlines()[-1]}"
        ) from None
