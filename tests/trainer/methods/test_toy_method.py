"""A new method is one module plus one recipe: this file is that module, and the test writes the recipe.

``ToyContrastive`` is defined only here. It trains SeqNet's detector with an instance
contrastive loss between the model's RoI embeddings and the same people embedded through
the query path with gradients (``model.encode_boxes``), at a learnable temperature, and
counts steps in a hook. The test trains it for a few steps through the recipe path,
evaluates it with the default person-search evaluator, resumes it, and exports it:
nothing in the model, the loop, the evaluator or the exporter knows it exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from personsearch_train.commands.train import format_methods
from personsearch_train.engine.checkpoint import (
    find_checkpoint,
    load_metadata,
    load_resume_state,
    read_checkpoint,
)
from personsearch_train.engine.config import load_config
from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.engine.loop import Trainer
from personsearch_train.methods import MethodLosses, TrainingMethod, register_method
from personsearch_train.models.structures import TrainingOutputs
from torch import Tensor, nn


@dataclass(frozen=True)
class ToyContrastiveArgs:
    """Settings of the toy method.

    Attributes:
        weight: Weight of its loss.
        initial_temperature: Starting softmax temperature (learnt).
    """

    weight: float = 0.5
    initial_temperature: float = 0.1


class InstanceContrastive(MethodLosses):
    """Each matched RoI must pick out its own person among the batch's query-path embeddings.

    The scene path (the model's RoI embeddings) and the query path (``encode_boxes`` on the
    ground-truth boxes) are two views of one person: InfoNCE at a learnt temperature.
    """

    def __init__(self, *, weight: float, initial_temperature: float) -> None:
        super().__init__()
        self.weight = weight
        self.log_temperature = nn.Parameter(torch.tensor(math.log(initial_temperature)))

    def forward(  # type: ignore[override]
        self, model: nn.Module, outputs: TrainingOutputs, images: list[Tensor], targets: list[dict[str, Any]]
    ) -> dict[str, Tensor]:
        queries = torch.cat(model.encode_boxes(images, [t["boxes"] for t in targets])).float()
        counts = torch.tensor([len(t["boxes"]) for t in targets], device=queries.device)
        first_box = torch.cumsum(counts, 0) - counts
        own = first_box[outputs.person_image_index] + outputs.person_box_index
        logits = outputs.person_embeddings.float() @ queries.t() / self.log_temperature.exp()
        return {"loss_toy_instance": self.weight * nn.functional.cross_entropy(logits, own)}


class StepCounter(TrainingHook):
    """Counts steps and finished epochs; the count survives a resume."""

    def __init__(self) -> None:
        self.steps = 0
        self.epochs: list[int] = []

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        self.steps += 1

    def after_epoch(self, trainer: Trainer, epoch: int) -> None:
        self.epochs.append(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": list(self.epochs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps, self.epochs = int(state["steps"]), list(state["epochs"])


@register_method
class ToyContrastive(TrainingMethod):
    """SeqNet's detection losses plus an instance contrastive loss against the query path."""

    name = "test_toy_contrastive"
    summary = "test-only: detection + instance contrastive loss against encode_boxes"
    Args = ToyContrastiveArgs

    def build_losses(self, cfg, model, data) -> InstanceContrastive:  # noqa: ANN001
        return InstanceContrastive(weight=self.args.weight, initial_temperature=self.args.initial_temperature)

    def build_hooks(self, cfg, model, data) -> list[TrainingHook]:  # noqa: ANN001
        self.counter = StepCounter()
        return [self.counter]


RECIPE = """\
method: test_toy_contrastive
method_args:
  weight: 0.25
model:
  name: seqnet_tiny
  overrides: {box_score_thresh: 0.05}
data:
  dataset: cuhk_sysu
optim: {name: sgd, lr: 0.01}
schedule: {warmup_epochs: 0.5, milestones: [8]}
train:
  epochs: 2
  batch_size: 2
  max_iters_per_epoch: 2
  amp: false
  deterministic: true
  device: cpu
  cpu_threads: 1
eval: {every: 1, gallery_size: 50, batch_size: 2}
"""


def test_a_method_defined_in_one_module_trains_evaluates_resumes_and_exports(
    tmp_path: Path, synthetic_root: Path
) -> None:
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE)
    cfg = load_config(recipe, data_root=synthetic_root)
    assert cfg.method == "test_toy_contrastive" and cfg.method_args == {"weight": 0.25}
    assert "test_toy_contrastive" in format_methods()  # personsearch train --list-methods

    run = tmp_path / "run"
    first = Trainer(cfg, run_dir=run, progress=False)
    temperature = float(torch.exp(torch.tensor(math.log(0.1))))
    part = first.fit(max_steps=3)
    assert part.interrupted and len(part.steps) == 3
    # Its loss is trained next to the model's detection losses; no OIM term exists.
    assert {"loss_toy_instance", "loss_rpn_cls", "loss_box_reg"} <= set(part.steps[0])
    assert "loss_box_reid" not in part.steps[0]
    assert all(math.isfinite(s["loss_toy_instance"]) and s["loss_toy_instance"] > 0 for s in part.steps)
    # Its parameter is optimised with the model's, and its hook ran.
    assert float(first.losses.log_temperature.detach().exp()) != pytest.approx(temperature, abs=1e-9)
    assert first.method.counter.steps == 3 and first.method.counter.epochs == [0]
    # The default evaluator scored the epoch with the person-search protocol.
    assert {"mAP", "top1", "det_ap"} <= set(part.metrics[0])

    second = Trainer(cfg, run_dir=run, progress=False)
    rest = second.fit(resume=True)
    assert not rest.interrupted and [s["step"] for s in rest.steps] == [4]
    assert second.method.counter.steps == 4 and second.method.counter.epochs == [0, 1]
    files = find_checkpoint(run, prefer="latest")
    meta = load_metadata(files)
    assert meta["method"] == {
        "name": "test_toy_contrastive",
        "args": {"weight": 0.25, "initial_temperature": 0.1},
    }
    state = load_resume_state(files)
    assert torch.equal(state["method_losses"]["log_temperature"], second.losses.log_temperature.detach())
    assert (run / "predictions" / "epoch_002.npz").is_file()

    loaded = read_checkpoint(run, prefer="latest")
    assert loaded.method.name == "test_toy_contrastive" and loaded.method.args.weight == 0.25

    from personsearch_export.exporter import export_bundle
    from personsearch_runtime.bundle import Bundle

    report = export_bundle(run, tmp_path / "bundle", parity_cases=1)
    assert report["passed"], report
    bundle = Bundle.load(tmp_path / "bundle")
    assert {"detector", "query_encoder"} <= set(bundle.manifest.models)
    assert bundle.manifest.provenance.model_name == "seqnet_tiny"
