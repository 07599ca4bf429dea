"""Sentence-search graphs of a bundle, from a text-to-image dual encoder checkpoint.

A checkpoint trained by a text-retrieval method (``method: irra`` or ``cfam``; its export
description names the ``dual_encoder`` family) holds a
:class:`~personsearch_train.models.dual_encoder.DualEncoder`. Its two towers become two
graphs of the detector's bundle (contract: :mod:`personsearch_runtime.bundle`, "Text
graphs"):

* ``text_encoder.onnx``: ``input_ids`` and ``attention_mask`` ``[B, L]`` int64 ->
  ``embeddings`` ``[B, E]`` float32, L2-normalised (``DualEncoder.encode_texts``);
* ``crop_encoder.onnx``: ``crops`` ``[B, 3, Hc, Wc]`` float32 RGB in [0, 1] ->
  ``embeddings`` ``[B, E]`` float32 in the same space (``DualEncoder.encode_images``,
  normalisation inside the graph);

plus the model's tokenizer as ``tokenizer.json``, with its truncation and padding set to
what the manifest's ``tokenizer`` section says (cut at ``max_length``, pad a batch to its
longest sentence): the trainer's tokenizer file may say otherwise (MiniLM's pads every
sentence to 128 tokens, more than the graph takes), and a client that loads the file with
the ``tokenizers`` package and nothing else then gets what the graph expects.

The dual encoder is not an export family of its own (:mod:`personsearch_export.families`):
a bundle always has a detector, so its text graphs come from a second checkpoint beside
the detector's (``personsearch export --text-checkpoint``).

Precision. With ``--precision fp16`` the crop encoder goes through the same pass as the
detector's graphs (:func:`personsearch_export.precision.convert_file_to_fp16`: the
convolution trunk from the crops on). That pass grows its fp16 region from float image
inputs, which a text encoder does not have, and a transformer would leave the region at
every LayerNorm anyway; the text encoder therefore gets :func:`convert_text_encoder_to_fp16`,
which runs every matrix product (``MatMul``, ``Gemm``) in fp16 and everything else in
float32. That is ``torch.autocast``'s split for these ops: the products carry nearly all
of the arithmetic, while LayerNorm, softmax, the attention mask (float32's lowest value,
outside fp16's range) and the pooling and L2 normalisation keep float32.

Tracing. The token length ``L`` must stay symbolic in the graph. The TorchScript tracer
keeps it for the Hugging Face encoders, but ``nn.MultiheadAttention`` over the tokens
(CFAM's granularity decoder, the CLIP text tower) has it recorded as the constant it was
traced with; while tracing, :func:`_traceable_attention` swaps in an equivalent
in-projection that does not. The parity check runs every length from 2 to
``max_length``, so a graph that still fixes one is reported, not shipped silently.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from personsearch_runtime.atomic_files import atomic_write_bytes
from personsearch_runtime.bundle import (
    DimRange,
    ModelSpec,
    TensorSpec,
    TextSearchSpec,
    TokenizerSpec,
    file_sha256,
)

from personsearch_export.checkpoint_io import LoadedCheckpoint, load_checkpoint
from personsearch_export.errors import CheckpointError, ExportError
from personsearch_export.onnx_export import check_opset, export_module
from personsearch_export.precision import (
    Fp16Report,
    convert_file_to_fp16,
    install_converted_nodes,
    known_element_types,
    saturate_to_half,
)

if TYPE_CHECKING:
    from personsearch_train.models.dual_encoder import DualEncoder

__all__ = [
    "TEXT_FAMILY",
    "TEXT_FP16_OPS",
    "CROP_MAX_BATCH",
    "CROP_OPT_BATCH",
    "TEXT_OPT_TOKENS",
    "INT8_TEXT_ENCODER_FILE",
    "TOKENIZER_FILE",
    "CropEncoderGraph",
    "TextEncoderGraph",
    "TextGraphs",
    "check_text_checkpoint",
    "convert_text_encoder_to_fp16",
    "load_text_checkpoint",
    "text_methods",
    "text_model_specs",
    "write_text_graphs",
    "write_int8_text_encoder",
    "write_tokenizer",
]

#: The export family a text checkpoint's method names (``TextRetrievalMethod.export_description``).
TEXT_FAMILY = "dual_encoder"
#: The method's graph names (its description) and the bundle roles they become.
_DESCRIPTION_ROLES = {"text_encoder": "text_encoder", "image_encoder": "crop_encoder"}
#: File name of the tokenizer inside the bundle.
TOKENIZER_FILE = "tokenizer.json"
#: File name of the text encoder's int8 CPU variant (``--text-int8``).
INT8_TEXT_ENCODER_FILE = "text_encoder.int8.onnx"
#: Token length the TensorRT profile is tuned for (capped at the tokenizer's max_length):
#: person descriptions run to about 25-35 tokens.
TEXT_OPT_TOKENS = 32
#: Crop-encoder batch profile (opt, max) unless ``max_batch`` is larger.
CROP_OPT_BATCH = 16
CROP_MAX_BATCH = 32
#: Ops :func:`convert_text_encoder_to_fp16` runs in fp16.
TEXT_FP16_OPS: frozenset[str] = frozenset({"MatMul", "Gemm"})

_FLOAT = TensorProto.FLOAT
_HALF = TensorProto.FLOAT16
#: Token lengths tried for tracing, first unused one wins: a traced size equal to a static
#: size of the graph (the tokenizer's max_length, a head width, ...) could be baked in.
_TRACE_TOKENS = (13, 11, 17, 19, 7, 5, 3)


class TextEncoderGraph(torch.nn.Module):
    """What ``text_encoder.onnx`` computes: :meth:`DualEncoder.encode_texts`.

    Args:
        model: The dual encoder (eval mode).
    """

    def __init__(self, model: DualEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embed tokenised sentences.

        Args:
            input_ids: ``[B, L]`` int64 token ids, padded with the tokenizer's pad id.
            attention_mask: ``[B, L]`` int64, 1 on real tokens, 0 on padding.

        Returns:
            ``[B, E]`` float32, L2-normalised.
        """
        return self.model.encode_texts(input_ids, attention_mask)


