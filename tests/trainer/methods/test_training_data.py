"""The default training data of a method: one dataset, or several mixed by ratio (``data.mix``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from personsearch_train.data.registry import load_split
from personsearch_train.engine.checkpoint import find_checkpoint, load_metadata
from personsearch_train.engine.config import config_from_dict
from personsearch_train.engine.loop import Trainer
from personsearch_train.methods import build_method


def _cfg(root: Path, **data: object):
    return config_from_dict(
        {
            "method_args": {"queue_size": 16},
            "model": {"name": "seqnet_tiny"},
            "data": {"dataset": "cuhk_sysu", "root": str(root / "CUHK-SYSU"), **data},
            "train": {
                "epochs": 1,
                "batch_size": 2,
                "max_iters_per_epoch": 6,
                "amp": False,
                "device": "cpu",
                "cpu_threads": 1,
            },
            "eval": {"every": 0},
        }
    )


def test_mixed_sources_keep_their_identities_apart_and_train(tmp_path: Path, synthetic_root: Path) -> None:
    cfg = _cfg(synthetic_root, mix=[{"dataset": "prw", "root": str(synthetic_root / "PRW"), "ratio": 3.0}])
    cuhk = load_split("cuhk_sysu", synthetic_root / "CUHK-SYSU", "train")
    prw = load_split("prw", synthetic_root / "PRW", "train")
    data = build_method(cfg.method, cfg.method_args).build_train_data(cfg)
    assert data.num_identities == cuhk.num_identities + prw.num_identities
    np.testing.assert_array_equal(data.label_to_pid, np.concatenate([cuhk.label_to_pid, prw.label_to_pid]))
    # PRW's labels come after CUHK-SYSU's, so no two identities share an OIM row.
    sources = {0: [], 1: []}
    for index in range(len(data.dataset)):
        _, target = data.dataset[index]
        sources[target["source"]].append(target["pids"])
    cuhk_pids = torch.cat(sources[0])
    prw_pids = torch.cat(sources[1])
    assert cuhk_pids.max() < cuhk.num_identities
    assert prw_pids[prw_pids >= 0].min() >= cuhk.num_identities
    assert prw_pids.max() < data.num_identities
    # Each batch comes from one source; PRW, at ratio 3 to 1, supplies most batches.
    data.sampler.set_epoch(0)
    batch_sources = [{data.dataset.source_of(i) for i in batch} for batch in data.sampler]
    assert len(batch_sources) == 6 and all(len(s) == 1 for s in batch_sources)

    result = Trainer(cfg, run_dir=tmp_path / "run", progress=False).fit()
    assert len(result.steps) == 6 and all(np.isfinite(s["total"]) for s in result.steps)
    meta = load_metadata(find_checkpoint(tmp_path / "run"))
    assert meta["method"]["args"]["num_labelled"] == data.num_identities
    assert len(meta["label_to_pid"]) == data.num_identities


def test_a_boxes_only_method_never_sees_identity_labels(synthetic_root: Path) -> None:
    from personsearch_train.methods import TrainingMethod

    class BoxesOnly(TrainingMethod):  # not registered: built directly
        name = "boxes_only_probe"
        reads_identities = False

    cfg = _cfg(synthetic_root)
    assert cfg.data.use_identities  # the recipe allows labels; the method refuses them
    data = BoxesOnly(BoxesOnly.Args()).build_train_data(cfg)
    assert data.num_identities == 0 and len(data.label_to_pid) == 0
    assert all(bool((data.dataset[i][1]["pids"] == -1).all()) for i in range(len(data.dataset)))
