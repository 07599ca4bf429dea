from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import pytest
from personsearch_runtime import cli
from personsearch_runtime.bundle import Bundle
from personsearch_runtime.gallery import GalleryIndex
from scene_files import PALETTE, crop_of, scene_layout, write_scenes, write_video


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_index_query_info_end_to_end(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scenes(tmp_path / "imgs", 4)
    video = write_video(tmp_path / "cam.avi", 12, fps=10.0)
    gallery = tmp_path / "g"
    code, out, _ = _run(
        capsys,
        "index",
        "--bundle",
        tiny_bundle,
        "--gallery",
        gallery,
        tmp_path / "imgs",
        video,
        "--every-nth-frame",
        "3",
        "--batch",
        "3",
        "--no-progress",
    )
    assert code == 0, out
    assert "indexed 8 frames" in out  # 4 images + frames 0, 3, 6, 9
    code, out, _ = _run(capsys, "info", "--gallery", gallery, "--json")
    info = json.loads(out)
    assert (info["num_sources"], info["num_frames"], info["num_detections"]) == (5, 8, 24)
    assert info["embedding_dim"] == 8 and info["model_hash"] == Bundle.load(tiny_bundle).model_hash
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_of(PALETTE[4]))
    code, out, _ = _run(
        capsys,
        "query",
        "--bundle",
        tiny_bundle,
        "--gallery",
        gallery,
        "--image",
        crop,
        "--top-k",
        "4",
        "--out",
        tmp_path / "q",
    )
    assert code == 0
    hits = json.loads((tmp_path / "q" / "hits.json").read_text())["hits"]
    layouts = [scene_layout(i) for i in (0, 1, 2, 3, 0, 3, 6, 9)]  # 4 images, video frames 0, 3, 6, 9
    occurrences = sum(layout.count(PALETTE[4]) for layout in layouts)
    assert len(hits) == 4 and occurrences >= 3
    assert [h["similarity"] > 0.999 for h in hits] == [i < occurrences for i in range(4)]
    video_hits = [h for h in hits if h["source"].endswith("cam.avi")]
    assert video_hits and all(h["timestamp"] == pytest.approx(h["frame_index"] / 10.0) for h in video_hits)
    assert all(h["frame_index"] % 3 == 0 for h in video_hits)
    picture = cv2.imread(str(tmp_path / "q" / "hits.jpg"))
    assert picture is not None and picture.shape[1] > 4 * 100
    frame = tmp_path / "frame.png"
    shutil.copy(tmp_path / "imgs" / "scene_001.png", frame)
    code, out, _ = _run(
        capsys,
        "query",
        "--bundle",
        tiny_bundle,
        "--gallery",
        gallery,
        "--frame",
        frame,
        "--box",
        "0,48,64,96",
        "--top-k",
        "2",
        "--out",
        tmp_path / "q2",
    )
    assert code == 0 and "#1" in out
    code, out, _ = _run(capsys, "info", "--gallery", gallery)
    assert "num_detections" in out and "24" in out
    code, out, _ = _run(
        capsys, "index", "--bundle", tiny_bundle, "--gallery", gallery, "--delete-source", video
    )
    assert code == 0 and "12 detections" in out
    info = json.loads(_run(capsys, "info", "--gallery", gallery, "--json")[1])
    assert (info["num_sources"], info["num_frames"], info["num_detections"]) == (4, 4, 12)


def test_bad_inputs_give_one_clear_message(
    tiny_bundle: Path, other_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 2)
    (imgs / "corrupt.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (imgs / "empty.png").write_bytes(b"")
    (imgs / "broken.mp4").write_bytes(os.urandom(2048))
    gallery = tmp_path / "g"
    code, out, err = _run(
        capsys, "index", "--bundle", tiny_bundle, "--gallery", gallery, imgs, "--no-progress"
    )
    assert code == 0
    assert "indexed 2 frames" in out and "skipped 3 unreadable file(s)" in out
    assert "corrupt.jpg" in out and "broken.mp4" in out and "empty.png" in out

    # A gallery from another model.
    code, _, err = _run(
        capsys, "index", "--bundle", other_bundle, "--gallery", gallery, imgs, "--no-progress"
    )
    assert code == 2 and "another model" in err and "Traceback" not in err
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), crop_of(PALETTE[0]))
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        other_bundle,
        "--gallery",
        gallery,
        "--image",
        crop,
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "another model" in err

    # An incomplete bundle.
    broken = tmp_path / "broken_bundle"
    shutil.copytree(tiny_bundle, broken)
    (broken / "detector.onnx").unlink()
    code, _, err = _run(capsys, "index", "--bundle", broken, "--gallery", tmp_path / "g2", imgs)
    assert code == 2 and "detector" in err and "missing" in err

    # An empty gallery.
    GalleryIndex.open_for_bundle(tmp_path / "empty", Bundle.load(tiny_bundle)).close()
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        tiny_bundle,
        "--gallery",
        tmp_path / "empty",
        "--image",
        crop,
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "empty" in err

    # A query with nobody in it.
    black = tmp_path / "black.png"
    cv2.imwrite(str(black), crop_of((0.0, 0.0, 0.0)))
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        tiny_bundle,
        "--gallery",
        gallery,
        "--image",
        black,
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "no person" in err

    # Nothing readable at all, a missing source, a missing gallery, a bad box.
    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.jpg").write_bytes(b"nope")
    code, _, err = _run(
        capsys, "index", "--bundle", tiny_bundle, "--gallery", tmp_path / "g3", only_bad, "--no-progress"
    )
    assert code == 2 and "could be read" in err
    code, _, err = _run(capsys, "index", "--bundle", tiny_bundle, "--gallery", gallery, tmp_path / "nope.jpg")
    assert code == 2 and "does not exist" in err
    code, _, err = _run(capsys, "info", "--gallery", tmp_path / "nothing")
    assert code == 2 and "not a gallery" in err
    code, _, err = _run(
        capsys,
        "query",
        "--bundle",
        tiny_bundle,
        "--gallery",
        gallery,
        "--frame",
        imgs / "scene_000.png",
        "--box",
        "500,500,600,600",
        "--out",
        tmp_path / "q",
    )
    assert code == 2 and "outside" in err