class CropEncoderGraph(torch.nn.Module):
    """What ``crop_encoder.onnx`` computes: :meth:`DualEncoder.encode_images`.

    Args:
        model: The dual encoder (eval mode).
    """

    def __init__(self, model: DualEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        """Embed person crops.

        Args:
            crops: ``[B, 3, Hc, Wc]`` float32 RGB in [0, 1] at the model's ``image_size``.

        Returns:
            ``[B, E]`` float32, L2-normalised, in the text encoder's space.
        """
        return self.model.encode_images(crops)


@dataclass(frozen=True)
class TextGraphs:
    """What :func:`write_text_graphs` put into a bundle folder, as the manifest records it.

    Attributes:
        models: ``text_encoder`` and ``crop_encoder`` model specs (file, hash, tensors, dims).
        tokenizer: The manifest's ``tokenizer`` section.
        text: The manifest's ``text`` section.
    """

    models: dict[str, ModelSpec]
    tokenizer: TokenizerSpec
    text: TextSearchSpec


def text_methods() -> tuple[str, ...]:
    """Registered training methods whose checkpoints export as text graphs (``irra``, ``cfam``, ...).

    Returns:
        Method names, sorted; a method whose default settings do not build is left out.
    """
    from personsearch_train.errors import TrainerError
    from personsearch_train.methods import available_methods, build_method

    names = []
    for name in available_methods():
        try:
            family = build_method(name).export_description().family
        except TrainerError:
            continue  # needs settings to build; it cannot be named in a hint
        if family == TEXT_FAMILY:
            names.append(name)
    return tuple(sorted(names))


def _methods_hint() -> str:
    names = text_methods()
    return " or ".join(f"method: {n}" for n in names) if names else f"a {TEXT_FAMILY!r} method"


def check_text_checkpoint(loaded: LoadedCheckpoint) -> None:
    """Refuse a checkpoint that is not a text-to-image dual encoder.

    Args:
        loaded: The checkpoint given as ``--text-checkpoint``.

    Raises:
        ExportError: Its method exports another family (e.g. a detector's ``seqnet``), or
            does not describe both encoder graphs; the message names the method and says
            which runs give a text checkpoint.
        CheckpointError: Its model is not a ``DualEncoder``.
    """
    from personsearch_train.models.dual_encoder import DualEncoder

    method = loaded.method.name
    description = loaded.method.export_description()
    if description.family != TEXT_FAMILY:
        raise ExportError(
            f"--text-checkpoint {loaded.weights_path}: it was trained by method {method!r}, whose "
            f"checkpoints export as {description.family!r} graphs, not as a text-to-image dual encoder; "
            f"a text checkpoint comes from a run with {_methods_hint()} (pass detector checkpoints "
            "as --checkpoint)"
        )
    missing = sorted(set(_DESCRIPTION_ROLES) - set(description.graphs))
    if missing:
        raise ExportError(
            f"--text-checkpoint {loaded.weights_path}: method {method!r} describes the graphs "
            f"{list(description.graphs)}; sentence search needs both {list(_DESCRIPTION_ROLES)}"
        )
    if not isinstance(loaded.model, DualEncoder):
        raise CheckpointError(
            f"--text-checkpoint {loaded.weights_path}: model {loaded.model_name!r} is a "
            f"{type(loaded.model).__name__}, not a DualEncoder; train the text model with {_methods_hint()} "
            "and a dual_encoder_* model"
        )


def load_text_checkpoint(path: str | Path) -> LoadedCheckpoint:
    """Load a ``--text-checkpoint`` and check that it is a dual encoder.

    Args:
        path: A run folder or checkpoint file of a text-retrieval run.

    Returns:
        The loaded checkpoint (model in eval mode, CPU, float32).

    Raises:
        CheckpointError: Missing, corrupt or mismatched checkpoint files, or a model that
            is not a ``DualEncoder``.
        ExportError: A checkpoint of another kind of method (see :func:`check_text_checkpoint`).
    """
    loaded = load_checkpoint(path)
    check_text_checkpoint(loaded)
    return loaded


def text_model_specs(
    model: DualEncoder, *, max_batch: int
) -> dict[str, tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], tuple[DimRange, ...]]]:
    """Inputs, outputs and dimension ranges of the two text graphs.

    The text encoder is tuned for one query sentence (B opt 1) of :data:`TEXT_OPT_TOKENS`
    tokens and takes 2 (the special tokens of an empty sentence) up to the tokenizer's
    ``max_length``; the crop encoder is tuned for batches of :data:`CROP_OPT_BATCH` crops
    up to :data:`CROP_MAX_BATCH`, since a frame gives several people at once.

    Args:
        model: The dual encoder.
        max_batch: Largest sentence batch (the export's ``--max-batch``); the crop
            batch reaches at least as far.

    Returns:
        Role -> (inputs, outputs, dims), the way the manifest lists them.
    """
    e = int(model.embedding_dim)
    max_tokens = int(model.tokenizer.max_length)
    hc, wc = (int(s) for s in model.image_size)
    tokens = DimRange("L", 2, min(TEXT_OPT_TOKENS, max_tokens), max_tokens)
    return {
        "text_encoder": (
            (
                TensorSpec("input_ids", "int64", ("B", "L")),
                TensorSpec("attention_mask", "int64", ("B", "L")),
            ),
            (TensorSpec("embeddings", "float32", ("B", e)),),
            (DimRange("B", 1, 1, max_batch), tokens),
        ),
        "crop_encoder": (
            (TensorSpec("crops", "float32", ("B", 3, hc, wc)),),
            (TensorSpec("embeddings", "float32", ("B", e)),),
            # A frame brings several people at once: crops batch wider than frames do.
            (DimRange("B", 1, max(CROP_OPT_BATCH, max_batch), max(CROP_MAX_BATCH, max_batch)),),
        ),
    }


