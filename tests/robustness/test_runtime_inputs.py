"""Bad inputs to the runtime's Python API, ``personsearch query`` and ``bench``, and OS errors.

Every case must end in one clear error (an ``InputError``, which is both a ``ValueError``
and a ``PersonSearchError``, from the API; exit code 2 and one ``error:`` line from the
command line) that names the argument, what was given and what is expected, never in a
traceback from deep inside numpy/OpenCV/ONNX Runtime and never in confident hits.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
import subprocess
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from personsearch_runtime import cli  # noqa: E402
from personsearch_runtime.bundle import Preprocessing  # noqa: E402
from personsearch_runtime.drawing import draw_hits  # noqa: E402
from personsearch_runtime.errors import PersonSearchError  # noqa: E402
from personsearch_runtime.gallery import GalleryIndex  # noqa: E402
from personsearch_runtime.preprocess import (  # noqa: E402
    MIN_QUERY_SIDE,
    InputError,
    as_bgr_image,
    batch_images,
    prepare_image,
    resized_size,
)
from personsearch_runtime.results import SearchHit  # noqa: E402
from personsearch_runtime.searcher import PersonSearcher  # noqa: E402
from scene_files import PALETTE, crop_of, scene_layout, write_scenes, write_video  # noqa: E402
from tiny_bundle import DIM, scene, write_tiny_bundle  # noqa: E402

QUADS = np.array([[0, 0, 64, 48], [64, 0, 128, 48], [0, 48, 64, 96], [64, 48, 128, 96]], np.float32)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="module")
def searcher(bundle_dir: Path) -> PersonSearcher:
    return PersonSearcher(bundle=bundle_dir, pipeline="detector")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, bundle_dir: Path, searcher: PersonSearcher) -> Path:
    """A folder with scene images and a gallery of them (``root/imgs``, ``root/g``)."""
    root = tmp_path_factory.mktemp("indexed")
    write_scenes(root / "imgs", 4)
    with GalleryIndex.open_for_bundle(root / "g", searcher.bundle) as gallery:
        searcher.index(gallery, [root / "imgs"])
    return root


@pytest.fixture()
def gallery(indexed: Path, searcher: PersonSearcher):  # noqa: ANN201 - yields a GalleryIndex
    with GalleryIndex.open_for_bundle(indexed / "g", searcher.bundle, readonly=True) as g:
        yield g


@pytest.fixture(scope="module")
def empty_gallery(tmp_path_factory: pytest.TempPathFactory, searcher: PersonSearcher):  # noqa: ANN201
    with GalleryIndex.open_for_bundle(tmp_path_factory.mktemp("empty") / "g", searcher.bundle) as g:
        yield g


def _cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Run ``personsearch ARGV``; argparse errors (SystemExit) become their exit code."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_clear_error(err: str, command: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(f"personsearch {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ---- the Python API ------------------------------------------------------------------------------


def test_input_error_is_a_value_error_and_a_user_error() -> None:
    assert issubclass(InputError, ValueError) and issubclass(InputError, PersonSearchError)
    assert InputError.is_user_error


GOOD = scene([PALETTE[2], None, PALETTE[3], None])  # both colours are in the gallery


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (None, r"images\[0\] is None; expected a \[H, W, 3\] uint8 BGR image .*cv2\.imread returns None"),
        (np.zeros((0, 0, 3), np.uint8), r"images\[0\] is empty \(a uint8 array of shape \(0, 0, 3\)\)"),
        (np.zeros((96, 0, 3), np.uint8), r"images\[0\] is empty"),
        (np.zeros((96, 128, 5), np.uint8), r"shape \(96, 128, 5\); expected a \[H, W, 3\] uint8 BGR"),
        (np.zeros((2, 96, 128, 3), np.uint8), r"shape \(2, 96, 128, 3\); expected a \[H, W, 3\]"),
        (np.zeros(7, np.uint8), r"shape \(7,\); expected"),
        (GOOD.astype(np.float32) / 255, r"float32 array .* expected .*uint8.*\(image \* 255\)"),
        (GOOD.astype(np.float64), r"float64 array .* values 0-255"),
        (GOOD.astype(np.uint16), r"uint16 array .* 16-bit"),
        (GOOD > 0, r"bool array"),
        (GOOD.tolist(), r"images\[0\] is a list; expected"),
    ],
    ids=[
        "none",
        "empty",
        "zero-width",
        "5-channels",
        "4-d",
        "1-d",
        "float01",
        "float255",
        "uint16",
        "bool",
        "list",
    ],
)
def test_detect_refuses_what_is_not_an_8bit_image(
    searcher: PersonSearcher, image: object, expected: str
) -> None:
    with pytest.raises(InputError, match=expected):
        searcher.detect([image])
    with pytest.raises(ValueError, match=expected):  # API users can catch ValueError
        searcher.detect([image])


def test_detect_checks_every_image_before_any_runs(searcher: PersonSearcher) -> None:
    calls = []
    original = searcher._detector
    searcher._detector = lambda *a: calls.append(a) or original(*a)
    try:
        with pytest.raises(InputError, match=r"images\[5\] is None"):
            searcher.detect([GOOD] * 5 + [None])
    finally:
        searcher._detector = original
    assert not calls


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (GOOD, r"one array of shape \(96, 128, 3\).* detect\(\[image\]\)"),  # rows would become images
        (None, r"images is None; expected a list"),
        ("scene.png", r"images is 'scene.png'; expected a list .*PersonSearcher.index"),
    ],
)
def test_detect_wants_a_list_of_images(searcher: PersonSearcher, images: object, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        searcher.detect(images)  # type: ignore[arg-type]


def test_grayscale_bgra_and_batched_arrays_are_accepted(searcher: PersonSearcher) -> None:
    reference = searcher.detect([GOOD])[0]
    gray = cv2.cvtColor(GOOD, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(GOOD, cv2.COLOR_BGR2BGRA)
    assert len(searcher.detect([gray])[0]) == len(searcher.detect([gray[:, :, None]])[0]) > 0
    np.testing.assert_allclose(searcher.detect([bgra])[0].embeddings, reference.embeddings, atol=1e-6)
    assert len(searcher.detect(np.stack([GOOD, GOOD]))) == 2
    assert searcher.detect([]) == []
    # A view (mirrored, not contiguous) is an image like any other.
    mirrored = searcher.detect([GOOD[:, ::-1]])[0]
    assert len(mirrored) == len(reference)


def test_a_float_query_crop_is_refused_not_answered(searcher: PersonSearcher, gallery: GalleryIndex) -> None:
    crop = crop_of(PALETTE[2]).astype(np.float32) / 255.0
    with pytest.raises(InputError, match=r"crop_bgr is a float32 array of shape \(48, 32, 3\).*uint8"):
        searcher.search_crop(gallery, crop)


@pytest.mark.parametrize("side", [(1, 1), (1, 40), (MIN_QUERY_SIDE - 1, 40)])
def test_a_query_crop_too_small_to_show_a_person_is_refused(
    searcher: PersonSearcher, gallery: GalleryIndex, side: tuple[int, int]
) -> None:
    crop = crop_of(PALETTE[2], *side)
    with pytest.raises(InputError, match=rf"crop_bgr is {side[0]}x{side[1]} pixels .*at least 8x8"):
        searcher.search_crop(gallery, crop)


def test_the_smallest_accepted_query_crop_still_finds_the_person(
    searcher: PersonSearcher, gallery: GalleryIndex
) -> None:
    hits = searcher.search_crop(gallery, crop_of(PALETTE[2], MIN_QUERY_SIDE, MIN_QUERY_SIDE), top_k=1)
    assert hits[0].similarity > 0.999


@pytest.mark.parametrize("top_k", [0, -1, 2.5, True, "3", None])
def test_top_k_must_be_a_whole_number_of_at_least_one(
    searcher: PersonSearcher, gallery: GalleryIndex, top_k: object
) -> None:
    with pytest.raises(InputError, match=rf"top_k \(--top-k\) must be a whole number >= 1, got {top_k!r}"):
        searcher.search_crop(gallery, crop_of(PALETTE[2]), top_k=top_k)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="top_k"):
        searcher.search_box(gallery, GOOD, QUADS[0].tolist(), top_k=top_k)  # type: ignore[arg-type]


def test_numpy_integers_are_whole_numbers(searcher: PersonSearcher, gallery: GalleryIndex) -> None:
    assert len(searcher.search_crop(gallery, crop_of(PALETTE[2]), top_k=np.int64(2))) == 2


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ([np.nan, 0, 64, 48], r"box nan,0,64,48 is not finite"),
        ([0, 0, np.inf, 48], r"box 0,0,inf,48 is not finite"),
        ([0, -np.inf, 64, 48], r"is not finite"),
        ([64, 0, 10, 48], r"box 64,0,10,48 is empty: .*x1 < x2 and y1 < y2"),
        ([0, 48, 64, 48], r"is empty"),
        ([500, 500, 600, 600], r"box 500,500,600,600 is outside the 128x96 \(WxH\) image"),
        ([-50, -50, -10, -10], r"is outside"),
        ([0, 0, 5, 48], r"box 0,0,5,48 is 5x48 \(WxH\) pixels inside the image.*at least 8x8"),
        ([124, 0, 300, 48], r"is 4x48 \(WxH\) pixels inside the image"),  # small once clipped
        ([1, 2, 3], r"box is \[1, 2, 3\]; expected four numbers"),
        ([1, 2, 3, 4, 5], r"expected four numbers"),
        (None, r"box is None; expected four numbers"),
        ("0,0,64,48", r"box is '0,0,64,48'; expected four numbers"),
        (["a", 0, 64, 48], r"are not numbers"),
    ],
)
def test_bad_query_boxes_are_refused(
    searcher: PersonSearcher, gallery: GalleryIndex, box: object, expected: str
) -> None:
    with pytest.raises(InputError, match=expected):
        searcher.search_box(gallery, GOOD, box)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        (np.array([[0, 0, 64, 48], [np.nan, 0, 1, 1]]), r"box nan,0,1,1 is not finite"),
        (np.zeros((2, 5)), r"boxes have shape \(2, 5\); expected \[M, 4\]"),
        (np.zeros((2, 2, 4)), r"boxes have shape \(2, 2, 4\)"),
        (None, r"boxes is None"),
    ],
)
def test_embed_boxes_checks_every_box(searcher: PersonSearcher, boxes: object, expected: str) -> None:
    with pytest.raises(InputError, match=expected):
        searcher.embed_boxes(GOOD, boxes)  # type: ignore[arg-type]


def test_boxes_reaching_past_the_edge_are_embedded_as_given(searcher: PersonSearcher) -> None:
    # Not clipped: evaluation embeds ground-truth boxes, which may cross the edge, exactly as
    # the trainer's embed_boxes does.
    past = np.array([[-5, -20, 64, 48], [64, 48, 1e6, 100]], np.float32)
    out = searcher.embed_boxes(GOOD, past)
    assert out.shape == (2, DIM) and np.all(np.isfinite(out))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_embed_boxes_with_no_boxes_returns_no_embeddings(searcher: PersonSearcher) -> None:
    out = searcher.embed_boxes(GOOD, np.zeros((0, 4), np.float32))
    assert out.shape == (0, DIM) and out.dtype == np.float32


def test_a_box_with_negative_values_finds_the_person(searcher: PersonSearcher, gallery: GalleryIndex) -> None:
    hits = searcher.search_box(gallery, GOOD, (-5, -5, 64, 48), top_k=1)
    layout = scene_layout(int(Path(hits[0].source).stem.split("_")[1]))
    quadrant = [tuple(q) for q in QUADS.tolist()].index(hits[0].box)
    assert layout[quadrant] == PALETTE[2] and hits[0].similarity > 0.9


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"bundle": None}, r"bundle is a NoneType; expected a Bundle or the path"),
        ({"batch_size": 0}, r"batch_size \(--batch\) must be a whole number >= 1, got 0"),
        ({"batch_size": "4"}, r"batch_size \(--batch\) must be a whole number >= 1, got '4'"),
        ({"batch_size": 1.5}, r"got 1.5"),
        ({"intra_op_threads": -1}, r"intra_op_threads must be a whole number >= 0, got -1"),
        ({"device": None}, r"device must be a string \(cpu, cuda or cuda:N\), got None"),
        ({"device": "gpu"}, r"unknown device 'gpu'; use cpu, cuda or cuda:N"),
        ({"backend": "tensorflow"}, r"unknown backend 'tensorflow'; use ort or trt"),
        ({"pipeline": None}, r"pipeline must be one of auto, detector, split, got None"),
        ({"engine_dir": 3}, r"engine_dir is a int; expected a folder path or None"),
    ],
)
def test_searcher_arguments_are_checked(bundle_dir: Path, kwargs: dict[str, object], expected: str) -> None:
    arguments = {"bundle": bundle_dir, **kwargs}
    with pytest.raises(InputError, match=expected):
        PersonSearcher(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("not_a_gallery", [None, "gallery_folder", 3])
def test_a_gallery_argument_that_is_not_a_gallery_is_refused(
    searcher: PersonSearcher, not_a_gallery: object
) -> None:
    with pytest.raises(InputError, match=r"gallery is a \w+; expected a GalleryIndex"):
        searcher.search_crop(not_a_gallery, crop_of(PALETTE[2]))
    with pytest.raises(InputError, match="expected a GalleryIndex"):
        searcher.index(not_a_gallery, ["imgs"])


def test_index_takes_one_path_as_a_list_of_one(
    searcher: PersonSearcher, tmp_path: Path, indexed: Path
) -> None:
    # Before, a bare string was iterated as one-character paths and walked "/" first.
    with GalleryIndex.open_for_bundle(tmp_path / "g", searcher.bundle) as gallery:
        summary = searcher.index(gallery, str(indexed / "imgs"))
        assert summary.sources == 4 and summary.frames == 4


@pytest.mark.parametrize(
    ("sources", "every", "expected"),
    [
        ([], 1, r"sources is empty; expected a non-empty list"),
        (None, 1, r"sources is None; expected"),
        (["a.jpg", 3], 1, r"sources\[1\] is 3, not a path; expected"),
        (["x"], 0, r"every_nth_frame \(--every-nth-frame\) must be a whole number >= 1, got 0"),
        (["x"], 2.5, r"got 2.5"),
    ],
)
def test_index_arguments_are_checked(
    searcher: PersonSearcher, empty_gallery: GalleryIndex, sources: object, every: object, expected: str
) -> None:
    with pytest.raises(InputError, match=expected):
        searcher.index(empty_gallery, sources, every_nth_frame=every)  # type: ignore[arg-type]
    assert len(empty_gallery) == 0


def test_preprocessing_functions_refuse_empty_inputs() -> None:
    spec = Preprocessing(min_size=64, max_size=128)
    with pytest.raises(InputError, match=r"at least 1x1 pixels, got 0x5"):
        resized_size(0, 5, spec)
    with pytest.raises(InputError, match="at least one prepared image"):
        batch_images([], spec)
    with pytest.raises(InputError, match=r"frame is None"):
        prepare_image(None, spec, name="frame")  # type: ignore[arg-type]
    assert as_bgr_image(GOOD) is GOOD  # nothing copied for what is already right


def test_detect_prepared_refuses_an_empty_batch(searcher: PersonSearcher) -> None:
    with pytest.raises(InputError, match="expected a non-empty list of PreparedImage"):
        searcher.detect_prepared([])
    with pytest.raises(InputError, match="PreparedImage"):
        searcher.detect_prepared([GOOD])  # type: ignore[list-item]
    with pytest.raises(InputError, match="prepared is a list of ndarray; expected"):
        searcher.detect_prepared([GOOD])  # type: ignore[list-item]


def _hit(source: str, box: tuple[float, float, float, float], similarity: float = 0.5) -> SearchHit:
    return SearchHit(1, similarity, similarity, 1, source, 0, None, box, 0.9)


def test_hits_json_stays_strict_json_with_non_finite_numbers() -> None:
    hit = _hit("a.png", (0.0, np.nan, 5.0, np.inf), similarity=float("nan"))
    text = json.dumps(hit.to_json(), allow_nan=False)
    assert json.loads(text)["similarity"] is None and json.loads(text)["box"] == [0.0, None, 5.0, None]


def test_drawing_survives_odd_hits_and_refuses_unknown_formats(tmp_path: Path) -> None:
    panorama = tmp_path / "pano.png"
    cv2.imwrite(str(panorama), np.full((20, 4000, 3), 90, np.uint8))
    hits = [
        _hit(str(panorama), (10.0, 2.0, 30.0, 18.0)),
        _hit(str(panorama), (-1e30, -1e30, 1e30, 1e30)),  # would overflow OpenCV's int coordinates
        _hit(str(panorama), (np.nan, 0.0, 1.0, 1.0)),
        _hit(str(tmp_path / "gone.png"), (0.0, 0.0, 5.0, 5.0)),  # the source was deleted since
    ]
    path = draw_hits(crop_of(PALETTE[2]), hits, tmp_path / "hits.jpg", tile_height=64)
    picture = cv2.imread(str(path))
    assert picture.shape[0] == 64 + 28 and picture.shape[1] < 6 * 4 * 64  # panoramas letterboxed
    with pytest.raises(InputError, match=r"no image encoder for the extension '\.xyz'; use \.jpg or \.png"):
        draw_hits(crop_of(PALETTE[2]), hits[:1], tmp_path / "hits.xyz")
    with pytest.raises(InputError, match="needs a query image, query sentences or both"):
        draw_hits(None, hits[:1], tmp_path / "hits.jpg")  # type: ignore[arg-type]
    assert not (tmp_path / "hits.xyz").exists()


# ---- personsearch query ----------------------------------------------------------------------------


def _query(bundle: Path, root: Path, *args: object) -> list[object]:
    return ["query", "--bundle", bundle, "--gallery", root / "g", *args]


def test_a_negative_box_value_works_as_the_user_types_it(
    bundle_dir: Path, indexed: Path, tmp_path: Path
) -> None:
    """The exact command, in a fresh interpreter: argparse used to read -5,... as an option."""
    frame = indexed / "imgs" / "scene_000.png"
    command = [sys.executable, "-m", "personsearch_runtime"]
    command += [str(a) for a in _query(bundle_dir, indexed, "--frame", frame, "--box", "-5,10,50,100")]
    command += ["--top-k", "1", "--out", str(tmp_path / "q")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    payload = json.loads((tmp_path / "q" / "hits.json").read_text())
    assert payload["query"]["box"] == [-5.0, 10.0, 50.0, 100.0] and len(payload["hits"]) == 1


def test_the_equals_form_of_a_negative_box_works_too(
    bundle_dir: Path, indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = indexed / "imgs" / "scene_000.png"
    argv = _query(bundle_dir, indexed, "--frame", frame, "--box=-5,-10.5,50,100", "--out", tmp_path / "q")
    code, out, err = _cli(capsys, *argv)
    assert code == 0, err
    assert json.loads((tmp_path / "q" / "hits.json").read_text())["query"]["box"] == [-5.0, -10.5, 50, 100]


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (
            "nan,10,50,100",
            r"argument --box: must be 4 finite numbers x1,y1,x2,y2 \(pixels\), got 'nan,10,50,100'",
        ),
        ("0,0,inf,100", r"must be 4 finite numbers"),
        ("-inf,0,5,100", r"must be 4 finite numbers"),
        ("0,0,1e999,100", r"must be 4 finite numbers"),
        ("50,10,5,100", r"argument --box: needs x1 < x2 and y1 < y2"),
        ("1,2,3", r"argument --box: must be 4 numbers x1,y1,x2,y2 \(pixels\), got '1,2,3'"),
        ("a,b,c,d", r"must be 4 numbers"),
        ("", r"must be 4 numbers"),
    ],
)
def test_bad_box_values_get_a_message(
    bundle_dir: Path,
    indexed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    box: str,
    expected: str,
) -> None:
    frame = indexed / "imgs" / "scene_000.png"
    code, _, err = _cli(
        capsys, *_query(bundle_dir, indexed, "--frame", frame, f"--box={box}", "--out", tmp_path)
    )
    assert code == 2
    assert re.search(expected, _one_clear_error(err, "query"))


def test_query_image_problems_each_get_their_own_message(
    bundle_dir: Path, indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    cv2.imwrite(str(tmp_path / "one_pixel.png"), crop_of(PALETTE[2], 1, 1))
    video = write_video(tmp_path / "cam.avi", 2)
    cases = {
        indexed / "imgs": r"--image \S+imgs is a folder; --image expects one image file",
        tmp_path / "missing.jpg": r"--image \S+missing.jpg does not exist; give the path of an image file",
        tmp_path / "corrupt.jpg": r"--image \S+corrupt.jpg is not a readable image .*give a JPEG, PNG",
        tmp_path / "empty.png": r"--image \S+empty.png is not a readable image",
        tmp_path / "one_pixel.png": r"--image \S+one_pixel.png is 1x1 pixels \(WxH\); .*at least 8x8",
        video: r"--image \S+cam.avi is a video; --image expects an image",
        "": r"--image is empty; give the path of an image file",
    }
    for image, expected in cases.items():
        code, _, err = _cli(capsys, *_query(bundle_dir, indexed, "--image", image, "--out", tmp_path / "q"))
        assert code == 2, image
        assert re.search(expected, _one_clear_error(err, "query")), err
    code, _, err = _cli(
        capsys,
        *_query(
            bundle_dir, indexed, "--frame", indexed / "imgs", "--box", "0,0,9,9", "--out", tmp_path / "q"
        ),
    )
    assert code == 2 and "--frame" in _one_clear_error(err, "query") and "is a folder" in err
    assert not (tmp_path / "q").exists()  # nothing written for a refused query


def test_out_of_the_wrong_kind_is_refused_before_searching(
    bundle_dir: Path, indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_of(PALETTE[2]))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    (tmp_path / "q" / "hits.jpg").mkdir(parents=True)
    cases = {
        a_file: r"--out \S+notes.txt is a file; --out is the folder that receives hits.json and hits.jpg",
        a_file / "sub": r"--out \S+sub cannot be created: \S+notes.txt is a file, not a folder",
        tmp_path / "q": r"\S+hits.jpg is a folder, but query writes its hits.jpg file there",
    }
    for out, expected in cases.items():
        code, _, err = _cli(capsys, *_query(bundle_dir, indexed, "--image", crop, "--out", out))
        assert code == 2
        assert re.search(expected, _one_clear_error(err, "query")), err
    assert a_file.read_text() == "mine" and not (tmp_path / "q" / "hits.json").exists()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--top-k", "0"], r"argument --top-k: must be a whole number >= 1, got '0'"),
        (["--top-k", "-3"], r"argument --top-k: must be a whole number >= 1, got '-3'"),
        (["--top-k", "ten"], r"argument --top-k: must be a whole number >= 1, got 'ten'"),
        (["--box", "0,0,9,9"], r"--box goes with --frame, not with --image"),
        (["--out", ""], r"--out is empty; give a folder for hits.json and hits.jpg"),
        (["--out", "  "], r"--out is empty"),
    ],
)
def test_query_option_combinations_and_counts(
    bundle_dir: Path,
    indexed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    extra: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # an empty --out must not write into the current folder
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_of(PALETTE[2]))
    out = [] if "--out" in extra else ["--out", tmp_path / "q"]
    code, _, err = _cli(capsys, *_query(bundle_dir, indexed, "--image", crop, *out, *extra))
    assert code == 2
    assert re.search(expected, _one_clear_error(err, "query")), err
    assert not list(tmp_path.glob("hits.*")) and not (tmp_path / "q").exists()


def test_a_frame_without_a_box_exits_2(
    bundle_dir: Path, indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = indexed / "imgs" / "scene_000.png"
    code, _, err = _cli(capsys, *_query(bundle_dir, indexed, "--frame", frame, "--out", tmp_path / "q"))
    assert code == 2 and "--frame needs --box x1,y1,x2,y2" in _one_clear_error(err, "query")


def test_a_box_too_small_or_outside_the_frame_gets_a_message(
    bundle_dir: Path, indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = indexed / "imgs" / "scene_000.png"
    for box, expected in (
        ("0,0,3,3", "is 3x3 (WxH) pixels inside the image"),
        ("-50,-50,-1,-1", "is outside"),
    ):
        code, _, err = _cli(
            capsys, *_query(bundle_dir, indexed, "--frame", frame, f"--box={box}", "--out", tmp_path)
        )
        assert code == 2 and expected in _one_clear_error(err, "query")


def test_a_large_top_k_draws_a_bounded_picture(
    bundle_dir: Path, indexed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_of(PALETTE[2]))
    code, out, err = _cli(
        capsys, *_query(bundle_dir, indexed, "--image", crop, "--top-k", "1000000", "--out", tmp_path / "q")
    )
    assert code == 0, err
    assert len(json.loads((tmp_path / "q" / "hits.json").read_text())["hits"]) == 12  # the whole gallery


# ---- personsearch bench ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--size", "0x0", r"argument --size: height and width must each be 16 to 8192 pixels"),
        ("--size", "-5x40", r"argument --size: height and width must each be 16 to 8192"),
        ("--size", "96x-128", r"must each be 16 to 8192"),
        ("--size", "99999x128", r"must each be 16 to 8192"),
        ("--size", "96", r"argument --size: must be HxW in pixels, e.g. 576x768; got '96'"),
        ("--size", "96x128x3", r"must be HxW in pixels"),
        ("--size", "axb", r"must be HxW in pixels"),
        ("--frames", "0", r"argument --frames: must be a whole number >= 1, got '0'"),
        ("--frames", "-2", r"argument --frames: must be a whole number >= 1, got '-2'"),
        ("--frames", "1.5", r"argument --frames: must be a whole number >= 1"),
        ("--batch", "0", r"argument --batch: must be a whole number >= 1, got '0'"),
        ("--batch", "-1", r"argument --batch: must be a whole number >= 1, got '-1'"),
        ("--warmup", "-1", r"argument --warmup: must be a whole number >= 0, got '-1'"),
    ],
)
def test_bench_options_out_of_range_exit_2(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, expected: str
) -> None:
    code, _, err = _cli(capsys, "bench", "--bundle", bundle_dir, option, value)
    assert code == 2
    assert re.search(expected, _one_clear_error(err, "bench")), err


def test_bench_reports_a_bad_device_or_an_empty_source_before_any_work(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "bench", "--bundle", bundle_dir, "--device", "cuda:x")
    assert code == 2 and not out and "unknown device 'cuda:x'" in _one_clear_error(err, "bench")
    code, out, err = _cli(capsys, "bench", "--bundle", bundle_dir, "--source")
    assert code == 2 and not out and "argument --source: expected at least one argument" in err


def test_bench_refuses_frames_that_would_not_fit_in_memory(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(
        capsys, "bench", "--bundle", bundle_dir, "--frames", "100000", "--size", "1000x1000"
    )
    assert code == 2 and not out
    assert "would hold 279.4 GiB of frames in memory (at most 2 GiB); lower --frames" in _one_clear_error(
        err, "bench"
    )


def test_bench_says_when_a_batch_is_above_the_bundles_largest(
    bundle_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _cli(
        capsys,
        "bench",
        "--bundle",
        bundle_dir,
        "--frames",
        "2",
        "--size",
        "96x128",
        "--batch",
        "16",
        "--warmup",
        "0",
    )
    assert code == 0
    assert (
        "| 8 | detector |" in out
        and "note: --batch 16 is above the bundle's largest batch; timed at 8" in out
    )


def test_bench_source_without_readable_frames(
    bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    code, _, err = _cli(capsys, "bench", "--bundle", bundle_dir, "--source", tmp_path / "bad.jpg")
    assert code == 2 and "no readable frames in --source" in _one_clear_error(err, "bench")


# ---- OS errors at the front door ---------------------------------------------------------------------


@pytest.fixture()
def fake_command(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - yields a setter
    """``personsearch fake`` runs a module whose ``run`` raises what the test sets."""
    module = types.ModuleType("personsearch_fake_command")
    module.add_arguments = lambda parser: parser.add_argument("--value")
    raised: list[BaseException] = []

    def run(args: object) -> int:
        raise raised[0]

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli._BY_NAME, "fake", cli.Command("fake", module.__name__, "test", "runtime"))
    return raised.append


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/data/g/index.npz"),
            "cannot write /data/g/index.npz: no space left on device; free some space and rerun; "
            "work saved so far is kept",
        ),
        (
            OSError(errno.EDQUOT, "Disk quota exceeded", "/data/out.json"),
            "cannot write /data/out.json: disk quota exceeded; free some space or raise the quota",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/ro/hits.json"),
            "cannot write /mnt/ro/hits.json: read-only file system; write somewhere writable",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/locked"),
            "cannot use /data/locked: permission denied; check the permissions",
        ),
        (
            IsADirectoryError(errno.EISDIR, "Is a directory", "/data/out/hits.json"),
            "cannot use /data/out/hits.json: it is a folder where a file is expected",
        ),
        (
            NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/file/sub"),
            "cannot use /data/file/sub: a part of the path is a file where a folder is expected",
        ),
        (
            OSError(errno.ENOENT, "No such file or directory", "/data/out/tmp", None, "/data/out/x"),
            "cannot use /data/out/tmp -> /data/out/x: no such file or folder; check the path",
        ),
        (OSError(errno.ENOSPC, "No space left on device"), "cannot write: no space left on device;"),
        (
            IsADirectoryError("cannot replace /data/out/hits.json with a file: it is a folder"),
            "cannot replace /data/out/hits.json with a file: it is a folder; give a file path, or move "
            "the folder away",
        ),
    ],
)
def test_environment_os_errors_are_one_message_and_exit_2(
    fake_command, capsys: pytest.CaptureFixture[str], error: OSError, expected: str
) -> None:
    fake_command(error)
    code, _, err = _cli(capsys, "fake")
    assert code == 2
    assert _one_clear_error(err, "fake").startswith(f"personsearch fake: error: {expected}")


def test_a_real_sqlite_read_only_error_is_a_message(
    fake_command, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "x.sqlite"
    sqlite3.connect(db).execute("CREATE TABLE t(a)").connection.commit()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        con.execute("INSERT INTO t VALUES (1)")
    except sqlite3.OperationalError as exc:
        fake_command(exc)
    finally:
        con.close()
    code, _, err = _cli(capsys, "fake")
    assert code == 2
    assert "cannot use a database file (attempt to write a readonly database): it is read-only" in err


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("a bug"),
        OSError(errno.ECONNREFUSED, "Connection refused"),
        OSError("no errno: raised by our own code"),
        sqlite3.OperationalError("no such table: detections"),
    ],
)
def test_other_exceptions_are_bugs_and_still_raise(fake_command, error: Exception) -> None:
    fake_command(error)
    with pytest.raises(type(error)):
        cli.main(["fake"])


def test_a_disk_full_while_writing_hits_leaves_nothing_half_written(
    bundle_dir: Path,
    indexed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real query command meets a full disk on its first write: one message, no partial file."""
    from personsearch_runtime import atomic_files

    class FullDisk:
        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_of(PALETTE[2]))
    monkeypatch.setattr(atomic_files, "open", lambda *args, **kwargs: FullDisk(), raising=False)
    code, out, err = _cli(capsys, *_query(bundle_dir, indexed, "--image", crop, "--out", tmp_path / "q"))
    assert code == 2 and "no space left on device; free some space and rerun" in _one_clear_error(
        err, "query"
    )
    assert [p.name for p in (tmp_path / "q").iterdir()] == []


def test_a_bundle_path_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    from personsearch_runtime.bundle import Bundle
    from personsearch_runtime.errors import BundleError

    file = tmp_path / "bundle.onnx"
    file.write_bytes(b"not a folder")
    with pytest.raises(BundleError, match="is a file, not a bundle folder"):
        Bundle.load(file)
