"""The supervised baseline as a method: recipes, registry errors, and checkpoints from before it.

``tests/trainer/fixtures/legacy_seqnet_tiny_b4bf133`` is a resumable ``latest``
checkpoint written by the trainer at commit b4bf133, when the OIM tables were model
buffers and their sizes model arguments. It was trained for 3 steps on the hand-made
scenes of ``tests/trainer/engine/engine_scenes.make_splits`` (seqnet_tiny, seed 3,
deterministic CPU, batch 2, 2 epochs); ``reference.json`` holds what that commit's code
computed from it: the embeddings of test image 0's boxes, its detections, and the losses
of the 5 steps a resume ran.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from personsearch_train.data.torch_dataset import read_image
from personsearch_train.engine.checkpoint import read_checkpoint
from personsearch_train.engine.config import config_from_dict, load_config
from personsearch_train.engine.loop import Trainer
from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.methods import available_methods, build_method

sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
from engine_scenes import make_splits  # noqa: E402

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy_seqnet_tiny_b4bf133"


def _legacy_cfg(**method_args: object):
    return config_from_dict(
        {
            "method": "seqnet_oim",
            "method_args": method_args,
            "model": {"name": "seqnet_tiny", "overrides": {"box_score_thresh": 0.05}},
            "data": {"dataset": "prw"},
            "optim": {"name": "sgd", "lr": 0.02},
            "schedule": {"warmup_epochs": 0.5, "warmup_factor": 0.01, "milestones": [16]},
            "train": {
                "epochs": 2,
                "batch_size": 2,
                "amp": False,
                "deterministic": True,
                "device": "cpu",
                "cpu_threads": 1,
                "seed": 3,
            },
            "eval": {"every": 0},
        }
    )


@pytest.fixture(scope="module")
def legacy_scenes(tmp_path_factory: pytest.TempPathFactory):
    return make_splits(tmp_path_factory.mktemp("legacy_scenes"))


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads((LEGACY / "reference.json").read_text())


def test_a_checkpoint_from_before_the_registry_loads_with_the_same_outputs(legacy_scenes, reference) -> None:
    _, test = legacy_scenes
    loaded = read_checkpoint(LEGACY / "latest.json")
    assert loaded.method.name == "seqnet_oim"
    # The OIM sizes left the model's arguments for the method's settings ...
    assert "queue_size" not in loaded.metadata["model"]["kwargs"]
    assert loaded.metadata["method"]["args"]["num_labelled"] == 6
    assert loaded.metadata["method"]["args"]["queue_size"] == 32
    # ... and the tables left the model's weights for the method's loss state.
    assert not any(k.startswith("oim.") for k in loaded.model.state_dict())
    assert loaded.loss_state["oim.lut"].shape == (6, 64) and loaded.loss_state["oim.queue"].shape == (32, 64)
    assert float(loaded.loss_state["oim.lut"].abs().sum()) > 0

    image = read_image(test.images[0].path)
    # The reference ran on one thread; more threads sum convolutions in another order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            embeddings = loaded.model.embed_boxes([image], [torch.from_numpy(test.images[0].boxes)])[0]
            detections = loaded.model.predict([image])[0]
    finally:
        torch.set_num_threads(threads)
    # The reference was computed on another CPU (AMD EPYC): oneDNN picks other float32
    # kernels per micro-architecture, so the last bits may differ; the tolerance is a few
    # float32 ulps of the values, far below what a wrong weight or layout would change.
    close = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(embeddings, torch.tensor(reference["embed_boxes"]), **close)
    torch.testing.assert_close(detections.boxes, torch.tensor(reference["predict"]["boxes"]), **close)
    torch.testing.assert_close(detections.scores, torch.tensor(reference["predict"]["scores"]), **close)
    torch.testing.assert_close(
        detections.embeddings, torch.tensor(reference["predict"]["embeddings"]), **close
    )


def test_a_checkpoint_from_before_the_registry_resumes_as_it_did(
    tmp_path: Path, legacy_scenes, reference
) -> None:
    train, test = legacy_scenes
    run = tmp_path / "run"
    run.mkdir()
    for name in ("latest.json", "latest.safetensors", "latest.state.pt"):
        shutil.copy(LEGACY / name, run / name)
    result = Trainer(
        _legacy_cfg(queue_size=32), run_dir=run, train_split=train, test_split=test, progress=False
    ).fit(resume=True)
    expected = reference["resumed_steps"]
    assert [s["step"] for s in result.steps] == [s["step"] for s in expected] == [4, 5, 6, 7, 8]
    for got, want in zip(result.steps, expected, strict=True):
        # Every loss, the total and the gradient norm: to the last bit on the CPU that wrote
        # the reference; elsewhere float32 kernels round differently (see above), and five
        # steps of SGD carry that drift into the fifth significant digit at most.
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (got["step"], key)


def test_resuming_with_other_oim_sizes_is_refused_clearly(tmp_path: Path, legacy_scenes) -> None:
    train, test = legacy_scenes
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    trainer = Trainer(_legacy_cfg(), run_dir=run, train_split=train, test_split=test, progress=False)
    with pytest.raises(Exception, match="loss state .* does not fit the recipe's method_args"):
        trainer.fit(resume=True)


def test_recipes_name_the_method_and_older_recipes_still_load(tmp_path: Path) -> None:
    cfg = load_config("synthetic_small")
    assert cfg.method == "seqnet_oim" and cfg.method_args == {"queue_size": 1000}
    assert "queue_size" not in cfg.model.overrides
    # The layout before the registry: OIM sizes among the model overrides.
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  name: seqnet_tiny\n  overrides:\n    queue_size: 64\n    oim_scale: 20.0\n")
    cfg = load_config(old)
    assert cfg.method == "seqnet_oim" and cfg.method_args == {"queue_size": 64, "scale": 20.0}
    assert cfg.model.overrides == {}
    both = tmp_path / "both.yaml"
    both.write_text(
        "method_args: {queue_size: 10}\nmodel:\n  name: seqnet_tiny\n  overrides: {queue_size: 64}\n"
    )
    with pytest.raises(ConfigError, match=r"method_args\.queue_size is 10 .* sets it to 64"):
        load_config(both)


def test_unknown_methods_and_settings_fail_naming_what_exists() -> None:
    with pytest.raises(ConfigError, match=r"unknown method 'seqnet_oin'; registered methods: .*seqnet_oim"):
        config_from_dict({"method": "seqnet_oin"})
    with pytest.raises(
        ConfigError, match=r"unknown setting 'method_args\.queue'; valid keys here: .*queue_size"
    ):
        config_from_dict({"method_args": {"queue": 5}})
    with pytest.raises(ConfigError, match=r"method_args\.scale: expected a number"):
        config_from_dict({"method_args": {"scale": "big"}})
    with pytest.raises(ConfigError, match=r"data\.dataset: method 'seqnet_oim' trains on person_search"):
        config_from_dict({"data": {"dataset": "market1501"}})
    assert "seqnet_oim" in available_methods()


def test_the_method_loss_is_oim_on_the_models_matched_people() -> None:
    from personsearch_train.losses.oim import OIMLoss
    from personsearch_train.models.structures import TrainingOutputs

    method = build_method("seqnet_oim", {"num_labelled": 3, "queue_size": 4, "reid_loss_weight": 2.0})
    model = torch.nn.Module()
    model.embedding_dim = 8
    losses = method.build_losses(_legacy_cfg(), model, data=None)  # type: ignore[arg-type]
    reference = OIMLoss(num_features=losses.oim.num_features, num_labelled=3, queue_size=4)
    torch.manual_seed(0)
    for _ in range(3):  # later steps score against the tables the earlier ones wrote
        features = torch.nn.functional.normalize(torch.randn(5, losses.oim.num_features), dim=1)
        labels = torch.tensor([0, 1, -1, 2, 0])
        outputs = TrainingOutputs({}, features.clone().requires_grad_(), labels, labels * 0, labels * 0)
        got = losses(None, outputs, [], [])["loss_box_reid"]
        want = reference(features.clone().requires_grad_(), labels)
        got.backward()
        want.backward()
        assert torch.equal(got, 2.0 * want.float())
    assert torch.equal(losses.oim.lut, reference.lut) and torch.equal(losses.oim.queue, reference.queue)


def test_a_model_without_an_embedding_is_refused_by_name() -> None:
    method = build_method("seqnet_oim", {"num_labelled": 3})
    with pytest.raises(TrainerError, match="seqnet_oim needs a model with an 'embedding_dim'"):
        method.build_losses(_legacy_cfg(), torch.nn.Linear(2, 2), data=None)  # type: ignore[arg-type]
