"""Training throughput of our SeqNet against torchvision's Faster R-CNN (ResNet-FPN), one run.

Both models get the same backbone depth, input resolution, batch and synthetic
batches (random images with a few person boxes), and run the same step: forward with
losses, backward, SGD update. The baseline is ``torchvision.models.detection.FasterRCNN``
on ``resnet_fpn_backbone`` built as ``fasterrcnn_resnet50_fpn(weights=None,
weights_backbone=None)`` builds it (all stages trainable, ordinary BatchNorm), at the
chosen depth. Each model keeps its own default proposal/RoI settings (ours: the
paper's). A third row builds SeqNet's C4 layout (res4 trunk, RoIAlign 14x14, ``layer4``
box head, 128 RoIs per image) with torchvision's own ``FasterRCNN`` machinery and a
single head, which separates the cost of the architecture (a ResNet stage per RoI,
which an FPN's two-layer MLP head does not pay) from the cost of our implementation.
The models are timed in interleaved rounds, so drift in machine load hits all alike.

All three run at the precision and memory layout our trainer uses for the SeqNet
recipes: autocast to the dtype ``personsearch_train.engine.precision`` picks for the
device (bfloat16 on CUDA and on CPUs with native bfloat16, else float32) and
channels-last weights. ``--no-amp`` and ``--no-channels-last`` time float32 and the
ordinary layout instead. Each model's convolution and matrix FLOPs per training image
(forward and backward, counted by ``torch.utils.flop_counter``) are printed beside its
speed: the ratio of FLOPs is what the architectures cost, and GFLOP/s shows how well
each implementation turns them into speed.

The ratio depends on resolution: the C4 head costs a fixed amount per RoI, while the
FPN's extra levels, its 256-channel output convolutions and its RPN over five levels
grow with the pixel count. The default is the resolution the SeqNet recipes train at
(short side 900, long side at most 1500; CUHK-SYSU-like 600x800 inputs upscaled); pass
``--min-size 320 --max-size 480`` for a small-image comparison, ``--height 1080 --width 1920``
for PRW-sized frames.

Example:
    python benchmarks/train_throughput.py --depth 50 --batch 1 --threads 2 --steps 3 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torchvision
from personsearch_train.engine.precision import autocast_context, autocast_dtype
from personsearch_train.losses.oim import OIMLoss
from personsearch_train.methods.seqnet_oim import OIMReidLoss
from personsearch_train.models import create_model
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign


def _batch(
    batch: int, height: int, width: int, num_ids: int, device: torch.device, generator: torch.Generator
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    images, targets = [], []
    for _ in range(batch):
        images.append(torch.rand(3, height, width, generator=generator).to(device))
        count = 4
        x1 = torch.rand(count, generator=generator) * (width * 0.7)
        y1 = torch.rand(count, generator=generator) * (height * 0.4)
        w = width * (0.1 + 0.15 * torch.rand(count, generator=generator))
        h = height * (0.3 + 0.3 * torch.rand(count, generator=generator))
        boxes = torch.stack([x1, y1, (x1 + w).clamp(max=width - 1), (y1 + h).clamp(max=height - 1)], dim=1)
        pids = torch.randint(-1, num_ids, (count,), generator=generator)
        targets.append(
            {"boxes": boxes.to(device), "pids": pids.to(device), "labels": torch.ones_like(pids).to(device)}
        )
    return images, targets


def _ours(depth: int, min_size: int, max_size: int, num_ids: int) -> tuple[nn.Module, Callable]:
    # The model and the seqnet_oim method's loss (OIM, SeqNet's 5000-row queue), in one
    # module so that moving it to the device moves the OIM tables too.
    trained = nn.Module()
    trained.model = create_model(f"seqnet_r{depth}", min_size=min_size, max_size=max_size)
    oim = OIMLoss(num_features=trained.model.embedding_dim, num_labelled=num_ids, queue_size=5000)
    trained.reid = OIMReidLoss(oim)

    def step(images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        plain = [{"boxes": t["boxes"], "pids": t["pids"]} for t in targets]
        outputs = trained.model.forward_train(images, plain)
        reid = trained.reid(trained.model, outputs, images, plain)
        return sum(outputs.losses.values()) + reid["loss_box_reid"]

    return trained, step


def _torchvision(depth: int, min_size: int, max_size: int) -> tuple[nn.Module, Callable]:
    backbone = resnet_fpn_backbone(
        backbone_name=f"resnet{depth}", weights=None, norm_layer=nn.BatchNorm2d, trainable_layers=5
    )
    model = FasterRCNN(backbone, num_classes=2, min_size=min_size, max_size=max_size)

    def step(images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        plain = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        return sum(model(images, plain).values())

    return model, step


class _Res5BoxHead(nn.Module):
    """torchvision ResNet ``layer4`` on 14x14 RoIs, max-pooled: the C4 box head."""

    def __init__(self, layer4: nn.Module) -> None:
        super().__init__()
        self.layer4 = layer4

    def forward(self, rois: torch.Tensor) -> torch.Tensor:
        return self.layer4(rois).amax(dim=(2, 3))


def _torchvision_c4(depth: int, min_size: int, max_size: int) -> tuple[nn.Module, Callable]:
    """torchvision's own Faster R-CNN pipeline with SeqNet's C4 layout and one res5 head."""
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    body = nn.Sequential(
        resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1, resnet.layer2, resnet.layer3
    )
    body.out_channels = resnet.layer3[-1].conv1.in_channels
    res5_channels = resnet.fc.in_features
    model = FasterRCNN(
        body,
        num_classes=None,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=AnchorGenerator(
            sizes=((32, 64, 128, 256, 512),), aspect_ratios=((0.5, 1.0, 2.0),)
        ),
        rpn_pre_nms_top_n_train=12000,
        rpn_post_nms_top_n_train=2000,
        box_roi_pool=MultiScaleRoIAlign(["0"], output_size=14, sampling_ratio=2),
        box_head=_Res5BoxHead(resnet.layer4),
        box_predictor=FastRCNNPredictor(res5_channels, 2),
        box_batch_size_per_image=128,
    )

    def step(images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        plain = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        return sum(model(images, plain).values())

    return model, step


def _time_steps(
    model: nn.Module, step: Callable, batches: list, device: torch.device, dtype: torch.dtype | None
) -> float:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    start = time.perf_counter()
    for images, targets in batches:
        with autocast_context(device, dtype):
            loss = step(images, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _training_flops(model: nn.Module, step: Callable, batch: tuple) -> int:
    """Convolution and matrix FLOPs of one forward and backward pass (no update)."""
    with FlopCounterMode(display=False) as counter:
        loss = step(*batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--depth", type=int, default=18, choices=(18, 50), help="ResNet depth of both models")
    parser.add_argument(
        "--min-size", type=int, default=900, help="short side after resizing, both models (recipes: 900)"
    )
    parser.add_argument(
        "--max-size", type=int, default=1500, help="long-side cap after resizing, both models (recipes: 1500)"
    )
    parser.add_argument("--height", type=int, default=600, help="synthetic image height before resizing")
    parser.add_argument("--width", type=int, default=800, help="synthetic image width before resizing")
    parser.add_argument("--batch", type=int, default=2, help="images per step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round and model")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--amp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="autocast as the trainer does with train.amp (default: on)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels-last weights, as the SeqNet recipes' train.channels_last (default: on)",
    )
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    num_ids = 50
    batches = [
        _batch(args.batch, args.height, args.width, num_ids, device, generator)
        for _ in range(args.warmup + args.steps)
    ]
    models = {
        f"ours: seqnet_r{args.depth} (C4, two heads, OIM)": _ours(
            args.depth, args.min_size, args.max_size, num_ids
        ),
        f"torchvision FasterRCNN resnet{args.depth}-FPN": _torchvision(
            args.depth, args.min_size, args.max_size
        ),
        f"torchvision FasterRCNN resnet{args.depth}-C4 (1 head)": _torchvision_c4(
            args.depth, args.min_size, args.max_size
        ),
    }
    dtype = autocast_dtype(device, enabled=args.amp)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    seconds: dict[str, list[float]] = {name: [] for name in models}
    flops: dict[str, int] = {}
    for name, (model, step) in models.items():
        model.to(device, memory_format=layout).train()
        flops[name] = _training_flops(model, step, batches[0])
        _time_steps(model, step, batches[: args.warmup], device, dtype)
    for _ in range(args.rounds):
        for name, (model, step) in models.items():
            seconds[name].append(_time_steps(model, step, batches[args.warmup :], device, dtype))

    images_per_round = args.steps * args.batch
    rates = {name: images_per_round / statistics.median(times) for name, times in seconds.items()}
    baseline = rates[list(models)[1]]
    print(
        f"device={device} threads={torch.get_num_threads()} batch={args.batch} "
        f"input={args.height}x{args.width} resize=({args.min_size}, {args.max_size}) "
        f"autocast={dtype if dtype is None else str(dtype).removeprefix('torch.')} "
        f"layout={'channels_last' if args.channels_last else 'contiguous'} "
        f"steps={args.steps} x rounds={args.rounds} (median round)"
    )
    print(f"{'model':<48} {'images/s':>10} {'vs FPN':>7} {'GFLOP/image':>12} {'GFLOP/s':>8}")
    for name, rate in rates.items():
        per_image = flops[name] / args.batch / 1e9
        speed = f"{rate:>10.3f} {rate / baseline:>6.2f}x"
        print(f"{name:<48} {speed} {per_image:>12.0f} {per_image * rate:>8.0f}")
    names = list(models)
    ratio_c4 = rates[names[0]] / rates[names[2]]
    print(f"ours / torchvision C4 (same per-RoI head; ours runs two such heads): {ratio_c4:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
