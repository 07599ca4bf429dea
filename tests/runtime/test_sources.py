from __future__ import annotations

import threading
from pathlib import Path

import pytest
from personsearch_runtime.errors import SourceError
from personsearch_runtime.sources import FrameReader, expand_sources
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
