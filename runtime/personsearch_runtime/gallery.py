"""The persistent gallery: detections and embeddings in SQLite, a faiss (or numpy) index over them.

Layout of a gallery directory ``G/``::

    G/gallery.sqlite   the truth: meta, sources (with resume progress), frames, detections
                       (box, score, float32 embedding blob); WAL journal mode
    G/index.npz        a cache of the search index (serialised faiss index + row ids +
                       which rows it covers); rebuilt or extended from SQLite when stale

Why this split: every batch of frames is one SQLite transaction (detections, frames and
the source's resume point together), so a crash, ``kill -9`` or Ctrl-C loses nothing
that was committed and a resumed run continues exactly after the last committed frame.
The search index is derived data: it is saved atomically (temp file, fsync, rename) and
reloaded only when it matches the database (same delete generation); rows added since
are appended on open. WAL lets readers search while a writer adds; ``refresh()`` picks
up what was committed since.

Index kinds (``index_factory``): ``"Flat"`` (exact inner product, the default), any faiss
factory string such as ``"IVF4096,Flat"`` or ``"IVF4096,PQ32"`` (trained on the stored
embeddings once there are enough of them, exact until then), and ``"numpy"`` (exact, no
faiss needed; also used for ``"Flat"`` when faiss is not installed). GPU faiss is used for
searching when installed and ``use_gpu`` is set.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import io
import json
import os
import sqlite3
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_runtime.atomic_files import atomic_replace, atomic_write_bytes
from personsearch_runtime.errors import GalleryError
from personsearch_runtime.results import Detections, SearchHit

__all__ = ["GALLERY_SCHEMA_VERSION", "GalleryIndex", "GalleryInfo"]

GALLERY_SCHEMA_VERSION = 1
DB_NAME = "gallery.sqlite"
INDEX_NAME = "index.npz"
#: faiss needs about this many training vectors per IVF list; below it we stay exact.
_TRAIN_PER_LIST = 39
#: Classic GPU faiss indexes cannot select more than this many neighbours.
_GPU_MAX_K = 2048

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    next_frame INTEGER NOT NULL DEFAULT 0
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
    embedding BLOB NOT NULL
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

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return dict(self.__dict__)


def _faiss() -> Any | None:
    if importlib.util.find_spec("faiss") is None:
        return None
    import faiss

    return faiss


class GalleryIndex:
    """A gallery directory opened for reading or writing.

    Use ``GalleryIndex.create`` / ``GalleryIndex.open`` / ``GalleryIndex.open_for_bundle``
    rather than the constructor.

    Args:
        path: Gallery directory.
        readonly: Open the database read-only (many readers can search while one writer adds).
        use_gpu: Search on GPU faiss when available.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, use_gpu: bool = False
    ) -> None:
        self.path = Path(path)
        db = self.path / DB_NAME
        if not db.is_file():
            raise GalleryError(
                f"{self.path} is not a gallery (no {DB_NAME}); create one with 'personsearch index'"
            )
        self.readonly = readonly
        self.use_gpu = use_gpu
        try:
            if readonly:
                self._db = sqlite3.connect(
                    f"file:{db}?mode=ro", uri=True, timeout=60, check_same_thread=False
                )
            else:
                self._db = sqlite3.connect(str(db), timeout=60, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise GalleryError(
                f"{db} is not a readable gallery database ({exc}); delete the folder and re-index"
            ) from None
        if int(self._meta.get("schema_version", -1)) != GALLERY_SCHEMA_VERSION:
            raise GalleryError(
                f"{db} has gallery schema {self._meta.get('schema_version')!r}, this runtime reads "
                f"{GALLERY_SCHEMA_VERSION}; re-index into a new gallery"
            )
        self.embedding_dim = int(self._meta["embedding_dim"])
        self.model_hash = self._meta["model_hash"]
        self.index_factory = self._meta["index_factory"]
        self._lock = threading.RLock()
        self._index: Any = None  # faiss index, or [N, D] float32 matrix for numpy
        self._ids = np.zeros(0, np.int64)
        self._covered = 0  # largest detection id in the index
        self._generation = -1

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
    ) -> GalleryIndex:
        """Create an empty gallery directory.

        Args:
            path: Directory to create (may exist if empty).
            embedding_dim: D of the embeddings it will hold.
            model_hash: The bundle's checkpoint hash; other bundles are refused later.
            bundle: Bundle path, recorded for ``info``.
            model_name: Model name, recorded for ``info``.
            index_factory: ``"Flat"``, ``"numpy"`` or a faiss factory string.

        Raises:
            GalleryError: The directory is not empty or the factory string is invalid.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise GalleryError(
                f"cannot create a gallery at {path}: it exists and is not an empty gallery folder"
            )
        _check_factory(index_factory, embedding_dim)
        path.mkdir(parents=True, exist_ok=True)
        # The database is built under a temporary name and renamed, so a crash during
        # creation never leaves a half-initialised gallery.sqlite behind. SQLite takes
        # the empty temporary file as an empty database.
        with atomic_replace(path / DB_NAME, sync_dir=True) as tmp:
            db = sqlite3.connect(str(tmp))
            try:
                db.executescript(_SCHEMA)
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
                db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
                db.commit()
            finally:
                db.close()
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
    ) -> GalleryIndex:
        """Open the gallery at ``path`` for ``bundle``, creating it for writers when missing.

        Raises:
            GalleryError: The gallery was built with another model (hash or dimension differ).
        """
        path = Path(path)
        if not (path / DB_NAME).is_file():
            if readonly:
                raise GalleryError(f"{path} is not a gallery; build one with 'personsearch index'")
            manifest = bundle.manifest
            cls.create(
                path,
                embedding_dim=manifest.embedding.dim,
                model_hash=bundle.model_hash,
                bundle=str(Path(bundle.root).resolve()),
                model_name=manifest.provenance.model_name,
                index_factory=index_factory,
            )
        gallery = cls(path, readonly=readonly, use_gpu=use_gpu)
        gallery.check_bundle(bundle)
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

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> GalleryIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- writing ----------------------------------------------------------------------------

    def resume_point(self, source: str) -> int:
        """Return the first frame index still to index for ``source``; -1 when it is done."""
        row = self._db.execute("SELECT done, next_frame FROM sources WHERE path = ?", (source,)).fetchone()
        if row is None:
            return 0
        return -1 if row[0] else int(row[1])

    def add(self, batch: Sequence[Detections], *, finished: Iterable[str] = ()) -> list[int]:
        """Store the detections of several frames in one transaction.

        Args:
            batch: One ``Detections`` per frame (frames with no detection count as indexed).
            finished: Sources whose last frame is in this batch (marked done atomically).

        Returns:
            The new detection ids, in order.

        Raises:
            GalleryError: Read-only gallery, or an embedding of the wrong dimension.
        """
        if self.readonly:
            raise GalleryError(f"gallery {self.path} is open read-only")
        ids: list[int] = []
        with self._lock, self._db:
            for det in batch:
                emb = np.ascontiguousarray(det.embeddings, np.float32)
                if len(det) and emb.shape[1] != self.embedding_dim:
                    raise GalleryError(
                        f"embedding dimension {emb.shape[1]} does not match the gallery's "
                        f"{self.embedding_dim}"
                    )
                kind = "image" if det.timestamp is None else "video"
                self._db.execute(
                    "INSERT OR IGNORE INTO sources(path, kind) VALUES (?, ?)", (det.source, kind)
                )
                source_id = self._db.execute(
                    "SELECT id FROM sources WHERE path = ?", (det.source,)
                ).fetchone()[0]
                cur = self._db.execute(
                    "INSERT INTO frames(source_id, frame_index, timestamp, height, width) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (source_id, det.frame_index, det.timestamp, det.image_size[0], det.image_size[1]),
                )
                frame_id = cur.lastrowid
                for box, score, vector in zip(det.boxes.tolist(), det.scores.tolist(), emb, strict=True):
                    cur = self._db.execute(
                        "INSERT INTO detections(frame_id, x1, y1, x2, y2, score, embedding) "
                        "VALUES (?,?,?,?,?,?,?)",
                        (frame_id, *box, score, vector.tobytes()),
                    )
                    ids.append(int(cur.lastrowid))
                self._db.execute(
                    "UPDATE sources SET next_frame = MAX(next_frame, ?) WHERE id = ?",
                    (det.frame_index + 1, source_id),
                )
            for source in finished:
                self._db.execute("INSERT OR IGNORE INTO sources(path, kind) VALUES (?, ?)", (source, "image"))
                self._db.execute("UPDATE sources SET done = 1 WHERE path = ?", (source,))
        return ids

    def delete_source(self, source: str) -> int:
        """Remove a source with its frames and detections; returns how many detections went.

        Raises:
            GalleryError: Unknown source or read-only gallery.
        """
        if self.readonly:
            raise GalleryError(f"gallery {self.path} is open read-only")
        resolved = str(Path(source).resolve()) if not self._has_source(source) else source
        with self._lock, self._db:
            row = self._db.execute("SELECT id FROM sources WHERE path = ?", (resolved,)).fetchone()
            if row is None:
                raise GalleryError(f"gallery {self.path} has no source {source}")
            count = self._db.execute(
                "SELECT COUNT(*) FROM detections JOIN frames ON detections.frame_id = frames.id "
                "WHERE frames.source_id = ?",
                (row[0],),
            ).fetchone()[0]
            self._db.execute("DELETE FROM sources WHERE id = ?", (row[0],))
            self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
        self._index = None
        return int(count)

    def _has_source(self, source: str) -> bool:
        return self._db.execute("SELECT 1 FROM sources WHERE path = ?", (source,)).fetchone() is not None

    # ---- information --------------------------------------------------------------------------

    def info(self) -> GalleryInfo:
        """Return the gallery's model and counts."""
        with self._lock:
            q = self._db.execute
            num_sources = q("SELECT COUNT(*) FROM sources WHERE done = 1 OR next_frame > 0").fetchone()[0]
            num_frames = q("SELECT COUNT(*) FROM frames").fetchone()[0]
            num_detections = q("SELECT COUNT(*) FROM detections").fetchone()[0]
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
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM detections").fetchone()[0])

    def embeddings(self, after_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids [N] int64, embeddings [N, D] float32) of detections with id > ``after_id``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, embedding FROM detections WHERE id > ? ORDER BY id", (after_id,)
            ).fetchall()
        ids = np.fromiter((r[0] for r in rows), np.int64, len(rows))
        emb = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.embedding_dim)
        return ids, emb

    # ---- the search index ----------------------------------------------------------------------

    def _current_generation(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def refresh(self) -> None:
        """Bring the search index up to date with the database (new rows, deletions)."""
        with self._lock:
            generation = self._current_generation()
            if self._index is None or generation != self._generation:
                self._load_or_build(generation)
            ids, emb = self.embeddings(self._covered)
            if len(ids):
                self._append(ids, emb)

    def _load_or_build(self, generation: int) -> None:
        self._index, self._ids, self._covered, self._generation = None, np.zeros(0, np.int64), 0, generation
        cache = self.path / INDEX_NAME
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as data:
                    meta = json.loads(bytes(data["meta"]).decode())
                    if meta.get("generation") == generation and meta.get("factory") == self.index_factory:
                        self._ids = data["ids"].astype(np.int64)
                        self._covered = int(meta["covered"])
                        self._index = self._deserialize(meta["kind"], data["index"])
            except (OSError, ValueError, KeyError, json.JSONDecodeError):
                warnings.warn(f"ignoring unreadable index cache {cache}; rebuilding it", stacklevel=2)
                self._index, self._ids, self._covered = None, np.zeros(0, np.int64), 0
        if self._index is None:
            ids, emb = self.embeddings(0)
            self._index = self._new_index(emb)
            self._ids = np.zeros(0, np.int64)
            self._covered = 0
            if len(ids):
                self._append(ids, emb)

    def _kind(self) -> str:
        if self.index_factory == "numpy" or (_faiss() is None and self.index_factory == "Flat"):
            return "numpy"
        return "faiss"

    def _new_index(self, training: np.ndarray) -> Any:
        if self._kind() == "numpy":
            return np.zeros((0, self.embedding_dim), np.float32)
        faiss = _faiss()
        if faiss is None:
            raise GalleryError(
                f"index '{self.index_factory}' needs faiss: pip install \"personsearch[faiss]\""
            )
        factory = self.index_factory
        index = faiss.index_factory(self.embedding_dim, factory, faiss.METRIC_INNER_PRODUCT)
        if not index.is_trained:
            needed = _TRAIN_PER_LIST * _nlist(factory)
            if len(training) < needed:
                # Too few vectors to train the requested index: exact search until there are.
                return faiss.IndexFlatIP(self.embedding_dim)
            index.train(np.ascontiguousarray(training, np.float32))
            _set_nprobe(faiss, index)
        return index

    def _append(self, ids: np.ndarray, emb: np.ndarray) -> None:
        if isinstance(self._index, np.ndarray):
            self._index = np.concatenate([self._index, emb]) if len(self._index) else emb.copy()
        else:
            faiss = _faiss()
            wanted_trained = self.index_factory not in ("Flat", "numpy")
            if wanted_trained and isinstance(self._index, faiss.IndexFlatIP):
                total = len(self._ids) + len(ids)
                if total >= _TRAIN_PER_LIST * _nlist(self.index_factory):
                    # Enough vectors now: train the requested index on everything and rebuild.
                    all_ids, all_emb = self.embeddings(0)
                    self._index = self._new_index(all_emb)
                    self._index.add(np.ascontiguousarray(all_emb))
                    self._ids, self._covered = all_ids, int(all_ids.max())
                    return
            self._index.add(np.ascontiguousarray(emb, np.float32))
        self._ids = np.concatenate([self._ids, ids])
        self._covered = max(self._covered, int(ids.max()))

    def _deserialize(self, kind: str, blob: np.ndarray) -> Any:
        if kind == "numpy":
            return np.asarray(blob, np.float32).reshape(-1, self.embedding_dim)
        faiss = _faiss()
        if faiss is None:
            raise ValueError("faiss missing")
        return faiss.deserialize_index(np.asarray(blob, np.uint8))

    def save(self) -> Path:
        """Write the search index cache atomically (temp file, fsync, rename).

        Returns:
            The cache path.
        """
        self.refresh()
        with self._lock:
            if isinstance(self._index, np.ndarray):
                kind, blob = "numpy", self._index
            else:
                kind, blob = "faiss", _faiss().serialize_index(self._index)
            meta = {
                "generation": self._generation,
                "covered": self._covered,
                "factory": self.index_factory,
                "kind": kind,
            }
            buffer = io.BytesIO()
            np.savez(
                buffer, ids=self._ids, index=blob, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8)
            )
            return atomic_write_bytes(self.path / INDEX_NAME, buffer.getbuffer(), sync_dir=True)

    def search(
        self, queries: np.ndarray, *, top_k: int = 10, score_weighted: bool = False
    ) -> list[list[SearchHit]]:
        """Find the gallery detections most similar to each query.

        Args:
            queries: [Q, D] float32 L2-normalised query embeddings (or [D]).
            top_k: Hits per query.
            score_weighted: Rank by ``similarity * detection score`` (confidence-weighted
                similarity) instead of similarity; faiss first fetches ``max(4 * top_k, 100)``
                candidates by similarity, then re-ranks them.

        Returns:
            One list of hits per query, best first.

        Raises:
            GalleryError: The gallery is empty, or the query dimension is wrong.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), np.float32)
        if queries.shape[1] != self.embedding_dim:
            raise GalleryError(
                f"query embeddings are {queries.shape[1]}-d, the gallery holds {self.embedding_dim}-d"
            )
        self.refresh()
        with self._lock:
            n = len(self._ids)
            if n == 0:
                raise GalleryError(f"gallery {self.path} is empty; index some images or videos first")
            fetch = min(n, max(4 * top_k, 100) if score_weighted else top_k)
            if isinstance(self._index, np.ndarray):
                sims = queries @ self._index.T
                part = (
                    np.argpartition(-sims, fetch - 1, axis=1)[:, :fetch]
                    if fetch < n
                    else np.tile(np.arange(n), (len(queries), 1))
                )
                cand_sims = np.take_along_axis(sims, part, axis=1)
                positions = part
            else:
                index = self._search_index(fetch)
                cand_sims, positions = index.search(queries, fetch)
            ids = np.where(positions >= 0, self._ids[np.clip(positions, 0, max(n - 1, 0))], -1)
        rows = self._rows({int(i) for i in ids.ravel() if i >= 0})
        results = []
        for q_ids, q_sims in zip(ids, cand_sims, strict=True):
            cands = [(float(s), rows[int(i)]) for i, s in zip(q_ids, q_sims, strict=True) if int(i) in rows]
            key = (lambda c: c[0] * c[1]["score"]) if score_weighted else (lambda c: c[0])
            cands.sort(key=lambda c: (-key(c), c[1]["id"]))
            hits = [
                SearchHit(
                    rank=r + 1,
                    similarity=s,
                    ranking_score=key((s, row)),
                    detection_id=row["id"],
                    source=row["source"],
                    frame_index=row["frame_index"],
                    timestamp=row["timestamp"],
                    box=row["box"],
                    score=row["score"],
                )
                for r, (s, row) in enumerate(cands[:top_k])
            ]
            results.append(hits)
        return results

    def _search_index(self, k: int) -> Any:
        faiss = _faiss()
        if (
            self.use_gpu
            and k <= _GPU_MAX_K
            and hasattr(faiss, "StandardGpuResources")
            and faiss.get_num_gpus() > 0
        ):
            if getattr(self, "_gpu_index", None) is None or self._gpu_covered != (
                self._generation,
                self._covered,
            ):
                self._gpu_res = faiss.StandardGpuResources()
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._index)
                self._gpu_covered = (self._generation, self._covered)
            return self._gpu_index
        return self._index

    def _rows(self, ids: set[int]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        out: dict[int, dict[str, Any]] = {}
        id_list = sorted(ids)
        with self._lock:
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
        with self._lock:
            return self._db.execute(
                "SELECT d.id, s.path, f.frame_index, f.timestamp, d.x1, d.y1, d.x2, d.y2, "
                "d.score, d.embedding "
                "FROM detections d JOIN frames f ON d.frame_id = f.id JOIN sources s ON f.source_id = s.id "
                "ORDER BY d.id"
            ).fetchall()


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
