"""``personsearch eval --dataset <text dataset> --checkpoint RUN``, end to end on a fake dual encoder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from personsearch_runtime.cli import main
from personsearch_train.commands import evaluate as evaluate_command
from personsearch_train.engine.checkpoint import save_checkpoint
from personsearch_train.engine.text_inference import TextRetrievalEmbeddings
from personsearch_train.errors import TrainerError
from personsearch_train.models.registry import list_models, register_model
from test_text_evaluator import FakeDualEncoder, write_text_dataset
from torch import nn

TEXT_MODEL = "test_text_eval_command_dual_encoder"
SEARCH_MODEL = "test_text_eval_command_search_model"


class FakeSearchModel(nn.Module):
    """Stands for a person-search model: it detects and embeds boxes, and has no text encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 2)

    def predict(self, images: list[torch.Tensor]) -> list:
        raise AssertionError("a text dataset must not run person-search inference")

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list:
        raise AssertionError("a text dataset must not run person-search inference")


@pytest.fixture(scope="module", autouse=True)
def _fake_models_registered() -> Iterator[None]:
    """Register the fakes for this module's tests only.

    The registry is process-wide: left registered, the fakes would show up in other
    modules' checks of every registered model.
    """
    from personsearch_train.models import registry

    for name, builder in ((TEXT_MODEL, FakeDualEncoder), (SEARCH_MODEL, FakeSearchModel)):
        if name not in list_models():
            register_model(name)(builder)
    yield
    for name in (TEXT_MODEL, SEARCH_MODEL):
        registry._BUILDERS.pop(name, None)


def _checkpoint(folder: Path, name: str, model: nn.Module) -> Path:
    save_checkpoint(folder, "best", model=model, metadata={"model": {"name": name, "kwargs": {}}})
    return folder


@pytest.fixture
def text_run(tmp_path: Path) -> Path:
    return _checkpoint(tmp_path / "text_run", TEXT_MODEL, FakeDualEncoder())


@pytest.fixture
def search_run(tmp_path: Path) -> Path:
    return _checkpoint(tmp_path / "search_run", SEARCH_MODEL, FakeSearchModel())


