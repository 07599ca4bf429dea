"""``cgps``: config checks, training without labels, exact resume, proof it never reads identities.

The training tests run seqnet_tiny on a slice of the ``tiny`` synthetic preset for a few
steps on the CPU with deterministic settings, across an epoch boundary: epoch 0 is an
instance epoch (``clustering.instance_epochs: 1``), epoch 1 clusters the trained memory.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from personsearch_train.engine.config import config_from_dict, load_config
from personsearch_train.engine.loop import Trainer
from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.methods import build_method
from personsearch_train.methods.cgps import (
    CGPSArgs,
    CGPSLosses,
    ClusteringSettings,
    SelfPacedClusterHook,
    update_memory_by_row,
)
from personsearch_train.models.structures import TrainingOutputs
from personsearch_train.weak_supervision.memory_bank import MemoryBank
from personsearch_train.weak_supervision.person_rows import PersonRows
from weak_training import assert_training_ignores_identities, final_state, train, train_split

RECIPES = ("cgps_cuhk_sysu", "cgps_prw", "cgps_synthetic_small", "cgps_instant")


def _cfg(dataset: str = "cuhk_sysu", *, epochs: int = 2, data: dict | None = None, **method_args: object):
    return config_from_dict(
        {
            "method": "cgps",
            "method_args": {"clustering": {"min_samples": 2, "instance_epochs": 1}, **method_args},
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


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------ config
def test_recipes_load_and_refuse_identities(tmp_path: Path) -> None:
    for recipe in RECIPES:
        cfg = load_config(recipe, data_root=tmp_path)
        assert cfg.method == "cgps" and cfg.data.use_identities is False
        args = build_method(cfg.method, cfg.method_args).args
        assert isinstance(args, CGPSArgs) and isinstance(args.clustering, ClusteringSettings)
    # Trained from scratch, the synthetic recipes start with instance epochs; the paper's do not.
    instant = build_method("cgps", load_config("cgps_instant", data_root=tmp_path).method_args).args
    assert instant.clustering.instance_epochs == 2 and instant.clustering.min_samples == 2
    paper = build_method("cgps", load_config("cgps_prw", data_root=tmp_path).method_args).args
    assert paper.clustering.instance_epochs == 0 and paper.clustering.eps == [0.68, 0.70, 0.72]
    with pytest.raises(ConfigError, match=r"data\.use_identities"):
        load_config("cgps_instant", ["data.use_identities=true"], data_root=tmp_path)


def test_mixed_sources_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.mix"):
        _cfg(data={"mix": [{"dataset": "prw", "root": "", "ratio": 1.0}]})
    with pytest.raises(ConfigError, match=r"data\.use_identities"):
        _cfg(data={"use_identities": True})


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ({"top_percent": 0.0}, "method_args.top_percent"),
        ({"top_percent": 1.5}, "method_args.top_percent"),
        ({"momentum": 1.0}, "method_args.momentum"),
        ({"temperature": 0.0}, "method_args.temperature"),
        ({"margin": -0.1}, "method_args.contrast_weight, triplet_weight, background_weight and margin"),
        ({"extract_batch_size": 0}, "method_args.extract_batch_size"),
        ({"clustering": {"eps": [0.70, 0.68, 0.72]}}, "method_args.clustering.eps"),
        ({"clustering": {"eps": [0.68, 0.70]}}, "method_args.clustering.eps"),
        ({"clustering": {"instance_epochs": -1}}, "method_args.clustering.instance_epochs"),
        ({"clustering": {"min_samples": 0}}, "method_args.clustering.min_samples"),
        ({"clustering": {"independence_quantile": 0.0}}, "method_args.clustering.independence_quantile"),
        ({"clustering": {"k3": 1}}, "method_args.clustering.k3"),
        ({"hard_negatives": 0.6}, "method_args.hard_negatives"),
    ],
)
def test_bad_method_args_name_the_key(args: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method("cgps", args)


# ------------------------------------------------------------- memory and rows
def test_person_rows_map_batch_positions_and_boxes_to_rows() -> None:
    rows = PersonRows(np.array([2, 0, 3, 1]))  # item 1 has nobody: rows 0-1, -, 2-4, 5
    assert rows.size == 6
    assert rows.row_offsets.tolist() == [0, 2, 2, 5]
    assert rows.image_of_row.tolist() == [0, 0, 2, 2, 2, 3]
    targets = [
        {"image_index": 3, "boxes": torch.zeros(1, 4)},
        {"image_index": 0, "boxes": torch.zeros(2, 4)},
        {"image_index": 2, "boxes": torch.zeros(3, 4)},
    ]
    assert rows.of_targets(targets).tolist() == [5, 0, 1, 2, 3, 4]
    empty = torch.zeros(0, dtype=torch.int64)
    outputs = TrainingOutputs(
        losses={},
        person_embeddings=torch.zeros(6, 4),
        person_labels=torch.full((6,), -1),
        # Batch position 0 is item 3, 1 is item 0, 2 is item 2; RoIs repeat people.
        person_image_index=torch.tensor([0, 1, 1, 2, 2, 1]),
        person_box_index=torch.tensor([0, 1, 0, 2, 2, 1]),
    )
    assert rows.of_rois(outputs, targets).tolist() == [5, 1, 0, 4, 4, 1]
    nobody = dataclasses.replace(
        outputs,
        person_embeddings=torch.zeros(0, 4),
        person_labels=empty,
        person_image_index=empty,
        person_box_index=empty,
    )
    assert rows.of_rois(nobody, targets).tolist() == []


def test_update_memory_by_row_averages_repeats_then_applies_momentum() -> None:
    memory = MemoryBank(size=4, dim=3, momentum=0.2)
    start = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.8, 0.0]])
    memory.reinitialise(start)
    # Row 2 twice (x and y axes), row 0 once (z axis); rows 1 and 3 are not in the batch.
    rows = torch.tensor([2, 0, 2])
    features = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    update_memory_by_row(memory, rows, features)
    half = 0.8 / math.sqrt(2.0)  # 0.8 x the re-normalised mean of the x and y axes
    expected = torch.tensor(
        [
            [0.2, 0.0, 0.8],  # 0.2 x old + 0.8 x new
            [0.0, 1.0, 0.0],
            [half, half, 0.2],
            [0.6, 0.8, 0.0],
        ]
    )
    expected[0] /= math.sqrt(0.2**2 + 0.8**2)
    expected[2] /= math.sqrt(2 * half**2 + 0.2**2)
    torch.testing.assert_close(memory.features, expected)
    # The order of the repeated rows does not matter.
    other = MemoryBank(size=4, dim=3, momentum=0.2)
    other.reinitialise(start)
    update_memory_by_row(other, rows.flip(0), features.flip(0))
    torch.testing.assert_close(other.features, memory.features)
    # No RoI: nothing changes.
    before = memory.features.clone()
    update_memory_by_row(memory, torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3))
    assert torch.equal(memory.features, before)


def test_losses_use_the_rois_rows_and_update_them_after() -> None:
    from personsearch_train.losses.hybrid_memory import hard_negative_cluster_contrastive_loss
    from personsearch_train.losses.triplet import triplet_with_background_loss

    args = CGPSArgs(momentum=0.2, contrast_weight=0.5, triplet_weight=2.0)
    losses = CGPSLosses(boxes_per_item=np.array([2, 3]), dim=4, args=args)
    generator = torch.Generator().manual_seed(0)
    losses.memory.reinitialise(torch.randn(5, 4, generator=generator), torch.tensor([0, 1, 0, 2, 1]))
    before = losses.memory.features.clone()
    targets = [{"image_index": 1, "boxes": torch.zeros(3, 4)}, {"image_index": 0, "boxes": torch.zeros(2, 4)}]
    features = torch.nn.functional.normalize(torch.randn(4, 4, generator=generator), dim=1)
    background = torch.nn.functional.normalize(torch.randn(3, 4, generator=generator), dim=1)
    outputs = TrainingOutputs(
        losses={},
        person_embeddings=features,
        person_labels=torch.full((4,), -1),
        person_image_index=torch.tensor([0, 0, 1, 1]),
        person_box_index=torch.tensor([2, 2, 0, 1]),
        background_embeddings=background,
    )
    rows = torch.tensor([4, 4, 0, 1])
    labels = losses.memory.labels[rows]
    terms = losses(None, outputs, [], targets)
    assert set(terms) == {"loss_cluster", "loss_triplet"}
    expected_cluster = 0.5 * hard_negative_cluster_contrastive_loss(
        features, before, losses.memory.labels, labels, temperature=0.05, top_percent=0.6
    )
    expected_triplet = 2.0 * triplet_with_background_loss(
        features, labels, background, margin=0.3, background_weight=0.25
    )
    torch.testing.assert_close(terms["loss_cluster"], expected_cluster)
    torch.testing.assert_close(terms["loss_triplet"], expected_triplet)
    # Row 4 from the mean of its two RoIs, rows 0 and 1 from one each; 2 and 3 untouched.
    reference = MemoryBank(size=5, dim=4, momentum=0.2)
    reference.reinitialise(before)
    update_memory_by_row(reference, rows, features)
    torch.testing.assert_close(losses.memory.features, reference.features)
    assert torch.equal(losses.memory.features[2:4], before[2:4])
    with pytest.raises(TrainerError, match="background"):
        losses(None, dataclasses.replace(outputs, background_embeddings=None), [], targets)


def test_instance_epochs_contrast_against_every_negative() -> None:
    from personsearch_train.losses.hybrid_memory import hard_negative_cluster_contrastive_loss

    args = CGPSArgs(clustering=ClusteringSettings(instance_epochs=1))
    losses = CGPSLosses(boxes_per_item=np.array([3, 3]), dim=4, args=args)
    generator = torch.Generator().manual_seed(1)
    losses.memory.reinitialise(torch.randn(6, 4, generator=generator), torch.arange(6))
    memory = losses.memory.features.clone()
    features = torch.nn.functional.normalize(torch.randn(2, 4, generator=generator), dim=1)
    outputs = TrainingOutputs(
        losses={},
        person_embeddings=features,
        person_labels=torch.full((2,), -1),
        person_image_index=torch.tensor([0, 0]),
        person_box_index=torch.tensor([0, 2]),
        background_embeddings=torch.zeros(0, 4),
    )
    targets = [{"image_index": 1, "boxes": torch.zeros(3, 4)}]
    labels = torch.tensor([3, 5])

    def contrast(top_percent: float) -> torch.Tensor:
        return hard_negative_cluster_contrastive_loss(
            features, memory, torch.arange(6), labels, top_percent=top_percent
        )

    assert not torch.allclose(contrast(1.0), contrast(0.6))
    for epoch, top_percent in ((0, 1.0), (1, 0.6)):  # no hard-negative filter before clustering
        losses.set_epoch(epoch)
        losses.memory.reinitialise(memory)
        torch.testing.assert_close(losses(None, outputs, [], targets)["loss_cluster"], contrast(top_percent))


# --------------------------------------------------------------------- training
def test_training_without_labels_updates_memory_and_reports(synthetic_root: Path, tmp_path: Path) -> None:
    split = train_split(synthetic_root, "cuhk_sysu")
    trainer = train(_cfg(), tmp_path / "run", split)
    people = sum(len(r.boxes) for r in trainer.dataset.records)
    memory = trainer.losses.memory
    assert memory.features.shape == (people, trainer.model.embedding_dim)
    torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(people))
    assert int(memory.labels.min()) >= 0 and int(memory.labels.max()) < people
    assert all(int(p) == -1 for i in range(len(trainer.dataset)) for p in trainer.dataset[i][1]["pids"])
    log = _jsonl(tmp_path / "run" / "train_log.jsonl")
    assert len(log) == 6 and all(np.isfinite(row[k]) for row in log for k in ("loss_cluster", "loss_triplet"))
    rows = _jsonl(tmp_path / "run" / "pseudo_labels.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]
    assert rows[0]["clusters"] == rows[0]["singletons"] == rows[0]["people"] == people
    assert rows[1]["people"] == people and all(0.0 <= r["precision"] <= 1.0 for r in rows)
    assert (tmp_path / "run" / "plots" / "pseudo_labels.png").stat().st_size > 0


@pytest.mark.parametrize("dataset", ["cuhk_sysu", "prw"])
def test_training_never_reads_identities(synthetic_root: Path, tmp_path: Path, dataset: str) -> None:
    assert_training_ignores_identities(lambda: _cfg(dataset), synthetic_root, dataset, tmp_path)


def test_resume_inside_an_epoch_continues_exactly(synthetic_root: Path, tmp_path: Path) -> None:
    split = train_split(synthetic_root, "prw")
    straight = final_state(train(_cfg("prw"), tmp_path / "straight", split))
    train(_cfg("prw"), tmp_path / "resumed", split, max_steps=4)  # stops inside epoch 2
    resumed = final_state(train(_cfg("prw"), tmp_path / "resumed", split, resume=True))
    assert straight.keys() == resumed.keys()
    for key, value in straight.items():
        assert torch.equal(value, resumed[key]), f"{key} differs after resume"
    rows = _jsonl(tmp_path / "resumed" / "pseudo_labels.jsonl")
    assert rows == _jsonl(tmp_path / "straight" / "pseudo_labels.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]


def test_memory_starts_from_the_untrained_model_and_clusters_once_per_epoch(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from personsearch_train.weak_supervision.features import extract_box_features
    from personsearch_train.weak_supervision.self_paced_clustering import self_paced_clusters

    trainer = Trainer(
        _cfg(extract_batch_size=3),
        run_dir=tmp_path / "run",
        train_split=train_split(synthetic_root, "cuhk_sysu"),
        progress=False,
    )
    trainer.setup()
    (hook,) = trainer.hooks
    assert isinstance(hook, SelfPacedClusterHook)
    memory = trainer.losses.memory
    fresh = extract_box_features(trainer.model, trainer.dataset, device=trainer.device, batch_size=3).features
    hook.before_epoch(trainer, 0)
    torch.testing.assert_close(memory.features, fresh)
    assert memory.labels.tolist() == list(range(len(fresh)))  # instance epoch: one identity each
    assert trainer.losses.instance_only
    # A second call for the same epoch (a resume) neither re-initialises nor relabels.
    memory.features.copy_(torch.nn.functional.normalize(torch.randn_like(fresh), dim=1))  # as if trained
    trained = memory.features.clone()
    hook.before_epoch(trainer, 0)
    assert torch.equal(memory.features, trained) and memory.labels.tolist() == list(range(len(fresh)))
    assert len(hook.report.rows()) == 1
    # The next epoch clusters the memory as it is, without extracting again.
    hook.before_epoch(trainer, 1)
    assert torch.equal(memory.features, trained) and not trainer.losses.instance_only
    expected = self_paced_clusters(
        trained, hook.image_of_row, eps=(0.68, 0.70, 0.72), min_samples=2, k1=30, k2=6
    )
    assert memory.labels.tolist() == expected.labels.tolist()
    assert hook.independence_threshold == pytest.approx(float(expected.independence_threshold))
    labels = memory.labels.clone()
    hook.before_epoch(trainer, 1)
    assert torch.equal(memory.labels, labels) and len(hook.report.rows()) == 2


@pytest.mark.slow
def test_instant_recipe_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    from personsearch_train.engine.checkpoint import find_checkpoint, load_metadata

    cfg = load_config("cgps_instant", data_root=synthetic_root)
    out = tmp_path / "run"
    result = Trainer(cfg, run_dir=out, progress=False).fit()
    # 20 epochs x 30 steps: the tiny preset has 60 CUHK-SYSU training images, batch 2.
    assert result.global_step == 600 and not result.interrupted
    meta = load_metadata(find_checkpoint(out, prefer="latest"))
    assert meta["method"]["name"] == "cgps" and 0.0 <= meta["metrics"]["mAP"] <= 1.0
    rows = _jsonl(out / "pseudo_labels.jsonl")
    assert [r["epoch"] for r in rows] == list(range(20))
    assert all(r["people"] == rows[0]["people"] and 0.0 <= r["recall"] <= 1.0 for r in rows)
    assert all(r["singletons"] == r["people"] for r in rows[:2])  # the recipe's two instance epochs
    assert (out / "plots" / "pseudo_labels.png").stat().st_size > 0
