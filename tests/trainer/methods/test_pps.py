"""``pps``: hybrid pre-training, its sub-task readers, loss gating and the alignment fold-away."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from personsearch_train.data.registry import get_reader, load_split
from personsearch_train.data.synthetic.subtask_sets import generate_subtask_sets
from personsearch_train.engine.config import load_config, read_recipe
from personsearch_train.engine.loop import Trainer
from personsearch_train.engine.weight_transfer import initialise_from_checkpoint
from personsearch_train.errors import ConfigError, DatasetFormatError
from personsearch_train.layers.dataset_norm import DatasetSpecificBatchNorm
from personsearch_train.methods.pps import PPSArgs
from personsearch_train.models import create_model
from safetensors import safe_open

#: Loss terms the model itself returns for every batch (every source has boxes).
DETECTION_LOSSES = {
    "loss_rpn_cls",
    "loss_rpn_reg",
    "loss_proposal_cls",
    "loss_proposal_reg",
    "loss_box_cls",
    "loss_box_reg",
}
# Source positions in pps_instant: the primary, then data.mix in order.
LABELLED, DETECTION, UNLABELLED = 0, 1, 2


@pytest.fixture(scope="module")
def subtask_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny synthetic sub-task sets (COCO/, Market-1501/, LUPerson-synthetic/)."""
    root = tmp_path_factory.mktemp("subtask")
    generate_subtask_sets(root, preset="tiny", seed=21, target_seed=0, workers=1)
    return root


def _trainer(subtask_root: Path, run_dir: Path, overrides: list[str] | None = None) -> Trainer:
    cfg = load_config("pps_instant", overrides or [], data_root=subtask_root)
    return Trainer(cfg, run_dir=run_dir, progress=False)


def _batch_of_source(trainer: Trainer, source: int) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """The first two items of one source of the mixed training set, as a batch."""
    start = trainer.dataset.offsets[source]
    items = [trainer.dataset[start + k] for k in range(2)]
    return trainer.data.collate(items)


def test_coco_scenes_reads_a_coco_folder_without_identities(subtask_root: Path) -> None:
    split = load_split("coco_scenes", subtask_root / "COCO", "train")
    assert split.dataset == "coco_scenes" and split.num_identities == 0
    assert split.images and all((r.pids == -1).all() and len(r.boxes) for r in split.images)
    assert all(r.path.is_file() for r in split.images)
    assert not get_reader("coco_scenes").has_test_split
    with pytest.raises(ConfigError, match="train split only"):
        load_split("coco_scenes", subtask_root / "COCO", "test")
    # A parent folder works: the COCO/ sub-folder is found by name, for data.mix too.
    cfg = load_config("pps_instant", data_root=subtask_root)
    assert [Path(s.root).name for s in cfg.data.mix] == ["COCO", "LUPerson-synthetic"]
    assert Path(cfg.data.root).name == "Market-1501"


