"""Galleries under faults: kills during creation, damaged index files, changed sources,
mismatched settings, two writers, unreadable items, full and read-only disks, wrong paths.

Every case runs the real ``personsearch`` command (in this process, or in a child process
where a kill, a second process or another user is the point) on a tiny bundle and small
scene files from ``tests/runtime``.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))

from personsearch_runtime import cli  # noqa: E402
from personsearch_runtime import gallery as gallery_module  # noqa: E402
from personsearch_runtime.errors import GalleryError  # noqa: E402
from personsearch_runtime.gallery import CREATING_NAME, DB_NAME, INDEX_NAME, GalleryIndex  # noqa: E402
from scene_files import write_scenes, write_video  # noqa: E402
from tiny_bundle import scene, write_tiny_bundle  # noqa: E402

GALLERY_LOG = "personsearch_runtime.gallery"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def _index(
    capsys: pytest.CaptureFixture[str], bundle: Path, gallery: Path, *rest: object
) -> tuple[int, str, str]:
    return _run(capsys, "index", "--bundle", bundle, "--gallery", gallery, "--no-progress", *rest)


def _rows(gallery: Path) -> list[tuple]:
    """Every detection without its id: (source, frame, timestamp, box..., score, embedding)."""
    with GalleryIndex.open(gallery, readonly=True) as g:
        return sorted(row[1:] for row in g.dump())


def _frames_committed(gallery: Path) -> int:
    with GalleryIndex.open(gallery, readonly=True) as g:
        return g.info().num_frames


def _child(script: str, *args: object, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


# ---- 1. a kill during creation ------------------------------------------------------------------

_KILL_DURING_CREATION = """
import os, signal, sqlite3, sys
from personsearch_runtime import gallery

def die(*_args):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "in-sql":
    # Dies inside SQLite's work on the new database, after the schema and before the commit.
    real_connect = sqlite3.connect
    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        if str(args[0]).endswith(".creating"):
            connection.create_function("die", 0, die)
        return connection
    sqlite3.connect = connect
    gallery._SCHEMA += "\\nBEGIN; INSERT INTO meta VALUES ('x', 'y'); SELECT die();"
else:
    # Dies with the complete database written, just before it is renamed into place.
    real_replace = os.replace
    os.replace = lambda src, dst: die() if str(dst).endswith("gallery.sqlite") else real_replace(src, dst)
from personsearch_runtime.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("point", ["in-sql", "before-rename"])
def test_a_gallery_whose_creation_was_killed_is_created_again(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    point: str,
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 3)
    gallery = tmp_path / "g"
    child = _child(
        _KILL_DURING_CREATION, point, "index", "--bundle", bundle, "--gallery", gallery, "--no-progress", imgs
    )
    child.communicate(timeout=120)
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in gallery.iterdir())
    assert DB_NAME not in left and any(name.startswith(CREATING_NAME) for name in left), left

    code, _, err = _run(capsys, "info", "--gallery", gallery)
    assert code == 2 and "creation was interrupted" in err

    with caplog.at_level(logging.WARNING, logger=GALLERY_LOG):
        code, out, err = _index(capsys, bundle, gallery, imgs)
    assert code == 0, err
    notices = [r.getMessage() for r in caplog.records if r.name == GALLERY_LOG]
    assert len(notices) == 1 and "interrupted gallery creation" in notices[0]
    assert "indexed 3 frames" in out
    assert not any(p.name.startswith(CREATING_NAME) for p in gallery.iterdir())
    reference = tmp_path / "reference"
    assert _index(capsys, bundle, reference, imgs)[0] == 0
    assert _rows(gallery) == _rows(reference)


# ---- 2. damaged index.npz -----------------------------------------------------------------------


def _damage_blob(cache: Path) -> None:
    """Flip bytes inside the stored index blob but write a well-formed npz (zip CRCs valid)."""
    with np.load(cache, allow_pickle=False) as data:
        arrays = {name: data[name].copy() for name in data.files}
    raw = arrays["index"].view(np.uint8).reshape(-1)
    raw[-64:] ^= 0xFF  # the vectors' bytes (faiss stores them after its header)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    cache.write_bytes(buffer.getvalue())


