from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from personsearch_runtime.errors import SourceError
from personsearch_runtime.sources import (
    FINGERPRINT_HEAD_BYTES,
    FrameReader,
    SourceFingerprint,
    compare_fingerprint,
    expand_sources,
)
from scene_files import write_scenes, write_video


def test_expand_sources_folders_globs_files(tmp_path: Path) -> None:
    paths = write_scenes(tmp_path / "a", 3)
    video = write_video(tmp_path / "b" / "cam.avi", 3)
    (tmp_path / "a" / "notes.txt").write_text("not media")
    got = expand_sources([tmp_path / "a", str(tmp_path / "b" / "*.avi"), paths[0]])
    assert got == [p.resolve() for p in paths] + [video.resolve()]  # duplicates dropped, order kept
    with pytest.raises(SourceError, match="does not exist"):
        expand_sources([tmp_path / "missing.jpg"])
    with pytest.raises(SourceError, match="no images or videos"):
        expand_sources([str(tmp_path / "*.mkv")])


def test_video_every_nth_frame_resume_and_timestamps(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 10, fps=5.0)
    frames = list(FrameReader([video], every_nth_frame=3))
    assert [f.frame_index for f in frames] == [0, 3, 6, 9]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.6, 1.2, 1.8])
    assert [f.is_last for f in frames] == [False, False, False, True]
    assert frames[0].image.shape == (96, 128, 3)
    resumed = list(FrameReader([video], every_nth_frame=3, start_frame=lambda s: 4))
    assert [f.frame_index for f in resumed] == [6, 9]
    assert list(FrameReader([video], start_frame=lambda s: -1)) == []
    with pytest.raises(SourceError, match="every-nth-frame"):
        FrameReader([video], every_nth_frame=0)


def test_abandoned_iteration_stops_the_decoder(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", 60)
    reader = FrameReader([video], queue_size=2)
    for frame in reader:
        if frame.frame_index == 2:
            break
    reader.close()
    assert not any(t.name == "personsearch-decode" and t.is_alive() for t in threading.enumerate())
    assert reader.stats.frames == 3


def test_fingerprints_tell_changed_content_from_a_new_mtime(tmp_path: Path) -> None:
    small = tmp_path / "small.png"
    small.write_bytes(b"a" * 1000)
    stored, changed = compare_fingerprint(small, None)
    assert not changed and stored.size == 1000 and SourceFingerprint.from_text(stored.to_text()) == stored
    assert SourceFingerprint.from_text("garbage") is None and SourceFingerprint.from_text(None) is None
    os.utime(small, ns=(stored.mtime_ns, stored.mtime_ns + 10**9))
    assert compare_fingerprint(small, stored)[1] is False  # same bytes: a copy or a touch
    small.write_bytes(b"b" * 1000)
    os.utime(small, ns=(stored.mtime_ns, stored.mtime_ns + 2 * 10**9))
    assert compare_fingerprint(small, stored)[1] is True  # same size, other bytes

    large = tmp_path / "large.mp4"
    large.write_bytes(bytes(FINGERPRINT_HEAD_BYTES + 10))
    stored, _ = compare_fingerprint(large, None)
    with open(large, "r+b") as handle:  # a change past the hashed head, same size
        handle.seek(FINGERPRINT_HEAD_BYTES + 5)
        handle.write(b"x")
    os.utime(large, ns=(stored.mtime_ns, stored.mtime_ns + 10**9))
    assert compare_fingerprint(large, stored)[1] is True  # caught by the mtime
    os.utime(large, ns=(stored.mtime_ns, stored.mtime_ns))
    assert compare_fingerprint(large, stored) == (stored, False)  # size and mtime as recorded: not read
