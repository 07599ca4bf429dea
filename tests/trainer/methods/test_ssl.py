"""``ssl``: config checks, person masks, exemplars, training without labels, exact resume, no identities.

The training tests run seqnet_tiny on a slice of the ``tiny`` synthetic preset for a few
steps on the CPU with deterministic settings, across an epoch boundary: epoch 0 is an
instance epoch (``clustering.instance_epochs: 1``), epoch 1 clusters the trained memories.
The exemplar scales are kept small (one 32x16 scale, the shortest seqnet_tiny's head takes)
so the steps stay fast.
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
from personsearch_train.errors import ConfigError
from personsearch_train.losses.multi_label import dynamic_threshold
from personsearch_train.methods import build_method
from personsearch_train.methods.ssl import SSLArgs, SSLLosses, exemplar_features
from personsearch_train.models import create_model
from weak_training import assert_training_ignores_identities, final_state, train, train_split

RECIPES = ("ssl_cuhk_sysu", "ssl_prw", "ssl_synthetic_small", "ssl_instant")
SCALES = [[32, 16]]


def _cfg(dataset: str = "cuhk_sysu", *, epochs: int = 2, data: dict | None = None, **method_args: object):
    return config_from_dict(
        {
            "method": "ssl",
            "method_args": {
                "scales": SCALES,
                "clustering": {"min_samples": 2, "instance_epochs": 1},
                **method_args,
            },
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


def _running(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


# ------------------------------------------------------------------------ config
def test_recipes_load_and_refuse_identities(tmp_path: Path) -> None:
    for recipe in RECIPES:
        cfg = load_config(recipe, data_root=tmp_path)
        assert cfg.method == "ssl" and cfg.data.use_identities is False
        assert isinstance(build_method(cfg.method, cfg.method_args).args, SSLArgs)
    paper = build_method("ssl", load_config("ssl_cuhk_sysu", data_root=tmp_path).method_args).args
    assert paper.scales == [[112, 48], [224, 96], [448, 192]] and paper.scales_from == "fixed"
    instant = build_method("ssl", load_config("ssl_instant", data_root=tmp_path).method_args).args
    assert instant.scales_from == "kmeans" and instant.clustering.instance_epochs == 2
    with pytest.raises(ConfigError, match=r"data\.use_identities"):
        load_config("ssl_instant", ["data.use_identities=true"], data_root=tmp_path)


def test_mixed_sources_and_missing_mask_folder_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.mix"):
        _cfg(data={"mix": [{"dataset": "prw", "root": "", "ratio": 1.0}]})
    with pytest.raises(ConfigError, match=r"data\.use_identities"):
        _cfg(data={"use_identities": True})
    with pytest.raises(ConfigError, match=r"method_args\.mask_dir"):
        _cfg(mask_dir=str(tmp_path / "no_such_masks"))
    _cfg(mask_dir=str(tmp_path))  # an existing folder passes the config check


@pytest.mark.parametrize(
    ("args", "key"),
    [
        ({"scales_from": "x"}, "method_args.scales_from"),
        ({"scales": [[10]]}, "method_args.scales"),
        ({"scales": []}, "method_args.scales"),
        ({"scales": [[64, 0]]}, "method_args.scales"),
        ({"dml_weight": 0.0, "cluster_weight": 0.0}, "method_args.dml_weight"),
        ({"margin": -1.0}, "method_args margin"),
        ({"momentum": 1.0}, "method_args.momentum"),
        ({"top_percent": 0.0}, "method_args.temperature must be > 0 and top_percent"),
        ({"extract_batch_size": 0}, "method_args.extract_batch_size"),
        ({"max_positives": -1}, "method_args.max_positives"),
        ({"clustering": {"eps": [0.72, 0.70, 0.68]}}, "method_args.clustering.eps"),
        ({"masks": "schp"}, "method_args.masks"),
    ],
)
def test_bad_method_args_name_the_key(args: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_method("ssl", args)


def test_scales_too_short_for_the_head_are_refused_and_kmeans_raises_them(synthetic_root: Path) -> None:
    from personsearch_train.weak_supervision.exemplars import box_scales_kmeans

    cfg = _cfg()
    split = train_split(synthetic_root, "cuhk_sysu")
    method = build_method("ssl", {"scales": [[64, 32], [16, 8]]})
    data = method.build_train_data(cfg, train_split=split)
    model = method.build_model(cfg, data)
    assert model.embed_ground_truth is True
    with pytest.raises(ConfigError, match=r"method_args\.scales: \[\(16, 8\)\] .* 32 pixels"):
        method.build_losses(cfg, model, data)
    # k-means picks len(scales) sizes from the boxes, none shorter than the head's 32 rows.
    method = build_method("ssl", {"scales_from": "kmeans", "scales": [[16, 8], [16, 8]]})
    data = method.build_train_data(cfg, train_split=split)
    losses = method.build_losses(cfg, method.build_model(cfg, data), data)
    boxes = np.concatenate([r.boxes for r in data.dataset.records])
    assert losses.scales == box_scales_kmeans(boxes, 2, min_height=32, seed=cfg.train.seed)
    assert len(losses.scales) == 2 and all(h >= 32 and h % 8 == 0 for h, _ in losses.scales)
    assert losses.min_height == 32


# ------------------------------------------------------------------ person masks
@pytest.mark.parametrize(
    ("args", "masks"),
    [({}, True), ({"remove_background": False}, False), ({"exemplars": False}, False)],
)
def test_items_carry_person_masks_only_when_backgrounds_are_removed(
    synthetic_root: Path, args: dict, masks: bool
) -> None:
    split = train_split(synthetic_root, "prw")
    data = build_method("ssl", args).build_train_data(_cfg("prw", **args), train_split=split)
    image, target = data.dataset[0]
    if masks:
        assert data.dataset.person_masks == Path(split.root) / "person_masks"
        mask = target["person_masks"]
        assert mask.dtype == torch.uint8 and tuple(mask.shape) == tuple(image.shape[1:])
        assert 0 < int(mask[mask != 255].max()) <= len(target["boxes"])  # label k + 1 = box k
    else:
        assert data.dataset.person_masks is None and "person_masks" not in target


def test_mask_dir_is_used_and_a_dataset_without_masks_falls_back_to_ellipses(
    synthetic_root: Path, tmp_path: Path
) -> None:
    split = train_split(synthetic_root, "cuhk_sysu")
    masks = Path(split.root) / "person_masks"
    data = build_method("ssl", {"mask_dir": str(masks)}).build_train_data(
        _cfg(mask_dir=str(masks)), train_split=split
    )
    assert data.dataset.person_masks == masks and "person_masks" in data.dataset[0][1]
    # The same images read from a root without person_masks/: no masks, ellipse fallback.
    bare = dataclasses.replace(split, root=tmp_path)
    data = build_method("ssl", {}).build_train_data(_cfg(), train_split=bare)
    assert data.dataset.person_masks is None and "person_masks" not in data.dataset[0][1]


# ------------------------------------------------------------------- exemplars
def test_exemplar_features_are_unit_norm_per_scale_and_leave_running_statistics() -> None:
    torch.manual_seed(0)
    model = create_model("seqnet_tiny").train()
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 120)]
    targets = [
        {"boxes": torch.tensor([[4.0, 8.0, 24.0, 60.0], [40.0, 10.0, 70.0, 90.0]])},
        {"boxes": torch.tensor([[10.0, 5.0, 30.0, 50.0]])},
    ]
    scales = [(32, 16), (64, 32)]
    before = _running(model)
    features = exemplar_features(model, images, targets, scales=scales, remove_background=True, min_height=32)
    assert features.shape == (3, len(scales) + 1, model.embedding_dim)
    torch.testing.assert_close(features.norm(dim=2), torch.ones(3, len(scales) + 1))
    after = _running(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and all(m.training for m in model.modules())
    # One person alone (no batch statistics): normalised with the running ones, still untouched.
    single = exemplar_features(
        model, images[1:], targets[1:], scales=scales, remove_background=True, min_height=32
    )
    assert single.shape == (1, 3, model.embedding_dim)
    assert all(torch.equal(before[k], v) for k, v in _running(model).items())
    # In eval mode a person's features do not depend on the batch: image then box order.
    model.eval()
    together = exemplar_features(model, images, targets, scales=scales, remove_background=True, min_height=32)
    apart = torch.cat(
        [
            exemplar_features(model, [i], [t], scales=scales, remove_background=True, min_height=32)
            for i, t in zip(images, targets, strict=True)
        ]
    )
    # The original-scale canvas is as large as the batch's largest person, so compare the
    # rescaled exemplars, whose input is the person's own crop.
    torch.testing.assert_close(together[:, 1:], apart[:, 1:])
    # Removing the background changes what the branch sees.
    kept = exemplar_features(model, images, targets, scales=scales, remove_background=False, min_height=32)
    assert not torch.allclose(kept, together)


def test_hook_initialises_both_memories_and_sets_the_threshold_per_epoch(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from personsearch_train.weak_supervision.features import extract_box_features

    trainer = Trainer(
        _cfg(extract_batch_size=3, threshold_base=0.5, threshold_alpha=0.2, threshold_beta=-0.5),
        run_dir=tmp_path / "run",
        train_split=train_split(synthetic_root, "cuhk_sysu"),
        progress=False,
    )
    trainer.setup()
    (hook,) = trainer.hooks
    losses = trainer.losses
    assert isinstance(losses, SSLLosses)
    hook.before_epoch(trainer, 0)
    assert losses.threshold == pytest.approx(0.7) and losses.instance_only
    people = losses.rows.size
    # M_I is the untrained model's box embedding; M_M the mean of its exemplars.
    fresh = extract_box_features(trainer.model, trainer.dataset, device=trainer.device, batch_size=3).features
    torch.testing.assert_close(losses.memory_main.features, fresh)
    assert losses.memory_exemplar.features.shape == fresh.shape
    torch.testing.assert_close(losses.memory_exemplar.features.norm(dim=1), torch.ones(people))
    assert not torch.allclose(losses.memory_exemplar.features, fresh)
    assert losses.memory_main.labels.tolist() == list(range(people))
    # The instance epoch's multi-labels are each person's own entry.
    rows = torch.arange(people)
    assert torch.equal(losses.multilabels(rows), torch.eye(people, dtype=torch.bool))
    for epoch in (1, 3):
        hook.before_epoch(trainer, epoch)
        expected = dynamic_threshold(epoch, base=0.5, alpha=0.2, beta=-0.5)
        assert losses.threshold == pytest.approx(expected) and not losses.instance_only
        assert expected == pytest.approx(0.5 + 0.2 * math.exp(-0.5 * epoch))
    assert dynamic_threshold(0) == pytest.approx(0.7)  # the paper's schedule at epoch 0
    # A resume inside epoch 3 calls the hook again: the threshold stays the epoch's.
    labels = losses.memory_main.labels.clone()
    hook.before_epoch(trainer, 3)
    assert losses.threshold == pytest.approx(dynamic_threshold(3, base=0.5, alpha=0.2, beta=-0.5))
    assert torch.equal(losses.memory_main.labels, labels)
    # With method_args.max_positives the same labels are cut to the k most similar.
    uncapped = losses.multilabels(rows)
    assert int(uncapped.sum(dim=1).max()) > 2
    losses.args = dataclasses.replace(losses.args, max_positives=2)
    capped = losses.multilabels(rows)
    assert int(capped.sum(dim=1).max()) == 2 and bool((capped <= uncapped).all())
    similarities = losses.label_features() @ losses.label_features().t()
    kept = similarities.masked_fill(~capped, -2.0).amax(dim=1)
    dropped = similarities.masked_fill(~(uncapped & ~capped), -2.0).amax(dim=1)
    assert bool((kept >= dropped).all())


# --------------------------------------------------------------------- training
def test_training_without_labels_updates_memories_and_reports(synthetic_root: Path, tmp_path: Path) -> None:
    split = train_split(synthetic_root, "cuhk_sysu")
    trainer = train(_cfg(), tmp_path / "run", split)
    people = sum(len(r.boxes) for r in trainer.dataset.records)
    assert "person_masks" in trainer.dataset[0][1]
    dim = trainer.model.embedding_dim
    for memory in (trainer.losses.memory_main, trainer.losses.memory_exemplar):
        assert memory.features.shape == (people, dim)
        torch.testing.assert_close(memory.features.norm(dim=1), torch.ones(people))
    labels = trainer.losses.memory_main.labels
    assert int(labels.min()) >= 0 and int(labels.max()) < people
    assert all(int(p) == -1 for i in range(len(trainer.dataset)) for p in trainer.dataset[i][1]["pids"])
    log = _jsonl(tmp_path / "run" / "train_log.jsonl")
    assert len(log) == 6 and all(
        np.isfinite(row[k]) for row in log for k in ("loss_scale", "loss_cluster", "loss_dml")
    )
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
    straight = train(_cfg("prw"), tmp_path / "straight", split)
    train(_cfg("prw"), tmp_path / "resumed", split, max_steps=4)  # stops inside epoch 2
    resumed = train(_cfg("prw"), tmp_path / "resumed", split, resume=True)
    expected, got = final_state(straight), final_state(resumed)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.equal(value, got[key]), f"{key} differs after resume"
    assert resumed.losses.threshold == straight.losses.threshold
    rows = _jsonl(tmp_path / "resumed" / "pseudo_labels.jsonl")
    assert rows == _jsonl(tmp_path / "straight" / "pseudo_labels.jsonl")
    assert [r["epoch"] for r in rows] == [0, 1]


@pytest.mark.parametrize(
    "variant",
    [{"exemplars": False}, {"dml_weight": 0.0}, {"cluster_weight": 0.0}, {"remove_background": False}],
)
def test_ablation_variants_train(synthetic_root: Path, tmp_path: Path, variant: dict) -> None:
    trainer = train(_cfg(epochs=1, **variant), tmp_path / "run", train_split(synthetic_root, "cuhk_sysu"))
    log = _jsonl(tmp_path / "run" / "train_log.jsonl")
    terms = {
        "loss_scale": variant.get("exemplars", True),
        "loss_dml": variant.get("dml_weight", 1.0) > 0,
        "loss_cluster": variant.get("cluster_weight", 1.0) > 0,
    }
    assert len(log) == 3
    for row in log:
        assert {k for k in terms if k in row} == {k for k, on in terms.items() if on}
        assert all(np.isfinite(row[k]) for k, on in terms.items() if on)
    people = trainer.losses.rows.size
    exemplar_rows = people if variant.get("exemplars", True) else 0
    assert trainer.losses.memory_exemplar.features.shape == (exemplar_rows, trainer.model.embedding_dim)
    assert trainer.losses.memory_exemplar.labels.shape == (exemplar_rows,)
    masks = variant.get("exemplars", True) and variant.get("remove_background", True)
    assert (trainer.dataset.person_masks is not None) is masks


@pytest.mark.slow
def test_instant_recipe_end_to_end(synthetic_root: Path, tmp_path: Path) -> None:
    from personsearch_train.engine.checkpoint import find_checkpoint, load_metadata

    cfg = load_config("ssl_instant", data_root=synthetic_root)
    out = tmp_path / "run"
    result = Trainer(cfg, run_dir=out, progress=False).fit()
    # 20 epochs x 30 steps: the tiny preset has 60 CUHK-SYSU training images, batch 2.
    assert result.global_step == 600 and not result.interrupted
    meta = load_metadata(find_checkpoint(out, prefer="latest"))
    assert meta["method"]["name"] == "ssl" and 0.0 <= meta["metrics"]["mAP"] <= 1.0
    rows = _jsonl(out / "pseudo_labels.jsonl")
    assert [r["epoch"] for r in rows] == list(range(20))
    assert all(r["people"] == rows[0]["people"] and 0.0 <= r["recall"] <= 1.0 for r in rows)
    assert all(r["singletons"] == r["people"] for r in rows[:2])  # the recipe's two instance epochs
    assert (out / "plots" / "pseudo_labels.png").stat().st_size > 0
