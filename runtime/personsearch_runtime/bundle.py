"""The bundle: a directory of ONNX models plus ``manifest.json`` that describes them.

The runtime owns this contract (the consumer owns the contract); the exporter writes it.
Everything the runtime needs to run a bundle is in the manifest, so nothing is guessed.

Layout::

    BUNDLE/
      manifest.json          this schema, ``schema_version`` = SCHEMA_VERSION
      detector.onnx          required
      query_encoder.onnx     required
      backbone_rpn.onnx      optional, with box_head.onnx and reid_head.onnx (all three or none)
      box_head.onnx
      reid_head.onnx
      text_encoder.onnx      optional, with crop_encoder.onnx and the tokenizer file (all or none)
      crop_encoder.onnx
      tokenizer.json
      parity.json            written by the exporter; not read here

Graph contracts (names are the *roles*; the tensor names are whatever the manifest lists,
in this order). Symbolic dimensions are named in each model's ``dims`` table with
min/opt/max, which is what TensorRT optimization profiles are built from.

``detector`` (the one-graph path used with ONNX Runtime):
    inputs:  images       [B, 3, H, W] float32 (or float16 for an fp16 bundle), RGB,
                          values in ``preprocessing.input_range`` after resize and pad;
             image_sizes  [B, 2] float32, optional second input: (height, width) of each
                          resized image inside the padded batch; boxes are clipped to it
                          (as PyTorch clips to the unpadded image). A runtime without the
                          sizes feeds (H, W), which clips to the padded tensor. float32, not
                          int64: TensorRT narrows int64 inputs.
    outputs: boxes        [B, K, 4] float32 xyxy, pixels of the *fed* (resized, padded) image;
             scores       [B, K] float32 person score in [0, 1];
             embeddings   [B, K, D] float32, L2-normalised when ``embedding.normalized``;
             valid_counts [B] int64 (or int32): rows ``0..valid_counts[b]-1`` are real
                          detections sorted by score, the rest is padding (fixed top-K,
                          K = ``postprocessing.max_detections``, so output shapes are static).

``query_encoder`` (embeds given boxes; the query path):
    inputs:  image        [1, 3, H, W] float32, preprocessed as for the detector;
             boxes        [M, 4] float32 xyxy pixels of the fed image.
    outputs: embeddings   [M, D] float32.

Split graphs (the GPU path, which runs our RoIAlign kernel between them):

``backbone_rpn``:
    inputs:  images       [B, 3, H, W];
             image_sizes  [B, 2] float32, optional, as for ``detector`` (clips the proposals);
    outputs: features     [B, C, Hf, Wf] (Hf = ceil(H * spatial_scale) in practice);
             proposals    [B, P, 4] float32 xyxy pixels of the fed image, P fixed (the RPN's
                          post-NMS top-N): rows ``0..proposal_counts[b]-1`` are the proposals
                          in decreasing objectness, the remaining rows are padding filled
                          with zeros and must be ignored;
             proposal_counts [B] int64: valid proposals per image.
``box_head`` (stage 1):
    inputs:  roi_features [R, C, S, S] (RoIAlign with ``split.box_roi_align`` on the valid
                          proposals, in image order);
    outputs: box_deltas   [R, 4] float32 person-class deltas, encoded against the proposals
                          with ``split.box_coder``;
             box_scores   [R] float32 person probability (these are the scores reported).
``reid_head`` (stage 2):
    inputs:  roi_features [R, C, S, S] (RoIAlign with ``split.reid_roi_align`` on the boxes
                          that survived stage 1);
    outputs: embeddings   [R, D] float32;
             person_scores [R] float32 (the re-id head's own person probability);
             box_deltas   [R, 4] float32 refinement deltas, encoded against the stage-1 boxes
                          with ``split.reid_box_coder``.

The runtime composes them as the two-stage detector does (SeqNet, methods.md section 1.5):

1. decode ``box_head.box_deltas`` against the proposals, clip to the fed image, drop boxes
   with a side under ``split.min_box_size`` or a score not above
   ``postprocessing.score_threshold``, per-image NMS at ``postprocessing.nms_threshold``,
   keep the best ``split.first_stage_max_detections`` per image;
2. ``reid_head`` on those boxes; decode its ``box_deltas`` against them, clip (both
   clips use ``image_sizes`` when the graphs take it), drop boxes
   under ``split.min_box_size``, per-image NMS at ``postprocessing.reid_nms_threshold``
   ranked by the stage-1 scores, keep the best ``postprocessing.max_detections``.

Boxes are the refined stage-2 boxes, scores the stage-1 (``box_head``) scores unless
``postprocessing.final_score`` says ``"reid_head"``, embeddings those of ``reid_head``. This
must reproduce ``detector`` (tested on real exports).

Text graphs (sentence search; both trained together as a dual encoder, so their
embeddings share one space of width ``text.embedding_dim`` = E, other than the re-id D):

``text_encoder``:
    inputs:  input_ids      [B, L] int64 token ids from the bundle's tokenizer (``tokenizer``
                            section: padded with ``pad_token_id`` to the longest sentence of
                            the batch or to ``max_length``, truncated at ``max_length``);
             attention_mask [B, L] int64, 1 on real tokens, 0 on padding.
    outputs: embeddings     [B, E] float32, L2-normalised when ``text.normalized``.
    ``L`` is a symbolic dimension whose ``dims`` range has ``max`` = ``tokenizer.max_length``
    (the TensorRT profile for token length).
``crop_encoder``:
    inputs:  crops          [B, 3, Hc, Wc] float32 (float16 for an fp16 bundle), RGB in
                            [0, 1]: each person cut from the original frame at its box
                            (rounded to whole pixels, clipped) and resized bilinearly to
                            ``text.crop_size`` = (Hc, Wc); normalisation is in the graph.
    outputs: embeddings     [B, E] float32, the same space as ``text_encoder``'s.

Conventions (DESIGN.md section 2): boxes xyxy float32 pixels; embeddings float32 [N, D];
images RGB in [0, 1] before normalisation; normalisation happens once, either in the graph
(``preprocessing.normalize_in_graph``) or by the runtime with ``mean``/``std``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.errors import BundleError

__all__ = [
    "BOX_CONVENTION",
    "DTYPES",
    "MANIFEST_NAME",
    "MODEL_ROLES",
    "SCHEMA_VERSION",
    "SPLIT_ROLES",
    "TEXT_ROLES",
    "BoxCoderSpec",
    "Bundle",
    "DimRange",
    "EmbeddingSpec",
    "Manifest",
    "ModelSpec",
    "Postprocessing",
    "Preprocessing",
    "Provenance",
    "RoIAlignSpec",
    "SplitSpec",
    "TensorSpec",
    "TextSearchSpec",
    "TokenizerSpec",
    "file_sha256",
]

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "personsearch-bundle"
BOX_CONVENTION = "xyxy_pixels"
#: Roles in the order they are listed; the first two are required.
MODEL_ROLES = (
    "detector",
    "query_encoder",
    "backbone_rpn",
    "box_head",
    "reid_head",
    "text_encoder",
    "crop_encoder",
)
REQUIRED_ROLES = ("detector", "query_encoder")
SPLIT_ROLES = ("backbone_rpn", "box_head", "reid_head")
#: The sentence-search graphs: present together, with ``tokenizer`` and ``text``, or not at all.
TEXT_ROLES = ("text_encoder", "crop_encoder")
PADDING_MODES = ("longest", "max_length")
#: ONNX element types a manifest may name (numpy spelling).
DTYPES = ("float32", "float16", "bfloat16", "int64", "int32", "int8", "uint8", "bool")
PRECISIONS = ("fp32", "fp16", "bf16")
RESIZE_POLICIES = ("shorter_side", "none")
#: Allowed numbers of inputs / the number of outputs per role, as the graph contracts in
#: the docstring fix them (``image_sizes`` is an optional second input of two roles).
ROLE_ARITY: dict[str, tuple[tuple[int, ...], int]] = {
    "detector": ((1, 2), 4),
    "query_encoder": ((2,), 1),
    "backbone_rpn": ((1, 2), 3),
    "box_head": ((1,), 2),
    "reid_head": ((1,), 3),
    "text_encoder": ((2,), 1),
    "crop_encoder": ((1,), 1),
}


def _fail(path: str, message: str) -> BundleError:
    return BundleError(f"manifest field '{path}': {message}")


def _expect_mapping(obj: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(obj, Mapping):
        raise _fail(path, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _check_keys(
    obj: Mapping[str, Any], path: str, required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join([*required, *optional])
        raise _fail(f"{path}.{unknown[0]}" if path else unknown[0], f"unknown key (allowed here: {allowed})")
    for key in required:
        if key not in obj:
            raise _fail(f"{path}.{key}" if path else key, "missing")


def _get_number(
    obj: Mapping[str, Any],
    key: str,
    path: str,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    value = obj[key]
    where = f"{path}.{key}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, f"expected a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise _fail(where, f"expected an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise _fail(where, f"expected a finite number, got {value!r}")
    if low is not None and value < low:
        raise _fail(where, f"must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise _fail(where, f"must be <= {high}, got {value!r}")
    return value


def _get_str(obj: Mapping[str, Any], key: str, path: str, choices: Sequence[str] | None = None) -> str:
    value = obj[key]
    if not isinstance(value, str):
        raise _fail(f"{path}.{key}", f"expected a string, got {value!r}")
    if choices is not None and value not in choices:
        raise _fail(f"{path}.{key}", f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def _get_bool(obj: Mapping[str, Any], key: str, path: str) -> bool:
    value = obj[key]
    if not isinstance(value, bool):
        raise _fail(f"{path}.{key}", f"expected true or false, got {value!r}")
    return value


def _get_triple(obj: Mapping[str, Any], key: str, path: str) -> tuple[float, float, float]:
    value = obj[key]
    if (
        not isinstance(value, list)
        or len(value) != 3
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise _fail(f"{path}.{key}", f"expected a list of 3 numbers, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


@dataclass(frozen=True)
class DimRange:
    """A symbolic dimension with the range an engine profile must cover.

    Attributes:
        name: Symbol used in tensor shapes, e.g. ``"B"``, ``"H"``.
        min: Smallest value the model must accept.
        opt: Value TensorRT tunes for.
        max: Largest value the model must accept.
    """

    name: str
    min: int
    opt: int
    max: int

    def to_json(self) -> dict[str, int]:
        """Return ``{"min": .., "opt": .., "max": ..}`` (the name is the key one level up)."""
        return {"min": self.min, "opt": self.opt, "max": self.max}

    @classmethod
    def from_json(cls, name: str, obj: Any, path: str = "dims") -> DimRange:
        """Parse and validate one ``dims`` entry (1 <= min <= opt <= max)."""
        where = f"{path}.{name}"
        obj = _expect_mapping(obj, where)
        _check_keys(obj, where, ("min", "opt", "max"))
        lo, opt, hi = (_get_number(obj, k, where, integer=True, low=1) for k in ("min", "opt", "max"))
        if not lo <= opt <= hi:
            raise _fail(where, f"needs min <= opt <= max, got {lo}, {opt}, {hi}")
        return cls(name=name, min=lo, opt=opt, max=hi)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output.

    Attributes:
        name: Tensor name in the ONNX graph.
        dtype: Element type, numpy spelling (one of ``DTYPES``).
        shape: Fixed sizes (int) and symbols (str, defined in the model's ``dims``).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, obj: Any, path: str) -> TensorSpec:
        """Parse and validate one tensor entry."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, ("name", "dtype", "shape"))
        name = _get_str(obj, "name", path)
        if not name:
            raise _fail(f"{path}.name", "must not be empty")
        dtype = _get_str(obj, "dtype", path, DTYPES)
        shape = obj["shape"]
        if not isinstance(shape, list):
            raise _fail(f"{path}.shape", f"expected a list of sizes and symbols, got {shape!r}")
        for i, dim in enumerate(shape):
            ok = (isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0) or (
                isinstance(dim, str) and dim.isidentifier()
            )
            if not ok:
                raise _fail(f"{path}.shape[{i}]", f"expected a size >= 0 or a symbol name, got {dim!r}")
        return cls(name=name, dtype=dtype, shape=tuple(shape))

    def resolve(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """Return the concrete shape with every symbol replaced from ``sizes``."""
        return tuple(d if isinstance(d, int) else int(sizes[d]) for d in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """One ONNX model of the bundle.

    Attributes:
        role: One of ``MODEL_ROLES``.
        file: File name relative to the bundle directory.
        sha256: Hex SHA-256 of the file (checked when the bundle is loaded).
        inputs: Inputs in contract order.
        outputs: Outputs in contract order.
        dims: Every symbol used by the shapes, with min/opt/max.
    """

    role: str
    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: tuple[DimRange, ...]

    def dim(self, name: str) -> DimRange:
        """Return the range of symbol ``name``."""
        for d in self.dims:
            if d.name == name:
                return d
        raise KeyError(name)

    def profile_shapes(self, tensor: TensorSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Return the (min, opt, max) concrete shapes of ``tensor`` (a TensorRT profile entry)."""
        ranges = {d.name: d for d in self.dims}
        return (
            tensor.resolve({k: v.min for k, v in ranges.items()}),
            tensor.resolve({k: v.opt for k, v in ranges.items()}),
            tensor.resolve({k: v.max for k, v in ranges.items()}),
        )

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form (the role is the key one level up)."""
        return {
            "file": self.file,
            "sha256": self.sha256,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "dims": {d.name: d.to_json() for d in self.dims},
        }

    @classmethod
    def from_json(cls, role: str, obj: Any, path: str) -> ModelSpec:
        """Parse and validate one model entry, including the arity its role requires."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, ("file", "sha256", "inputs", "outputs", "dims"))
        file = _get_str(obj, "file", path)
        if not file or Path(file).is_absolute() or ".." in Path(file).parts:
            raise _fail(f"{path}.file", f"must be a file name inside the bundle, got {file!r}")
        sha = _get_str(obj, "sha256", path)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise _fail(f"{path}.sha256", "expected 64 lower-case hex digits")
        lists = {}
        for key in ("inputs", "outputs"):
            value = obj[key]
            if not isinstance(value, list) or not value:
                raise _fail(f"{path}.{key}", "expected a non-empty list of tensors")
            lists[key] = tuple(TensorSpec.from_json(t, f"{path}.{key}[{i}]") for i, t in enumerate(value))
        want_in, want_out = ROLE_ARITY[role]
        if len(lists["inputs"]) not in want_in or len(lists["outputs"]) != want_out:
            raise _fail(
                path,
                f"a {role} has {' or '.join(map(str, want_in))} input(s) and {want_out} output(s) "
                f"(see the graph contract), got {len(lists['inputs'])} and {len(lists['outputs'])}",
            )
        dims_obj = _expect_mapping(obj["dims"], f"{path}.dims")
        dims = tuple(DimRange.from_json(k, v, f"{path}.dims") for k, v in dims_obj.items())
        names = {d.name for d in dims}
        seen: set[str] = set()
        for key in ("inputs", "outputs"):
            for i, t in enumerate(lists[key]):
                if t.name in seen:
                    raise _fail(f"{path}.{key}[{i}].name", f"tensor name {t.name!r} is used twice")
                seen.add(t.name)
                for j, d in enumerate(t.shape):
                    if isinstance(d, str) and d not in names:
                        raise _fail(
                            f"{path}.{key}[{i}].shape[{j}]", f"symbol {d!r} is not defined in {path}.dims"
                        )
        return cls(
            role=role, file=file, sha256=sha, inputs=lists["inputs"], outputs=lists["outputs"], dims=dims
        )


@dataclass(frozen=True)
class Preprocessing:
    """How a decoded image becomes the model input.

    Attributes:
        resize_policy: ``"shorter_side"``: scale so the shorter side is ``min_size`` unless
            the longer side would exceed ``max_size`` (then the longer side is ``max_size``);
            ``"none"``: feed the image at its own size.
        min_size: Target of the shorter side, pixels.
        max_size: Cap on the longer side, pixels.
        mean: Per-channel mean in the input range (RGB order).
        std: Per-channel standard deviation (RGB order).
        normalize_in_graph: True when the graph subtracts ``mean`` and divides by ``std``
            itself; the runtime then feeds values in ``input_range`` (never normalise twice).
        channel_order: Always ``"RGB"`` (OpenCV decodes BGR; the runtime converts).
        input_range: ``[low, high]`` the raw pixel values are scaled to; ``[0, 1]``.
        pad_divisor: Height and width are padded (bottom/right) up to a multiple of this.
        pad_value: Value written into the padding, in the fed tensor's space.
    """

    resize_policy: str = "shorter_side"
    min_size: int = 800
    max_size: int = 1333
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    normalize_in_graph: bool = True
    channel_order: str = "RGB"
    input_range: tuple[float, float] = (0.0, 1.0)
    pad_divisor: int = 32
    pad_value: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        out = dataclasses.asdict(self)
        out["mean"], out["std"], out["input_range"] = list(self.mean), list(self.std), list(self.input_range)
        return out

    @classmethod
    def from_json(cls, obj: Any, path: str = "preprocessing") -> Preprocessing:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        keys = [f.name for f in dataclasses.fields(cls)]
        _check_keys(obj, path, keys)
        std = _get_triple(obj, "std", path)
        if min(std) <= 0:
            raise _fail(f"{path}.std", f"every value must be > 0, got {list(std)}")
        rng = obj["input_range"]
        if rng != [0, 1] and rng != [0.0, 1.0]:
            raise _fail(f"{path}.input_range", f"the runtime feeds images in [0, 1]; got {rng!r}")
        channel = _get_str(obj, "channel_order", path, ("RGB",))
        min_size = _get_number(obj, "min_size", path, integer=True, low=1)
        max_size = _get_number(obj, "max_size", path, integer=True, low=1)
        if max_size < min_size:
            raise _fail(f"{path}.max_size", f"must be >= min_size ({min_size}), got {max_size}")
        return cls(
            resize_policy=_get_str(obj, "resize_policy", path, RESIZE_POLICIES),
            min_size=min_size,
            max_size=max_size,
            mean=_get_triple(obj, "mean", path),
            std=std,
            normalize_in_graph=_get_bool(obj, "normalize_in_graph", path),
            channel_order=channel,
            input_range=(0.0, 1.0),
            pad_divisor=_get_number(obj, "pad_divisor", path, integer=True, low=1),
            pad_value=float(_get_number(obj, "pad_value", path)),
        )


@dataclass(frozen=True)
class Postprocessing:
    """Detection post-processing the graphs (or the split path) apply.

    Attributes:
        score_threshold: Detections scoring at or below this are dropped (both stages).
        nms_threshold: Stage-1 NMS (after ``box_head``): IoU above which the
            lower-scoring box is suppressed.
        reid_nms_threshold: Stage-2 NMS (after ``reid_head`` refined the boxes), same rule.
        max_detections: Fixed top-K per image (K of the detector's outputs).
        final_score: In the split path, which head's score a detection reports:
            ``"box_head"`` or ``"reid_head"``.
    """

    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    reid_nms_threshold: float = 0.5
    max_detections: int = 100
    final_score: str = "box_head"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, path: str = "postprocessing") -> Postprocessing:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, [f.name for f in dataclasses.fields(cls)])
        return cls(
            score_threshold=float(_get_number(obj, "score_threshold", path, low=0.0, high=1.0)),
            nms_threshold=float(_get_number(obj, "nms_threshold", path, low=0.0, high=1.0)),
            reid_nms_threshold=float(_get_number(obj, "reid_nms_threshold", path, low=0.0, high=1.0)),
            max_detections=_get_number(obj, "max_detections", path, integer=True, low=1),
            final_score=_get_str(obj, "final_score", path, ("box_head", "reid_head")),
        )


@dataclass(frozen=True)
class EmbeddingSpec:
    """What the embeddings are.

    Attributes:
        dim: D, the embedding length.
        normalized: True when the graphs already L2-normalise (the runtime normalises otherwise).
    """

    dim: int
    normalized: bool = True

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, path: str = "embedding") -> EmbeddingSpec:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, ("dim", "normalized"))
        return cls(
            dim=_get_number(obj, "dim", path, integer=True, low=1),
            normalized=_get_bool(obj, "normalized", path),
        )


@dataclass(frozen=True)
class RoIAlignSpec:
    """RoIAlign parameters (torchvision ``roi_align`` / ONNX ``RoiAlign`` semantics, mode avg).

    Attributes:
        output_size: S; pooled features are [R, C, S, S].
        spatial_scale: Feature-map pixels per image pixel (e.g. 1/16).
        sampling_ratio: Samples per bin side; 0 = adaptive ceil(roi_size / S).
        aligned: True = half-pixel model (ONNX ``coordinate_transformation_mode="half_pixel"``).
    """

    output_size: int = 14
    spatial_scale: float = 1.0 / 16.0
    sampling_ratio: int = 2
    aligned: bool = True

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, path: str) -> RoIAlignSpec:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, [f.name for f in dataclasses.fields(cls)])
        return cls(
            output_size=_get_number(obj, "output_size", path, integer=True, low=1),
            spatial_scale=float(_get_number(obj, "spatial_scale", path, low=1e-6)),
            sampling_ratio=_get_number(obj, "sampling_ratio", path, integer=True, low=0),
            aligned=_get_bool(obj, "aligned", path),
        )


@dataclass(frozen=True)
class BoxCoderSpec:
    """Faster R-CNN box parameterisation of a head's deltas.

    Attributes:
        weights: (wx, wy, ww, wh) the deltas were divided by, e.g. (10, 10, 5, 5).
        clip: Upper bound on dw, dh before ``exp`` (torchvision: log(1000 / 16)).
    """

    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    clip: float = math.log(1000.0 / 16)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"weights": list(self.weights), "clip": self.clip}

    @classmethod
    def from_json(cls, obj: Any, path: str) -> BoxCoderSpec:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, ("weights", "clip"))
        w = obj["weights"]
        if (
            not isinstance(w, list)
            or len(w) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in w)
        ):
            raise _fail(f"{path}.weights", f"expected 4 positive numbers, got {w!r}")
        return cls(weights=tuple(float(v) for v in w), clip=float(_get_number(obj, "clip", path, low=0.0)))


@dataclass(frozen=True)
class SplitSpec:
    """Parameters of the split path (backbone_rpn -> RoIAlign -> heads).

    Attributes:
        box_roi_align: RoIAlign before ``box_head`` (on the proposals).
        reid_roi_align: RoIAlign before ``reid_head`` (on the stage-1 boxes).
        box_coder: How ``box_head.box_deltas`` are decoded against the proposals.
        reid_box_coder: How ``reid_head.box_deltas`` are decoded against the stage-1 boxes.
        min_box_size: Boxes with a side below this (pixels) are dropped after each decoding.
        first_stage_max_detections: Most boxes per image kept by the stage-1 NMS (and so
            the most ``reid_head`` sees per image).
    """

    box_roi_align: RoIAlignSpec
    reid_roi_align: RoIAlignSpec
    box_coder: BoxCoderSpec = BoxCoderSpec()
    reid_box_coder: BoxCoderSpec = BoxCoderSpec()
    min_box_size: float = 0.01
    first_stage_max_detections: int = 300

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "box_roi_align": self.box_roi_align.to_json(),
            "reid_roi_align": self.reid_roi_align.to_json(),
            "box_coder": self.box_coder.to_json(),
            "reid_box_coder": self.reid_box_coder.to_json(),
            "min_box_size": self.min_box_size,
            "first_stage_max_detections": self.first_stage_max_detections,
        }

    @classmethod
    def from_json(cls, obj: Any, path: str = "split") -> SplitSpec:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        _check_keys(
            obj,
            path,
            (
                "box_roi_align",
                "reid_roi_align",
                "box_coder",
                "reid_box_coder",
                "min_box_size",
                "first_stage_max_detections",
            ),
        )
        return cls(
            box_roi_align=RoIAlignSpec.from_json(obj["box_roi_align"], f"{path}.box_roi_align"),
            reid_roi_align=RoIAlignSpec.from_json(obj["reid_roi_align"], f"{path}.reid_roi_align"),
            box_coder=BoxCoderSpec.from_json(obj["box_coder"], f"{path}.box_coder"),
            reid_box_coder=BoxCoderSpec.from_json(obj["reid_box_coder"], f"{path}.reid_box_coder"),
            min_box_size=float(_get_number(obj, "min_box_size", path, low=0.0)),
            first_stage_max_detections=_get_number(
                obj, "first_stage_max_detections", path, integer=True, low=1
            ),
        )


@dataclass(frozen=True)
class TokenizerSpec:
    """How sentences become the text encoder's inputs.

    Attributes:
        file: Tokenizer file inside the bundle (Hugging Face ``tokenizer.json``, read with
            the ``tokenizers`` package; it holds normalisation, pre-tokenisation, the
            vocabulary and the special tokens the model was trained with).
        max_length: Longest token sequence the text encoder takes, special tokens
            included; longer sentences are truncated at the end (``truncation``).
        padding: ``"longest"``: pad a batch to its longest sentence (what the runtime
            does; masked positions change nothing); ``"max_length"``: always pad to
            ``max_length`` (what training did).
        pad_token_id: Id written in padded positions (their attention mask is 0).
        truncation: Always ``"right"``: the sentence's end is cut, the final special
            token kept.
    """

    file: str
    max_length: int
    padding: str = "longest"
    pad_token_id: int = 0
    truncation: str = "right"

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, path: str = "tokenizer") -> TokenizerSpec:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        _check_keys(obj, path, ("file", "max_length", "padding", "pad_token_id", "truncation"))
        file = _get_str(obj, "file", path)
        if not file or Path(file).is_absolute() or ".." in Path(file).parts:
            raise _fail(f"{path}.file", f"must be a file name inside the bundle, got {file!r}")
        return cls(
            file=file,
            max_length=_get_number(obj, "max_length", path, integer=True, low=2),
            padding=_get_str(obj, "padding", path, PADDING_MODES),
            pad_token_id=_get_number(obj, "pad_token_id", path, integer=True, low=0),
            truncation=_get_str(obj, "truncation", path, ("right",)),
        )


@dataclass(frozen=True)
class TextSearchSpec:
    """The sentence-search embedding space (``text_encoder`` and ``crop_encoder``).

    Attributes:
        embedding_dim: E, the width of both graphs' embeddings.
        normalized: True when both graphs L2-normalise their output.
        crop_size: ``(height, width)`` the crop encoder takes.
        interpolation: Always ``"bilinear"`` (OpenCV ``INTER_LINEAR``, as in training).
        checkpoint_sha256: SHA-256 of the text checkpoint's weights; galleries record
            it beside the detector's, so crops embedded by one text model are never
            searched with another's sentences.
        model_name: Registered name of the dual encoder, e.g. ``"dual_encoder_small"``.
        method: Training method of the text checkpoint (``irra``, ``cfam``, ...).
        int8_file: Optional CPU variant of ``text_encoder``: the same graph with its
            matrix products' weights in int8 and activations quantised at run time
            (ONNX ``DynamicQuantizeLinear`` and ``MatMulInteger``, which ONNX Runtime
            runs with VNNI/AMX kernels, TensorRT does not). The runtime prefers it on the
            CPU with ONNX Runtime; None when the bundle has none.
        int8_sha256: Hex SHA-256 of ``int8_file`` (checked on load), or None.
    """

    embedding_dim: int
    crop_size: tuple[int, int]
    checkpoint_sha256: str
    model_name: str
    method: str
    normalized: bool = True
    interpolation: str = "bilinear"
    int8_file: str | None = None
    int8_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        out = dataclasses.asdict(self)
        out["crop_size"] = list(self.crop_size)
        return out

    @classmethod
    def from_json(cls, obj: Any, path: str = "text") -> TextSearchSpec:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        keys = (
            "embedding_dim",
            "crop_size",
            "checkpoint_sha256",
            "model_name",
            "method",
            "normalized",
            "interpolation",
        )
        _check_keys(obj, path, keys, ("int8_file", "int8_sha256"))
        int8_file, int8_sha = obj.get("int8_file"), obj.get("int8_sha256")
        if (int8_file is None) != (int8_sha is None):
            raise _fail(f"{path}.int8_file", "int8_file and int8_sha256 come together (or are both null)")
        if int8_file is not None:
            if (
                not isinstance(int8_file, str)
                or not int8_file
                or Path(int8_file).is_absolute()
                or ".." in Path(int8_file).parts
            ):
                raise _fail(f"{path}.int8_file", f"must be a file name inside the bundle, got {int8_file!r}")
            if (
                not isinstance(int8_sha, str)
                or len(int8_sha) != 64
                or any(c not in "0123456789abcdef" for c in int8_sha)
            ):
                raise _fail(f"{path}.int8_sha256", "expected 64 lower-case hex digits")
        size = obj["crop_size"]
        if (
            not isinstance(size, list)
            or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size)
        ):
            raise _fail(f"{path}.crop_size", f"expected [height, width] in whole pixels >= 1, got {size!r}")
        sha = _get_str(obj, "checkpoint_sha256", path)
        if not sha:
            raise _fail(f"{path}.checkpoint_sha256", "must not be empty")
        return cls(
            embedding_dim=_get_number(obj, "embedding_dim", path, integer=True, low=1),
            crop_size=(int(size[0]), int(size[1])),
            checkpoint_sha256=sha,
            model_name=_get_str(obj, "model_name", path),
            method=_get_str(obj, "method", path),
            normalized=_get_bool(obj, "normalized", path),
            interpolation=_get_str(obj, "interpolation", path, ("bilinear",)),
            int8_file=int8_file,
            int8_sha256=int8_sha,
        )


@dataclass(frozen=True)
class Provenance:
    """Where the bundle came from.

    Attributes:
        checkpoint_sha256: SHA-256 of the checkpoint's weights; identifies the model, so a
            gallery built with one bundle refuses another trained differently (an fp16 and an
            fp32 export of one checkpoint share it and are interchangeable).
        model_name: Registered model name, e.g. ``"seqnet_r50"``.
        trainer_version: ``personsearch_train`` version that wrote the checkpoint.
        torch_version: PyTorch version used for export.
        onnx_version: ``onnx`` package version used for export.
        exported_at: ISO-8601 UTC time of export.
    """

    checkpoint_sha256: str
    model_name: str
    trainer_version: str
    torch_version: str
    onnx_version: str
    exported_at: str

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj: Any, path: str = "provenance") -> Provenance:
        """Parse and validate."""
        obj = _expect_mapping(obj, path)
        keys = [f.name for f in dataclasses.fields(cls)]
        _check_keys(obj, path, keys)
        values = {k: _get_str(obj, k, path) for k in keys}
        if not values["checkpoint_sha256"]:
            raise _fail(f"{path}.checkpoint_sha256", "must not be empty")
        return cls(**values)


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json``.

    Attributes:
        models: Role -> model; ``detector`` and ``query_encoder`` always, the three split
            graphs together or not at all, ``text_encoder`` and ``crop_encoder``
            together or not at all.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (of the graphs' float tensors).
        opset: ONNX opset of the default domain (>= 16 so RoIAlign keeps ``aligned``).
        preprocessing: Image to tensor.
        postprocessing: Thresholds and fixed top-K.
        embedding: Embedding length and normalisation.
        provenance: Checkpoint hash and versions.
        split: Parameters of the split path, present exactly when the split graphs are.
        tokenizer: Present exactly when the text graphs are.
        text: The text graphs' embedding space; present exactly when they are.
        box_convention: Always ``"xyxy_pixels"``.
        schema_version: Always ``SCHEMA_VERSION`` for manifests this code reads.
    """

    models: Mapping[str, ModelSpec]
    precision: str
    opset: int
    preprocessing: Preprocessing
    postprocessing: Postprocessing
    embedding: EmbeddingSpec
    provenance: Provenance
    split: SplitSpec | None = None
    tokenizer: TokenizerSpec | None = None
    text: TextSearchSpec | None = None
    box_convention: str = BOX_CONVENTION
    schema_version: int = SCHEMA_VERSION

    @property
    def has_split(self) -> bool:
        """True when the split graphs (GPU path) are in the bundle."""
        return self.split is not None

    @property
    def has_text(self) -> bool:
        """True when the sentence-search graphs are in the bundle."""
        return self.text is not None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object written to ``manifest.json``."""
        out: dict[str, Any] = {
            "format": FORMAT_NAME,
            "schema_version": self.schema_version,
            "precision": self.precision,
            "opset": self.opset,
            "box_convention": self.box_convention,
            "embedding": self.embedding.to_json(),
            "preprocessing": self.preprocessing.to_json(),
            "postprocessing": self.postprocessing.to_json(),
            "split": self.split.to_json() if self.split is not None else None,
            "tokenizer": self.tokenizer.to_json() if self.tokenizer is not None else None,
            "text": self.text.to_json() if self.text is not None else None,
            "provenance": self.provenance.to_json(),
            "models": {role: self.models[role].to_json() for role in MODEL_ROLES if role in self.models},
        }
        return out

    def dumps(self) -> str:
        """Return the manifest as indented JSON text."""
        return json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_json(cls, obj: Any) -> Manifest:
        """Parse and validate a manifest object (raises ``BundleError`` naming the field)."""
        obj = _expect_mapping(obj, "(top level)")
        version = obj.get("schema_version")
        if version != SCHEMA_VERSION:
            raise _fail(
                "schema_version",
                f"this runtime reads schema version {SCHEMA_VERSION}, the bundle has {version!r}; "
                "re-export the bundle with a matching personsearch version",
            )
        top_keys = (
            "format",
            "schema_version",
            "precision",
            "opset",
            "box_convention",
            "embedding",
            "preprocessing",
            "postprocessing",
            "provenance",
            "models",
        )
        _check_keys(obj, "", top_keys, ("split", "tokenizer", "text"))
        _get_str(obj, "format", "", (FORMAT_NAME,))
        precision = _get_str(obj, "precision", "", PRECISIONS)
        opset = _get_number(obj, "opset", "", integer=True, low=16)
        box_convention = _get_str(obj, "box_convention", "", (BOX_CONVENTION,))
        models_obj = _expect_mapping(obj["models"], "models")
        unknown = sorted(set(models_obj) - set(MODEL_ROLES))
        if unknown:
            raise _fail(f"models.{unknown[0]}", f"unknown model role (known: {', '.join(MODEL_ROLES)})")
        for role in REQUIRED_ROLES:
            if role not in models_obj:
                raise _fail(f"models.{role}", "missing (every bundle has a detector and a query_encoder)")
        present_split = [r for r in SPLIT_ROLES if r in models_obj]
        if present_split and len(present_split) != len(SPLIT_ROLES):
            missing = [r for r in SPLIT_ROLES if r not in models_obj]
            raise _fail(
                f"models.{missing[0]}", "the split graphs come together: backbone_rpn, box_head, reid_head"
            )
        models = {role: ModelSpec.from_json(role, models_obj[role], f"models.{role}") for role in models_obj}
        split_obj = obj.get("split")
        if present_split and split_obj is None:
            raise _fail(
                "split", "missing; the bundle has split graphs, so it needs their RoIAlign parameters"
            )
        if not present_split and split_obj is not None:
            raise _fail("split", "given, but the bundle has no split graphs")
        present_text = [r for r in TEXT_ROLES if r in models_obj]
        if present_text and len(present_text) != len(TEXT_ROLES):
            missing = [r for r in TEXT_ROLES if r not in models_obj]
            raise _fail(f"models.{missing[0]}", "the text graphs come together: text_encoder, crop_encoder")
        tok_obj, text_obj = obj.get("tokenizer"), obj.get("text")
        for key, value in (("tokenizer", tok_obj), ("text", text_obj)):
            if bool(present_text) != (value is not None):
                raise _fail(key, "must be given exactly when models.text_encoder and models.crop_encoder are")
        manifest = cls(
            models=models,
            precision=precision,
            opset=opset,
            preprocessing=Preprocessing.from_json(obj["preprocessing"]),
            postprocessing=Postprocessing.from_json(obj["postprocessing"]),
            embedding=EmbeddingSpec.from_json(obj["embedding"]),
            provenance=Provenance.from_json(obj["provenance"]),
            split=SplitSpec.from_json(split_obj) if split_obj is not None else None,
            tokenizer=TokenizerSpec.from_json(tok_obj) if tok_obj is not None else None,
            text=TextSearchSpec.from_json(text_obj) if text_obj is not None else None,
            box_convention=box_convention,
        )
        manifest._check_contracts()
        return manifest

    @classmethod
    def loads(cls, text: str, source: str = "manifest.json") -> Manifest:
        """Parse manifest JSON text."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BundleError(f"{source} is not valid JSON ({exc}); re-export the bundle") from None
        return cls.from_json(obj)

    def _check_contracts(self) -> None:
        """Check ranks, dtypes and the D / K sizes the graph contracts fix."""
        d, k = self.embedding.dim, self.postprocessing.max_detections
        floats = ("float32", "float16", "bfloat16")
        ints = ("int64", "int32")

        def check(
            role: str,
            kind: str,
            index: int,
            rank: int,
            dtypes: Sequence[str],
            last: int | None = None,
            second: int | None = None,
        ) -> None:
            model = self.models[role]
            tensor = (model.inputs if kind == "inputs" else model.outputs)[index]
            where = f"models.{role}.{kind}[{index}]"
            if len(tensor.shape) != rank:
                raise _fail(
                    f"{where}.shape", f"{tensor.name} must have rank {rank}, got {list(tensor.shape)}"
                )
            if tensor.dtype not in dtypes:
                raise _fail(
                    f"{where}.dtype", f"{tensor.name} must be one of {', '.join(dtypes)}, got {tensor.dtype}"
                )
            if last is not None and tensor.shape[-1] != last:
                raise _fail(f"{where}.shape", f"{tensor.name} must end in {last}, got {list(tensor.shape)}")
            if second is not None and tensor.shape[1] != second:
                raise _fail(
                    f"{where}.shape", f"{tensor.name} needs size {second} in dim 1, got {list(tensor.shape)}"
                )

        check("detector", "inputs", 0, 4, floats, second=3)
        for role in ("detector", "backbone_rpn"):
            if role in self.models and len(self.models[role].inputs) == 2:
                check(role, "inputs", 1, 2, ("float32",), last=2)
        check("detector", "outputs", 0, 3, ("float32",), last=4, second=k)
        check("detector", "outputs", 1, 2, ("float32", "float16"), last=k)
        check("detector", "outputs", 2, 3, floats, last=d, second=k)
        check("detector", "outputs", 3, 1, ints)
        check("query_encoder", "inputs", 0, 4, floats, second=3)
        check("query_encoder", "inputs", 1, 2, ("float32",), last=4)
        check("query_encoder", "outputs", 0, 2, floats, last=d)
        if self.text is not None:
            e = self.text.embedding_dim
            check("text_encoder", "inputs", 0, 2, ints)
            check("text_encoder", "inputs", 1, 2, ints)
            ids, mask = (t.shape for t in self.models["text_encoder"].inputs)
            if ids != mask:
                # The runtime builds both from one tokenisation: one shape, one set of symbols.
                raise _fail(
                    "models.text_encoder.inputs[1].shape",
                    f"the attention mask must have the token ids' shape {list(ids)}, got {list(mask)}",
                )
            check("text_encoder", "outputs", 0, 2, floats, last=e)
            check("crop_encoder", "inputs", 0, 4, floats, second=3)
            check("crop_encoder", "outputs", 0, 2, floats, last=e)
            crops = self.models["crop_encoder"].inputs[0].shape
            if tuple(crops[2:]) != self.text.crop_size:
                raise _fail(
                    "models.crop_encoder.inputs[0].shape",
                    f"crops must be {self.text.crop_size[0]}x{self.text.crop_size[1]} (text.crop_size), "
                    f"got {list(crops)}",
                )
            tokens = self.models["text_encoder"].inputs[0].shape[1]
            longest = tokens if isinstance(tokens, int) else self.models["text_encoder"].dim(tokens).max
            if longest != self.tokenizer.max_length:
                raise _fail(
                    "models.text_encoder.inputs[0].shape",
                    f"takes at most {longest} tokens but tokenizer.max_length is {self.tokenizer.max_length}",
                )
        if self.has_split:
            check("backbone_rpn", "inputs", 0, 4, floats, second=3)
            check("backbone_rpn", "outputs", 0, 4, floats)
            check("backbone_rpn", "outputs", 1, 3, ("float32",), last=4)
            check("backbone_rpn", "outputs", 2, 1, ints)
            for head in ("box_head", "reid_head"):
                check(head, "inputs", 0, 4, floats)
            check("box_head", "outputs", 0, 2, ("float32",), last=4)
            check("box_head", "outputs", 1, 1, ("float32", "float16"))
            check("reid_head", "outputs", 0, 2, floats, last=d)
            check("reid_head", "outputs", 1, 1, ("float32", "float16"))
            check("reid_head", "outputs", 2, 2, ("float32",), last=4)
            for head, spec in (
                ("box_head", self.split.box_roi_align),
                ("reid_head", self.split.reid_roi_align),
            ):
                shape = self.models[head].inputs[0].shape
                if shape[2] != spec.output_size or shape[3] != spec.output_size:
                    raise _fail(
                        f"models.{head}.inputs[0].shape",
                        f"pooled size must be {spec.output_size}x{spec.output_size} (split "
                        "RoIAlign output_size), "
                        f"got {list(shape)}",
                    )


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A validated bundle directory.

    Attributes:
        root: The bundle directory.
        manifest: Its parsed manifest.
    """

    root: Path
    manifest: Manifest = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, verify_hashes: bool = True) -> Bundle:
        """Load and validate a bundle.

        Args:
            path: The bundle directory (or its ``manifest.json``).
            verify_hashes: Check each model file's SHA-256 against the manifest (catches
                truncated copies; costs one read of every file).

        Returns:
            The bundle.

        Raises:
            BundleError: Missing directory/manifest/model file, invalid JSON, wrong schema
                version, unknown keys, bad shapes or dtypes, or a hash mismatch; the message
                names the file or field.
        """
        root = Path(path)
        if root.name == MANIFEST_NAME and root.is_file():
            root = root.parent
        if root.exists() and not root.is_dir():
            raise BundleError(
                f"{root} is a file, not a bundle folder; pass the folder 'personsearch export' wrote"
            )
        if not root.is_dir():
            raise BundleError(
                f"bundle directory {root} does not exist; pass the folder 'personsearch export' wrote"
            )
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(f"{manifest_path} is missing; {root} is not a complete bundle (re-export it)")
        try:
            text = manifest_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"cannot read {manifest_path}: {exc}") from None
        try:
            manifest = Manifest.loads(text, str(manifest_path))
        except BundleError as exc:
            raise BundleError(f"{manifest_path}: {exc}") from None
        for role, model in manifest.models.items():
            file = root / model.file
            if not file.is_file():
                raise BundleError(
                    f"models.{role}.file: {file} is missing; the bundle is incomplete (re-export it)"
                )
            if verify_hashes and file_sha256(file) != model.sha256:
                raise BundleError(
                    f"bundle {root} is corrupted: models.{role}.sha256: {file} does not match the "
                    "manifest's hash (corrupt or partial copy); copy the bundle again or re-export it"
                )
        if manifest.tokenizer is not None and not (root / manifest.tokenizer.file).is_file():
            raise BundleError(f"tokenizer.file: {root / manifest.tokenizer.file} is missing")
        int8 = manifest.text.int8_file if manifest.text is not None else None
        if int8 is not None:
            file = root / int8
            if not file.is_file():
                raise BundleError(
                    f"text.int8_file: {file} is missing; the bundle is incomplete (re-export it)"
                )
            if verify_hashes and file_sha256(file) != manifest.text.int8_sha256:
                raise BundleError(
                    f"bundle {root} is corrupted: text.int8_sha256: {file} does not match the manifest's "
                    "hash (corrupt or partial copy); copy the bundle again or re-export it"
                )
        return cls(root=root, manifest=manifest)

    def model_path(self, role: str) -> Path:
        """Return the file of model ``role``.

        Raises:
            BundleError: When the bundle has no such model.
        """
        model = self.manifest.models.get(role)
        if model is None:
            raise BundleError(
                f"bundle {self.root} has no {role} model (present: {', '.join(self.manifest.models)})"
            )
        return self.root / model.file

    @property
    def model_hash(self) -> str:
        """Identity of the trained weights (the checkpoint hash); galleries record it."""
        return self.manifest.provenance.checkpoint_sha256

    @property
    def embedding_dim(self) -> int:
        """D, the embedding length."""
        return self.manifest.embedding.dim

    def write_manifest(self) -> None:
        """Write ``manifest.json`` atomically (temp file, fsync, rename)."""
        write_manifest(self.root, self.manifest)


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest`` to ``root/manifest.json`` atomically.

    Args:
        root: Bundle directory (must exist).
        manifest: What to write; it is round-tripped through the validator first.

    Returns:
        The manifest path.

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    text = manifest.dumps()
    Manifest.from_json(json.loads(text))
    if not root.is_dir():
        # A missing bundle folder means a wrong path, not a folder to create: the model
        # files the manifest names would not be there either.
        raise FileNotFoundError(f"bundle directory {root} does not exist")
    return atomic_write_bytes(root / MANIFEST_NAME, text.encode("utf-8"))
