"""``PersonSearcher``: detect and embed people in images and videos, index them, query a gallery.

Typical use::

    searcher = PersonSearcher(bundle="model_bundle", backend="ort", device="cpu", batch_size=4)
    with GalleryIndex.open_for_bundle("my_gallery", searcher.bundle) as gallery:
        summary = searcher.index(gallery, ["cams/*.mp4", "stills/"], every_nth_frame=5)
        hits = searcher.search_crop(gallery, cv2.imread("suspect.jpg"), top_k=10)
        hits = searcher.search_text(gallery, "a woman in a red coat with a black backpack")

With a bundle exported with ``--text-checkpoint`` every detected person is also cut out
of the frame and embedded by the ``crop_encoder`` (:mod:`personsearch_runtime.text_search`),
and the gallery stores that embedding beside the re-id one, so sentences can search it.

Images go through the bundle's preprocessing (resize, normalise, pad), are detected in
batches, and every box comes back in the original image's pixels.

Arguments are checked before any model runs: images must be decoded 8-bit images
([H, W, 3] uint8 BGR as OpenCV returns them), query crops and query boxes at least
``MIN_QUERY_SIDE`` pixels on a side, boxes finite with x1 < x2 and y1 < y2 and
overlapping the image, ``top_k`` a whole number >= 1. Anything else raises
``InputError`` (a ``ValueError`` and a ``PersonSearchError``) naming the argument, what
was given and what is expected.
"""

from __future__ import annotations

import importlib.util
import numbers
import os
import sys
import time
import warnings
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from personsearch_runtime.backends import create_backend
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.detection import BatchDetections, OneGraphDetector, SplitDetector, l2_normalize
from personsearch_runtime.errors import PersonSearchError, SourceError
from personsearch_runtime.preprocess import (
    MIN_QUERY_SIDE,
    InputError,
    PreparedImage,
    as_bgr_image,
    batch_images,
    prepare_image,
    to_original,
    to_resized,
)
from personsearch_runtime.results import Detections, SearchHit
from personsearch_runtime.sources import Frame, FrameReader, expand_sources
from personsearch_runtime.text_search import (
    SentenceEncoder,
    combine_sentence_embeddings,
    crop_person_boxes,
    integer_crop_boxes,
)

__all__ = [
    "PIPELINES",
    "MIN_QUERY_SIDE",
    "IndexSummary",
    "InputError",
    "Installed",
    "NoPersonFoundError",
    "PersonSearcher",
    "PipelineChoice",
    "SlowPathWarning",
    "choose_pipeline",
    "pipeline_for_bundle",
]

PIPELINES = ("auto", "detector", "split")
#: The graphs (or engines) of the split path, in the order they run.
SPLIT_ROLES = ("backbone_rpn", "box_head", "reid_head")


class NoPersonFoundError(PersonSearchError):
    """The query image contains no detectable person."""


class SlowPathWarning(UserWarning):
    """A pipeline was asked for that copies every stage through the host on the GPU."""


@dataclass(frozen=True)
class Installed:
    """The optional packages the GPU split path needs.

    Attributes:
        cupy: CuPy (device arrays, NMS and box decoding between the stages).
        cuda_python: cuda-python (NVRTC compiles our RoIAlign kernel).
        roi_align_source: The kernel source that ``personsearch_ops`` ships.
    """

    cupy: bool
    cuda_python: bool
    roi_align_source: bool

    @classmethod
    def probe(cls) -> Installed:
        """Look the packages up without importing them (nothing loads CUDA)."""
        from personsearch_runtime.gpu.roi_align_kernel import KernelError, kernel_source_path

        try:
            kernel_source_path()
            source = True
        except KernelError:
            source = False
        return cls(
            cupy=_has_module("cupy"), cuda_python=_has_module("cuda.bindings"), roi_align_source=source
        )

    def missing_for_split(self) -> list[str]:
        """What the device split path lacks here, as phrases for a message (empty when nothing)."""
        missing = []
        if not self.cupy:
            missing.append("CuPy")
        if not self.cuda_python:
            missing.append("cuda-python")
        if not self.roi_align_source:
            missing.append("the RoIAlign kernel source from personsearch_ops")
        return missing


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is absent
        return False
    except ValueError:  # already imported without a spec (a stand-in module): it is there
        return name in sys.modules


def normalize_device(device: str) -> str:
    """Return ``"cpu"`` or ``"cuda:N"`` for a ``--device`` value.

    Raises:
        InputError: Anything else.
    """
    if not isinstance(device, str):
        raise InputError(f"device must be a string (cpu, cuda or cuda:N), got {device!r}")
    kind, _, index = device.partition(":")
    if kind == "cpu" and not index:
        return "cpu"
    if kind == "cuda" and (not index or index.isdigit()):
        return f"cuda:{int(index or 0)}"
    raise InputError(f"unknown device {device!r}; use cpu, cuda or cuda:N")


