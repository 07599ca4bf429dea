"""OIM memory stays identical across DistributedDataParallel ranks (2-process gloo)."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from personsearch_train.losses import OIMLoss

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for n, labels in ((3, [1, -1, 0]), (4, [1, -1, -1, 2])):
        x = torch.randn(n, 8, generator=generator)
        out.append((x / x.norm(dim=1, keepdim=True), torch.tensor(labels)))
    return out


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        oim = OIMLoss(num_features=8, num_labelled=3, queue_size=2)
        x, labels = _batches()[rank]
        oim(x.requires_grad_(True), labels).backward()
        torch.save(
            {k: v.clone() for k, v in oim.state_dict().items()}, os.path.join(folder, f"rank{rank}.pt")
        )
    finally:
        dist.destroy_process_group()


def test_memory_is_gathered_in_rank_order(tmp_path) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # Same result as one process seeing rank 0's batch followed by rank 1's.
    single = OIMLoss(num_features=8, num_labelled=3, queue_size=2)
    x = torch.cat([b[0] for b in _batches()])
    labels = torch.cat([b[1] for b in _batches()])
    single(x.requires_grad_(True), labels).backward()
    for key, value in single.state_dict().items():
        torch.testing.assert_close(states[0][key], value)
