"""Tiny hand-made person-search splits and a toy model for the engine tests.

Scenes are flat-colour backgrounds with coloured rectangles ("people"); a person's
colour is their identity, so a working model can tell them apart.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from personsearch_train.data.structures import ImageRecord, PersonSearchSplit, QueryRecord
from personsearch_train.methods import TrainingMethod, register_method
from personsearch_train.models.structures import TrainingOutputs
from personsearch_train.weak_supervision import crop_people
from torch import nn

COLOURS = np.array(
    [[220, 30, 30], [30, 200, 40], [40, 60, 230], [230, 220, 40], [200, 40, 210], [40, 210, 210]],
    dtype=np.uint8,
)


def _draw_scene(path: Path, rng: np.random.Generator, size: tuple[int, int], pids: list[int]) -> np.ndarray:
    height, width = size
    image = np.full((height, width, 3), rng.integers(60, 120), dtype=np.uint8)
    boxes = []
    slot = width // max(1, len(pids))
    for k, pid in enumerate(pids):
        w = int(rng.integers(slot // 3, slot // 2))
        h = int(rng.integers(height // 2, height - 8))
        x1 = k * slot + int(rng.integers(2, max(3, slot - w - 2)))
        y1 = int(rng.integers(2, height - h - 2))
        colour = COLOURS[pid % len(COLOURS)] if pid >= 0 else np.array([128, 128, 128], np.uint8)
        image[y1 : y1 + h, x1 : x1 + w] = colour
        boxes.append([x1, y1, x1 + w, y1 + h])
    if not path.exists():  # other processes of a DDP test may be reading it
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return np.asarray(boxes, dtype=np.float32)


def make_splits(
    root: Path, *, num_train: int = 8, num_test: int = 4, seed: int = 0
) -> tuple[PersonSearchSplit, ...]:
    """A train split (labels 0..5, some -1) and a PRW-style test split with queries."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    train = []
    for i in range(num_train):
        size = (96, 144) if i % 3 else (144, 96)  # mixed aspect ratios
        pids = [int(p) for p in rng.choice(6, size=2, replace=False)] + ([-1] if i % 2 else [])
        path = root / f"train_{i}.jpg"
        train.append(
            ImageRecord(name=path.name, path=path, boxes=_draw_scene(path, rng, size, pids), pids=pids)
        )
    test = []
    queries = []
    for i in range(num_test):
        pids = [i % 3 + 1, (i + 1) % 3 + 1]
        path = root / f"c{i % 2 + 1}s1_{i:06d}.jpg"
        boxes = _draw_scene(path, rng, (96, 144), pids)
        test.append(ImageRecord(name=path.name, path=path, boxes=boxes, pids=pids, camera=i % 2 + 1))
    for q in range(2):
        rec = test[q]
        queries.append(
            QueryRecord(
                name=rec.name, path=rec.path, box=rec.boxes[0], pid=int(rec.pids[0]), camera=rec.camera
            )
        )
    train_split = PersonSearchSplit(
        dataset="prw",
        split="train",
        root=root,
        images=tuple(train),
        label_to_pid=np.arange(6, dtype=np.int64) + 100,
    )
    test_split = PersonSearchSplit(
        dataset="prw", split="test", root=root, images=tuple(test), queries=tuple(queries)
    )
    return train_split, test_split


@register_method
class ModelLossesOnly(TrainingMethod):
    """A method that adds no loss: the engine tests' toy model brings its own."""

    name = "engine_test_model_losses_only"
    summary = "engine tests: the model's own losses only"


class ToyPersonModel(nn.Module):
    """A deterministic toy with the model surface: crop each box, embed, classify.

    No BatchNorm and no random sampling, so a batch split over processes gives the same
    gradients as the whole batch (the DDP mechanics test relies on that). The loss is
    a per-image mean, averaged over images.
    """

    def __init__(self, num_ids: int = 6, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, dim))
        self.classifier = nn.Linear(dim, num_ids)
        self.box_score = nn.Linear(dim, 1)

    def _embed(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        return self.embed(crop_people(images, boxes, output_size=(8, 4)))

    def forward_train(self, images: list[torch.Tensor], targets: list[dict]) -> TrainingOutputs:
        id_losses, score_losses, embeddings = [], [], []
        for image, target in zip(images, targets, strict=True):
            emb = self._embed([image], [target["boxes"]])
            labelled = target["pids"] >= 0
            logits = self.classifier(emb)
            id_losses.append(nn.functional.cross_entropy(logits[labelled], target["pids"][labelled]))
            score_losses.append(nn.functional.softplus(-self.box_score(emb)).mean())
            embeddings.append(nn.functional.normalize(emb, dim=1))
        counts = [len(t["boxes"]) for t in targets]
        return TrainingOutputs(
            losses={"loss_id": torch.stack(id_losses).mean(), "loss_score": torch.stack(score_losses).mean()},
            person_embeddings=torch.cat(embeddings),
            person_labels=torch.cat([t["pids"] for t in targets]),
            person_image_index=torch.repeat_interleave(torch.arange(len(targets)), torch.tensor(counts)),
            person_box_index=torch.cat([torch.arange(n) for n in counts]),
        )

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        emb = nn.functional.normalize(self._embed(images, boxes), dim=1)
        return list(emb.split([len(b) for b in boxes]))


def train_config(
    root: Path, *, model: str = "seqnet_tiny", batch_size: int = 2, epochs: int = 2, iters: int = 3
):
    """A CPU, deterministic, evaluation-free config for the engine tests."""
    from personsearch_train.engine.config import config_from_dict

    return config_from_dict(
        {
            "model": {"name": model},
            "data": {"dataset": "prw", "root": str(root)},
            "optim": {"lr": 0.01},
            "schedule": {"warmup_epochs": 0.5, "milestones": [1]},
            "train": {
                "epochs": epochs,
                "batch_size": batch_size,
                "max_iters_per_epoch": iters,
                "amp": False,
                "deterministic": True,
                "device": "cpu",
                "seed": 3,
                "cpu_threads": 1,
            },
            "eval": {"every": 0},
        }
    )


def ddp_worker(
    rank: int, world_size: int, port: int, scenes: str, run_dir: str, model: str, batch: int
) -> None:
    """One rank of a gloo DDP run; rank 0 writes the per-step losses to run_dir/steps.json."""
    import json
    import os

    from personsearch_train.engine.distributed import cleanup
    from personsearch_train.engine.loop import Trainer

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    train, _ = make_splits(Path(scenes))
    cfg = train_config(Path(scenes), model=model, batch_size=batch, epochs=1, iters=3)
    torch.manual_seed(0)
    net = ToyPersonModel() if model == "toy" else None
    if model == "toy":
        cfg.model.name = "toy"
        cfg.method = ModelLossesOnly.name
    try:
        result = Trainer(cfg, run_dir=Path(run_dir), train_split=train, model=net, progress=False).fit()
    finally:
        cleanup()
    if rank == 0:
        Path(run_dir, "steps.json").write_text(json.dumps(result.steps))


def main() -> int:
    """``python engine_scenes.py SCENES RUN [--resume]``: a long CPU run for the Ctrl-C test."""
    import sys

    from personsearch_train.engine.loop import Trainer

    scenes, run_dir = Path(sys.argv[1]), Path(sys.argv[2])
    train, _ = make_splits(scenes)
    cfg = train_config(scenes, epochs=int(sys.argv[3]), iters=3)
    result = Trainer(cfg, run_dir=run_dir, train_split=train, progress=False).fit(
        resume="--resume" in sys.argv
    )
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    raise SystemExit(main())
