"""The demo refuses bad options up front, and its ground-truth check tells right from wrong hits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from personsearch_export.demo import check_top_hit
from personsearch_runtime import cli


def test_bad_demo_options_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "not_a_folder"
    file.write_text("mine")
    assert cli.main(["demo", "--out", str(file)]) == 2
    assert "is a file" in capsys.readouterr().err and file.read_text() == "mine"
    with pytest.raises(SystemExit) as exited:
        cli.main(["demo", "--out", str(tmp_path / "d"), "--seed", "-1"])
    assert exited.value.code == 2 and "must be from 0 to 4294967295" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def prw_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from personsearch_train.data.synthetic.generator import generate_dataset

    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, "tiny", seed=0, workers=1)
    return root / "PRW"


def _hit(rank: int, source: Path, box: list[float]) -> dict:
    return {"rank": rank, "similarity": 0.9 - rank / 100, "source": str(source), "box": box}


def test_the_check_names_who_each_hit_is(prw_root: Path, tmp_path: Path) -> None:
    from personsearch_train.data import load_prw

    query = (prw_root / "query_info.txt").read_text().splitlines()[0].split()
    pid, query_frame = int(query[0]), f"{query[5]}.jpg"
    records = [*load_prw(prw_root, "train").images, *load_prw(prw_root, "test").images]
    same = next(r for r in records if r.name != query_frame and pid in r.pids.tolist())
    other = next(r for r in records if any(p >= 0 and p != pid for p in r.pids.tolist()))
    same_box = same.boxes[same.pids.tolist().index(pid)].tolist()
    other_index = next(i for i, p in enumerate(other.pids.tolist()) if p >= 0 and p != pid)
    other_box = other.boxes[other_index].tolist()
    nobody = [0.0, 0.0, 3.0, 3.0]

    right = tmp_path / "right"
    right.mkdir()
    hits = [_hit(1, same.path, same_box), _hit(2, other.path, other_box), _hit(3, other.path, nobody)]
    (right / "hits.json").write_text(json.dumps({"hits": hits}))
    assert check_top_hit(prw_root, right) == 0
    result = json.loads((right / "check.json").read_text())
    assert result["top_hit_is_query_person"] and result["ranks_of_query_person"] == [1]
    assert [h["pid"] for h in result["hits"]] == [pid, other.pids[other_index], None]

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    hits = [_hit(1, other.path, other_box), _hit(2, same.path, same_box)]
    (wrong / "hits.json").write_text(json.dumps({"hits": hits}))
    assert check_top_hit(prw_root, wrong) == 1
    result = json.loads((wrong / "check.json").read_text())
    assert not result["top_hit_is_query_person"] and result["ranks_of_query_person"] == [2]
