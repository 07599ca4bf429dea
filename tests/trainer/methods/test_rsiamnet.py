"""``rsiamnet``: config checks, training without labels, exact resume, and proof it never reads identities.

The training tests run seqnet_tiny on the ``tiny`` synthetic preset for a few steps on
the CPU with deterministic settings, across an epoch boundary so the per-epoch
clustering runs from trained features too.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from personsearch_train.engine.config import config_from_dict, load_config
from personsearch_train.engine.loop import Trainer
from personsearch_train.errors import ConfigError
from personsearch_train.methods import build_method
from personsearch_train.methods.rsiamnet import RSiamNetArgs
from personsearch_train.models import create_model
from personsearch_train.weak_supervision.crops import frozen_running_statistics
from weak_training import assert_training_ignores_identities, final_state, train, train_split


def _cfg(dataset: str = "cuhk_sysu", *, epochs: int = 2, data: dict | None = None, **method_args: object):
    return config_from_dict(
        {
            "method": "rsiamnet",
            "method_args": {"crop_height": 64, "crop_width": 32, "cluster_features": "memory", **method_args},
            "model": {"name": "seqnet_tiny"},
            "data": {"dataset": dataset, "use_identities": False, **(data or {})},
            "optim": {"name": "sgd", "lr": 0.01},
            "schedule": {"warmup_epochs": 0.5, "warmup_factor": 0.1, "milestones": [10]},
            "train": {
                "epochs": epochs,
                "batch_size": 2,
                "max_iters_per_epoch": 3,
                "amp": False,
                "deterministic": True,
                "device": "cpu",
                "cpu_threads": 1,
                "seed": 5,
            },
            "eval": {"every": 0},
        }
    )


# ------------------------------------------------------------------------ config
def test_recipes_load_and_refuse_identities(tmp_path: Path) -> None:
    for recipe in ("rsiamnet_cuhk_sysu", "rsiamnet_prw", "rsiamnet_synthetic_small", "rsiamnet_instant"):
        cfg = load_config(recipe, data_root=tmp_path)
        assert cfg.method == "rsiamnet" and cfg.data.use_identities is False
    with pytest.raises(ConfigError, match=r"data\.use_identities"):
        load_config("rsiamnet_instant", ["data.use_identities=true"], data_root=tmp_path)


def test_data_without_boxes_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.dataset: method 'rsiamnet' trains on person_search"):
        _cfg("market1501")
    with pytest.raises(ConfigError, match=r"data\.mix"):
        _cfg(data={"mix": [{"dataset": "prw", "root": "", "ratio": 1.0}]})


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ({"paths": "scene"}, "method_args.paths"),
        ({"pseudo_labels": "dbscan"}, "method_args.pseudo_labels"),
        ({"cluster_features": "never"}, "method_args.cluster_features"),
        ({"paths": "search"}, "method_args.paths"),  # L_ins/L_int need both paths
        ({"momentum": 1.0}, "method_args.momentum"),
        ({"int_temperature": 0.0}, "method_args.int_temperature"),
    ],
)
def test_bad_method_args_name_the_key(args: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method("rsiamnet", args)


def test_crops_too_short_for_the_head_are_refused(synthetic_root: Path) -> None:
    cfg = _cfg()
    method = build_method("rsiamnet", {"crop_height": 16})
    data = method.build_train_data(cfg, train_split=train_split(synthetic_root, "cuhk_sysu"))
    with pytest.raises(ConfigError, match=r"method_args\.crop_height: 16 pixels .* use at least 32"):
        method.build_model(cfg, data)


def test_instance_path_leaves_running_statistics_alone() -> None:
    model = create_model("seqnet_tiny").train()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with frozen_running_statistics(model):
        model.encode_crops(torch.rand(4, 3, 64, 32))
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    # One crop has no batch statistics: it is normalised with the running ones, as in eval.
    crop = torch.rand(1, 3, 64, 32)
    with frozen_running_statistics(model, batch_statistics=False):
        single = model.encode_crops(crop)
    assert model.training and all(m.training for m in model.modules())
    torch.testing.assert_close(single, model.eval().encode_crops(crop))
    model.train()
    model.encode_crops(torch.rand(4, 3, 64, 32))  # outside, BatchNorm updates as usual
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


def test_losses_update_the_batch_rows_of_the_memory_with_momentum() -> None:
    from personsearch_train.losses import cluster_contrastive_loss
    from personsearch_train.methods.rsiamnet import RSiamNetLosses
    from personsearch_train.models.structures import TrainingOutputs

    args = RSiamNetArgs(paths="search", ins_weight=0.0, int_weight=0.0, momentum=0.2)
    losses = RSiamNetLosses(boxes_per_item=np.array([2, 1, 3]), dim=4, args=args)
    generator = torch.Generator().manual_seed(0)
    losses.memory.reinitialise(torch.randn(6, 4, generator=generator), torch.tensor([0, 1, 0, 2, 1, 2]))
    before = losses.memory.features.clone()
    # Item 2's three people, then item 0's two: memory rows 3, 4, 5, 0, 1.
    targets = [{"image_index": 2, "boxes": torch.zeros(3, 4)}, {"image_index": 0, "boxes": torch.zeros(2, 4)}]
    assert losses.rows_of(targets).tolist() == [3, 4, 5, 0, 1]
    f = torch.randn(5, 4, generator=generator)
    empty = torch.zeros(0, dtype=torch.int64)
    outputs = TrainingOutputs(
        losses={}, person_embeddings=torch.zeros(0, 4), person_labels=empty,
        person_image_index=empty, person_box_index=empty, gt_embeddings=f,
    )  # fmt: skip
    terms = losses(None, outputs, [], targets)
    rows = torch.tensor([3, 4, 5, 0, 1])
    labels = torch.tensor([0, 1, 0, 2, 1, 2])
    expected = cluster_contrastive_loss(f, before, labels, labels[rows], scale=16.0)
    torch.testing.assert_close(terms["loss_cluster"], expected)
    mixed = 0.2 * before[rows] + 0.8 * torch.nn.functional.normalize(f, dim=1)
    torch.testing.assert_close(losses.memory.features[rows], torch.nn.functional.normalize(mixed, dim=1))
    torch.testing.assert_close(losses.memory.features[2], before[2])  # not in the batch: unchanged
    assert set(terms) == {"loss_cluster"}


# --------------------------------------------------------------------- training
def test_training_step_without_labels_updates_memory_and_reports(
    synthetic_root: Path, tmp_path: Path
) -> None:
    split = train_split(synthetic_root, "cuhk_sysu")
    trainer = train(_cfg(), tmp_path / "run", split)
    people = sum(len(r.boxes) for r in trainer.dataset.records)
    memory = trainer.losses.memory
    assert memory.features.shape == (people, trainer.model.embedding_dim)
    torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(people))
    assert int(memory.labels.min()) == 0 and int(memory.labels.max()) < people
    # Every target the model saw had only unlabelled boxes.
    assert all(int(p) == -1 for i in range(len(trainer.dataset)) for p in trainer.dataset[i][1]["pids"])
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and all(
        np.isfinite(row[k]) for row in log for k in ("loss_ins", "loss_int", "loss_cluster")
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "pseudo_labels.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1] and all(0.0 <= r["precision"] <= 1.0 for r in rows)
    assert (tmp_path / "run" / "plots" / "pseudo_labels.png").exists()


@pytest.mark.parametrize("dataset", ["cuhk_sysu", "prw"])
def test_training_never_reads_identities(synthetic_root: Path, tmp_path: Path, dataset: str) -> None:
    assert_training_ignores_identities(lambda: _cfg(dataset), synthetic_root, dataset, tmp_path)


def test_resume_inside_an_epoch_continues_exactly(synthetic_root: Path, tmp_path: Path) -> None:
    split = train_split(synthetic_root, "prw")
    straight = final_state(train(_cfg("prw"), tmp_path / "straight", split))
    train(_cfg("prw"), tmp_path / "resumed", split, max_steps=4)  # stops inside epoch 2
    resumed = train(_cfg("prw"), tmp_path / "resumed", split, resume=True)
    for key, value in straight.items():
        assert torch.equal(value, final_state(resumed)[key]), f"{key} differs after resume"
    rows = [
        json.loads(line) for line in (tmp_path / "resumed" / "pseudo_labels.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [0, 1]


@pytest.mark.parametrize(
    "variant", [{"pseudo_labels": "instance"}, {"paths": "instance", "ins_weight": 0.0, "int_weight": 0.0}]
)
def test_ablation_variants_train(synthetic_root: Path, tmp_path: Path, variant: dict) -> None:
    trainer = train(_cfg(epochs=1, **variant), tmp_path / "run", train_split(synthetic_root, "cuhk_sysu"))
    labels = trainer.losses.memory.labels
    if variant.get("pseudo_labels") == "instance":
        assert labels.tolist() == list(range(len(labels)))
    assert trainer.model.embed_ground_truth is (variant.get("paths", "both") != "instance")


@pytest.mark.parametrize("cluster_features", ["extract", "memory"])
def test_epoch_start_reextracts_or_clusters_the_memory(
    synthetic_root: Path, tmp_path: Path, cluster_features: str
) -> None:
    from personsearch_train.methods.rsiamnet import extract_person_features
    from personsearch_train.weak_supervision import first_neighbour_clusters

    trainer = Trainer(
        _cfg(cluster_features=cluster_features),
        run_dir=tmp_path / "run",
        train_split=train_split(synthetic_root, "cuhk_sysu"),
        progress=False,
    )
    trainer.setup()
    (hook,) = trainer.hooks
    memory = trainer.losses.memory
    hook.before_epoch(trainer, 0)  # both modes extract before the first epoch
    # The recipe's extraction batch (4): scenes are padded to the batch's largest, and the
    # padding reaches the features of people near an edge.
    fresh = extract_person_features(
        trainer.model, trainer.dataset, paths="both", crop_size=(64, 32), device=trainer.device, batch_size=4
    )
    torch.testing.assert_close(memory.features, fresh)
    memory.features.copy_(torch.nn.functional.normalize(torch.randn_like(fresh), dim=1))  # as if trained
    stale = memory.features.clone()
    hook.before_epoch(trainer, 1)
    if cluster_features == "extract":
        torch.testing.assert_close(memory.features, fresh)  # the model did not change: same features
    else:
        assert torch.equal(memory.features, stale)
    expected = first_neighbour_clusters(memory.features, hook.image_of_row)
    assert memory.labels.tolist() == expected.tolist()
    hook.before_epoch(trainer, 1)  # already clustered for this epoch (a resume): nothing changes
    assert memory.labels.tolist() == expected.tolist()


@pytest.mark.slow
def test_instant_recipe_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    from personsearch_train.engine.checkpoint import find_checkpoint, load_metadata

    cfg = load_config("rsiamnet_instant", data_root=synthetic_root)
    out = tmp_path / "run"
    result = Trainer(cfg, run_dir=out, progress=False).fit()
    # 20 epochs x 30 steps: the tiny preset has 60 CUHK-SYSU training images, batch 2.
    assert result.global_step == 600 and not result.interrupted
    meta = load_metadata(find_checkpoint(out, prefer="latest"))
    assert meta["method"]["name"] == "rsiamnet" and 0.0 <= meta["metrics"]["mAP"] <= 1.0
    rows = [json.loads(line) for line in (out / "pseudo_labels.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(20))
    assert all(r["people"] == rows[0]["people"] and 0.0 <= r["recall"] <= 1.0 for r in rows)
    assert (out / "plots" / "pseudo_labels.png").stat().st_size > 0


def _ddp_worker(rank: int, world_size: int, port: int, root: str, run_dir: str) -> None:
    import os

    from personsearch_train.engine.distributed import cleanup

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    cfg = _cfg(epochs=2)
    try:
        trainer = train(cfg, Path(run_dir), train_split(Path(root), "cuhk_sysu"))
    finally:
        cleanup()
    memory = trainer.losses.memory
    torch.save({"features": memory.features, "labels": memory.labels}, Path(run_dir) / f"memory{rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_keep_one_memory(synthetic_root: Path, tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(synthetic_root), str(tmp_path / "run")), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / "run" / f"memory{r}.pt") for r in (0, 1))
    # Each rank embeds half of every batch; the gathered update must leave the memories equal.
    assert torch.equal(first["features"], second["features"])
    assert torch.equal(first["labels"], second["labels"])
    torch.testing.assert_close(first["features"].norm(dim=1), torch.ones(len(first["features"])))
