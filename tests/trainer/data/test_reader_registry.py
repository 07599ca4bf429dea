"""The dataset reader registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from personsearch_train.data import registry
from personsearch_train.data.registry import (
    available_readers,
    get_reader,
    load_split,
    load_text_split,
    register_reader,
)
from personsearch_train.errors import ConfigError


def test_every_reader_is_registered() -> None:
    assert available_readers("person_search") == (
        "coco_scenes",
        "cuhk_sysu",
        "luperson_scenes",
        "market1501_scenes",
        "prw",
    )
    # Pseudo scenes are a pre-training source without a test split.
    assert available_readers("person_search", evaluable=True) == ("cuhk_sysu", "prw")
    assert available_readers("text_person") == (
        "cuhk_pedes",
        "icfg_pedes",
        "luperson_t",
        "rstpreid",
        "ufine3c",
        "ufine6926",
    )
    # Pre-training crops have no test split, so evaluation does not offer them.
    assert "luperson_t" not in available_readers("text_person", evaluable=True)
    assert len(available_readers("text_person", evaluable=True)) == 5
    assert available_readers("detection") == ("coco_persons", "crowdhuman")
    assert available_readers("reid") == ("market1501",)


def test_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_reader(
            name="prw", kind="person_search", loader=lambda root, split: None, description="again"
        )
    with pytest.raises(ValueError, match="kind"):
        register_reader(name="new_reader", kind="video", loader=lambda root, split: None, description="x")
    assert "new_reader" not in registry.available_readers()


def test_unknown_name_lists_choices() -> None:
    with pytest.raises(
        ConfigError, match="choose one of: coco_scenes, cuhk_sysu, luperson_scenes, market1501_scenes, prw"
    ):
        get_reader("market1501", "person_search")
    with pytest.raises(ConfigError, match="unknown dataset 'mot17'"):
        get_reader("mot17")


def test_load_split_routes_to_the_readers(cuhk_root: Path, prw_root: Path) -> None:
    cuhk = load_split("cuhk_sysu", cuhk_root, "test", gallery_sizes=[50])
    assert cuhk.dataset == "cuhk_sysu" and list(cuhk.galleries) == [50]
    prw = load_split("prw", prw_root, "train")
    assert prw.dataset == "prw" and prw.num_identities == 3


def test_load_text_split(tmp_path: Path) -> None:
    root = tmp_path / "RSTPReid"
    root.mkdir()
    entries = [{"split": "train", "id": 0, "img_path": "a.jpg", "captions": ["x", "y"]}]
    (root / "data_captions.json").write_text(json.dumps(entries))
    split = load_text_split("rstpreid", root, "train")
    assert split.dataset == "rstpreid" and split.captions == ("x", "y")


def test_data_package_does_not_import_torch() -> None:
    code = "import sys, personsearch_train.data; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
