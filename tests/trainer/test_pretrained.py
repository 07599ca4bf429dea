"""The shipped model: its bytes are the pinned ones, it loads by name, and damage is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from personsearch_train import pretrained
from personsearch_train.engine.checkpoint import file_sha256, find_checkpoint, read_checkpoint
from personsearch_train.errors import TrainerError

SHIPPED = pretrained.SHIPPED_MODELS["seqnet_small_synthetic"]


def test_the_shipped_weights_are_the_pinned_ones_and_the_metadata_agrees() -> None:
    assert file_sha256(SHIPPED.weights) == SHIPPED.weights_sha256
    meta = json.loads(SHIPPED.weights.with_suffix(".json").read_text())
    assert meta["checksums"]["weights"]["sha256"] == SHIPPED.weights_sha256
    # Its provenance says how to make it again, and the folder's README gives the same.
    assert "--recipe synthetic_small" in meta["provenance"]["train"]
    assert "--preset small --seed 0" in meta["provenance"]["data"]
    readme = (SHIPPED.folder / "README.md").read_text()
    assert meta["provenance"]["train"] in readme and SHIPPED.weights_sha256 in readme
    assert not meta["resumable"]
    # "A few MB": the repository carries it.
    assert SHIPPED.weights.stat().st_size < 5_000_000


def test_pretrained_names_resolve_wherever_a_checkpoint_is_read() -> None:
    files = find_checkpoint("pretrained:seqnet_small_synthetic")
    assert files.weights == SHIPPED.weights
    loaded = read_checkpoint("pretrained:seqnet_small_synthetic")
    assert loaded.model_name == "seqnet_small" and loaded.method.name == "seqnet_oim"
    assert loaded.metadata["model"]["kwargs"]["res4_stride"] == 8
    # Trained to the figures its README reports (CUHK-SYSU format, gallery 100).
    assert loaded.metadata["metrics"]["mAP"] == pytest.approx(0.6407, abs=1e-4)


def test_an_unknown_name_lists_the_shipped_models() -> None:
    with pytest.raises(
        TrainerError, match="no shipped model named 'nope'.*pretrained:seqnet_small_synthetic"
    ):
        find_checkpoint("pretrained:nope")


def test_a_damaged_shipped_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / SHIPPED.name
    shutil.copytree(SHIPPED.folder, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-100] ^= 0x01  # one bit inside a weight: safetensors alone would read it happily
    (copy / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(TrainerError, match="is corrupted .*git checkout"):
        read_checkpoint("pretrained:seqnet_small_synthetic")


def test_missing_shipped_files_say_where_they_come_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", tmp_path)
    with pytest.raises(TrainerError, match="come with a source checkout"):
        read_checkpoint("pretrained:seqnet_small_synthetic")
