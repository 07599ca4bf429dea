"""UniPT end to end: caption unlabelled crops, pre-train on them, fine-tune from the pre-training.

Scorer (a briefly trained ``unipt_finetune_instant``) -> ``personsearch pseudo-caption`` ->
``unipt_pretrain_instant`` -> ``unipt_finetune_instant`` with ``model.init_from``. The
fine-tuning runs are cut to a couple of steps: this checks that the stages connect, not
what they learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from personsearch_runtime import cli
from personsearch_train.data.synthetic.generator import generate_dataset
from personsearch_train.data.synthetic.unlabelled_crops import generate_unlabelled_crops
from personsearch_train.engine.config import load_config
from personsearch_train.engine.loop import Trainer
from personsearch_train.errors import ConfigError

pytestmark = pytest.mark.slow

CROPS = 24
# Two steps and an evaluation: enough to write a checkpoint and a metrics line.
SHORT = ["train.epochs=1", "train.max_iters_per_epoch=2", "eval.every=1"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(root, "tiny", 0, workers=1)
    return root


def test_caption_pretrain_finetune_chain(
    synthetic: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unlabelled = tmp_path / "unlabelled"
    generate_unlabelled_crops(unlabelled, count=CROPS, target_preset="tiny", seed=3, workers=1)

    scorer = tmp_path / "scorer"
    Trainer(
        load_config("unipt_finetune_instant", SHORT, data_root=synthetic), run_dir=scorer, progress=False
    ).fit()

    captions = unlabelled / "captions.json"
    argv = ["pseudo-caption", "--images", str(unlabelled), "--scorer", str(scorer), "--out", str(captions)]
    assert cli.main([*argv, "--batch-size", "8", "--no-progress"]) == 0
    assert f"captioned {CROPS} of {CROPS} images" in capsys.readouterr().out
    entries = json.loads(captions.read_text())
    assert len(entries) == CROPS and all(e["captions"] and e["attributes"] for e in entries)
    assert not captions.with_name("captions.json.partial.jsonl").exists()

    pretrain = tmp_path / "pretrain"
    cfg = load_config("unipt_pretrain_instant", data_root=unlabelled)
    result = Trainer(cfg, run_dir=pretrain, progress=False).fit()
    assert not result.interrupted and result.global_step > 0
    losses = [json.loads(line) for line in (pretrain / "train_log.jsonl").read_text().splitlines()]
    assert losses and {"loss_con", "loss_mlm"} <= set(losses[-1])

    finetune = tmp_path / "finetune"
    cfg = load_config("unipt_finetune_instant", [*SHORT, f"model.init_from={pretrain}"], data_root=synthetic)
    trainer = Trainer(cfg, run_dir=finetune, progress=False)
    capsys.readouterr()
    trainer.fit()
    report = trainer.init_report
    assert report is not None and report.loaded_fraction > 0.5
    assert {"image_tower.projection.weight", "text_tower.projection.weight"} <= set(report.loaded)
    # The prototypes (granularity decoder) are new in fine-tuning; the MLM head was never in the model.
    assert any(name.startswith("granularity_decoder.") for name in report.new)
    assert not report.skipped
    assert f"init_from {pretrain}" in capsys.readouterr().err
    metrics = [json.loads(line) for line in (finetune / "metrics.jsonl").read_text().splitlines()]
    assert metrics and 0.0 <= metrics[-1]["R1"] <= 1.0


def test_init_from_a_person_search_model_is_refused(synthetic: Path, tmp_path: Path) -> None:
    cfg = load_config(
        "unipt_finetune_instant", ["model.init_from=pretrained:seqnet_small_synthetic"], data_root=synthetic
    )
    with pytest.raises(ConfigError, match="fit only") as error:
        Trainer(cfg, run_dir=tmp_path / "run", progress=False).setup()
    assert "model.init_from" in str(error.value)
