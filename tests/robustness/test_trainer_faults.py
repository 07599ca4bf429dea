"""The trainer's commands and checkpoints under bad input and faults (issue 22).

Run folders are never overwritten or mixed; empty recipes and out-of-range settings are
refused before anything happens; checkpoints carry content hashes, so a damaged or
truncated file is reported as corrupted instead of loading wrong weights; Ctrl-C during
a checkpoint write still leaves a complete checkpoint; ``synth``, ``eval`` and
``baseline-hist`` check their paths and numbers before doing any work.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from personsearch_runtime.cli import main
from personsearch_train.commands import baseline_hist as baseline_cmd
from personsearch_train.commands import evaluate as eval_cmd
from personsearch_train.commands import synth as synth_cmd
from personsearch_train.commands import train as train_cmd
from personsearch_train.engine import loop
from personsearch_train.engine.checkpoint import (
    CheckpointError,
    CheckpointFiles,
    find_checkpoint,
    load_metadata,
    load_model_weights,
    load_resume_state,
    read_checkpoint,
    save_checkpoint,
)
from personsearch_train.engine.config import config_to_dict, describe_config, load_config, read_recipe
from personsearch_train.engine.loop import Trainer, check_run_folder, clear_run_outputs, run_outputs
from personsearch_train.errors import ConfigError, PredictionsFormatError, TrainerError
from personsearch_train.models import create_model
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).parents[1] / "trainer" / "engine"))
from engine_scenes import make_splits, train_config  # noqa: E402

LEGACY = Path(__file__).parents[1] / "trainer" / "fixtures" / "legacy_seqnet_tiny_b4bf133"


def _parse(module, *argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(list(argv))


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its SHA-256, to show that nothing changed."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _flip_byte(path: Path, offset_from_end: int = 64) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory):
    return make_splits(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    return create_model("seqnet_tiny")


def _save_tiny(folder: Path, name: str, model: torch.nn.Module, *, resumable: bool) -> CheckpointFiles:
    state = {"epoch": 1, "table": torch.arange(6.0)} if resumable else None
    return save_checkpoint(
        folder,
        name,
        model=model,
        metadata={"model": {"name": "seqnet_tiny", "kwargs": {}}},
        resume_state=state,
    )


def _run_config_file(path: Path) -> None:
    path.write_text(yaml.safe_dump(config_to_dict(train_config(path.parent))))


def _train_args(tmp_path: Path, out: Path, *extra: str) -> argparse.Namespace:
    return _parse(
        train_cmd, "--recipe", "synthetic_instant", "--data-root", str(tmp_path), "--out", str(out), *extra
    )


# ----------------------------------------------------------------------------- run folders
def test_training_refuses_a_folder_that_holds_only_best(tmp_path: Path, tiny_model) -> None:
    run = tmp_path / "run"
    _save_tiny(run, "best", tiny_model, resumable=False)
    before = _snapshot(run)
    with pytest.raises(TrainerError) as info:
        train_cmd.run(_train_args(tmp_path, run))
    message = str(info.value)
    assert "already holds a training run's output (best.*)" in message
    assert "another --out" in message and "--overwrite" in message
    assert "--resume" not in message  # there is no latest checkpoint to continue
    assert _snapshot(run) == before


def test_resume_without_latest_explains_instead_of_suggesting_a_fresh_start(
    tmp_path: Path, tiny_model
) -> None:
    run = tmp_path / "run"
    _save_tiny(run, "best", tiny_model, resumable=False)
    (run / "train_log.jsonl").write_text('{"step": 1}\n')
    before = _snapshot(run)
    with pytest.raises(TrainerError) as info:
        train_cmd.run(_train_args(tmp_path, run, "--resume"))
    message = str(info.value)
    assert "cannot be resumed exactly" in message and "latest.safetensors, latest.json" in message
    assert "another --out" in message and "without --resume" not in message
    assert _snapshot(run) == before


def test_incomplete_latest_and_logs_without_checkpoint_are_named(tmp_path: Path, tiny_model) -> None:
    run = tmp_path / "run"
    files = _save_tiny(run, "latest", tiny_model, resumable=True)
    files.weights.unlink()
    with pytest.raises(
        TrainerError, match=r"latest checkpoint .* is incomplete \(latest.safetensors missing"
    ):
        check_run_folder(run, resume=True)
    early = tmp_path / "early"  # killed before its first checkpoint
    (early / "tb").mkdir(parents=True)
    _run_config_file(early / "config.yaml")
    (early / "tb" / "events.out.tfevents.1.host.1.0").write_bytes(b"x")
    with pytest.raises(TrainerError, match=r"holds no checkpoint to resume, only config.yaml, 1 file in tb/"):
        check_run_folder(early, resume=True)
    with pytest.raises(TrainerError, match=r"config.yaml, 1 file in tb/.*--overwrite"):
        check_run_folder(early, resume=False)
    with pytest.raises(TrainerError, match="start the run without --resume"):
        check_run_folder(tmp_path / "new", resume=True)  # nothing there: nothing to lose
    check_run_folder(tmp_path / "new", resume=False)


def test_trainer_api_refuses_another_runs_folder_before_writing(tmp_path: Path, tiny_model) -> None:
    run = tmp_path / "run"
    _save_tiny(run, "best", tiny_model, resumable=False)
    before = _snapshot(run)
    with pytest.raises(TrainerError, match="already holds a training run's output"):
        Trainer(train_config(tmp_path), run_dir=run, progress=False).fit()
    assert _snapshot(run) == before


def test_overwrite_deletes_only_what_the_trainer_wrote(tmp_path: Path, tiny_model) -> None:
    run = tmp_path / "run"
    _save_tiny(run, "latest", tiny_model, resumable=True)
    _save_tiny(run, "best", tiny_model, resumable=False)
    _run_config_file(run / "config.yaml")
    for name in ("train_log.jsonl", "metrics.jsonl", ".latest.safetensors.k3j9x2ab.tmp"):
        (run / name).write_text("{}\n")
    (run / "tb").mkdir()
    (run / "tb" / "events.out.tfevents.17.host.9.0").write_bytes(b"e")
    (run / "predictions").mkdir()
    (run / "predictions" / "epoch_001.npz").write_bytes(b"p")
    user_files = {
        "notes.txt": "my notes",
        "predictions/handmade.npz": "mine",
        "analysis/plot.png": "png",
        "best.txt": "not a checkpoint file",
    }
    for name, text in user_files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)

    listed = {str(p.relative_to(run)) for p in run_outputs(run)}
    assert listed == {
        "latest.safetensors",
        "latest.json",
        "latest.state.pt",
        "best.safetensors",
        "best.json",
        "config.yaml",
        "train_log.jsonl",
        "metrics.jsonl",
        ".latest.safetensors.k3j9x2ab.tmp",
        "tb/events.out.tfevents.17.host.9.0",
        "predictions/epoch_001.npz",
    }
    with pytest.raises(TrainerError, match="choose one"):
        train_cmd.run(_train_args(tmp_path, run, "--resume", "--overwrite"))
    check_run_folder(run, resume=False, overwrite=True)  # what train --overwrite checks
    removed = {str(p.relative_to(run)) for p in clear_run_outputs(run)}
    assert removed == listed
    assert _snapshot(run) == _snapshot_of(user_files)
    assert not (run / "tb").exists() and (run / "predictions").is_dir()  # still holds a user file


def _snapshot_of(files: dict[str, str]) -> dict[str, str]:
    return {name: hashlib.sha256(text.encode()).hexdigest() for name, text in sorted(files.items())}


def test_a_config_yaml_the_trainer_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    run = tmp_path / "project"
    run.mkdir()
    (run / "config.yaml").write_text("database: {host: localhost}\n")
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(TrainerError, match="not a config written by personsearch train"):
            check_run_folder(run, resume=resume, overwrite=overwrite)
    assert run_outputs(run) == []
    assert clear_run_outputs(run) == [] and (run / "config.yaml").is_file()


def test_out_that_is_a_file_or_under_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(TrainerError, match="is a file, not a folder"):
        train_cmd.run(_train_args(tmp_path, afile))
    with pytest.raises(TrainerError, match=r"afile is a file, so it cannot hold a folder"):
        train_cmd.run(_train_args(tmp_path, afile / "run"))


# --------------------------------------------------------------------------------- recipes
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("# only a comment\n\n", "is empty"),
        ("{}\n", "is empty"),
        ("- a\n- b\n", "must be a YAML mapping of settings .* got a list"),
        ("just words\n", "must be a YAML mapping of settings .* got a str"),
        ("train: {epochs: [\n", "not valid YAML"),
    ],
)
def test_recipe_without_settings_is_refused(tmp_path: Path, text: str, message: str) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(recipe)


def test_empty_recipe_exits_2_and_names_the_default_it_would_train(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "empty.yaml"
    recipe.write_text("")
    out = tmp_path / "run"
    assert main(["train", "--recipe", str(recipe), "--data-root", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"recipe {recipe} is empty" in err and "seqnet_r50 for 20 epochs" in err
    assert not out.exists()


def test_recipe_that_is_a_folder_or_not_text(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder; give a recipe file"):
        load_config(tmp_path)
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(ConfigError, match="cannot read it"):
        load_config(binary)


def test_partial_recipe_keeps_defaults_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "partial.yaml"
    recipe.write_text("data: {dataset: prw}\noptim: {lr: 0.01}\n")
    cfg = load_config(recipe, data_root=tmp_path)
    assert cfg.model.name == "seqnet_r50" and cfg.train.epochs == 20
    (first,) = describe_config(cfg)
    assert "model seqnet_r50, dataset prw" in first and "20 epochs" in first and "lr 0.01" in first
    _, second = describe_config(cfg, {"data": {"dataset": "prw"}, "optim": {"lr": 0.01}})
    assert second == (
        "not set by the recipe, so at their defaults: method=seqnet_oim, model.name=seqnet_r50, "
        "train.epochs=20, train.batch_size=5"
    )
    _, shipped = read_recipe("synthetic_instant")  # names every key setting: no second line
    assert len(describe_config(load_config("synthetic_instant"), shipped)) == 1

    # The train command prints them before training starts.
    class _NoTraining:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def fit(self, *, resume: bool) -> loop.TrainResult:
            return loop.TrainResult()

    monkeypatch.setattr(loop, "Trainer", _NoTraining)
    args = _parse(
        train_cmd, "--recipe", str(recipe), "--data-root", str(tmp_path), "--out", str(tmp_path / "r")
    )
    assert train_cmd.run(args) == 0
    printed = capsys.readouterr().out
    assert "train: method seqnet_oim, model seqnet_r50" in printed
    assert "at their defaults: method=seqnet_oim, model.name=seqnet_r50, train.epochs=20" in printed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.batch_size=0", "train.batch_size must be > 0, got 0"),
        ("train.batch_size=-2", "train.batch_size must be > 0"),
        ("train.epochs=0", "train.epochs must be > 0"),
        ("optim.lr=0", "optim.lr must be > 0"),
        ("optim.lr=-0.1", "optim.lr must be > 0"),
        ("optim.lr=.nan", "optim.lr: expected a finite number, got nan"),
        ("optim.lr=.inf", "optim.lr: expected a finite number, got inf"),
        ("data.flip_prob=-.inf", "data.flip_prob: expected a finite number"),
        ("optim.momentum=1.5", r"optim.momentum must be in \[0.0, 1.0\]"),
        ("optim.weight_decay=-1", "optim.weight_decay must be >= 0"),
        ("optim.betas=[0.9,1.0]", r"optim.betas must be two values in \[0, 1\)"),
        ("schedule.gamma=0", "schedule.gamma must be > 0"),
        ("schedule.milestones=[-1,4]", "schedule.milestones must be increasing epochs >= 0"),
        ("schedule.min_lr_factor=2", r"schedule.min_lr_factor must be in \[0.0, 1.0\]"),
        ("train.clip_grad_norm=-1", "train.clip_grad_norm must be >= 0"),
        ("train.seed=-1", r"train.seed must be in \[0, 4294967295\]"),
        ("train.seed=4294967296", r"train.seed must be in \[0, 4294967295\]"),
        ("eval.batch_size=0", "eval.batch_size must be > 0"),
        ("eval.gallery_size=7", "eval.gallery_size: 7 is not a CUHK-SYSU gallery size"),
        ("train.epochs=two", "train.epochs: expected an integer"),
        (
            "model.overrides.box_score_thresh=.nan",
            "model.overrides.box_score_thresh: expected a finite number",
        ),
    ],
)
def test_out_of_range_settings_are_refused_before_training(
    tmp_path: Path, override: str, message: str
) -> None:
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train_cmd.run(_train_args(tmp_path, out, "--set", override))
    assert not out.exists()


def test_data_root_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "data.zip"
    afile.write_bytes(b"PK")
    with pytest.raises(ConfigError, match=r"data.root: dataset folder .*data.zip is a file, not a folder"):
        train_cmd.run(
            _parse(
                train_cmd,
                "--recipe",
                "synthetic_instant",
                "--data-root",
                str(afile),
                "--out",
                str(tmp_path / "r"),
            )
        )


# ---------------------------------------------------------------------------- content hashes
def test_checkpoints_record_the_sha256_of_their_files(tmp_path: Path, tiny_model) -> None:
    files = _save_tiny(tmp_path, "latest", tiny_model, resumable=True)
    checksums = load_metadata(files)["checksums"]
    for part, path in (("weights", files.weights), ("state", files.state)):
        assert checksums[part] == {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    assert not list(tmp_path.glob(".*.tmp"))
    loaded = read_checkpoint(tmp_path, prefer="latest")
    assert loaded.model_name == "seqnet_tiny"
    assert torch.equal(load_resume_state(files)["table"], torch.arange(6.0))


def test_flipped_byte_in_the_weights_is_caught_by_every_loader(tmp_path: Path, tiny_model) -> None:
    files = _save_tiny(tmp_path, "best", tiny_model, resumable=True)
    expected = load_metadata(files)["checksums"]["weights"]["sha256"]
    _flip_byte(files.weights)  # inside the last tensor's data, not the header
    load_file(str(files.weights))  # safetensors itself reads it without complaint
    found = hashlib.sha256(files.weights.read_bytes()).hexdigest()
    corrupted = (
        rf"{files.weights} is corrupted \(SHA-256 mismatch: expected {expected}, found {found}\); "
        "copy it again or use another checkpoint"
    )
    with pytest.raises(CheckpointError, match=corrupted):
        read_checkpoint(tmp_path)
    from personsearch_train.methods import build_method

    with pytest.raises(CheckpointError, match=corrupted):
        load_model_weights(create_model("seqnet_tiny"), files, build_method("seqnet_oim", {}))
    # The exporter loads through read_checkpoint, so a damaged checkpoint exports nothing.
    from personsearch_export.checkpoint_io import load_checkpoint
    from personsearch_export.errors import CheckpointError as ExportCheckpointError

    with pytest.raises(ExportCheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(files.weights)


def test_damaged_resume_state_is_caught(tmp_path: Path, tiny_model) -> None:
    files = _save_tiny(tmp_path, "latest", tiny_model, resumable=True)
    _flip_byte(files.state, 40)
    with pytest.raises(CheckpointError, match=r"latest.state.pt is corrupted \(SHA-256 mismatch"):
        load_resume_state(files)
    files.state.write_bytes(files.state.read_bytes()[:300])
    with pytest.raises(
        CheckpointError, match=r"latest.state.pt is corrupted \(size mismatch: expected \d+ bytes, found 300"
    ):
        load_resume_state(files)


def test_checkpoints_from_before_the_hashes_load_without_verification(tmp_path: Path) -> None:
    meta = json.loads((LEGACY / "latest.json").read_text())
    assert "checksums" not in meta
    loaded = read_checkpoint(LEGACY / "latest.json")
    assert loaded.model_name == "seqnet_tiny"
    assert int(load_resume_state(loaded.files)["global_step"]) == 3


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_weights", "not a readable safetensors file"),
        (
            "truncate_state",
            r"latest.state.pt is not a readable resume state \(.*\); the file is damaged or truncated",
        ),
        ("truncate_json", "cannot read checkpoint metadata .*damaged or truncated"),
        ("json_list", "checkpoint metadata must be a JSON object, got list"),
        ("not_resumable", "has no resume state .* start a new run in another --out"),
    ],
)
def test_damaged_checkpoint_files_without_hashes_give_a_message(
    tmp_path: Path, damage: str, message: str
) -> None:
    # Copies of the pre-hash checkpoint: truncation must be caught by the readers too.
    for name in ("latest.json", "latest.safetensors", "latest.state.pt"):
        (tmp_path / name).write_bytes((LEGACY / name).read_bytes())
    files = CheckpointFiles(tmp_path, "latest")
    if damage == "truncate_weights":
        files.weights.write_bytes(files.weights.read_bytes()[:5000])
    elif damage == "truncate_state":
        files.state.write_bytes(files.state.read_bytes()[:5000])
    elif damage == "truncate_json":
        files.metadata.write_bytes(files.metadata.read_bytes()[:500])
    elif damage == "json_list":
        files.metadata.write_text("[]")
    else:
        files.state.unlink()
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(tmp_path, prefer="latest")
        load_resume_state(files)


# ------------------------------------------------------------------------------- resume
def _one_step_run(run: Path, scenes) -> None:
    train, _ = scenes
    result = Trainer(
        train_config(run.parent, epochs=2, iters=2), run_dir=run, train_split=train, progress=False
    ).fit(max_steps=1)
    assert result.interrupted and result.global_step == 1


def _resume(run: Path, scenes) -> loop.TrainResult:
    train, _ = scenes
    return Trainer(
        train_config(run.parent, epochs=2, iters=2), run_dir=run, train_split=train, progress=False
    ).fit(resume=True)


def test_resume_refuses_truncated_checkpoints_and_survives_a_torn_log_line(tmp_path: Path, scenes) -> None:
    run = tmp_path / "run"
    _one_step_run(run, scenes)
    files = CheckpointFiles(run, "latest")
    good = {p: p.read_bytes() for p in (files.weights, files.state, files.metadata)}

    files.state.write_bytes(good[files.state][:4000])
    with pytest.raises(CheckpointError, match="latest.state.pt is corrupted .size mismatch"):
        _resume(run, scenes)
    # The same truncation in a checkpoint without hashes reaches torch.load, whose
    # RuntimeError becomes a message too.
    meta = json.loads(good[files.metadata])
    del meta["checksums"]
    files.metadata.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="latest.state.pt is not a readable resume state"):
        _resume(run, scenes)

    # Intact again, plus the half line a killed process leaves at the end of the log.
    for path, data in good.items():
        path.write_bytes(data)
    with (run / "train_log.jsonl").open("a") as log:
        log.write('{"step": 2, "epoch": 0, "lo')
    result = _resume(run, scenes)
    assert [s["step"] for s in result.steps] == [2, 3, 4]
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_ctrl_c_while_a_checkpoint_is_written_waits_for_it(
    tmp_path: Path, scenes, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    train, _ = scenes
    trainer = Trainer(
        train_config(tmp_path, epochs=2, iters=2), run_dir=run, train_split=train, progress=False
    )
    trainer.fit(max_steps=1)
    real_save = loop.save_checkpoint

    def interrupted_save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the impatient second Ctrl-C, mid-write
        return real_save(*args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", interrupted_save)
    trainer.global_step = 99  # marks the checkpoint written here
    with trainer._sigint_guard():
        trainer._stop_requested = True  # the first Ctrl-C already asked for a stop
        with pytest.raises(KeyboardInterrupt):
            trainer.save("latest")
    files = find_checkpoint(run, prefer="latest")
    assert load_metadata(files)["global_step"] == 99
    assert load_resume_state(files)["global_step"] == 99  # hashes verified: the files belong together
    read_checkpoint(run, prefer="latest")
    assert not list(run.glob(".*.tmp"))


# ------------------------------------------------------------------------------------ synth
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_synth_seed_out_of_range(tmp_path: Path, seed: str) -> None:
    out = tmp_path / "synth"
    with pytest.raises(ConfigError, match=r"--seed must be an integer from 0 to 4294967295"):
        synth_cmd.run(_parse(synth_cmd, "--out", str(out), "--seed", seed))
    assert not out.exists()


def test_synth_seed_minus_one_exits_2_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synth", "--out", str(tmp_path / "s"), "--seed", "-1"]) == 2
    assert "--seed must be an integer from 0 to 4294967295 (2**32-1), got -1" in capsys.readouterr().err


def test_synth_out_that_is_a_file_or_a_foreign_folder(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    with pytest.raises(TrainerError, match="is a file, not a folder"):
        synth_cmd.run(_parse(synth_cmd, "--out", str(afile)))
    with pytest.raises(TrainerError, match="afile is a file, so it cannot hold a folder"):
        synth_cmd.run(_parse(synth_cmd, "--out", str(afile / "set")))
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"jpg")
    with pytest.raises(TrainerError, match="holds no synthetic_manifest.json; refusing"):
        synth_cmd.run(_parse(synth_cmd, "--out", str(foreign)))
    assert afile.read_text() == "keep me" and _snapshot(foreign) == _snapshot_of({"holiday.jpg": "jpg"})


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_synth_failure_removes_the_partial_set_it_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: BaseException
) -> None:
    from personsearch_train.data.synthetic import generator

    def failing(out_dir, *args, **kwargs):
        (Path(out_dir) / "PRW").mkdir(parents=True)
        (Path(out_dir) / "PRW" / "frame_0.jpg").write_bytes(b"half")
        raise fault

    monkeypatch.setattr(generator, "generate_dataset", failing)
    out = tmp_path / "synth"
    expected = KeyboardInterrupt if isinstance(fault, KeyboardInterrupt) else TrainerError
    with pytest.raises(expected) as info:
        synth_cmd.run(_parse(synth_cmd, "--out", str(out)))
    if expected is TrainerError:
        assert "No space left on device" in str(info.value) and "partial set was removed" in str(info.value)
    assert not out.exists()  # a rerun starts clean instead of refusing a half-written folder


# ------------------------------------------------------------------------- eval, baseline-hist
def _eval_args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    return _parse(eval_cmd, "--dataset", "prw", "--root", str(tmp_path), *extra)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--checkpoint", "run", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--checkpoint", "run", "--batch-size", "-3"], "--batch-size must be >= 1, got -3"),
        (["--predictions", "p.npz", "--json", "."], r"--json \. is a folder; give a file path"),
        (["--predictions", "p.npz", "--plot-dir", "afile"], "--plot-dir afile is a file, not a folder"),
        (
            ["--checkpoint", "run", "--save-predictions", "afile/p.npz"],
            "afile is a file, so it cannot hold p.npz",
        ),
    ],
)
def test_eval_options_are_checked_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(eval_cmd, "load_split", lambda *a: pytest.fail("the dataset was read"))
    with pytest.raises(TrainerError, match=message):
        eval_cmd.run(_eval_args(tmp_path, *extra))


def test_eval_cuhk_gallery_size_outside_the_protocol(tmp_path: Path) -> None:
    args = _parse(
        eval_cmd,
        "--dataset",
        "cuhk_sysu",
        "--root",
        str(tmp_path),
        "--checkpoint",
        "run",
        "--gallery-size",
        "0",
    )
    with pytest.raises(TrainerError, match="--gallery-size 0 is not a CUHK-SYSU gallery size"):
        eval_cmd.eval_options_from_args(args)


def test_eval_batch_size_zero_exits_2_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        ["eval", "--dataset", "prw", "--root", str(tmp_path), "--checkpoint", "x", "--batch-size", "0"]
    )
    assert code == 2 and "--batch-size must be >= 1, got 0" in capsys.readouterr().err


def test_eval_bad_sources_fail_before_the_dataset_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(eval_cmd, "load_split", lambda *a: pytest.fail("the dataset was read"))
    truncated = tmp_path / "p.npz"
    truncated.write_bytes(b"PK\x03\x04" + b"\0" * 100)  # the start of a zip, cut short
    with pytest.raises(PredictionsFormatError, match="not a readable .npz archive"):
        eval_cmd.run(_eval_args(tmp_path, "--predictions", str(truncated)))
    with pytest.raises(TrainerError, match="is a folder; give the predictions .npz file"):
        eval_cmd.run(_eval_args(tmp_path, "--predictions", str(tmp_path)))
    with pytest.raises(TrainerError, match="no checkpoint in this folder"):
        eval_cmd.run(_eval_args(tmp_path, "--checkpoint", str(tmp_path)))
    with pytest.raises(ConfigError, match=r"--root .*missing does not exist"):
        eval_cmd.run(
            _parse(eval_cmd, "--dataset", "prw", "--root", str(tmp_path / "missing"), "--predictions", "p")
        )


def test_baseline_hist_checks_root_and_out_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from personsearch_train.data import registry

    monkeypatch.setattr(registry, "load_split", lambda *a: pytest.fail("the dataset was read"))
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["--root", str(tmp_path / "missing"), "--out", "p.npz"], r"--root .*missing does not exist"),
        (["--root", str(afile), "--out", "p.npz"], r"--root .*afile is a file, not a folder"),
        (["--root", str(tmp_path), "--out", str(tmp_path)], "is a folder; give a file path"),
        (
            ["--root", str(tmp_path), "--out", str(afile / "p.npz")],
            "afile is a file, so it cannot hold p.npz",
        ),
    ]
    for argv, message in cases:
        with pytest.raises(TrainerError, match=message):
            baseline_cmd.run(_parse(baseline_cmd, "--dataset", "prw", *argv))