@pytest.mark.parametrize("factory", ["Flat", "numpy"])
@pytest.mark.parametrize("damage", ["truncated", "bit-flip-in-file", "damaged-blob"])
def test_a_damaged_index_file_is_reported_and_rebuilt_from_the_database(
    bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    factory: str,
    damage: str,
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 4)
    gallery = tmp_path / "g"
    assert _index(capsys, bundle, gallery, imgs, "--index-factory", factory)[0] == 0
    cache = gallery / INDEX_NAME
    with GalleryIndex.open(gallery, readonly=True) as g:
        ids, emb = g.embeddings()
        expected = [[h.detection_id for h in hits] for hits in g.search(emb[:3], top_k=5)]
    data = cache.read_bytes()
    if damage == "truncated":
        cache.write_bytes(data[: len(data) // 2])
    elif damage == "bit-flip-in-file":
        flipped = bytearray(data)
        flipped[len(data) // 2] ^= 0x10
        cache.write_bytes(bytes(flipped))
    else:
        _damage_blob(cache)

    with caplog.at_level(logging.WARNING, logger=GALLERY_LOG), GalleryIndex.open(gallery, readonly=True) as g:
        results = g.search(emb[:3], top_k=5)
    warnings = [r.getMessage() for r in caplog.records if r.name == GALLERY_LOG]
    assert len(warnings) == 1 and "corrupted" in warnings[0] and "--rebuild-index" in warnings[0]
    if damage == "damaged-blob":
        assert "SHA-256" in warnings[0]
    assert [[h.detection_id for h in hits] for hits in results] == expected
    assert all(-1.001 <= h.similarity <= 1.001 for hits in results for h in hits)

    # The next writer rewrites the file; afterwards it loads without a word.
    caplog.clear()
    code, _, err = _index(capsys, bundle, gallery, "--rebuild-index")
    assert code == 0, err
    with caplog.at_level(logging.WARNING, logger=GALLERY_LOG), GalleryIndex.open(gallery, readonly=True) as g:
        assert [[h.detection_id for h in hits] for hits in g.search(emb[:3], top_k=5)] == expected
        assert g._spaces["reid"].index is not None and len(g._spaces["reid"].ids) == len(ids)
    assert not [r for r in caplog.records if r.name == GALLERY_LOG]


def test_an_index_run_on_a_gallery_with_a_truncated_index_file_repairs_it(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 4)
    gallery = tmp_path / "g"
    assert _index(capsys, bundle, gallery, imgs)[0] == 0
    cache = gallery / INDEX_NAME
    cache.write_bytes(cache.read_bytes()[:100])
    write_scenes(tmp_path / "more", 2)
    with caplog.at_level(logging.WARNING, logger=GALLERY_LOG):
        code, out, _ = _index(capsys, bundle, gallery, imgs, tmp_path / "more" / "scene_001.png")
    assert code == 0 and "indexed 1 frames" in out
    notices = [r.getMessage() for r in caplog.records if r.name == GALLERY_LOG]
    assert len(notices) == 1 and "corrupted" in notices[0] and "rewritten when this run saves" in notices[0]
    with np.load(gallery / INDEX_NAME) as data:
        assert len(data["ids"]) == 15
    code, out, _ = _run(
        capsys, "query", "--bundle", bundle, "--gallery", gallery, "--image", imgs / "scene_002.png",
        "--out", tmp_path / "q", "--top-k", "3",
    )  # fmt: skip
    assert code == 0
    hits = json.loads((tmp_path / "q" / "hits.json").read_text())["hits"]
    assert hits and all(h["similarity"] <= 1.001 for h in hits)


# ---- 3. sources keyed by path and content -----------------------------------------------------


def test_a_changed_file_is_indexed_again_and_its_old_rows_replaced(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    paths = write_scenes(imgs, 3)
    gallery = tmp_path / "g"
    assert _index(capsys, bundle, gallery, imgs)[0] == 0

    # Same content, new mtime (a copy): kept as it is.
    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    code, out, _ = _index(capsys, bundle, gallery, imgs)
    assert code == 0 and "indexed 0 frames" in out and "re-indexed" not in out

    # New content at the same path: its old rows go, the new ones come in.
    import cv2

    other = [(0.0, 1.0, 1.0), (1.0, 0.0, 1.0), None, (1.0, 1.0, 0.0)]
    assert cv2.imwrite(str(paths[1]), scene(other, 96, 128))
    code, out, _ = _index(capsys, bundle, gallery, imgs)
    assert code == 0 and "indexed 1 frames" in out
    assert "re-indexed 1 changed file(s)" in out and str(paths[1].resolve()) in out
    reference = tmp_path / "reference"
    assert _index(capsys, bundle, reference, imgs)[0] == 0
    assert _rows(gallery) == _rows(reference)
    with GalleryIndex.open(gallery, readonly=True) as g:
        assert (g.info().num_sources, g.info().num_frames) == (3, 3)


def test_a_gallery_from_before_fingerprints_opens_and_is_migrated(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    paths = write_scenes(imgs, 3)
    gallery = tmp_path / "g"
    assert _index(capsys, bundle, gallery, imgs)[0] == 0
    with sqlite3.connect(gallery / DB_NAME) as db:  # make it a schema-1 gallery
        db.execute("ALTER TABLE sources DROP COLUMN fingerprint")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.execute("DELETE FROM meta WHERE key = 'every_nth_frame'")
    db.close()

    code, out, _ = _run(capsys, "info", "--gallery", gallery, "--json")
    assert code == 0 and json.loads(out)["schema_version"] == 1 and json.loads(out)["every_nth_frame"] is None
    code, out, _ = _index(capsys, bundle, gallery, imgs)  # unknown fingerprints: kept, then recorded
    assert code == 0 and "indexed 0 frames" in out and "re-indexed" not in out
    info = json.loads(_run(capsys, "info", "--gallery", gallery, "--json")[1])
    assert info["schema_version"] == 3 and info["every_nth_frame"] == 1
    import cv2

    assert cv2.imwrite(str(paths[2]), scene([(0.0, 1.0, 0.0)] * 4, 96, 128))
    code, out, _ = _index(capsys, bundle, gallery, imgs)
    assert code == 0 and "re-indexed 1 changed file(s)" in out and "indexed 1 frames" in out


# ---- 4. settings are part of the gallery ------------------------------------------------------


def test_other_settings_than_the_gallery_was_built_with_are_refused(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = write_video(tmp_path / "cam.avi", 9)
    gallery = tmp_path / "g"
    assert _index(capsys, bundle, gallery, video, "--every-nth-frame", "3")[0] == 0
    before = _rows(gallery)
    code, _, err = _index(capsys, bundle, gallery, video)
    assert code == 2
    assert "--every-nth-frame 3" in err and "--every-nth-frame 1" in err and "new gallery folder" in err
    code, _, err = _index(
        capsys, bundle, gallery, video, "--every-nth-frame", "3", "--index-factory", "numpy"
    )
    assert code == 2 and "--index-factory Flat" in err and "--index-factory numpy" in err
    assert _rows(gallery) == before
    assert _index(capsys, bundle, gallery, video, "--every-nth-frame", "3")[0] == 0
    code, _, err = _index(capsys, bundle, gallery, video, "--every-nth-frame", "0")
    assert code == 2 and "--every-nth-frame" in err


def test_the_python_api_refuses_another_stride_too(bundle: Path, tmp_path: Path) -> None:
    from personsearch_runtime.searcher import PersonSearcher

    video = write_video(tmp_path / "cam.avi", 9)
    searcher = PersonSearcher(bundle=bundle, batch_size=2)
    with GalleryIndex.open_for_bundle(tmp_path / "g", searcher.bundle) as gallery:
        assert searcher.index(gallery, [video], every_nth_frame=3).frames == 3
        with pytest.raises(GalleryError, match="--every-nth-frame 3, this run asks for --every-nth-frame 2"):
            searcher.index(gallery, [video], every_nth_frame=2)
        assert gallery.info().num_frames == 3


# ---- 5. one writer at a time ----------------------------------------------------------------------

_HOLD_THE_LOCK = """
import sys
from personsearch_runtime.gallery import GalleryIndex
gallery = GalleryIndex.open(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
"""


def test_a_second_writer_is_refused_while_readers_go_on(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 4)
    gallery = tmp_path / "g"
    assert _index(capsys, bundle, gallery, imgs)[0] == 0

    # Two holders in one process.
    with GalleryIndex.open(gallery) as writer:
        with pytest.raises(GalleryError, match=f"another personsearch index is writing .*pid {os.getpid()}"):
            GalleryIndex.open(gallery)
        assert writer.info().num_frames == 4
    GalleryIndex.open(gallery).close()  # released by close()

    # A writer in another process; killing it releases the lock.
    holder = _child(_HOLD_THE_LOCK, gallery, stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, _, err = _index(capsys, bundle, gallery, imgs)
        assert code == 2
        assert f"another personsearch index is writing gallery {gallery} (pid {holder.pid})" in err
        assert "wait for it" in err
        code, out, _ = _run(capsys, "info", "--gallery", gallery, "--json")
        assert code == 0 and json.loads(out)["num_frames"] == 4
        with GalleryIndex.open(gallery, readonly=True) as reader:
            assert len(reader.search(reader.embeddings()[1][:1], top_k=3)[0]) == 3
    finally:
        holder.kill()
        holder.communicate(timeout=60)
    code, out, _ = _index(capsys, bundle, gallery, imgs)
    assert code == 0 and "4 already done" in out


# ---- 6 and 7. unreadable files and frames ---------------------------------------------------------


def test_a_fully_indexed_folder_with_an_unreadable_file_reindexes_with_exit_0(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 3)
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    gallery = tmp_path / "g"
    for run in range(2):
        with caplog.at_level(logging.WARNING):
            code, out, err = _index(capsys, bundle, gallery, imgs)
        assert not [r for r in caplog.records if "broken.jpg" in r.getMessage()]  # not logged as well
        assert code == 0, err
        assert f"indexed {3 if run == 0 else 0} frames" in out
        assert "skipped 1 unreadable file(s)" in out
        assert (out + err).count("broken.jpg") == 1  # named once, not also logged
    assert "3 already done" in out
    code, _, err = _index(capsys, bundle, tmp_path / "fresh", imgs / "broken.jpg")
    assert code == 2 and "could be read" in err


def _corrupt_video_frames(path: Path, *, blank: int | None = None, cut_after: int | None = None) -> None:
    """Blank out one MJPG frame's JPEG data, or cut the file inside a frame."""
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    if blank is not None:
        data[starts[blank] : starts[blank + 1] - 8] = bytes(starts[blank + 1] - 8 - starts[blank])
    if cut_after is not None:
        data = data[: starts[cut_after] + 100]
    path.write_bytes(bytes(data))


def test_bad_items_are_skipped_counted_and_named(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    media = tmp_path / "media"
    write_scenes(media, 2)
    (media / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (media / "empty.png").write_bytes(b"")
    (media / "empty.mp4").write_bytes(b"")
    damaged = write_video(media / "damaged.avi", 10)
    _corrupt_video_frames(damaged, blank=4)
    truncated = write_video(media / "truncated.avi", 10)
    _corrupt_video_frames(truncated, cut_after=6)
    gallery = tmp_path / "g"
    with caplog.at_level(logging.WARNING):
        code, out, err = _index(capsys, bundle, gallery, media)
    assert code == 0, err
    assert not caplog.records  # each skip is named once, in the summary
    assert "skipped 3 unreadable file(s)" in out
    assert "corrupt.jpg: not a readable image" in out
    assert "empty.png: empty file (0 bytes)" in out and "empty.mp4: empty file (0 bytes)" in out
    assert "skipped undecodable frames in 2 video(s)" in out
    assert "damaged.avi: frame 4 could not be decoded; its other frames were read" in out
    assert "truncated.avi: frames 6-9 could not be decoded (the video ends before the 10 frames" in out
    for name in ("corrupt.jpg", "empty.png", "empty.mp4", "damaged.avi", "truncated.avi"):
        assert (out + err).count(name) == 1, name
    with GalleryIndex.open(gallery, readonly=True) as g:
        frames = {(Path(r[1]).name, r[2]) for r in g.dump()}
    assert {f for name, f in frames if name == "damaged.avi"} == {0, 1, 2, 3, 5, 6, 7, 8, 9}
    assert {f for name, f in frames if name == "truncated.avi"} == {0, 1, 2, 3, 4, 5}
    assert "indexed 2 frames" not in out and "indexed 17 frames" in out  # 2 images + 9 + 6


# ---- 8. full and read-only disks ---------------------------------------------------------------------


def test_disk_full_while_saving_the_index_keeps_everything_and_resumes(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 4)
    gallery = tmp_path / "g"

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gallery_module, "atomic_write_bytes", full)
    code, _, err = _index(capsys, bundle, gallery, imgs)
    assert code == 2 and "no space left" in err and "run the same command again" in err
    assert _frames_committed(gallery) == 4 and not (gallery / INDEX_NAME).exists()
    monkeypatch.undo()
    code, out, _ = _index(capsys, bundle, gallery, imgs)
    assert code == 0 and "indexed 0 frames" in out and "4 already done" in out
    assert (gallery / INDEX_NAME).is_file()


class _FillsUp:
    """An SQLite connection that reports a full disk at its N-th detection insert."""

    def __init__(self, connection: sqlite3.Connection, after: int) -> None:
        self._connection, self._left = connection, after

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql.startswith("INSERT INTO detections"):
            self._left -= 1
            if self._left < 0:
                raise sqlite3.OperationalError("database or disk is full")
        return self._connection.execute(sql, *args)

    def __enter__(self) -> sqlite3.Connection:
        return self._connection.__enter__()

    def __exit__(self, *exc: object) -> bool | None:
        return self._connection.__exit__(*exc)

    def __getattr__(self, name: str) -> object:
        return getattr(self._connection, name)


def test_disk_full_in_the_middle_of_a_run_rolls_back_one_batch_and_resumes(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 6)
    gallery = tmp_path / "g"
    real_connect = GalleryIndex._connect
    monkeypatch.setattr(
        GalleryIndex, "_connect", lambda self, db: _FillsUp(real_connect(self, db), after=3 * 2 + 1)
    )
    code, _, err = _index(capsys, bundle, gallery, imgs, "--batch", "2")
    assert code == 2 and "no space left" in err and "rolled back" in err
    assert _frames_committed(gallery) == 2  # the first batch of two frames, nothing of the second
    monkeypatch.undo()
    code, out, _ = _index(capsys, bundle, gallery, imgs, "--batch", "2")
    assert code == 0 and "indexed 4 frames" in out
    reference = tmp_path / "reference"
    assert _index(capsys, bundle, reference, imgs)[0] == 0
    assert _rows(gallery) == _rows(reference)


@pytest.fixture
def other_user_dir() -> Iterator[tuple[Path, dict[str, object]]]:
    """A folder another user can read but not write, and how to run a child as that user.

    As root (who ignores permissions), the child drops to ``nobody``; otherwise the folder
    is made read-only for ourselves with chmod.
    """
    popen: dict[str, object] = {}
    if os.geteuid() == 0:
        popen["user"], popen["group"], popen["extra_groups"] = 65534, 65534, []
        # A checkout under a private folder (mktemp -d is 0700) keeps nobody from running
        # this interpreter at all; there is then no other user to test with.
        try:
            runs = (
                subprocess.run(
                    [sys.executable, "-c", "import personsearch_runtime"], capture_output=True, **popen
                ).returncode
                == 0
            )
        except PermissionError:  # the interpreter itself cannot be executed
            runs = False
        if not runs:
            pytest.skip(f"user nobody cannot run {sys.executable} here (a private checkout folder)")
    root = Path(tempfile.mkdtemp(prefix="personsearch-ro-"))
    root.chmod(0o755)
    try:
        yield root, popen
    finally:
        for folder in [root, *root.rglob("*")]:
            if folder.is_dir():
                folder.chmod(0o755)
        shutil.rmtree(root)


_WRITE_THEN_READ = """
import sys
from personsearch_runtime.cli import main
split = sys.argv.index("--then")
codes = [main(sys.argv[1:split]), main(sys.argv[split + 1 :])]
print("exit codes", *codes, file=sys.stderr)
"""


def test_a_read_only_gallery_refuses_writers_and_serves_readers(
    bundle: Path, other_user_dir: tuple[Path, dict[str, object]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, popen = other_user_dir
    shutil.copytree(bundle, root / "bundle")
    imgs = root / "imgs"
    write_scenes(imgs, 3)
    gallery = root / "g"
    assert _index(capsys, root / "bundle", gallery, imgs)[0] == 0
    before = _rows(gallery)
    if not popen:
        gallery.chmod(0o555)
    for path in root.rglob("*"):
        path.chmod(path.stat().st_mode | 0o044 | (0o011 if path.is_dir() else 0))

    child = _child(
        _WRITE_THEN_READ,
        "index", "--bundle", root / "bundle", "--gallery", gallery, "--no-progress", imgs,
        write_scenes(root / "more", 1)[0],
        "--then", "info", "--gallery", gallery, "--json",
        cwd=root, **popen,
    )  # fmt: skip
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and err.strip().endswith("exit codes 2 0"), err
    assert "Traceback" not in err and f"gallery folder {gallery} is not writable" in err
    assert json.loads(out)["num_frames"] == 3  # the reader still works
    assert _rows(gallery) == before


# ---- 9. wrong paths and damaged databases -----------------------------------------------------------


def test_wrong_gallery_paths_and_damaged_databases_get_one_message(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    imgs = tmp_path / "imgs"
    write_scenes(imgs, 1)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    code, _, err = _index(capsys, bundle, a_file, imgs)
    assert code == 2 and "is a file, not a folder" in err and a_file.read_text() == "mine"
    code, _, err = _run(capsys, "info", "--gallery", a_file)
    assert code == 2 and "is a file, not a folder" in err

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "holiday.jpg").write_bytes(b"x")
    code, _, err = _index(capsys, bundle, busy, imgs)
    assert code == 2 and "not an empty gallery folder" in err and "holiday.jpg" in err
    assert sorted(p.name for p in busy.iterdir()) == ["holiday.jpg"]  # not even a lock file
    code, _, err = _run(capsys, "info", "--gallery", busy)
    assert code == 2 and "not a gallery" in err

    empty_db = tmp_path / "empty_db"
    empty_db.mkdir()
    (empty_db / DB_NAME).write_bytes(b"")
    code, _, err = _run(capsys, "info", "--gallery", empty_db)
    assert code == 2 and "empty (0 bytes)" in err
    code, _, err = _index(capsys, bundle, empty_db, imgs)
    assert code == 2 and "empty (0 bytes)" in err

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / DB_NAME).write_bytes(os.urandom(4096))
    for argv in (("info", "--gallery", garbage), ("index", "--bundle", bundle, "--gallery", garbage, imgs)):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "damaged or is not a gallery database" in err

    code, _, err = _index(capsys, bundle, tmp_path / "g", imgs, "--batch", "0")
    assert code == 2 and "--batch" in err
    code, _, err = _index(capsys, bundle, tmp_path / "nothing", "--delete-source", imgs / "scene_000.png")
    assert code == 2 and "not a gallery" in err and not (tmp_path / "nothing").exists()
