"""Training-loop tests on seqnet_tiny and a toy model: resume, checkpoints, evaluation, hooks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from engine_scenes import ModelLossesOnly, ToyPersonModel
from personsearch_train.engine.checkpoint import (
    find_checkpoint,
    load_metadata,
    load_model_from_checkpoint,
    load_resume_state,
)
from personsearch_train.engine.config import config_from_dict
from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.engine.loop import Trainer
from personsearch_train.errors import TrainerError
from personsearch_train.weak_supervision import MemoryBank, cluster_features, extract_box_features


def tiny_cfg(tmp_path: Path, **train: object):
    return config_from_dict(
        {
            "model": {"name": "seqnet_tiny"},
            "data": {"dataset": "prw", "root": str(tmp_path)},
            "optim": {"lr": 0.01},
            "schedule": {"warmup_epochs": 0.5, "milestones": [1]},
            "train": {
                "epochs": 2,
                "batch_size": 2,
                "max_iters_per_epoch": 3,
                "amp": False,
                "deterministic": True,
                "device": "cpu",
                "seed": 3,
                "cpu_threads": 1,
                **train,
            },
            "eval": {"every": 0},
        }
    )


def losses_of(result) -> list[dict[str, float]]:
    return [{k: v for k, v in s.items() if k != "grad_norm"} for s in result.steps]


def test_resume_is_bit_exact_on_cpu(tmp_path: Path, tiny_splits) -> None:
    train, _ = tiny_splits
    cfg = tiny_cfg(tmp_path, max_iters_per_epoch=2)
    full = Trainer(cfg, run_dir=tmp_path / "full", train_split=train, progress=False).fit()
    assert len(full.steps) == 4 and not full.interrupted

    # Stop mid-epoch (step 3 of 4 = step 1 of epoch 2), then resume in a fresh Trainer.
    part = Trainer(cfg, run_dir=tmp_path / "part", train_split=train, progress=False).fit(max_steps=3)
    assert part.interrupted and len(part.steps) == 3
    meta = load_metadata(find_checkpoint(tmp_path / "part", prefer="latest"))
    assert (meta["epoch"], meta["iter_in_epoch"], meta["global_step"]) == (1, 1, 3)
    rest = Trainer(cfg, run_dir=tmp_path / "part", train_split=train, progress=False).fit(resume=True)
    assert [s["step"] for s in rest.steps] == [4]
    assert losses_of(part) + losses_of(rest) == losses_of(full)  # exact float equality

    # The final weights match too, and so do the method's OIM lookup table and queue.
    a, _ = load_model_from_checkpoint(tmp_path / "full", prefer="latest")
    b, _ = load_model_from_checkpoint(tmp_path / "part", prefer="latest")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    tables_a = load_resume_state(find_checkpoint(tmp_path / "full", prefer="latest"))["method_losses"]
    tables_b = load_resume_state(find_checkpoint(tmp_path / "part", prefer="latest"))["method_losses"]
    assert sorted(tables_a) == ["oim.lut", "oim.queue", "oim.queue_head"]
    for name in tables_a:
        assert torch.equal(tables_a[name], tables_b[name]), name
    assert float(tables_a["oim.lut"].abs().sum()) > 0
    assert not any(name.startswith("oim.") for name in a.state_dict())  # the loss is the method's
    log = [json.loads(line) for line in (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]


def test_channels_last_trains_the_same_and_saves_ordinary_layout(tmp_path: Path, tiny_splits) -> None:
    train, _ = tiny_splits
    # One epoch of 3 steps: later on, rounding differences flip which proposals rank
    # in the top-k and which RoIs are sampled, and the two runs part ways by chance.
    plain = Trainer(
        tiny_cfg(tmp_path, epochs=1), run_dir=tmp_path / "plain", train_split=train, progress=False
    )
    nhwc = Trainer(
        tiny_cfg(tmp_path, epochs=1, channels_last=True),
        run_dir=tmp_path / "nhwc",
        train_split=train,
        progress=False,
    )
    a, b = plain.fit(), nhwc.fit()
    conv_weights = [p for p in nhwc.model.parameters() if p.dim() == 4]
    assert conv_weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in conv_weights)
    assert not all(p.is_contiguous() for p in conv_weights)  # the option really changed the layout
    # Same arithmetic in another summation order: float32 rounding only (stated
    # tolerance 1e-3 relative, measured differences up to 2e-4).
    assert len(a.steps) == len(b.steps) == 3
    for x, y in zip(losses_of(a), losses_of(b), strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-4), key
    # The checkpoint loads into an ordinary model and holds the trained weights.
    model, _ = load_model_from_checkpoint(tmp_path / "nhwc", prefer="latest")
    for (name, saved), trained in zip(
        model.state_dict().items(), nhwc.model.state_dict().values(), strict=True
    ):
        assert saved.is_contiguous(), name
        assert torch.equal(saved, trained.cpu()), name


class _FeatureDtypes(TrainingHook):
    """Records the dtype of every res4 feature map the model computes."""

    def __init__(self) -> None:
        self.seen: list[torch.dtype] = []

    def before_train(self, trainer: Trainer) -> None:
        trainer.model.backbone.register_forward_hook(lambda _m, _i, out: self.seen.append(out.dtype))


def test_amp_trains_in_bfloat16_on_a_cpu_with_native_bfloat16(
    tmp_path: Path, tiny_splits, monkeypatch
) -> None:
    from personsearch_train.engine import precision

    monkeypatch.setattr(precision, "cpu_has_native_bfloat16", lambda: True)
    train, _ = tiny_splits
    dtypes = {"fp32": _FeatureDtypes(), "bf16": _FeatureDtypes()}
    runs = {
        name: Trainer(
            tiny_cfg(tmp_path, epochs=1, amp=name == "bf16"),
            run_dir=tmp_path / name,
            hooks=[dtypes[name]],
            train_split=train,
            progress=False,
        ).fit()
        for name in dtypes
    }
    assert set(dtypes["fp32"].seen) == {torch.float32}
    assert set(dtypes["bf16"].seen) == {torch.bfloat16}
    # The RPN's losses come from the same anchors, sampled with the same seed, so they
    # differ by bfloat16 rounding only (stated tolerance 1 % relative; measured 0.02 %).
    # The later losses do not compare: rounding reorders the proposals' scores, so
    # other proposals reach the heads.
    fp32_first, bf16_first = (losses_of(runs[name])[0] for name in ("fp32", "bf16"))
    assert fp32_first.keys() == bf16_first.keys()
    for key in ("loss_rpn_cls", "loss_rpn_reg"):
        assert bf16_first[key] == pytest.approx(fp32_first[key], rel=0.01), key
    assert all(math.isfinite(v) for step in losses_of(runs["bf16"]) for v in step.values())
    model, _ = load_model_from_checkpoint(tmp_path / "bf16", prefer="latest")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_checkpoint_contents(tmp_path: Path, tiny_splits) -> None:
    train, _ = tiny_splits
    cfg = tiny_cfg(tmp_path, epochs=1, max_iters_per_epoch=1)
    Trainer(cfg, run_dir=tmp_path / "run", train_split=train, progress=False).fit()
    files = find_checkpoint(tmp_path / "run")
    assert files.name == "latest"  # no evaluation, so no best
    meta = load_metadata(files)
    # Every constructor argument, not just the overrides: the builder's defaults may change.
    from personsearch_train.models import create_model

    assert meta["model"]["name"] == "seqnet_tiny"
    assert meta["model"]["kwargs"] == create_model("seqnet_tiny").constructor_arguments
    # The method and its resolved settings: the lookup table is sized by the split's 6 identities.
    assert meta["method"]["name"] == "seqnet_oim"
    assert meta["method"]["args"]["num_labelled"] == 6 and meta["method"]["args"]["queue_size"] == 5000
    assert meta["label_to_pid"] == list(range(100, 106))
    assert meta["config"]["train"]["epochs"] == 1 and "torch" in meta["versions"]
    state = load_resume_state(files)  # weights_only=True
    assert {"optimizer", "scheduler", "rng", "epoch", "global_step", "method_losses"} <= set(state)
    assert state["method_losses"]["oim.lut"].shape == (6, 64)
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert not list((tmp_path / "run").glob("*.tmp"))
    with pytest.raises(TrainerError, match="no checkpoint"):
        find_checkpoint(tmp_path)


def test_checkpoint_survives_a_change_of_builder_defaults(tmp_path: Path, tiny_splits, monkeypatch) -> None:
    from personsearch_train.models import registry, seqnet

    train, _ = tiny_splits
    cfg = tiny_cfg(tmp_path, epochs=1, max_iters_per_epoch=1)
    Trainer(cfg, run_dir=tmp_path / "run", train_split=train, progress=False).fit()
    saved, _ = load_model_from_checkpoint(tmp_path / "run")
    # A later version widens the embedding and stripes head 2 by default.
    monkeypatch.setitem(
        registry._BUILDERS,
        "seqnet_tiny",
        lambda **kw: seqnet.seqnet_tiny(**{"embedding_dim": 32, "embedding_stripes": 2, **kw}),
    )
    rebuilt, _ = load_model_from_checkpoint(tmp_path / "run")
    assert rebuilt.embedding_dim == saved.embedding_dim == 64 and rebuilt.reid_head.stripes == 1
    for (name, x), (_, y) in zip(saved.state_dict().items(), rebuilt.state_dict().items(), strict=True):
        assert torch.equal(x, y), name

    # Metadata that describes another architecture is refused with the shapes named.
    meta_path = find_checkpoint(tmp_path / "run").metadata
    meta = json.loads(meta_path.read_text())
    meta["model"]["kwargs"]["embedding_stripes"] = 2
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(TrainerError, match=r"other shapes .*embedding\.projections\.0\.0\.weight"):
        load_model_from_checkpoint(tmp_path / "run")


def test_evaluation_writes_predictions_and_best(tmp_path: Path, tiny_splits) -> None:
    train, test = tiny_splits
    cfg = tiny_cfg(tmp_path, epochs=1, max_iters_per_epoch=2)
    cfg.eval.every = 1
    result = Trainer(cfg, run_dir=tmp_path / "run", train_split=train, test_split=test, progress=False).fit()
    assert len(result.metrics) == 1 and 0.0 <= result.metrics[0]["mAP"] <= 1.0
    assert (tmp_path / "run" / "predictions" / "epoch_001.npz").is_file()
    assert find_checkpoint(tmp_path / "run").name == "best"
    model, meta = load_model_from_checkpoint(tmp_path / "run")
    assert meta["metrics"]["mAP"] == result.metrics[0]["mAP"]
    assert not model.training


class _ClusterHook(TrainingHook):
    """What a weakly supervised method does: per-epoch features -> clusters -> memory + labels."""

    def __init__(self, num_boxes: int) -> None:
        self.bank = MemoryBank(size=num_boxes, dim=8)
        self.head = torch.nn.Linear(8, 1)
        self.epochs_seen: list[int] = []
        self.calls = 0

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"bank": self.bank, "crop_head": self.head}

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        feats = extract_box_features(trainer.model, trainer.dataset, device=trainer.device)
        labels = cluster_features(feats.features, eps=0.05, min_samples=2)
        self.bank.reinitialise(feats.features, torch.from_numpy(labels))
        per_item = [labels[(feats.image_index == i).numpy()] for i in range(len(trainer.dataset))]
        trainer.dataset.set_pseudo_labels(per_item)
        self.epochs_seen.append(epoch)

    def extra_losses(self, model, images, targets):
        self.calls += 1
        crops_emb = torch.cat(model.embed_boxes(images, [t["boxes"] for t in targets]))
        return {"loss_crop": self.head(crops_emb).pow(2).mean()}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_hooks_cluster_memory_and_extra_losses(tmp_path: Path, tiny_splits) -> None:
    train, _ = tiny_splits
    cfg = tiny_cfg(tmp_path)
    cfg.data.use_identities = False
    cfg.method = ModelLossesOnly.name
    num_boxes = sum(len(r.boxes) for r in train.images)
    hook = _ClusterHook(num_boxes)
    trainer = Trainer(
        cfg,
        run_dir=tmp_path / "run",
        train_split=train,
        model=ToyPersonModel(num_ids=num_boxes),
        hooks=[hook],
        progress=False,
    )
    before = hook.head.weight.detach().clone()
    result = trainer.fit(max_steps=4)
    assert hook.epochs_seen == [0, 1] and hook.calls == 4
    assert "loss_crop" in result.steps[0]
    assert not torch.equal(before, hook.head.weight)  # the hook's module is optimised
    assert float(hook.bank.features.norm(dim=1).mean()) == pytest.approx(1.0, abs=1e-5)
    state = load_resume_state(find_checkpoint(tmp_path / "run", prefer="latest"))
    assert torch.equal(state["hook_modules"]["bank.features"], hook.bank.features)
    assert state["hooks"] == [{"calls": 4}]
