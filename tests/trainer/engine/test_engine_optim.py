from __future__ import annotations

import math

import pytest
import torch
from personsearch_train.engine.config import OptimConfig, ScheduleConfig
from personsearch_train.engine.optim import WarmupSchedule, build_optimizer, build_scheduler


def test_warmup_then_multistep_hand_computed() -> None:
    cfg = ScheduleConfig(kind="multistep", warmup_epochs=1.0, warmup_factor=0.001, milestones=[2], gamma=0.1)
    s = WarmupSchedule(cfg=cfg, iters_per_epoch=4, epochs=3)
    assert s(0) == pytest.approx(0.001)
    assert s(2) == pytest.approx(0.001 * 0.5 + 0.5)
    assert s(4) == 1.0 and s(7) == 1.0
    assert s(8) == pytest.approx(0.1) and s(11) == pytest.approx(0.1)


def test_cosine_endpoints() -> None:
    cfg = ScheduleConfig(kind="cosine", warmup_epochs=0.0, min_lr_factor=0.1)
    s = WarmupSchedule(cfg=cfg, iters_per_epoch=10, epochs=2)
    assert s(0) == pytest.approx(1.0)
    assert s(10) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert s(20) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
def test_optimizers_and_scheduler_state_is_weights_only(name: str, tmp_path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model.parameters(), OptimConfig(name=name, lr=0.1))
    assert type(opt).__name__.lower() == name
    sched = build_scheduler(opt, ScheduleConfig(milestones=[1]), iters_per_epoch=5, epochs=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.001)
    for _ in range(6):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    torch.save({"o": opt.state_dict(), "s": sched.state_dict()}, tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2 = build_optimizer(model.parameters(), OptimConfig(name=name, lr=0.1))
    sched2 = build_scheduler(opt2, ScheduleConfig(milestones=[1]), iters_per_epoch=5, epochs=2)
    opt2.load_state_dict(state["o"])
    sched2.load_state_dict(state["s"])
    assert sched2.last_epoch == 6 and opt2.param_groups[0]["lr"] == pytest.approx(0.01)