_SLOW_INDEX = """
import signal, sys, time
# A shell that starts the test run in the background ignores SIGINT for its children, and
# Python then installs no KeyboardInterrupt handler; the test needs Ctrl-C's behaviour.
signal.signal(signal.SIGINT, signal.default_int_handler)
from personsearch_runtime import detection
original = detection.OneGraphDetector.__call__
def slow(self, batch, image_sizes=None):
    time.sleep(0.25)
    return original(self, batch, image_sizes)
detection.OneGraphDetector.__call__ = slow
from personsearch_runtime.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _committed_frames(gallery: Path) -> int:
    db = gallery / "gallery.sqlite"
    if not db.is_file():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_indexing_resumes_to_the_same_gallery(
    tiny_bundle: Path, tmp_path: Path, how: int, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 6)
    video = write_video(tmp_path / "cam.avi", 30)
    args = ["index", "--bundle", str(tiny_bundle), "--batch", "2", "--no-progress", str(video), str(imgs)]

    reference = tmp_path / "reference"
    assert _run(capsys, *args, "--gallery", reference)[0] == 0

    gallery = tmp_path / "interrupted"
    script = tmp_path / "slow_index.py"
    script.write_text(textwrap.dedent(_SLOW_INDEX))
    proc = subprocess.Popen(
        [sys.executable, str(script), *args, "--gallery", str(gallery)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while _committed_frames(gallery) < 6 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "indexing finished before it could be interrupted"
    proc.send_signal(how)
    _, err = proc.communicate(timeout=60)
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    partial = _committed_frames(gallery)
    assert 6 <= partial < 36

    code, out, _ = _run(capsys, *args, "--gallery", gallery)
    assert code == 0 and f"indexed {36 - partial} frames" in out
    with GalleryIndex.open(reference, readonly=True) as a, GalleryIndex.open(gallery, readonly=True) as b:
        assert a.dump() == b.dump()
        assert a.info().num_frames == b.info().num_frames == 36
        q = a.embeddings()[1][:3]
        assert [[h.detection_id for h in r] for r in a.search(q, top_k=5)] == [
            [h.detection_id for h in r] for r in b.search(q, top_k=5)
        ]


def test_search_while_another_process_indexes(tiny_bundle: Path, tmp_path: Path) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 12)
    gallery = tmp_path / "g"
    script = tmp_path / "slow_index.py"
    script.write_text(textwrap.dedent(_SLOW_INDEX))
    args = [
        "index",
        "--bundle",
        str(tiny_bundle),
        "--batch",
        "1",
        "--no-progress",
        str(imgs),
        "--gallery",
        str(gallery),
    ]
    proc = subprocess.Popen(
        [sys.executable, str(script), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while _committed_frames(gallery) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = []
    with GalleryIndex.open(gallery, readonly=True) as reader:
        while proc.poll() is None and time.monotonic() < deadline:
            hits = reader.search(reader.embeddings()[1][:1], top_k=1000)[0]
            counts.append(len(hits))
            assert len({h.detection_id for h in hits}) == len(hits)
            time.sleep(0.05)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        final = reader.search(reader.embeddings()[1][:1], top_k=1000)[0]
    assert len(final) == 36
    assert counts == sorted(counts) and len(set(counts)) > 1  # the reader saw the gallery grow
    assert all(c % 3 == 0 for c in counts)  # whole frames only (3 people per scene)


def test_bench_prints_a_table(tiny_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys,
        "bench",
        "--bundle",
        tiny_bundle,
        "--frames",
        "4",
        "--size",
        "96x128",
        "--batch",
        "1",
        "2",
        "--pipeline",
        "split",
    )
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert len(rows) == 2 and all("split" in r for r in rows)
