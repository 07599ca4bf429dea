"""``personsearch query --frame --box`` leaves the query frame's own hits out unless asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from personsearch_runtime import cli
from scene_files import write_scenes


def _query(tmp_path: Path, bundle: Path, gallery: Path, *extra: str) -> list[dict]:
    frame = tmp_path / "imgs" / "scene_001.png"  # quadrant 0 holds PALETTE[1], also in scene_000
    out = tmp_path / ("q" + "".join(extra))
    argv = ["query", "--bundle", str(bundle), "--gallery", str(gallery), "--frame", str(frame)]
    argv += ["--box", "0,0,64,48", "--top-k", "3", "--out", str(out), *extra]
    assert cli.main(argv) == 0
    return json.loads((out / "hits.json").read_text())["hits"]


def test_query_frame_hits_are_left_out_by_default(
    tiny_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_scenes(tmp_path / "imgs", 4)
    gallery = tmp_path / "g"
    argv = ["index", "--bundle", str(tiny_bundle), "--gallery", str(gallery), str(tmp_path / "imgs")]
    assert cli.main([*argv, "--no-progress"]) == 0

    kept = _query(tmp_path, tiny_bundle, gallery, "--include-query-frame")
    # The query person itself (similarity 1, tied with its twin in scene_000) is among the hits.
    assert any(Path(h["source"]).name == "scene_001.png" and h["similarity"] > 0.999 for h in kept[:2])

    hits = _query(tmp_path, tiny_bundle, gallery)
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert all(Path(h["source"]).name != "scene_001.png" for h in hits)
    # The same person elsewhere becomes the top hit.
    assert Path(hits[0]["source"]).name == "scene_000.png" and hits[0]["similarity"] > 0.999
    # Everything the user did not ask to drop is still there, in the same order.
    others = [h for h in kept if Path(h["source"]).name != "scene_001.png"]
    assert [h["detection_id"] for h in hits[: len(others)]] == [h["detection_id"] for h in others]