def test_text_eval_end_to_end(text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_text_dataset(tmp_path / "UFine6926")
    out, plots = tmp_path / "out" / "scores.json", tmp_path / "plots"
    argv = ["eval", "--dataset", "ufine6926", "--root", str(root), "--checkpoint", str(text_run)]
    assert main([*argv, "--device", "cpu", "--json", str(out), "--plot-dir", str(plots)]) == 0
    scores = json.loads(out.read_text())
    assert set(scores) == {
        "R1",
        "R5",
        "R10",
        "mAP",
        "mINP",
        "mSD",
        "i2t_R1",
        "i2t_R5",
        "i2t_R10",
        "i2t_mAP",
        "i2t_mINP",
    }
    assert scores["R1"] == scores["mAP"] == scores["mINP"] == scores["i2t_mAP"] == 1.0
    printed = capsys.readouterr().out
    assert "ufine6926  (text_run, values in %)" in printed
    assert "text->image" in printed and "image->text" in printed
    assert f"{100 * scores['mSD']:.2f}" in printed and "100.00" in printed
    assert ["queries", "6", "4"] in [line.split() for line in printed.splitlines()]
    assert (plots / "cmc.png").stat().st_size > 0


def test_text_eval_ufine3c_reports_each_source(
    text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = write_text_dataset(tmp_path / "UFine3C", annotation="UFine3C.json", sources=True)
    out = tmp_path / "scores.json"
    argv = [
        "eval",
        "--dataset",
        "ufine3c",
        "--root",
        str(root),
        "--checkpoint",
        str(text_run),
        "--json",
        str(out),
    ]
    assert main([*argv, "--plot-dir", str(tmp_path / "plots")]) == 0
    scores = json.loads(out.read_text())
    assert sorted({key.split("/")[0] for key in scores}) == ["cam", "web"] and "R1" not in scores
    assert scores["cam/R1"] == scores["web/R1"] == 1.0
    printed = capsys.readouterr().out
    assert "ufine3c source cam" in printed and "ufine3c source web" in printed
    assert (tmp_path / "plots" / "cmc.png").is_file()


def test_report_text_retrieval_from_embeddings(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    eye = np.eye(12, dtype=np.float32)
    embeddings = TextRetrievalEmbeddings(eye, np.arange(12), eye, np.arange(12))
    out = tmp_path / "s.json"
    assert evaluate_command.report_text_retrieval(embeddings, "cuhk_pedes", json_path=out, label="x") == 0
    assert json.loads(out.read_text())["R10"] == 1.0
    assert "cuhk_pedes  (x, values in %)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gallery-size", "100"], "--gallery-size: person-search option"),
        (["--cbgm", "--multi-view"], "--multi-view, --cbgm: person-search options"),
        (["--gt-boxes"], "--gt-boxes: person-search option"),
        (["--no-cws", "--empty-queries", "skip"], "--no-cws, --empty-queries: person-search options"),
        (["--save-predictions", "p.npz"], "--save-predictions: person-search option"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_text_dataset_refuses_person_search_options(
    text_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str
) -> None:
    # The dataset folder does not exist: options are refused before anything is read.
    argv = [
        "eval",
        "--dataset",
        "cuhk_pedes",
        "--root",
        str(tmp_path / "missing"),
        "--checkpoint",
        str(text_run),
    ]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_text_dataset_refuses_a_predictions_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = [
        "eval",
        "--dataset",
        "rstpreid",
        "--root",
        str(tmp_path),
        "--predictions",
        str(tmp_path / "p.npz"),
    ]
    assert main(argv) == 2
    assert "evaluated from a --checkpoint of a text-retrieval model only" in capsys.readouterr().err
    # The exporter's --bundle path validates with eval_options_from_args, which refuses too.
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    args = parser.parse_args(["--dataset", "icfg_pedes", "--root", "r", "--checkpoint", "c"])
    with pytest.raises(TrainerError, match="text-to-image dataset"):
        evaluate_command.eval_options_from_args(args)


def test_checkpoint_of_the_wrong_kind_is_named(
    text_run: Path, search_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = write_text_dataset(tmp_path / "UFine6926")
    assert main(["eval", "--dataset", "ufine6926", "--root", str(root), "--checkpoint", str(search_run)]) == 2
    err = capsys.readouterr().err
    assert f"holds model '{SEARCH_MODEL}' (method 'seqnet_oim'), a person-search model" in err
    assert (
        "has no tokenizer, image_size, encode_images, encode_texts" in err
        and "--dataset cuhk_sysu or prw" in err
    )
    # A text checkpoint on a person-search dataset is refused before the dataset is read.
    assert main(["eval", "--dataset", "prw", "--root", str(tmp_path), "--checkpoint", str(text_run)]) == 2
    err = capsys.readouterr().err
    assert f"holds model '{TEXT_MODEL}'" in err and "a text-to-image retrieval model" in err
    assert "--dataset one of cuhk_pedes, icfg_pedes, rstpreid, ufine3c, ufine6926" in err


def test_text_batch_size_defaults_to_the_text_default() -> None:
    parser = argparse.ArgumentParser()
    evaluate_command.add_arguments(parser)
    base = ["--dataset", "cuhk_pedes", "--root", "r", "--checkpoint", "c"]
    assert (
        evaluate_command._text_batch_size(parser.parse_args(base)) == evaluate_command.DEFAULT_TEXT_BATCH_SIZE
    )
    assert evaluate_command._text_batch_size(parser.parse_args([*base, "--batch-size", "1"])) == 1
    assert evaluate_command._text_batch_size(parser.parse_args([*base, "--batch-size", "8"])) == 8
    # The person-search default is unchanged.
    assert parser.parse_args(["--dataset", "prw", "--root", "r", "--checkpoint", "c"]).batch_size == 1