@dataclass(frozen=True)
class PipelineChoice:
    """Which detection path runs, and why.

    Attributes:
        path: ``"detector"`` (one graph) or ``"split"`` (backbone_rpn -> RoIAlign -> heads).
        reason: Why this path, as a phrase for the user.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda:N"``.
        warning: Set when the path is slow here and was only taken because it was asked for.
    """

    path: str
    reason: str
    backend: str
    device: str
    warning: str | None = None

    @property
    def io_binding(self) -> bool:
        """True when ONNX Runtime runs the one graph with inputs and outputs bound on the GPU."""
        return self.path == "detector" and self.backend == "ort" and self.device != "cpu"

    def line(self) -> str:
        """One line for ``bench`` and ``info``, e.g. ``pipeline: one-graph (detector.onnx) ...``."""
        ext = ".plan" if self.backend == "trt" else ".onnx"
        if self.path == "detector":
            what = f"one-graph (detector{ext})" + (" with IOBinding" if self.io_binding else "")
        else:
            pool = "our RoIAlign kernel" if self.device != "cpu" else "the numpy reference RoIAlign"
            what = f"split (backbone_rpn{ext} -> {pool} -> box_head{ext}, reid_head{ext})"
            if self.device != "cpu" and self.backend == "ort":
                what += " through the host"
        return f"pipeline: {what} on {self.device} - {self.reason}"

    def describe(self) -> list[str]:
        """The path line, and a ``warning:`` line when there is a warning."""
        return [self.line()] + ([f"warning: {self.warning}"] if self.warning else [])


def choose_pipeline(
    *,
    backend: str,
    device: str,
    requested: str = "auto",
    has_split_graphs: bool,
    engines: Collection[str] = (),
    installed: Installed,
) -> PipelineChoice:
    """Choose the detection path; pure, so it is testable without a GPU.

    The split path pays off only where every stage stays on the device: TensorRT engines
    reading and writing CuPy memory, with our RoIAlign kernel between them. ONNX Runtime
    has no such hand-off here, so its split path copies every stage's inputs and outputs
    through the host; on the GPU ONNX Runtime therefore runs the one graph with IOBinding.
    An explicit ``requested`` path is honoured (a slow one with a warning) or refused
    with the reason when it cannot run at all.

    Args:
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        requested: ``"auto"``, ``"detector"`` or ``"split"`` (the user's ``--pipeline``).
        has_split_graphs: The bundle has ``backbone_rpn``, ``box_head`` and ``reid_head``.
        engines: Roles whose TensorRT engine (``ROLE.plan``) exists; used for ``trt`` only.
        installed: What the device split path needs and is installed.

    Returns:
        The path with its reason (and a warning for an explicit slow choice).

    Raises:
        PersonSearchError: Unknown backend, device or pipeline; TensorRT on the CPU; the
            split path asked for where it cannot run.
    """
    if backend not in ("ort", "trt"):
        raise InputError(f"unknown backend {backend!r}; use ort or trt")
    if requested not in PIPELINES:
        raise InputError(f"pipeline must be one of {', '.join(PIPELINES)}, got {requested!r}")
    device = normalize_device(device)
    on_gpu = device != "cpu"
    if backend == "trt" and not on_gpu:
        raise PersonSearchError("the TensorRT backend runs on --device cuda only")
    if requested == "detector":
        return PipelineChoice("detector", "asked for with --pipeline detector", backend, device)
    if requested == "split":
        if not has_split_graphs:
            raise PersonSearchError("the bundle has no split graphs; use --pipeline detector or auto")
        missing = installed.missing_for_split() if on_gpu else []
        if missing:
            raise PersonSearchError(
                f"--pipeline split on {device} needs {', '.join(missing)}, which "
                f'{"is" if len(missing) == 1 else "are"} not installed; pip install "personsearch[gpu]" '
                "(or use --pipeline detector)"
            )
        warning = None
        if on_gpu and backend == "ort":
            warning = (
                f"--pipeline split with ONNX Runtime on {device} copies every stage's inputs and outputs "
                "through the host; it is for checking the split graphs, not for speed - use --pipeline "
                "auto (one graph with IOBinding) or --backend trt"
            )
        return PipelineChoice("split", "asked for with --pipeline split", backend, device, warning)
    if not on_gpu:
        return PipelineChoice(
            "detector",
            "on the CPU one ONNX Runtime session runs the whole detector (the split path is for the GPU)",
            backend,
            device,
        )
    if backend == "ort":
        return PipelineChoice(
            "detector", "ORT's split path would copy each stage through the host", backend, device
        )
    blockers = []
    if not has_split_graphs:
        blockers.append("the bundle has no split graphs")
    else:
        absent = [f"{role}.plan" for role in SPLIT_ROLES if role not in engines]
        if absent:
            blockers.append(f"{', '.join(absent)} not built (personsearch build-engine)")
    missing = installed.missing_for_split()
    if missing:
        blockers.append(f"{', '.join(missing)} not installed")
    if blockers:
        return PipelineChoice(
            "detector", f"the all-device split path is unavailable: {'; '.join(blockers)}", backend, device
        )
    return PipelineChoice(
        "split",
        "every stage stays on the device (TensorRT engines and our kernel on one non-blocking stream)",
        backend,
        device,
    )


