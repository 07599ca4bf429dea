from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from personsearch_train.engine.config import (
    RECIPES_DIR,
    apply_overrides,
    check_paths,
    config_from_dict,
    dump_config,
    load_config,
)
from personsearch_train.errors import ConfigError


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["seqnet_cuhk_sysu", "seqnet_prw", "synthetic_instant", "synthetic_small"])
def test_shipped_recipes_load(name: str) -> None:
    cfg = load_config(name)
    assert cfg.train.epochs > 0
    if name.startswith("seqnet"):
        # The paper's settings (methods.md 1.7).
        assert (cfg.model.overrides["min_size"], cfg.model.overrides["max_size"]) == (900, 1500)
        assert cfg.train.batch_size == 5 and cfg.optim.lr == 0.003 and cfg.optim.momentum == 0.9
        assert cfg.optim.weight_decay == 5e-4 and cfg.schedule.milestones == [16]
        assert cfg.train.epochs == (20 if name == "seqnet_cuhk_sysu" else 18)
        assert cfg.schedule.warmup_epochs == 1.0 and cfg.train.clip_grad_norm == 10.0


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, {"optim": {"lr": 0.1, "momentun": 0.9}})
    with pytest.raises(ConfigError, match=r"unknown setting 'optim\.momentun'"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"unknown setting 'trian'"):
        config_from_dict({"trian": {}})


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"train": {"epochs": "ten"}}, "train.epochs"),
        ({"train": {"epochs": 2.5}}, "train.epochs"),
        ({"train": {"amp": 1}}, "train.amp"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"schedule": {"milestones": [1, "x"]}}, r"schedule.milestones\[1\]"),
        ({"model": {"overrides": [1]}}, "model.overrides"),
        ({"data": "nowhere"}, "data"),
    ],
)
def test_wrong_type_is_named(data: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        config_from_dict(data)


def test_bad_choices() -> None:
    with pytest.raises(ConfigError, match="optim.name"):
        config_from_dict({"optim": {"name": "rmsprop"}})
    with pytest.raises(ConfigError, match="data.dataset"):
        config_from_dict({"data": {"dataset": "market"}})


def test_int_accepted_for_float_and_overrides_parse_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, {"optim": {"lr": 1}})
    cfg = load_config(
        path, ["optim.lr=0.5", "train.amp=false", "schedule.milestones=[3, 5]", "model.overrides.min_size=64"]
    )
    assert cfg.optim.lr == 0.5 and isinstance(cfg.optim.lr, float)
    assert cfg.train.amp is False
    assert cfg.schedule.milestones == [3, 5]
    assert cfg.model.overrides == {"min_size": 64}
    with pytest.raises(ConfigError, match="train.bogus"):
        load_config(path, ["train.bogus=1"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["optim.lr"])


def test_paths_checked(tmp_path: Path) -> None:
    cfg = config_from_dict({"data": {"root": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match=r"data.root: .*missing"):
        check_paths(cfg)
    cfg = config_from_dict(
        {"data": {"root": str(tmp_path)}, "model": {"backbone_weights": str(tmp_path / "w.pth")}}
    )
    with pytest.raises(ConfigError, match=r"model.backbone_weights: .*w.pth"):
        check_paths(cfg)
    with pytest.raises(ConfigError, match="data.root is not set"):
        check_paths(config_from_dict({}))


def test_data_root_accepts_parent_folder(tmp_path: Path) -> None:
    (tmp_path / "PRW").mkdir()
    cfg = load_config("synthetic_instant", ["data.dataset=prw"], data_root=tmp_path)
    assert Path(cfg.data.root) == (tmp_path / "PRW").resolve()


def test_dump_round_trip(tmp_path: Path) -> None:
    cfg = load_config("seqnet_prw", ["train.epochs=3"])
    dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_unknown_recipe_lists_known() -> None:
    with pytest.raises(ConfigError, match="seqnet_prw"):
        load_config("no_such_recipe")
    assert (RECIPES_DIR / "seqnet_prw.yaml").is_file()
