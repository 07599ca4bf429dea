"""Image towers for text-to-image person retrieval: person crop -> global feature + tokens.

Two families, both trained from scratch here (no vision weights can be had offline):

* :class:`ResNetImageTower`: a torchvision ResNet trunk (``conv1`` .. ``layer4``); every
  cell of the last feature map is one token, projected to the embedding width; the
  global feature is the projection of the average-pooled map (equal to the mean of the
  projected tokens, the projection being linear).
* :class:`VitImageTower`: a ViT on non-square crops (IRRA's 384x128 with patch 16 gives
  24x8 = 192 patches plus a class token); the global feature is the projected class
  token, as in CLIP/IRRA.

Both normalise their ``[0, 1]`` RGB input inside the model (CLIP's mean and std, as
IRRA), so the exporter's preprocessing is only the resize.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from personsearch_train.errors import ConfigError
from personsearch_train.text.text_towers import TowerOutput
from personsearch_train.text.transformer_blocks import pre_norm_encoder_layer

__all__ = ["CLIP_MEAN", "CLIP_STD", "ResNetImageTower", "VitImageTower", "build_image_tower"]

#: CLIP's RGB normalisation (IRRA uses it for its image encoder).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
}


class _Normalize(nn.Module):
    """``(x - mean) / std`` per RGB channel; ``x`` ``[B, 3, H, W]`` float in ``[0, 1]``."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std


class ResNetImageTower(nn.Module):
    """A torchvision ResNet trunk whose last feature map becomes tokens.

    Args:
        depth: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        embed_dim: Width ``D`` of the tokens and the global feature.
        last_stride: Stride of ``layer4`` (1 keeps a 24x8 map at 384x128 input, as
            re-id models usually do; 2 is torchvision's default).
        pooling: Global feature from the projected tokens: ``"mean"`` (average pooling)
            or ``"max"`` (UniPT's max-pooling over tokens).
    """

    def __init__(
        self, *, depth: str = "resnet50", embed_dim: int = 512, last_stride: int = 1, pooling: str = "mean"
    ) -> None:
        super().__init__()
        if pooling not in ("mean", "max"):
            raise ConfigError(f"ResNet image tower pooling must be 'mean' or 'max', got {pooling!r}")
        if depth not in _RESNETS:
            raise ConfigError(f"image tower depth {depth!r} is not one of {', '.join(_RESNETS)}")
        if last_stride not in (1, 2):
            raise ConfigError(f"last_stride must be 1 or 2, got {last_stride}")
        trunk = _RESNETS[depth](weights=None)
        if last_stride == 1:
            # The stride sits in conv2 of a Bottleneck (ResNet-50) and conv1 of a
            # BasicBlock (ResNet-18/34); the shortcut's 1x1 conv strides with it.
            block = trunk.layer4[0]
            strided = block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1
            strided.stride = (1, 1)
            block.downsample[0].stride = (1, 1)
        self.normalize = _Normalize()
        self.body = nn.Sequential(
            trunk.conv1,
            trunk.bn1,
            trunk.relu,
            trunk.maxpool,
            trunk.layer1,
            trunk.layer2,
            trunk.layer3,
            trunk.layer4,
        )
        channels = trunk.fc.in_features
        self.projection = nn.Linear(channels, embed_dim)
        self.embed_dim = int(embed_dim)
        self.pooling = pooling

    def forward(self, images: Tensor) -> TowerOutput:
        """Encode person crops.

        Args:
            images: ``[B, 3, H, W]`` float32 RGB in ``[0, 1]``.

        Returns:
            ``features`` ``[B, D]``, ``tokens`` ``[B, h*w, D]`` (one per feature-map cell).
        """
        fmap = self.body(self.normalize(images))
        tokens = self.projection(fmap.flatten(2).transpose(1, 2))
        features = tokens.amax(dim=1) if self.pooling == "max" else tokens.mean(dim=1)
        return TowerOutput(features=features, tokens=tokens, padding_mask=None)


class VitImageTower(nn.Module):
    """A Vision Transformer for ``image_size`` crops (non-square allowed).

    Args:
        image_size: ``(height, width)``; both multiples of ``patch_size``.
        patch_size: Square patch side in pixels (16 as ViT-B/16).
        width: Transformer width.
        layers: Number of encoder blocks.
        heads: Attention heads.
        embed_dim: Width ``D`` of the projected tokens and global feature.
        pooling: Global feature: ``"cls"`` (the class token, CLIP/IRRA) or ``"max"``
            (element-wise maximum over all projected tokens, UniPT).
    """

    def __init__(
        self,
        *,
        image_size: tuple[int, int] = (384, 128),
        patch_size: int = 16,
        width: int = 384,
        layers: int = 6,
        heads: int = 6,
        embed_dim: int = 512,
        pooling: str = "cls",
    ) -> None:
        super().__init__()
        if pooling not in ("cls", "max"):
            raise ConfigError(f"ViT image tower pooling must be 'cls' or 'max', got {pooling!r}")
        self.pooling = pooling
        height, width_px = int(image_size[0]), int(image_size[1])
        if height % patch_size or width_px % patch_size:
            raise ConfigError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        num_patches = (height // patch_size) * (width_px // patch_size)
        self.normalize = _Normalize()
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(torch.randn(num_patches + 1, width) * 0.01)
        self.ln_pre = nn.LayerNorm(width)
        layer = pre_norm_encoder_layer(width, heads)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_post = nn.LayerNorm(width)
        self.projection = nn.Linear(width, embed_dim, bias=False)
        self.embed_dim = int(embed_dim)

    def forward(self, images: Tensor) -> TowerOutput:
        """Encode person crops.

        Args:
            images: ``[B, 3, H, W]`` float32 RGB in ``[0, 1]`` at ``image_size``.

        Returns:
            ``features`` ``[B, D]`` (the class token), ``tokens`` ``[B, 1 + patches, D]``.
        """
        patches = self.patch_embedding(self.normalize(images)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        x = torch.cat([cls, patches], dim=1) + self.positional_embedding.to(patches.dtype)
        tokens = self.projection(self.ln_post(self.transformer(self.ln_pre(x))))
        features = tokens.amax(dim=1) if self.pooling == "max" else tokens[:, 0]
        return TowerOutput(features=features, tokens=tokens, padding_mask=None)


def build_image_tower(
    kind: str, *, embed_dim: int, image_size: tuple[int, int], **options: object
) -> ResNetImageTower | VitImageTower:
    """The image tower named ``kind`` (``resnet18/34/50`` or ``vit``).

    Args:
        kind: Tower name.
        embed_dim: Output width ``D``.
        image_size: ``(height, width)`` input size (the ViT's patch grid depends on it).
        **options: Further constructor arguments of the tower.

    Raises:
        ConfigError: Unknown ``kind`` or argument.
    """
    try:
        if kind == "vit":
            return VitImageTower(image_size=image_size, embed_dim=embed_dim, **options)  # type: ignore[arg-type]
        if kind in _RESNETS:
            return ResNetImageTower(depth=kind, embed_dim=embed_dim, **options)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"image tower {kind!r}: {exc}") from None
    raise ConfigError(f"image tower {kind!r} is not one of vit, {', '.join(_RESNETS)}")