def write_tokenizer(model: DualEncoder, path: str | Path) -> TokenizerSpec:
    """Write the model's tokenizer to ``path``, set up as the manifest describes it.

    Args:
        model: The dual encoder (its ``tokenizer`` is a ``TextTokenizer``).
        path: The ``tokenizer.json`` to write (its name becomes ``TokenizerSpec.file``).

    Returns:
        The manifest's ``tokenizer`` section: ``max_length`` and pad id of the model's
        tokenizer, padding ``"longest"``, truncation ``"right"``.

    Raises:
        ExportError: The tokenizer file cannot be read, or its pad id has no token.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    source = Path(model.tokenizer.tokenizer_file)
    max_length = int(model.tokenizer.max_length)
    pad_id = int(model.tokenizer.pad_token_id)
    try:
        tokenizer = Tokenizer.from_file(str(source))
    except Exception as exc:  # the Rust loader raises a bare Exception on bad JSON
        raise ExportError(
            f"the text model's tokenizer {source} cannot be read ({exc}); restore the file the model "
            "was trained with"
        ) from None
    pad_token = tokenizer.id_to_token(pad_id)
    if pad_token is None:
        raise ExportError(f"the text model's pad id {pad_id} is not in the vocabulary of {source}")
    # The file's own settings are replaced: truncation counts the special tokens, as the
    # trainer's tokenizer does; padding to the batch's longest is the runtime's.
    tokenizer.enable_truncation(max_length=max_length, direction="right")
    tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_type_id=0, pad_token=pad_token)
    atomic_write_bytes(path, tokenizer.to_str(pretty=True).encode("utf-8"))
    return TokenizerSpec(
        file=path.name, max_length=max_length, padding="longest", pad_token_id=pad_id, truncation="right"
    )


#: torch's packed in-projection of ``nn.MultiheadAttention``, replaced while tracing.
_PACKED_PROJECTION = getattr(torch.nn.functional, "_in_projection_packed", None)


def _split_projection(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> list[torch.Tensor]:
    """``torch.nn.functional._in_projection_packed`` with the packed projection split by ``chunk``.

    Same products, same values; only the split differs. The original's
    ``unflatten(-1, (n, E))`` path makes the TorchScript tracer record the key length it
    traced with as a constant, so a graph with ``nn.MultiheadAttention`` over the tokens
    (CFAM's granularity decoder, the CLIP text tower) would fail at every other length.
    """
    e = q.size(-1)
    if k is v and q is k:
        return [t.contiguous() for t in torch.nn.functional.linear(q, w, b).chunk(3, dim=-1)]
    if k is v:
        w_q, w_kv = w.split([e, e * 2])
        b_q, b_kv = (None, None) if b is None else b.split([e, e * 2])
        keys, values = torch.nn.functional.linear(k, w_kv, b_kv).chunk(2, dim=-1)
        return [torch.nn.functional.linear(q, w_q, b_q), keys.contiguous(), values.contiguous()]
    return _PACKED_PROJECTION(q, k, v, w, b)


@contextlib.contextmanager
def _traceable_attention() -> Iterator[None]:
    """Trace ``nn.MultiheadAttention`` so its token length stays symbolic (see :func:`_split_projection`).

    Where a torch version has no such private function there is nothing to replace; the
    parity check still runs every token length.
    """
    if _PACKED_PROJECTION is None:
        yield
        return
    torch.nn.functional._in_projection_packed = _split_projection
    try:
        yield
    finally:
        torch.nn.functional._in_projection_packed = _PACKED_PROJECTION


def _trace_tokens(static: Iterable[int], max_tokens: int) -> int:
    """A token length for tracing that is no static size of the graph (falls back to max_length)."""
    taken = set(static)
    return next((n for n in _TRACE_TOKENS if n < max_tokens and n not in taken), max_tokens)


def write_text_graphs(
    loaded: LoadedCheckpoint,
    folder: str | Path,
    *,
    opset: int,
    precision: str = "fp32",
    max_batch: int = 4,
    int8: bool = False,
) -> TextGraphs:
    """Trace ``text_encoder.onnx`` and ``crop_encoder.onnx`` and write ``tokenizer.json`` into ``folder``.

    Args:
        loaded: The text checkpoint (see :func:`load_text_checkpoint`).
        folder: The bundle folder being written.
        opset: ONNX opset (checked as for every graph of the bundle).
        precision: ``"fp32"``, or ``"fp16"`` for the passes described in the module docstring.
        max_batch: Largest batch of either graph (``--max-batch``).
        int8: Also write ``text_encoder.int8.onnx``, the CPU variant (see
            :func:`write_int8_text_encoder`); fp32 bundles only.

    Returns:
        The model specs and the manifest's ``tokenizer`` and ``text`` sections.

    Raises:
        ExportError: Not a text checkpoint, a bad opset, precision or batch, or an fp16
            pass that fails.
    """
    check_opset(opset)
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"--precision {precision}: the text graphs are written in fp32 or fp16")
    if max_batch < 1:
        raise ExportError(f"--max-batch must be >= 1, got {max_batch}")
    if int8 and precision != "fp32":
        raise ExportError("--text-int8 quantises the float32 text encoder; export with --precision fp32")
    check_text_checkpoint(loaded)
    folder = Path(folder)
    model = loaded.model.eval()
    specs = text_model_specs(model, max_batch=max_batch)
    e = int(model.embedding_dim)
    hc, wc = (int(s) for s in model.image_size)
    max_tokens = int(model.tokenizer.max_length)
    tokens = _trace_tokens({e, hc, wc, 2, 3}, max_tokens)
    generator = torch.Generator().manual_seed(0)
    vocab = int(model.tokenizer.vocab_size)
    ids = torch.randint(0, vocab, (2, tokens), generator=generator)
    mask = torch.ones(2, tokens, dtype=torch.int64)
    # One padded row, so the masked path is what gets traced.
    mask[1, tokens // 2 + 1 :] = 0
    ids[1, tokens // 2 + 1 :] = int(model.tokenizer.pad_token_id)
    examples = {
        "text_encoder": (TextEncoderGraph(model).eval(), (ids, mask)),
        "crop_encoder": (CropEncoderGraph(model).eval(), (torch.rand(2, 3, hc, wc, generator=generator),)),
    }
    convert = {
        "text_encoder": functools.partial(convert_file_to_fp16, convert=convert_text_encoder_to_fp16),
        "crop_encoder": convert_file_to_fp16,
    }
    models: dict[str, ModelSpec] = {}
    for role, (module, example) in examples.items():
        inputs, outputs, dims = specs[role]
        path = folder / f"{role}.onnx"
        with _traceable_attention():
            export_module(module, example, path, inputs=inputs, outputs=outputs, opset=opset)
        if precision == "fp16":
            convert[role](path)
        models[role] = ModelSpec(role, path.name, file_sha256(path), inputs, outputs, dims)
    tokenizer = write_tokenizer(model, folder / TOKENIZER_FILE)
    int8_path = (
        write_int8_text_encoder(folder / "text_encoder.onnx", folder / INT8_TEXT_ENCODER_FILE)
        if int8
        else None
    )
    text = TextSearchSpec(
        embedding_dim=e,
        crop_size=(hc, wc),
        checkpoint_sha256=loaded.weights_sha256,
        model_name=loaded.model_name,
        method=loaded.method.name,
        normalized=True,
        interpolation="bilinear",
        int8_file=int8_path.name if int8_path is not None else None,
        int8_sha256=file_sha256(int8_path) if int8_path is not None else None,
    )
    return TextGraphs(models=models, tokenizer=tokenizer, text=text)


def write_int8_text_encoder(source: Path, target: Path) -> Path:
    """Write the CPU int8 variant of a float32 text encoder.

    ONNX Runtime's dynamic quantisation: every ``MatMul`` with a constant weight gets int8
    weights (per output channel) and quantises its activations at run time
    (``DynamicQuantizeLinear`` + ``MatMulInteger``), which ONNX Runtime runs on VNNI / AMX
    int8 kernels; everything else stays float32. No calibration data is needed. The
    variant is for ONNX Runtime on the CPU; TensorRT engines are built from the float graph.

    Args:
        source: The bundle's float32 ``text_encoder.onnx``.
        target: Where to write the variant.

    Returns:
        ``target``.

    Raises:
        ExportError: ONNX Runtime's quantisation tools are missing or fail.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ExportError(
            '--text-int8 needs onnxruntime\'s quantisation tools: pip install "personsearch[export]"'
        ) from None
    try:
        quantize_dynamic(
            source, target, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"]
        )
    except Exception as exc:  # noqa: BLE001 - the quantiser raises many types on graphs it cannot handle
        raise ExportError(f"int8 quantisation of {source.name} failed: {type(exc).__name__}: {exc}") from None
    return target