def test_luperson_scenes_compose_unlabelled_crops(subtask_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "crops"
    shutil.copytree(subtask_root / "LUPerson-synthetic" / "images", root / "images")
    split = load_split("luperson_scenes", root, "train")
    assert split.num_identities == 0 and split.images
    assert all((r.pids == -1).all() for r in split.images)
    assert sum(len(r.boxes) for r in split.images) == len(list((root / "images").iterdir()))


def test_a_source_without_a_person_box_is_one_clear_error(subtask_root: Path, tmp_path: Path) -> None:
    coco = tmp_path / "COCO"
    shutil.copytree(subtask_root / "COCO", coco)
    annotation = coco / "annotations" / "instances_train2017.json"
    data = json.loads(annotation.read_text())
    annotation.write_text(json.dumps({**data, "annotations": []}))
    with pytest.raises(DatasetFormatError, match="not one image has a .*person box"):
        load_split("coco_scenes", coco, "train")


def test_bad_settings_are_config_errors(subtask_root: Path, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"method_args.alignment: 'batch_norm' is not one of none, dataset_norm"
    ):
        PPSArgs(alignment="batch_norm")
    with pytest.raises(ConfigError, match="method_args.fold_statistics"):
        PPSArgs(fold_statistics="target")
    with pytest.raises(ConfigError, match="method_args.ins_weight must be >= 0"):
        PPSArgs(ins_weight=-1.0)
    # Ratios that are all zero: refused when the recipe is read.
    _, recipe = read_recipe("pps_instant")
    recipe["data"]["ratio"] = 0.0
    for source in recipe["data"]["mix"]:
        source["ratio"] = 0.0
    path = tmp_path / "zero.yaml"
    path.write_text(json.dumps(recipe))
    with pytest.raises(ConfigError, match="are all 0; give some source a positive ratio"):
        load_config(path, data_root=subtask_root)
    # Per-source statistics need sources; folding onto a never-trained primary is refused.
    with pytest.raises(ConfigError, match="alignment: dataset_norm .* data.mix is empty"):
        load_config("pps_instant", ["data.mix=[]"], data_root=subtask_root)
    with pytest.raises(ConfigError, match="fold_statistics: primary .* data.ratio is 0"):
        load_config("pps_instant", ["data.ratio=0"], data_root=subtask_root)


def test_each_loss_is_gated_by_what_the_source_provides(subtask_root: Path, tmp_path: Path) -> None:
    trainer = _trainer(subtask_root, tmp_path / "run")
    trainer.setup()
    assert trainer.losses.supervision == ("identities", "boxes", "instances")

    def loss_names(source: int) -> set[str]:
        images, targets = _batch_of_source(trainer, source)
        assert {t["source"] for t in targets} == {source}
        return set(trainer.train_module(images, targets))

    # Detection-only scenes: detection losses, no re-id loss of either kind.
    assert loss_names(DETECTION) == DETECTION_LOSSES
    # Labelled crops: OIM on top.
    assert loss_names(LABELLED) == DETECTION_LOSSES | {"loss_box_reid"}
    # Unlabelled crops: the scene/crop consistency instead of OIM.
    assert loss_names(UNLABELLED) == DETECTION_LOSSES | {"loss_ins", "loss_int"}


def test_detection_scenes_train_consistency_when_configured(subtask_root: Path, tmp_path: Path) -> None:
    trainer = _trainer(subtask_root, tmp_path / "run", ["method_args.consistency_sources=unlabelled"])
    trainer.setup()
    assert trainer.losses.supervision == ("identities", "instances", "instances")
    images, targets = _batch_of_source(trainer, DETECTION)
    assert {"loss_ins", "loss_int"} <= set(trainer.train_module(images, targets))


def test_the_active_source_follows_the_batch(subtask_root: Path, tmp_path: Path) -> None:
    trainer = _trainer(subtask_root, tmp_path / "run")
    trainer.setup()
    norms = [m for m in trainer.model.modules() if isinstance(m, DatasetSpecificBatchNorm)]
    assert norms and all(m.num_sources == 3 for m in norms)
    before = [m.num_batches_tracked.clone() for m in norms]
    for source in (UNLABELLED, DETECTION):
        trainer.train_module(*_batch_of_source(trainer, source))
        assert {m.active_source for m in norms} == {source}
    # Only the sources trained on have updated their statistics (in the trunk, which every
    # forward runs); the primary's are untouched.
    stem = norms[0]
    counts = stem.num_batches_tracked - before[0]
    assert counts[LABELLED] == 0 and counts[DETECTION] > 0 and counts[UNLABELLED] > 0


def test_training_folds_to_a_plain_checkpoint_that_seqnet_loads(subtask_root: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    trainer = _trainer(subtask_root, run, ["train.epochs=1", "train.max_iters_per_epoch=4"])
    result = trainer.fit()
    assert not result.interrupted and result.global_step == 4
    assert not any(isinstance(m, DatasetSpecificBatchNorm) for m in trainer.model.modules())
    plain = create_model("seqnet_tiny")
    with safe_open(str(run / "latest.safetensors"), framework="pt") as handle:
        saved = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    reference = plain.state_dict()
    assert set(saved) == set(reference)
    assert all(saved[k].shape == reference[k].shape for k in reference)
    report = initialise_from_checkpoint(create_model("seqnet_tiny"), run)
    assert report.loaded_fraction > 0.999 and not report.skipped and not report.new


@pytest.mark.slow
def test_pretrain_then_fine_tune_seqnet(subtask_root: Path, synthetic_root: Path, tmp_path: Path) -> None:
    """``pps_instant`` end to end, then a (cut short) seqnet fine-tune from its checkpoint."""
    pretrain = tmp_path / "pretrain"
    result = _trainer(subtask_root, pretrain).fit()
    assert not result.interrupted and result.global_step > 0
    logged = [json.loads(line) for line in (pretrain / "train_log.jsonl").read_text().splitlines()]
    assert {"loss_box_reid", "loss_ins", "loss_int"} <= {k for row in logged for k in row}

    short = ["train.epochs=1", "train.max_iters_per_epoch=2", "eval.every=1", f"model.init_from={pretrain}"]
    cfg = load_config("synthetic_instant", short, data_root=synthetic_root)
    trainer = Trainer(cfg, run_dir=tmp_path / "finetune", progress=False)
    trainer.fit()
    report = trainer.init_report
    assert report is not None and report.loaded_fraction > 0.999 and not report.skipped
    metrics = [
        json.loads(line) for line in (tmp_path / "finetune" / "metrics.jsonl").read_text().splitlines()
    ]
    assert metrics and 0.0 <= metrics[-1]["mAP"] <= 1.0