def pipeline_for_bundle(
    bundle: Bundle,
    *,
    backend: str,
    device: str,
    requested: str = "auto",
    engine_dir: str | os.PathLike[str] | None = None,
    installed: Installed | None = None,
) -> PipelineChoice:
    """``choose_pipeline`` for a bundle: looks up its split graphs and built engines.

    Args:
        bundle: The loaded bundle.
        backend: ``"ort"`` or ``"trt"``.
        device: ``"cpu"`` or ``"cuda[:N]"``.
        requested: The user's ``--pipeline``.
        engine_dir: Where ``ROLE.plan`` engines are (``BUNDLE/engines`` by default).
        installed: What is installed (probed when None).
    """
    folder = Path(engine_dir) if engine_dir else bundle.root / "engines"
    engines = {role for role in bundle.manifest.models if (folder / f"{role}.plan").is_file()}
    return choose_pipeline(
        backend=backend,
        device=device,
        requested=requested,
        has_split_graphs=bundle.manifest.has_split,
        engines=engines,
        installed=installed if installed is not None else Installed.probe(),
    )


@dataclass(frozen=True)
class IndexSummary:
    """What one indexing run did.

    Attributes:
        sources: Files given (after expanding folders and globs).
        already_done: Sources skipped because an earlier run finished them.
        frames: Frames detected and stored in this run.
        detections: Detections stored in this run.
        skipped: (path, reason) of unreadable files.
        seconds: Wall time of the run.
        bad_frames: (path, reason) of videos whose frames were partly undecodable (the
            reason names the frames; the others were indexed).
    """

    sources: int
    already_done: int
    frames: int
    detections: int
    skipped: tuple[tuple[str, str], ...] = field(default=())
    seconds: float = 0.0
    bad_frames: tuple[tuple[str, str], ...] = field(default=())

    @property
    def frames_per_second(self) -> float:
        """Frames per wall-clock second."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class PersonSearcher:
    """Detection, embedding and search with one bundle.

    Args:
        bundle: A ``Bundle`` or its directory.
        backend: ``"ort"`` (ONNX Runtime) or ``"trt"`` (TensorRT engines in ``engine_dir``).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        batch_size: Frames per detector call.
        pipeline: ``"detector"`` (one graph), ``"split"`` (backbone_rpn -> RoIAlign -> heads)
            or ``"auto"`` (see ``choose_pipeline``: split only with TensorRT engines on the
            GPU, where every stage stays on the device; the one graph otherwise, with
            IOBinding for ONNX Runtime on the GPU). ``pipeline_choice`` says which and why.
        engine_dir: Where TensorRT engines ``ROLE.plan`` (+ ``ROLE.plan.json``) are;
            ``BUNDLE/engines`` by default.
        intra_op_threads: ONNX Runtime threads per session (0 = ORT default).
        text_embeddings: Also embed every detected person with the bundle's crop encoder
            (``Detections.text_embeddings``; what sentence search needs). None: whenever
            the bundle has the text graphs.
        text_int8: Encode sentences with the bundle's int8 CPU variant of the text
            encoder (``text.int8_file``, exported with ``--text-int8``). None: whenever
            the bundle has one and ONNX Runtime runs on the CPU; False: always the float
            graph. Crops always go through the float crop encoder.
    """

    def __init__(
        self,
        *,
        bundle: Bundle | str | os.PathLike[str],
        backend: str = "ort",
        device: str = "cpu",
        batch_size: int = 4,
        pipeline: str = "auto",
        engine_dir: str | os.PathLike[str] | None = None,
        intra_op_threads: int = 0,
        text_embeddings: bool | None = None,
        text_int8: bool | None = None,
    ) -> None:
        if not isinstance(bundle, (Bundle, str, os.PathLike)):
            raise InputError(
                f"bundle is a {type(bundle).__name__}; expected a Bundle or the path of the folder "
                "'personsearch export' wrote"
            )
        batch_size = _whole_number(batch_size, "batch_size (--batch)", minimum=1)
        intra_op_threads = _whole_number(intra_op_threads, "intra_op_threads", minimum=0)
        if engine_dir is not None and not isinstance(engine_dir, (str, os.PathLike)):
            raise InputError(f"engine_dir is a {type(engine_dir).__name__}; expected a folder path or None")
        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.manifest = self.bundle.manifest
        self.backend = backend
        self.device = device
        self.engine_dir = Path(engine_dir) if engine_dir else self.bundle.root / "engines"
        self.intra_op_threads = intra_op_threads
        # Never exceed the largest batch the bundle declares (an engine profile's max).
        detector = self.manifest.models["detector"]
        batch_dim = detector.inputs[0].shape[0]
        max_batch = detector.dim(batch_dim).max if isinstance(batch_dim, str) else int(batch_dim)
        self.batch_size = min(batch_size, max_batch)
        self.pipeline_choice = pipeline_for_bundle(
            self.bundle, backend=backend, device=device, requested=pipeline, engine_dir=self.engine_dir
        )
        if self.pipeline_choice.warning:
            warnings.warn(self.pipeline_choice.warning, SlowPathWarning, stacklevel=2)
        self.pipeline = self.pipeline_choice.path
        self._detector = self._make_detector()
        self._query_encoder: Any = None
        self._sentence_encoder: SentenceEncoder | None = None
        self._device_cropper: Any = None  # GPU crops, made on first use on a CUDA device
        if text_embeddings and not self.manifest.has_text:
            raise InputError(
                f"text_embeddings=True needs a bundle with the text encoder; {self.bundle.root} has none "
                "(export with --text-checkpoint)"
            )
        self.text_embeddings = self.manifest.has_text if text_embeddings is None else bool(text_embeddings)
        int8_file = self.manifest.text.int8_file if self.manifest.text is not None else None
        on_cpu_ort = backend == "ort" and device == "cpu"
        if text_int8 and (int8_file is None or not on_cpu_ort):
            raise InputError(
                "text_int8=True needs a bundle exported with --text-int8 and ONNX Runtime on the CPU; "
                f"{self.bundle.root} {'has no int8 text encoder' if int8_file is None else 'runs elsewhere'}"
            )
        #: The int8 text encoder file used for sentences, or None for the float graph.
        self.text_int8_file = (
            self.bundle.root / int8_file
            if int8_file is not None and on_cpu_ort and text_int8 is not False
            else None
        )

    # ---- construction ---------------------------------------------------------------------------

    def _stage(self, role: str) -> Any:
        if self.backend == "trt":
            return create_backend(
                "trt",
                self.engine_dir / f"{role}.plan",
                onnx_sha256=self.manifest.models[role].sha256,
                device=self.device,
            )
        if self.backend != "ort":
            raise PersonSearchError(f"unknown backend {self.backend!r}; use ort or trt")
        return create_backend(
            "ort", self.bundle.model_path(role), device=self.device, intra_op_threads=self.intra_op_threads
        )

    def _make_detector(self) -> Any:
        if self.pipeline == "detector":
            return OneGraphDetector(manifest=self.manifest, stage=self._stage("detector"))
        stages = {role: self._stage(role) for role in SPLIT_ROLES}
        if self.device.startswith("cuda"):
            from personsearch_runtime.gpu.device_pipeline import device_split_detector

            return device_split_detector(manifest=self.manifest, stages=stages, device=self.device)
        return SplitDetector(manifest=self.manifest, stages=stages)

    @property
    def sentence_encoder(self) -> SentenceEncoder:
        """The bundle's text and crop encoders (loaded on first use).

        Raises:
            BundleError: The bundle has no text graphs (the message says how to export them).
        """
        if self._sentence_encoder is None:
            self._sentence_encoder = SentenceEncoder(self.bundle, self._text_stage)
        return self._sentence_encoder

    def _text_stage(self, role: str) -> Any:
        if role == "text_encoder" and self.text_int8_file is not None:
            return create_backend(
                "ort", self.text_int8_file, device=self.device, intra_op_threads=self.intra_op_threads
            )
        return self._stage(role)

    # ---- detection --------------------------------------------------------------------------------

    def detect_prepared(self, prepared: Sequence[PreparedImage]) -> list[BatchDetections]:
        """Detect in already prepared images (one padded batch); boxes in fed-image pixels.

        Raises:
            InputError: ``prepared`` is empty or holds something that is not a ``PreparedImage``.
        """
        if not prepared or not all(isinstance(p, PreparedImage) for p in prepared):
            kinds = sorted({type(p).__name__ for p in prepared or ()})
            got = f"a list of {', '.join(kinds)}" if kinds else repr(prepared)
            raise InputError(
                f"prepared is {got}; expected a non-empty list of PreparedImage (from prepare_image)"
            )
        batch = batch_images(prepared, self.manifest.preprocessing)
        # Clip boxes to each image inside the padding, as the trainer's model does.
        image_sizes = np.array([p.size for p in prepared], dtype=np.float32)
        return self._detector(batch, image_sizes)

    def detect(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detect people in decoded images.

        Args:
            images: A list of [H, W, 3] uint8 BGR images (any sizes; batched ``batch_size``
                at a time), or one [B, H, W, 3] uint8 array.

        Returns:
            One ``Detections`` per image (source ``"<memory>"``, frame index = position).

        Raises:
            InputError: ``images`` is not a list of images (a single [H, W, 3] image must be
                wrapped: ``detect([image])``), or one of them is not an 8-bit image.
        """
        if images is None or isinstance(images, (str, bytes, os.PathLike)):
            raise InputError(
                f"images is {images!r}; expected a list of decoded [H, W, 3] uint8 BGR images (to index "
                "files, use PersonSearcher.index)"
            )
        if isinstance(images, np.ndarray) and images.ndim != 4:
            # Iterating one [H, W, 3] image would detect in each of its rows as a grayscale image.
            raise InputError(
                f"images is one array of shape {tuple(images.shape)}; expected a list of [H, W, 3] images "
                "or a [B, H, W, 3] array: wrap a single image as detect([image])"
            )
        # Check everything before the first batch runs, so a bad last image costs no work.
        checked = [as_bgr_image(image, f"images[{i}]") for i, image in enumerate(images)]
        frames = [Frame("<memory>", i, None, image) for i, image in enumerate(checked)]
        return list(self.detect_frames(frames))

    def detect_frames(self, frames: Iterable[Frame]) -> Iterator[Detections]:
        """Detect people in a stream of frames, ``batch_size`` frames per call, in order."""
        for chunk in _chunks(frames, self.batch_size):
            yield from self._detect_chunk(chunk)

    def _detect_chunk(self, chunk: Sequence[Frame]) -> list[Detections]:
        spec = self.manifest.preprocessing
        prepared = [prepare_image(f.image, spec) for f in chunk]
        raw = self.detect_prepared(prepared)
        boxes = [to_original(det.boxes, image) for det, image in zip(raw, prepared, strict=True)]
        text = self._crop_embeddings(chunk, boxes) if self.text_embeddings else [None] * len(chunk)
        out = []
        for frame, image, det, frame_boxes, frame_text in zip(chunk, prepared, raw, boxes, text, strict=True):
            out.append(
                Detections(
                    source=frame.source,
                    frame_index=frame.frame_index,
                    timestamp=frame.timestamp,
                    image_size=image.original_size,
                    boxes=frame_boxes,
                    scores=det.scores.astype(np.float32),
                    embeddings=det.embeddings.astype(np.float32),
                    text_embeddings=frame_text,
                )
            )
        return out

    def _crop_embeddings(self, chunk: Sequence[Frame], boxes: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Crop-encoder embeddings of every detection of a chunk, all crops in shared batches."""
        encoder = self.sentence_encoder
        size = encoder.spec.crop_size
        cropper = self._gpu_cropper()
        if cropper is not None:
            # On the GPU each frame goes up once and its people are cut out there.
            import cupy

            crops = cupy.concatenate(
                [
                    cropper(frame.image, integer_crop_boxes(b, *frame.image.shape[:2]), size)
                    for frame, b in zip(chunk, boxes, strict=True)
                ]
            )
        else:
            crops = np.concatenate(
                [crop_person_boxes(frame.image, b, size) for frame, b in zip(chunk, boxes, strict=True)]
            )
        return np.split(encoder.embed_crops(crops), np.cumsum([len(b) for b in boxes])[:-1])

    # ---- query embeddings -------------------------------------------------------------------------

    def embed_boxes(self, image_bgr: np.ndarray, boxes: np.ndarray, *, min_side: float = 0.0) -> np.ndarray:
        """Embed given boxes of one image with the query encoder.

        A box may reach past the image's edge (the encoder samples zeros there, as the
        trainer's ``embed_boxes`` does); it must overlap the image.

        Args:
            image_bgr: [H, W, 3] uint8 BGR image.
            boxes: [M, 4] (or one [4]) float xyxy in the image's pixels; M may be 0.
            min_side: Smallest accepted box width and height inside the image, in pixels.

        Returns:
            [M, D] float32 L2-normalised embeddings.

        Raises:
            InputError: The image is not an 8-bit image, or a box is not finite, has
                x2 <= x1 or y2 <= y1, lies outside the image or is below ``min_side``.
        """
        image_bgr = as_bgr_image(image_bgr, "image_bgr")
        height, width = image_bgr.shape[:2]
        boxes = _check_boxes(boxes, height, width, min_side=min_side)
        if not len(boxes):
            return np.zeros((0, self.manifest.embedding.dim), np.float32)
        if self._query_encoder is None:
            self._query_encoder = self._stage("query_encoder")
        spec = self.manifest.models["query_encoder"]
        image = prepare_image(image_bgr, self.manifest.preprocessing)
        tensor = batch_images([image], self.manifest.preprocessing).astype(spec.inputs[0].dtype)
        resized = to_resized(boxes, image)
        m_symbol = spec.inputs[1].shape[0]
        cap = spec.dim(m_symbol).max if isinstance(m_symbol, str) else int(m_symbol)
        parts = []
        for start in range(0, len(resized), cap):
            out = self._query_encoder.run(
                {spec.inputs[0].name: tensor, spec.inputs[1].name: resized[start : start + cap]}
            )
            parts.append(np.asarray(out[spec.outputs[0].name], np.float32))
        return l2_normalize(np.concatenate(parts))

    def embed_crop(self, crop_bgr: np.ndarray, *, require_person: bool = True) -> np.ndarray:
        """Embed a person crop (the whole crop is the box).

        Args:
            crop_bgr: [H, W, 3] uint8 BGR crop of one person, at least ``MIN_QUERY_SIDE``
                pixels on each side.
            require_person: First check with the detector that the crop shows a person.

        Returns:
            [1, D] float32.

        Raises:
            InputError: The crop is not an 8-bit image or is smaller than ``MIN_QUERY_SIDE``.
            NoPersonFoundError: ``require_person`` and the detector finds nobody.
        """
        crop_bgr = as_bgr_image(crop_bgr, "crop_bgr", min_side=MIN_QUERY_SIDE)
        if require_person and not len(self.detect([crop_bgr])[0]):
            raise NoPersonFoundError(
                "no person was found in the query image; give a crop that shows one person, or a full frame "
                "with --frame F --box x1,y1,x2,y2"
            )
        height, width = crop_bgr.shape[:2]
        return self.embed_boxes(crop_bgr, np.array([[0, 0, width, height]], np.float32))

    # ---- gallery ------------------------------------------------------------------------------------

    def index(
        self,
        gallery: Any,
        sources: Sequence[str | os.PathLike[str]],
        *,
        every_nth_frame: int = 1,
        progress: bool = False,
    ) -> IndexSummary:
        """Detect, embed and store every frame of ``sources`` in ``gallery``; resumable.

        Each batch of frames is committed in one transaction together with the resume
        point of its sources, so an interrupted run keeps everything committed and the
        next run with the same sources continues after the last committed frame.

        Args:
            gallery: A writable ``GalleryIndex`` built for this bundle.
            sources: Files, folders and globs (one path alone is accepted too).
            every_nth_frame: Keep every n-th frame of videos.
            progress: Show a tqdm progress bar (frames and frames/s) on stderr.

        Returns:
            What was done.

        Raises:
            InputError: ``gallery`` is not a gallery, ``sources`` is empty or not paths,
                ``every_nth_frame`` is not a whole number >= 1.
            GalleryError: The gallery was built with another model or indexed at another
                ``every_nth_frame``.
        """
        _check_gallery(gallery)
        if isinstance(sources, (str, os.PathLike)):
            # A bare string would otherwise be read as a list of one-character paths ("/" first).
            sources = [sources]
        expected = "expected a non-empty list of image/video files, folders or globs"
        if not isinstance(sources, Iterable):
            raise InputError(f"sources is {sources!r}; {expected}")
        sources = list(sources)
        if not sources:
            raise InputError(f"sources is empty; {expected}")
        for i, source in enumerate(sources):
            if not isinstance(source, (str, os.PathLike)):
                raise InputError(f"sources[{i}] is {source!r}, not a path; {expected}")
        every_nth_frame = _whole_number(every_nth_frame, "every_nth_frame (--every-nth-frame)", minimum=1)
        gallery.check_bundle(self.bundle)
        if self.text_embeddings or getattr(gallery, "has_text", False):
            self._check_text_indexing(gallery)
        # One gallery never mixes frame strides, whoever calls (the first run records it).
        gallery.check_settings(every_nth_frame=every_nth_frame)
        files = expand_sources(sources)
        resume = {str(f): gallery.resume_point(str(f)) for f in files}
        already = sum(1 for v in resume.values() if v < 0)
        reader = FrameReader(files, every_nth_frame=every_nth_frame, start_frame=lambda s: resume.get(s, 0))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit="frame", desc="indexing", dynamic_ncols=True)
        started = time.perf_counter()
        frames = detections = 0
        try:
            for chunk in _chunks(reader, self.batch_size):
                dets = self._detect_chunk(chunk)
                gallery.add(dets, finished=[f.source for f in chunk if f.is_last])
                frames += len(chunk)
                detections += sum(len(d) for d in dets)
                if bar is not None:
                    bar.update(len(chunk))
                    bar.set_postfix(detections=detections)
        finally:
            if bar is not None:
                bar.close()
            reader.close()
        gallery.save()
        # Only a run that could read nothing and finds nothing indexed before is an error; a
        # re-index of a folder that is already done, with one unreadable file, has nothing new.
        started_before = sum(1 for v in resume.values() if v != 0)
        if (
            not frames
            and not started_before
            and reader.stats.skipped
            and len(reader.stats.skipped) == len(files)
        ):
            raise SourceError(
                f"none of the {len(files)} source(s) could be read ({reader.stats.skipped[0][0]}: "
                f"{reader.stats.skipped[0][1]}, ...)"
            )
        return IndexSummary(
            sources=len(files),
            already_done=already,
            frames=frames,
            detections=detections,
            skipped=tuple(reader.stats.skipped),
            seconds=time.perf_counter() - started,
            bad_frames=tuple(reader.stats.bad_frames),
        )

    def search_crop(
        self,
        gallery: Any,
        crop_bgr: np.ndarray,
        *,
        top_k: int = 10,
        score_weighted: bool = False,
        require_person: bool = True,
    ) -> list[SearchHit]:
        """Search ``gallery`` for the person in a crop; best hit first.

        Args:
            gallery: A ``GalleryIndex`` built for this bundle.
            crop_bgr: [H, W, 3] uint8 BGR crop of one person, at least ``MIN_QUERY_SIDE``
                pixels on each side.
            top_k: How many hits to return (a whole number >= 1).
            score_weighted: Rank by similarity x detection score.
            require_person: Refuse a crop in which the detector finds nobody.

        Returns:
            Up to ``top_k`` hits, best first.

        Raises:
            InputError: Bad ``gallery``, ``crop_bgr`` or ``top_k`` (see ``embed_crop``).
            NoPersonFoundError: ``require_person`` and the detector finds nobody in the crop.
        """
        _check_gallery(gallery)
        top_k = _whole_number(top_k, "top_k (--top-k)", minimum=1)
        gallery.check_bundle(self.bundle)
        query = self.embed_crop(crop_bgr, require_person=require_person)
        return gallery.search(query, top_k=top_k, score_weighted=score_weighted)[0]

    def search_box(
        self,
        gallery: Any,
        frame_bgr: np.ndarray,
        box: Sequence[float],
        *,
        top_k: int = 10,
        score_weighted: bool = False,
    ) -> list[SearchHit]:
        """Search ``gallery`` for the person inside ``box`` of a frame.

        Args:
            gallery: A ``GalleryIndex`` built for this bundle.
            frame_bgr: [H, W, 3] uint8 BGR frame.
            box: (x1, y1, x2, y2) in the frame's pixels; finite, x1 < x2, y1 < y2, at least
                ``MIN_QUERY_SIDE`` pixels on a side inside the frame.
            top_k: How many hits to return (a whole number >= 1).
            score_weighted: Rank by similarity x detection score.

        Returns:
            Up to ``top_k`` hits, best first.

        Raises:
            InputError: Bad ``gallery``, ``frame_bgr``, ``box`` or ``top_k``.
        """
        _check_gallery(gallery)
        top_k = _whole_number(top_k, "top_k (--top-k)", minimum=1)
        if box is None or isinstance(box, (str, bytes)) or np.shape(np.asarray(box, dtype=object)) != (4,):
            raise InputError(f"box is {box!r}; expected four numbers x1, y1, x2, y2 in the frame's pixels")
        gallery.check_bundle(self.bundle)
        query = self.embed_boxes(frame_bgr, [box], min_side=MIN_QUERY_SIDE)
        return gallery.search(query, top_k=top_k, score_weighted=score_weighted)[0]

    def _gpu_cropper(self) -> Any:
        """The device cropper on a CUDA device (None on the CPU, or without CuPy / cuda-python)."""
        if not self.device.startswith("cuda"):
            return None
        if self._device_cropper is None:
            try:
                from personsearch_runtime.gpu.person_crops import DeviceCropper

                index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
                self._device_cropper = DeviceCropper(index)
            except (ImportError, PersonSearchError) as exc:
                warnings.warn(
                    f'person crops are cut on the host ({exc}); install "personsearch[gpu]" to cut them on '
                    "the GPU",
                    SlowPathWarning,
                    stacklevel=3,
                )
                self._device_cropper = False
        return self._device_cropper or None

    # ---- sentence search ----------------------------------------------------------------------------

    def _check_text_indexing(self, gallery: Any) -> None:
        if not self.manifest.has_text:
            gallery.check_text_bundle(self.bundle, indexing=True)  # says which bundle to use
        if not self.text_embeddings:
            raise InputError(
                f"gallery {gallery.path} stores a text embedding for every person; create the searcher with "
                "text_embeddings=True (or None) to index into it"
            )
        gallery.check_text_bundle(self.bundle, indexing=True)

    def encode_sentences(self, sentences: Sequence[str] | str) -> np.ndarray:
        """Embed sentences with the bundle's text encoder.

        Args:
            sentences: One sentence or several.

        Returns:
            [S, E] float32 unit embeddings, in the space of ``Detections.text_embeddings``.

        Raises:
            InputError: An empty sentence, one without letters or digits, or bytes that
                are not UTF-8 (see :func:`personsearch_runtime.text_search.check_sentence`).
            BundleError: The bundle has no text encoder.
        """
        return self.sentence_encoder.encode(sentences)

    def search_text(
        self,
        gallery: Any,
        text: str | Sequence[str],
        top_k: int = 10,
        *,
        score_weighted: bool = False,
    ) -> list[SearchHit]:
        """Search ``gallery`` for the person a sentence describes; best hit first.

        Args:
            gallery: A ``GalleryIndex`` indexed with this bundle's text encoder.
            text: One sentence, or several sentences of the same person (one query: the
                normalised mean of their embeddings).
            top_k: How many hits to return (a whole number >= 1).
            score_weighted: Rank by similarity x detection score.

        Returns:
            Up to ``top_k`` hits; ``similarity`` is the cosine of sentence and crop embeddings.

        Raises:
            InputError: Bad ``gallery``, ``text`` or ``top_k``.
            GalleryError: The gallery has no text embeddings or another text model's.
            BundleError: The bundle has no text encoder.
        """
        _check_gallery(gallery)
        top_k = _whole_number(top_k, "top_k (--top-k)", minimum=1)
        gallery.check_bundle(self.bundle)
        gallery.check_text_bundle(self.bundle, indexing=False)
        query = combine_sentence_embeddings(self.encode_sentences(text))
        return gallery.search(query, top_k=top_k, score_weighted=score_weighted, space="text")[0]

    def search_mixed(
        self,
        gallery: Any,
        text: str | Sequence[str],
        *,
        crop_bgr: np.ndarray | None = None,
        frame_bgr: np.ndarray | None = None,
        box: Sequence[float] | None = None,
        text_weight: float = 0.5,
        top_k: int = 10,
        require_person: bool = True,
    ) -> list[SearchHit]:
        """Search with a sentence and an image of the person together.

        The two similarities are fused as ``text_weight * cos_text + (1 - text_weight) *
        cos_reid`` (see ``GalleryIndex.search_fused``).

        Args:
            gallery: A ``GalleryIndex`` indexed with this bundle's text encoder.
            text: One or several sentences of the person.
            crop_bgr: A crop of the person (or give ``frame_bgr`` and ``box``).
            frame_bgr: A frame holding the person, with ``box``.
            box: (x1, y1, x2, y2) of the person in ``frame_bgr``.
            text_weight: Weight of the sentence similarity in ``[0, 1]``.
            top_k: How many hits to return.
            require_person: With ``crop_bgr``: refuse a crop in which nobody is detected.

        Returns:
            Up to ``top_k`` hits; ``similarity`` is the fused value.

        Raises:
            InputError: Neither or both of a crop and a frame with a box, or bad arguments.
            GalleryError: The gallery has no text embeddings or another model's.
        """
        _check_gallery(gallery)
        top_k = _whole_number(top_k, "top_k (--top-k)", minimum=1)
        if (crop_bgr is None) == (frame_bgr is None or box is None):
            raise InputError(
                "give the image query as crop_bgr, or as frame_bgr with box (not both, not neither)"
            )
        gallery.check_bundle(self.bundle)
        gallery.check_text_bundle(self.bundle, indexing=False)
        sentence = combine_sentence_embeddings(self.encode_sentences(text))
        if crop_bgr is not None:
            image_query = self.embed_crop(crop_bgr, require_person=require_person)
        else:
            image_query = self.embed_boxes(frame_bgr, [box], min_side=MIN_QUERY_SIDE)
        return gallery.search_fused(image_query, sentence, text_weight=text_weight, top_k=top_k)

    def add_text_embeddings(self, gallery: Any, *, progress: bool = False) -> int:
        """Give a gallery indexed without the text encoder a crop embedding for every person.

        The stored boxes are kept (nothing is detected again): each frame is read from its
        source, its people cropped and embedded, and committed frame by frame, so an
        interrupted run continues where it stopped.

        Args:
            gallery: A writable ``GalleryIndex`` built with this bundle's detector.
            progress: Show a tqdm progress bar.

        Returns:
            How many detections got an embedding.

        Raises:
            BundleError: The bundle has no text encoder.
            SourceError: A source frame can no longer be read (moved or changed file).
        """
        _check_gallery(gallery)
        gallery.check_bundle(self.bundle)
        encoder = self.sentence_encoder
        frames: dict[tuple[str, int], np.ndarray] = {}
        wanted: dict[str, set[int]] = {}
        for source, frame_index, _ids, _boxes in gallery.frames_missing_text():
            wanted.setdefault(source, set()).add(frame_index)

        def read_frames(source: str) -> None:
            needed = wanted.pop(source, set())
            reader = FrameReader([Path(source)], every_nth_frame=1, start_frame=lambda _s: min(needed))
            try:
                for frame in reader:
                    if frame.frame_index in needed:
                        frames[(source, frame.frame_index)] = frame.image
                    if frame.frame_index >= max(needed):
                        break
            finally:
                reader.close()

        def embeddings_for(source: str, frame_index: int, boxes: np.ndarray) -> np.ndarray:
            if (source, frame_index) not in frames:
                frames.clear()  # one source's frames at a time
                read_frames(source)
            image = frames.pop((source, frame_index), None)
            if image is None:
                raise SourceError(
                    f"frame {frame_index} of {source} cannot be read any more (moved, changed or damaged); "
                    "index the sources again into a new gallery with this bundle"
                )
            return encoder.embed_boxes(image, boxes)

        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit="frame", desc="adding text embeddings", dynamic_ncols=True)
        try:
            done = gallery.add_text_space(
                self.bundle, embeddings_for, progress=(lambda _n: bar.update(1)) if bar is not None else None
            )
        finally:
            if bar is not None:
                bar.close()
        gallery.save()
        return done


def _whole_number(value: Any, name: str, *, minimum: int) -> int:
    """Return ``value`` as an int, or raise ``InputError`` unless it is a whole number >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _check_gallery(gallery: Any) -> None:
    """Refuse anything that is not a gallery before it fails deep inside a search."""
    if not all(hasattr(gallery, name) for name in ("check_bundle", "search", "add")):
        raise InputError(
            f"gallery is a {type(gallery).__name__}; expected a GalleryIndex "
            "(GalleryIndex.open_for_bundle(folder, searcher.bundle))"
        )


def _check_boxes(boxes: Any, height: int, width: int, *, min_side: float = 0.0) -> np.ndarray:
    """Check query boxes against their image.

    Args:
        boxes: [M, 4] or [4] x1, y1, x2, y2 pixels (anything numpy reads as numbers).
        height: Image height in pixels.
        width: Image width in pixels.
        min_side: Smallest accepted width and height of the part inside the image.

    Returns:
        [M, 4] float32 boxes, as given (not clipped: the exported encoder must see what the
        trainer's ``embed_boxes`` sees, and evaluation embeds ground-truth boxes this way).

    Raises:
        InputError: Not numbers, wrong shape, not finite, x2 <= x1 or y2 <= y1, no overlap
            with the image, or smaller than ``min_side`` inside it.
    """
    expected = "[M, 4] boxes x1, y1, x2, y2 in the image's pixels"
    if boxes is None or isinstance(boxes, (str, bytes)):
        raise InputError(f"boxes is {boxes!r}; expected {expected}")
    try:
        array = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"boxes {boxes!r} are not numbers; expected {expected}") from None
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 4:
        raise InputError(f"boxes have shape {tuple(array.shape)}; expected {expected}")
    with np.errstate(invalid="ignore"):  # NaN rows are caught by the first test
        x1, y1, x2, y2 = array.T
        inside_w = np.minimum(x2, width) - np.maximum(x1, 0)
        inside_h = np.minimum(y2, height) - np.maximum(y1, 0)
        problems = (
            (
                ~np.all(np.isfinite(array), axis=1),
                "is not finite; give four finite pixel coordinates x1,y1,x2,y2",
            ),
            ((x2 <= x1) | (y2 <= y1), "is empty: x1,y1,x2,y2 needs x1 < x2 and y1 < y2"),
            (
                (x2 <= 0) | (y2 <= 0) | (x1 >= width) | (y1 >= height),
                f"is outside the {width}x{height} (WxH) image; give a box that overlaps it",
            ),
            (np.minimum(inside_w, inside_h) < min_side, None),
        )
    for bad, message in problems:
        if np.any(bad):
            i = int(np.argmax(bad))
            text = ",".join(f"{v:g}" for v in array[i])
            if message is None:
                message = (
                    f"is {inside_w[i]:g}x{inside_h[i]:g} (WxH) pixels inside the image; a query box needs "
                    f"at least {min_side:g}x{min_side:g} to show a person"
                )
            raise InputError(f"box {text} {message}")
    return array.astype(np.float32)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
