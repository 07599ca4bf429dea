"""DDP (gloo, 2 processes) against one process with the same global batch, and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from engine_scenes import ddp_worker, make_splits
from personsearch_train.engine.checkpoint import find_checkpoint, load_metadata, load_resume_state

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(tmp_path: Path, name: str, world: int, model: str, global_batch: int) -> list[dict]:
    scenes = tmp_path / "scenes"
    make_splits(scenes)
    run_dir = tmp_path / name
    args = (world, _free_port(), str(scenes), str(run_dir), model, global_batch)
    mp.spawn(ddp_worker, args=args, nprocs=world, join=True)
    return json.loads((run_dir / "steps.json").read_text())


@pytest.mark.slow
def test_ddp_matches_single_process_exactly_on_a_deterministic_model(tmp_path: Path) -> None:
    # The toy model has no BatchNorm and no random sampling, and its loss is a mean of
    # per-image losses: DDP gradient averaging must then reproduce the 1-process run.
    one = _run(tmp_path, "one", 1, "toy", 4)
    two = _run(tmp_path, "two", 2, "toy", 4)
    assert len(one) == len(two) == 2  # 8 images / global batch 4
    for a, b in zip(one, two, strict=True):
        for key in ("loss_id", "loss_score", "total"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


@pytest.mark.slow
def test_ddp_seqnet_tiny_losses_match_within_tolerance(tmp_path: Path) -> None:
    # Same weights and images, but SeqNet draws anchor/RoI samples at random in each process
    # and its BatchNorm sees 2 images per process instead of 4, so the losses agree only
    # statistically. Stated tolerance: the first step's total loss within 10 % (measured:
    # 9.66 vs 9.34, 3 %); later steps drift further as the OIM tables fill.
    one = _run(tmp_path, "one", 1, "seqnet_tiny", 4)
    two = _run(tmp_path, "two", 2, "seqnet_tiny", 4)
    assert len(one) == len(two) == 2
    assert two[0]["total"] == pytest.approx(one[0]["total"], rel=0.10)
    assert two[0]["loss_rpn_cls"] == pytest.approx(one[0]["loss_rpn_cls"], rel=0.02)
    assert two[0]["loss_box_reid"] == pytest.approx(one[0]["loss_box_reid"], rel=0.02)


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path: Path) -> None:
    scenes, run_dir = tmp_path / "scenes", tmp_path / "run"
    cmd = [sys.executable, str(HERE / "engine_scenes.py"), str(scenes), str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*cmd, "100"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = run_dir / "train_log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and log.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out.decode()
    files = find_checkpoint(run_dir, prefer="latest")
    meta = load_metadata(files)
    state = load_resume_state(files)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert meta["global_step"] == state["global_step"] == steps[-1] >= 2
    # Resume it and stop at the end of the next epoch boundary (epochs = its epoch + 1).
    target_epochs = state["epoch"] + 1
    done = subprocess.run([*cmd, str(target_epochs), "--resume"], env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 3 * target_epochs + 1))
