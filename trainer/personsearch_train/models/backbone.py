"""ResNet split SeqNet-style: a res4 trunk for the whole image and a res5 head per RoI.

The trunk is ``conv1 ... layer3`` (stride 16, or 8 with ``layer3`` dilated) and the
head is ``layer4`` followed by global *max* pooling of both its input and its output
(methods.md section 1.1 items 2 and 5), or, for a re-id head, max pooling over
horizontal stripes. Networks come from ``torchvision.models.resnet*`` built with
``weights=None``: nothing is downloaded; pretrained weights are loaded explicitly with
:func:`personsearch_train.models.weights.load_backbone_weights`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

__all__ = [
    "BACKBONES",
    "Res4Trunk",
    "Res5Head",
    "build_resnet",
    "dilate_stage",
    "narrow_resnet",
    "stripe_max_pool",
]


def narrow_resnet(widths: tuple[int, int, int, int] = (8, 16, 32, 64)) -> nn.Module:
    """A one-block-per-stage ResNet with narrow stages, for fast CPU tests.

    Its module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``) match
    torchvision's ResNet, so the same trunk/head split and weight loading apply.

    Args:
        widths: Output channels of ``layer1`` ... ``layer4``; the stem has ``widths[0]``.

    Returns:
        A module with torchvision-ResNet attribute names (no ``fc``).
    """
    net = nn.Module()
    net.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(widths[0])
    net.relu = nn.ReLU(inplace=True)
    net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    inplanes = widths[0]
    for index, (planes, stride) in enumerate(zip(widths, (1, 2, 2, 2), strict=True), start=1):
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        setattr(net, f"layer{index}", nn.Sequential(BasicBlock(inplanes, planes, stride, downsample)))
        inplanes = planes
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


#: Backbone name -> constructor of a torchvision-layout ResNet (random weights).
BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(weights=None),
    "resnet34": lambda: torchvision.models.resnet34(weights=None),
    "resnet50": lambda: torchvision.models.resnet50(weights=None),
    "resnet101": lambda: torchvision.models.resnet101(weights=None),
    "narrow": narrow_resnet,
    # Twice as wide: enough capacity to separate synthetic identities, still fast on CPU.
    "narrow_x2": lambda: narrow_resnet((16, 32, 64, 128)),
}


def _out_channels(stage: nn.Sequential) -> int:
    """Channels produced by a ResNet stage (last block's last BN)."""
    last_block = stage[-1]
    bn = getattr(last_block, "bn3", None) or last_block.bn2
    return int(bn.num_features)


def dilate_stage(stage: nn.Sequential) -> None:
    """Trade a ResNet stage's stride 2 for dilation 2, in place, keeping its weights' shapes.

    The stage's strided convolution and its shortcut's 1x1 projection get stride 1; the
    3x3 convolutions of the second and later blocks get dilation 2 so their receptive
    field in input pixels stays what it was (torchvision's ``replace_stride_with_dilation``
    rule, which its :class:`~torchvision.models.resnet.BasicBlock` does not support).

    Args:
        stage: A ResNet stage (``nn.Sequential`` of basic or bottleneck blocks) whose
            first block has stride 2.

    Raises:
        ValueError: if the stage has no stride-2 convolution.
    """
    strided = [m for m in stage[0].modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    if not strided:
        raise ValueError("the stage has no stride-2 convolution to dilate")
    for conv in strided:
        conv.stride = (1, 1)
    for block in list(stage)[1:]:
        for conv in block.modules():
            if isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3):
                conv.dilation, conv.padding = (2, 2), (2, 2)


class Res4Trunk(nn.Module):
    """ResNet ``conv1 ... layer3``: image to the ``feat_res4`` map (stride 16, or 8 dilated).

    Args:
        resnet: A torchvision-layout ResNet; its stem and first three stages are reused.
        freeze_stem: Freeze ``conv1.weight``, ``bn1.weight`` and ``bn1.bias`` as SeqNet
            does. The stem BN still updates its running statistics in training mode.
        stride: Output stride, 16 (SeqNet) or 8: ``layer3`` then trades its stride for
            dilation (:func:`dilate_stage`), so RoIs are pooled from a map twice as fine
            at the same weights; small people cover four times as many cells.

    Attributes:
        stride: The output stride (image pixels per ``feat_res4`` cell).
    """

    def __init__(self, resnet: nn.Module, *, freeze_stem: bool = True, stride: int = 16) -> None:
        super().__init__()
        if stride not in (8, 16):
            raise ValueError(f"res4 stride must be 16 or 8, got {stride}")
        if stride == 8:
            dilate_stage(resnet.layer3)
        self.stride = int(stride)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.out_channels = _out_channels(resnet.layer3)
        if freeze_stem:
            for parameter in (self.conv1.weight, self.bn1.weight, self.bn1.bias):
                parameter.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        """Args: images ``[B, 3, H, W]`` normalised. Returns ``[B, C4, H/stride, W/stride]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer3(self.layer2(self.layer1(x)))


def _global_max_pool(features: Tensor) -> Tensor:
    # SeqNet pools with adaptive_max_pool2d(x, 1). Its backward scatters each gradient to
    # the one arg-max, where amax's compares the whole map against the maximum and splits
    # it among ties: on a CPU, at bfloat16 and channels-last, amax's forward and backward
    # took 150 ms per head on seqnet_r50's 128 RoIs (1024x14x14 and 2048x7x7 maps) against
    # 8 ms for this, timed in isolation; in the whole R50 step the ratio against torchvision's
    # FPN model rose from 0.78x-0.81x to 0.84x-0.87x (benchmarks/train_throughput.py, issue 3).
    return nn.functional.adaptive_max_pool2d(features, 1).flatten(1)


def stripe_max_pool(features: Tensor, stripes: int) -> Tensor:
    """Max-pool a feature map over ``stripes`` horizontal bands of its rows.

    Band ``i`` spans rows ``floor(i * H / S)`` to ``ceil((i + 1) * H / S)`` (the bins of
    ``adaptive_max_pool2d(x, (S, 1))``, which overlap by a row when ``S`` does not divide
    ``H``). Each band is pooled globally, so the ONNX graph holds a global max-pool per
    band: the TorchScript ONNX exporter only exports adaptive pooling when the sizes
    divide. Where a band's maximum occurs more than once, the gradient goes to one of
    its positions, as with ``adaptive_max_pool2d``.

    Args:
        features: ``[K, C, H, W]`` float map with ``H >= stripes``.
        stripes: Number of bands ``S`` (1 is global max pooling).

    Returns:
        ``[K, C * S]`` float, channel-major (channel ``c`` of band ``i`` at ``c * S + i``).
    """
    if stripes == 1:
        return _global_max_pool(features)
    height = int(features.shape[2])
    if height < stripes:
        raise ValueError(f"cannot pool {height} rows into {stripes} stripes")
    bands = [
        _global_max_pool(features[:, :, (i * height) // stripes : -((-(i + 1) * height) // stripes)])
        for i in range(stripes)
    ]
    return torch.stack(bands, dim=2).flatten(1)


class Res5Head(nn.Module):
    """ResNet ``layer4`` on pooled RoIs, returning both max-pooled feature vectors.

    Args:
        layer4: The fourth ResNet stage (stride 2).
        in_channels: Channels of the RoI features it receives (``feat_res4``).
        stripes: Horizontal bands each map is max-pooled over (see
            :func:`stripe_max_pool`). SeqNet pools globally (1). A re-id head may use
            more, so that "red top over blue trousers" and "blue top over red trousers"
            stay apart; with 1, only a receptive field spanning both can tell them apart.
    """

    def __init__(self, layer4: nn.Sequential, *, in_channels: int, stripes: int = 1) -> None:
        super().__init__()
        if stripes < 1:
            raise ValueError(f"stripes must be >= 1, got {stripes}")
        self.layer4 = layer4
        self.in_channels = int(in_channels)
        self.out_channels = _out_channels(layer4)
        self.stripes = int(stripes)

    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor]:
        """Run ``layer4`` and max-pool its input and output.

        Args:
            rois: ``[K, C4, S, S]`` float RoI features (S = 14 in SeqNet).

        Returns:
            ``feat_res4`` ``[K, C4 * stripes]`` and ``feat_res5`` ``[K, C5 * stripes]``,
            both float (``[K, C4]`` and ``[K, C5]`` with global pooling).
        """
        res5 = self.layer4(rois)
        return stripe_max_pool(rois, self.stripes), stripe_max_pool(res5, self.stripes)


def build_resnet(name: str, *, freeze_stem: bool = True, res4_stride: int = 16) -> tuple[Res4Trunk, Res5Head]:
    """Build the trunk and res5 head of a named ResNet with random weights.

    Args:
        name: A key of :data:`BACKBONES` (``resnet18``, ``resnet50``, ``narrow`` ...).
        freeze_stem: See :class:`Res4Trunk`.
        res4_stride: The trunk's output stride, 16 or 8 (see :class:`Res4Trunk`).

    Returns:
        ``(trunk, res5_head)``; the head owns the network's ``layer4``.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    resnet = BACKBONES[name]()
    trunk = Res4Trunk(resnet, freeze_stem=freeze_stem, stride=res4_stride)
    return trunk, Res5Head(resnet.layer4, in_channels=trunk.out_channels)
