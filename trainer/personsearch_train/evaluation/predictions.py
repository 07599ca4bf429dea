"""The predictions file: any model's person-search output in one checked ``.npz``.

A predictions file lets the exact protocols of :mod:`personsearch_train.evaluation`
score a model without running it here (ours, an exported bundle, or another
project's). It is a NumPy ``.npz`` archive, written without pickles, holding:

=========================== ============ ==================================================
key                         shape, dtype meaning
=========================== ============ ==================================================
``gallery_names``           [G] str      gallery image names, the dataset's gallery order
                                         (CUHK-SYSU ``pool.mat``, PRW ``frame_test.mat``)
``det_offsets``             [G+1] int64  image ``g`` owns detection rows
                                         ``det_offsets[g]:det_offsets[g+1]``
``det_boxes``               [N, 4] f32   detections, ``xyxy`` pixels of the original image
``det_scores``              [N] f32      detection (person-ness) scores
``det_embeddings``          [N, D] f32   L2-normalised re-id embeddings (no CWS applied;
                                         the evaluator multiplies by the score itself)
``query_embeddings``        [Q, D] f32   L2-normalised embedding of every query box, the
                                         dataset's query order (``TestG50`` /
                                         ``query_info.txt``)
``query_context_offsets``   [Q+1] int64  optional, for CBGM: query ``q`` owns context rows
                                         ``query_context_offsets[q]:...[q+1]``
``query_context_boxes``     [M, 4] f32   optional: the query image processed as a gallery
                                         image, the query box forced first, the rest in
                                         descending score order
``query_context_embeddings`` [M, D] f32  optional: their L2-normalised embeddings (no CWS)
=========================== ============ ==================================================

The three ``query_context_*`` arrays come together or not at all. Everything is
checked on construction and on loading; a problem raises
:class:`~personsearch_train.errors.PredictionsFormatError` naming the key.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from personsearch_train.atomic_files import atomic_replace
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.errors import PredictionsFormatError

__all__ = ["EMBEDDING_NORM_TOLERANCE", "SearchPredictions"]

#: How far from 1 an embedding's L2 norm may be (allows float16 round trips).
EMBEDDING_NORM_TOLERANCE = 1e-2

_REQUIRED_KEYS = (
    "gallery_names",
    "det_offsets",
    "det_boxes",
    "det_scores",
    "det_embeddings",
    "query_embeddings",
)
_CONTEXT_KEYS = ("query_context_offsets", "query_context_boxes", "query_context_embeddings")


def _fail(source: str, key: str, problem: str) -> PredictionsFormatError:
    return PredictionsFormatError(f"{source}: '{key}' {problem}")


def _check_dtype(source: str, key: str, array: np.ndarray, dtype: type) -> None:
    if array.dtype != dtype:
        raise _fail(source, key, f"has dtype {array.dtype}, expected {np.dtype(dtype).name}")


def _check_finite(source: str, key: str, array: np.ndarray) -> None:
    if array.size and not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array).reshape(len(array), -1).all(axis=1))[0])
        raise _fail(source, key, f"holds NaN or infinite values (first in row {bad})")


def _check_offsets(source: str, key: str, offsets: np.ndarray, owners: int, rows: int, rows_key: str) -> None:
    _check_dtype(source, key, offsets, np.int64)
    if offsets.shape != (owners + 1,):
        raise _fail(
            source, key, f"has shape {offsets.shape}, expected ({owners + 1},) (one more than owners)"
        )
    if offsets[0] != 0:
        raise _fail(source, key, f"must start at 0, starts at {int(offsets[0])}")
    steps = np.diff(offsets)
    if np.any(steps < 0):
        raise _fail(source, key, f"must not decrease (decreases after position {int(np.argmax(steps < 0))})")
    if offsets[-1] != rows:
        raise _fail(
            source, key, f"ends at {int(offsets[-1])} but '{rows_key}' has {rows} rows; they must add up"
        )


def _check_boxes(source: str, key: str, boxes: np.ndarray, rows: int) -> None:
    _check_dtype(source, key, boxes, np.float32)
    if boxes.shape != (rows, 4):
        raise _fail(source, key, f"has shape {boxes.shape}, expected ({rows}, 4) xyxy")
    _check_finite(source, key, boxes)
    inverted = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if np.any(inverted):
        raise _fail(
            source, key, f"row {int(np.argmax(inverted))} has x2 < x1 or y2 < y1 (boxes must be xyxy)"
        )


def _check_embeddings(source: str, key: str, emb: np.ndarray, rows: int, dim: int | None) -> None:
    _check_dtype(source, key, emb, np.float32)
    if emb.ndim != 2 or emb.shape[0] != rows or (dim is not None and emb.shape[1] != dim):
        expected = f"({rows}, {dim if dim is not None else 'D'})"
        raise _fail(source, key, f"has shape {emb.shape}, expected {expected}")
    _check_finite(source, key, emb)
    if rows:
        norms = np.linalg.norm(emb.astype(np.float64), axis=1)
        off = np.abs(norms - 1.0) > EMBEDDING_NORM_TOLERANCE
        if np.any(off):
            i = int(np.argmax(off))
            raise _fail(
                source,
                key,
                f"row {i} has L2 norm {norms[i]:.4f}; embeddings must be L2-normalised "
                "(the evaluator applies score weighting itself)",
            )


@dataclass(frozen=True, eq=False)
class SearchPredictions:
    """A model's detections and embeddings for a person-search test split.

    Build it directly from the flat arrays (dtypes must already be exact) or, more
    simply, with :meth:`from_per_image`. All checks that need no dataset run on
    construction; :meth:`check_against` adds the ones that do.

    Attributes:
        gallery_names: ``[G]`` unicode str, gallery image names.
        det_offsets: ``[G+1]`` int64, image ``g`` owns rows ``det_offsets[g]:det_offsets[g+1]``.
        det_boxes: ``[N, 4]`` float32 ``xyxy`` pixels.
        det_scores: ``[N]`` float32 detection scores.
        det_embeddings: ``[N, D]`` float32, L2-normalised.
        query_embeddings: ``[Q, D]`` float32, L2-normalised, the dataset's query order.
        query_context_offsets: ``[Q+1]`` int64 or None (CBGM context, see module doc).
        query_context_boxes: ``[M, 4]`` float32 or None; row ``query_context_offsets[q]``
            is query ``q``'s own box.
        query_context_embeddings: ``[M, D]`` float32 or None, L2-normalised.
        source: Where the arrays came from, used in error messages.
    """

    gallery_names: np.ndarray
    det_offsets: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_embeddings: np.ndarray
    query_embeddings: np.ndarray
    query_context_offsets: np.ndarray | None = None
    query_context_boxes: np.ndarray | None = None
    query_context_embeddings: np.ndarray | None = None
    source: str = "predictions"

    def __post_init__(self) -> None:
        src = self.source
        names = np.asarray(self.gallery_names)
        if names.ndim != 1 or names.dtype.kind != "U":
            raise _fail(
                src, "gallery_names", f"must be a 1-D unicode string array, got {names.dtype} {names.shape}"
            )
        object.__setattr__(self, "gallery_names", names)
        unique, counts = np.unique(names, return_counts=True)
        if np.any(counts > 1):
            raise _fail(src, "gallery_names", f"lists {unique[np.argmax(counts > 1)]!r} more than once")
        num_dets = int(np.asarray(self.det_scores).shape[0]) if np.ndim(self.det_scores) >= 1 else -1
        _check_dtype(src, "det_scores", np.asarray(self.det_scores), np.float32)
        if np.ndim(self.det_scores) != 1:
            raise _fail(src, "det_scores", f"has shape {np.shape(self.det_scores)}, expected (N,)")
        _check_finite(src, "det_scores", self.det_scores)
        _check_offsets(src, "det_offsets", np.asarray(self.det_offsets), len(names), num_dets, "det_scores")
        _check_boxes(src, "det_boxes", np.asarray(self.det_boxes), num_dets)
        q = np.asarray(self.query_embeddings)
        if q.ndim != 2:
            raise _fail(src, "query_embeddings", f"has shape {q.shape}, expected (Q, D)")
        dim = int(q.shape[1])
        _check_embeddings(src, "query_embeddings", q, int(q.shape[0]), None)
        _check_embeddings(src, "det_embeddings", np.asarray(self.det_embeddings), num_dets, dim)
        context = [getattr(self, k) is not None for k in _CONTEXT_KEYS]
        if any(context) and not all(context):
            missing = [k for k, present in zip(_CONTEXT_KEYS, context, strict=True) if not present]
            raise _fail(src, missing[0], "is missing; the query_context_* arrays come together or not at all")
        if all(context):
            offsets = np.asarray(self.query_context_offsets)
            rows = int(np.shape(self.query_context_boxes)[0]) if np.ndim(self.query_context_boxes) else -1
            _check_offsets(src, "query_context_offsets", offsets, len(q), rows, "query_context_boxes")
            if len(q) and np.any(np.diff(offsets) < 1):
                first = int(np.argmax(np.diff(offsets) < 1))
                raise _fail(
                    src, "query_context_offsets", f"gives query {first} no rows (its own box must be row 0)"
                )
            _check_boxes(src, "query_context_boxes", np.asarray(self.query_context_boxes), rows)
            _check_embeddings(
                src, "query_context_embeddings", np.asarray(self.query_context_embeddings), rows, dim
            )

    # ------------------------------------------------------------------ sizes
    @property
    def num_gallery(self) -> int:
        """Number of gallery images ``G``."""
        return int(len(self.gallery_names))

    @property
    def num_queries(self) -> int:
        """Number of queries ``Q``."""
        return int(len(self.query_embeddings))

    @property
    def embedding_dim(self) -> int:
        """Embedding size ``D``."""
        return int(self.query_embeddings.shape[1])

    @property
    def has_query_context(self) -> bool:
        """Whether the CBGM query-context arrays are present."""
        return self.query_context_offsets is not None

    # ------------------------------------------------------------ construction
    @classmethod
    def from_per_image(
        cls,
        names: Sequence[str],
        boxes_list: Sequence[np.ndarray],
        scores_list: Sequence[np.ndarray],
        embeddings_list: Sequence[np.ndarray],
        query_embeddings: np.ndarray,
        *,
        query_context_boxes: Sequence[np.ndarray] | None = None,
        query_context_embeddings: Sequence[np.ndarray] | None = None,
        source: str = "predictions",
    ) -> SearchPredictions:
        """Build predictions from per-image lists (the usual model output).

        Args:
            names: ``G`` gallery image names (dataset gallery order).
            boxes_list: ``G`` arrays ``[n_g, 4]`` ``xyxy`` pixels (any float dtype).
            scores_list: ``G`` arrays ``[n_g]`` detection scores.
            embeddings_list: ``G`` arrays ``[n_g, D]`` L2-normalised embeddings.
            query_embeddings: ``[Q, D]`` L2-normalised query-box embeddings.
            query_context_boxes: Optional ``Q`` arrays ``[m_q, 4]``: the query image
                detected as a gallery image, query box first (CBGM).
            query_context_embeddings: Optional ``Q`` arrays ``[m_q, D]`` to match.
            source: Name used in error messages.

        Returns:
            The validated predictions, arrays cast to the file's dtypes.

        Raises:
            PredictionsFormatError: If the lists disagree in length or any check fails.
        """
        if not (len(names) == len(boxes_list) == len(scores_list) == len(embeddings_list)):
            raise PredictionsFormatError(
                f"{source}: {len(names)} names but {len(boxes_list)} box arrays, "
                f"{len(scores_list)} score arrays and {len(embeddings_list)} embedding arrays; "
                "give one of each per gallery image"
            )
        query_embeddings = np.asarray(query_embeddings, dtype=np.float32)
        dim = int(query_embeddings.shape[1]) if query_embeddings.ndim == 2 else 0
        counts = [len(np.asarray(s).reshape(-1)) for s in scores_list]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

        def stack(parts: Sequence[np.ndarray], width: int) -> np.ndarray:
            if not parts:
                return np.zeros((0, width), dtype=np.float32)
            return np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1, width) for p in parts], axis=0)

        context: dict[str, np.ndarray | None] = dict.fromkeys(_CONTEXT_KEYS)
        if query_context_boxes is not None or query_context_embeddings is not None:
            if query_context_boxes is None or query_context_embeddings is None:
                raise PredictionsFormatError(
                    f"{source}: give both query_context_boxes and query_context_embeddings, or neither"
                )
            if len(query_context_boxes) != len(query_context_embeddings):
                raise PredictionsFormatError(
                    f"{source}: {len(query_context_boxes)} query-context box arrays but "
                    f"{len(query_context_embeddings)} embedding arrays"
                )
            ctx_counts = [len(np.asarray(b).reshape(-1, 4)) for b in query_context_boxes]
            context = {
                "query_context_offsets": np.concatenate([[0], np.cumsum(ctx_counts)]).astype(np.int64),
                "query_context_boxes": stack(query_context_boxes, 4),
                "query_context_embeddings": stack(query_context_embeddings, dim),
            }
        return cls(
            gallery_names=np.asarray([str(n) for n in names], dtype=str),
            det_offsets=offsets,
            det_boxes=stack(boxes_list, 4),
            det_scores=np.concatenate([np.asarray(s, dtype=np.float32).reshape(-1) for s in scores_list])
            if scores_list
            else np.zeros(0, dtype=np.float32),
            det_embeddings=stack(embeddings_list, dim),
            query_embeddings=query_embeddings,
            source=source,
            **context,
        )

    # ----------------------------------------------------------------- access
    def image_slice(self, g: int) -> slice:
        """Rows of gallery image ``g`` in the ``det_*`` arrays."""
        return slice(int(self.det_offsets[g]), int(self.det_offsets[g + 1]))

    def query_context(self, q: int) -> tuple[np.ndarray, np.ndarray]:
        """CBGM context of query ``q``.

        Returns:
            ``([m, 4] float32 boxes, [m, D] float32 embeddings)``; row 0 is the query.

        Raises:
            PredictionsFormatError: If the file has no query-context arrays.
        """
        if not self.has_query_context:
            raise PredictionsFormatError(
                f"{self.source}: CBGM needs the query_context_* arrays, which this predictions file lacks; "
                "produce them by running the query images as gallery images with the query box forced first"
            )
        rows = slice(int(self.query_context_offsets[q]), int(self.query_context_offsets[q + 1]))
        return self.query_context_boxes[rows], self.query_context_embeddings[rows]

    def check_against(self, split: PersonSearchSplit) -> None:
        """Check that these predictions belong to ``split``.

        Every name must be a gallery image of the split, every gallery image of the
        split must be present (an image with no detections simply owns zero rows),
        and there must be one query embedding per query.

        Args:
            split: The test split the predictions are scored against.

        Raises:
            PredictionsFormatError: Naming the first offending image or the counts.
        """
        known = split.image_index()
        unknown = [str(n) for n in self.gallery_names if str(n) not in known]
        if unknown:
            raise _fail(
                self.source,
                "gallery_names",
                f"holds {len(unknown)} names that are not gallery images of {split.dataset} {split.split} "
                f"(first: {unknown[0]!r}); was it made for another dataset or split?",
            )
        present = {str(n) for n in self.gallery_names}
        missing = [r.name for r in split.images if r.name not in present]
        if missing:
            raise _fail(
                self.source,
                "gallery_names",
                f"lacks {len(missing)} of the {len(split.images)} gallery images of {split.dataset} "
                f"(first: {missing[0]!r}); list every image, with zero detections where there are none",
            )
        if self.num_queries != len(split.queries):
            raise _fail(
                self.source,
                "query_embeddings",
                f"has {self.num_queries} rows but {split.dataset} {split.split} has "
                f"{len(split.queries)} queries",
            )

    def aligned_to(self, split: PersonSearchSplit) -> SearchPredictions:
        """Return these predictions with gallery images reordered to ``split.images``.

        Args:
            split: The split whose image order to follow (checked with :meth:`check_against`).

        Returns:
            Predictions whose image ``g`` is ``split.images[g]``.
        """
        self.check_against(split)
        position = {str(n): g for g, n in enumerate(self.gallery_names)}
        order = np.asarray([position[r.name] for r in split.images], dtype=np.int64)
        if np.array_equal(order, np.arange(len(order))):
            return self
        starts, ends = self.det_offsets[order], self.det_offsets[order + 1]
        lengths = ends - starts
        rows = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))
        return SearchPredictions(
            gallery_names=self.gallery_names[order],
            det_offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            det_boxes=self.det_boxes[rows],
            det_scores=self.det_scores[rows],
            det_embeddings=self.det_embeddings[rows],
            query_embeddings=self.query_embeddings,
            query_context_offsets=self.query_context_offsets,
            query_context_boxes=self.query_context_boxes,
            query_context_embeddings=self.query_context_embeddings,
            source=self.source,
        )

    # ---------------------------------------------------------------- file io
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the predictions atomically (temporary file, fsync, rename).

        Args:
            path: Destination ``.npz`` path; its folder is created if needed.

        Returns:
            The path written.
        """
        path = Path(path)
        arrays = {key: getattr(self, key) for key in _REQUIRED_KEYS}
        if self.has_query_context:
            arrays.update({key: getattr(self, key) for key in _CONTEXT_KEYS})
        # Through a handle: given a name, np.savez would append ".npz" to the temporary one.
        with atomic_replace(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchPredictions:
        """Read and validate a predictions file.

        Args:
            path: An ``.npz`` written by :meth:`save` (or by any tool following the format).

        Returns:
            The validated predictions.

        Raises:
            PredictionsFormatError: Missing file, not an npz, pickled arrays, missing or
                unknown keys, or any failed check (the message names the key).
        """
        path = Path(path)
        if not path.is_file():
            raise PredictionsFormatError(f"{path}: predictions file not found")
        source = str(path)
        if not zipfile.is_zipfile(path):
            raise PredictionsFormatError(f"{path}: not a readable .npz archive (not a zip file)")
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = set(archive.files)
                missing = [k for k in _REQUIRED_KEYS if k not in keys]
                if missing:
                    raise _fail(
                        source, missing[0], f"is missing (required keys: {', '.join(_REQUIRED_KEYS)})"
                    )
                unknown = sorted(keys - set(_REQUIRED_KEYS) - set(_CONTEXT_KEYS))
                if unknown:
                    raise _fail(source, unknown[0], "is not a key of the predictions format (a misspelling?)")
                arrays = {k: archive[k] for k in keys}
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise PredictionsFormatError(f"{path}: not a readable .npz archive ({exc})") from None
        except ValueError as exc:
            # np.load refuses object arrays when allow_pickle=False.
            raise PredictionsFormatError(
                f"{path}: holds pickled (object) arrays, which are not allowed; store names as a unicode "
                f"string array ({exc})"
            ) from None
        return cls(source=source, **arrays)
