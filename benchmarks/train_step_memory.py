"""CPU training steps/s of seqnet_small by memory layout and allocator setting, one run.

Four configurations, each timed in its own child process (the allocator setting is
process-wide and cannot be undone): contiguous (NCHW) or channels-last weights, and
glibc's default allocator or :func:`personsearch_train.engine.host_memory.retain_freed_host_memory`
(what the trainer does on CPU). Every child builds ``seqnet_small`` as the
``synthetic_small`` recipe does (``res4_stride=8``, queue 1000) with the same seed, and
runs the same synthetic batches (4 images of 480x640 with 6 person boxes each): forward
with losses, backward, AdamW step. The table gives steps/s and minor page faults per step,
with ratios against the first row. The children run one after another, in the order
given by ``--rounds`` interleaved rounds, so drift in machine load hits all alike.

Example:
    python benchmarks/train_step_memory.py --threads 2 --steps 20 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CONFIGS = {
    "contiguous, default malloc": ("contiguous", "default"),
    "channels-last, default malloc": ("channels_last", "default"),
    "contiguous, freed memory retained": ("contiguous", "retain"),
    "channels-last, freed memory retained (trainer)": ("channels_last", "retain"),
}

_CHILD = r"""
import json, resource, sys, time
layout, malloc, threads, steps, warmup = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
if malloc == "retain":
    from personsearch_train.engine.host_memory import retain_freed_host_memory
    assert retain_freed_host_memory()
import torch
from personsearch_train.losses.oim import OIMLoss
from personsearch_train.methods.seqnet_oim import OIMReidLoss
from personsearch_train.models import create_model
torch.set_num_threads(threads)
torch.manual_seed(0)
model = create_model("seqnet_small", res4_stride=8)
reid = OIMReidLoss(OIMLoss(num_features=model.embedding_dim, num_labelled=100, queue_size=1000))
if layout == "channels_last":
    model = model.to(memory_format=torch.channels_last)
model.train()
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
g = torch.Generator().manual_seed(1)
def batch():
    images, targets = [], []
    for _ in range(4):
        images.append(torch.rand(3, 480, 640, generator=g))
        x1 = torch.rand(6, generator=g) * 560
        y1 = torch.rand(6, generator=g) * 300
        w = 20 + torch.rand(6, generator=g) * 60
        h = 60 + torch.rand(6, generator=g) * 120
        boxes = torch.stack([x1, y1, (x1 + w).clamp(max=639), (y1 + h).clamp(max=479)], 1)
        targets.append({"boxes": boxes, "pids": torch.randint(-1, 100, (6,), generator=g)})
    return images, targets
batches = [batch() for _ in range(warmup + steps)]
def run(chunk):
    for images, targets in chunk:
        outputs = model.forward_train(images, targets)
        loss = sum(outputs.losses.values()) + reid(model, outputs, images, targets)["loss_box_reid"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
run(batches[:warmup])
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
run(batches[warmup:])
seconds = time.perf_counter() - start
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"steps_per_s": steps / seconds, "faults_per_step": faults / steps}))
"""


def _measure(layout: str, malloc: str, threads: int, steps: int, warmup: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, layout, malloc, str(threads), str(steps), str(warmup)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per child")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per child")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per child first")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median taken)")
    args = parser.parse_args()

    results: dict[str, list[dict[str, float]]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (layout, malloc) in CONFIGS.items():
            results[name].append(_measure(layout, malloc, args.threads, args.steps, args.warmup))

    rates = {name: statistics.median(r["steps_per_s"] for r in runs) for name, runs in results.items()}
    faults = {name: statistics.median(r["faults_per_step"] for r in runs) for name, runs in results.items()}
    baseline = rates[next(iter(CONFIGS))]
    print(
        f"seqnet_small (res4 stride 8), batch 4 x 480x640, threads={args.threads}, "
        f"steps={args.steps} x rounds={args.rounds} (median)"
    )
    print(f"{'configuration':<48} {'steps/s':>8} {'ratio':>6} {'page faults/step':>17}")
    for name in CONFIGS:
        print(f"{name:<48} {rates[name]:>8.2f} {rates[name] / baseline:>5.2f}x {faults[name]:>17.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
