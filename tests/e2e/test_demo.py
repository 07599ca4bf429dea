"""The README's demo, run as a user runs it: every step, the shipped model, the query check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from personsearch_runtime import cli

pytestmark = pytest.mark.slow


def test_demo_finds_the_query_person_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out

    check = json.loads((out / "query" / "check.json").read_text())
    assert check["top_hit_is_query_person"], check["hits"][:3]
    assert "the top hit is the query person" in printed
    # The query frame itself is left out of the hits, so the top hit is another sighting.
    assert all(hit["frame"] != check["query_frame"] for hit in check["hits"])

    # The shipped model is scored on both formats and the summary says which model is which.
    for dataset in ("cuhk_sysu", "prw"):
        shipped = json.loads((out / "shipped" / f"{dataset}_metrics.json").read_text())
        baseline = json.loads((out / "baseline" / f"{dataset}_metrics.json").read_text())
        assert shipped["mAP"] > baseline["mAP"], dataset
    assert "shipped" in printed and "pretrained:seqnet_small_synthetic" in printed
    assert (out / "query" / "hits.jpg").is_file() and (out / "shipped" / "prw_plots").is_dir()

    # The text model went into the bundle, the gallery holds its crop embeddings, and a
    # sentence searched them.
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert {"text_encoder", "crop_encoder"} <= set(manifest["models"])
    assert manifest["text"]["method"] == "irra"
    sentence = json.loads((out / "sentence_query" / "hits.json").read_text())
    assert sentence["query"]["text"] and len(sentence["hits"]) == 10
    assert (out / "sentence_query" / "hits.jpg").is_file()
    assert "sentence hits" in printed

    # A second run finds every step done and redoes nothing.
    assert cli.main(["demo", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again.count("already done") == again.count("] ")