def convert_text_encoder_to_fp16(
    model: onnx.ModelProto, *, fp16_ops: Iterable[str] = TEXT_FP16_OPS
) -> tuple[onnx.ModelProto, Fp16Report]:
    """Rewrite a float32 text encoder so its matrix products compute in fp16.

    Each ``MatMul`` / ``Gemm`` whose inputs are all float32 reads fp16 copies of them (a
    float32 initializer becomes an fp16 initializer, any other tensor passes one ``Cast``
    shared by all its readers) and writes fp16, cast back to float32 for its readers.
    Nothing else changes type, so inputs and outputs keep theirs (int64 in, float32 out).
    See the module docstring for why this split.

    Args:
        model: A checked float32 ONNX model, nodes in topological order. Not modified.
        fp16_ops: Op types to run in fp16.

    Returns:
        The converted model (checked, with fresh shape inference) and what was done.

    Raises:
        ExportError: The model already holds fp16 tensors, has no float32 matrix product,
            or the converted model fails the ONNX checker.
    """
    fp16_ops = frozenset(fp16_ops)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    types = known_element_types(model)
    initializers = {t.name: t for t in graph.initializer}
    if _HALF in types.values():
        raise ExportError(f"graph {graph.name!r} already holds float16 tensors; convert a float32 graph")
    report = Fp16Report()
    used = {n.name for n in graph.node} | {t for n in graph.node for t in (*n.input, *n.output)}
    used |= {v.name for v in (*graph.input, *graph.output)} | set(initializers)

    def fresh(base: str) -> str:
        name, i = base, 1
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        return name

    casts: dict[str, str] = {}
    half_weights: dict[str, str] = {}
    new_initializers: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def to_half(tensor: str) -> str:
        if tensor in initializers:
            if tensor not in half_weights:
                name = fresh(f"{tensor}_fp16")
                array = numpy_helper.to_array(initializers[tensor])
                new_initializers.append(
                    numpy_helper.from_array(saturate_to_half(array, tensor, report), name)
                )
                half_weights[tensor] = name
            return half_weights[tensor]
        if tensor not in casts:
            # Appended right before its first reader, so the node list stays topologically sorted.
            out = fresh(f"{tensor}_fp16")
            nodes.append(helper.make_node("Cast", [tensor], [out], name=fresh(f"Cast_{out}"), to=_HALF))
            casts[tensor] = out
            report.casts_added += 1
        return casts[tensor]

    for node in graph.node:
        floats = [t for t in node.input if t]
        if (
            node.op_type in fp16_ops
            and node.domain in ("", "ai.onnx")
            and floats
            and all(types.get(t) == _FLOAT for t in floats)
        ):
            node.input[:] = [to_half(t) if t else t for t in node.input]
            out = node.output[0]
            inner = fresh(f"{out}_fp16")
            node.output[0] = inner
            nodes.append(node)
            nodes.append(helper.make_node("Cast", [inner], [out], name=fresh(f"Cast_{out}"), to=_FLOAT))
            report.casts_added += 1
            report.fp16_nodes += 1
            report.fp16_ops[node.op_type] = report.fp16_ops.get(node.op_type, 0) + 1
        else:
            nodes.append(node)
            report.fp32_nodes += 1
    if report.fp16_nodes == 0:
        raise ExportError(
            f"graph {graph.name!r} has no float32 {'/'.join(sorted(fp16_ops))} node; nothing to run in fp16"
        )
    return install_converted_nodes(model, nodes, new_initializers, what="text graph"), report
