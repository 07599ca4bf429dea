"""SeqNet: sequential end-to-end person search (Li & Miao, AAAI 2021; methods.md section 1).

Composition (each piece a submodule, so a split export can call them one by one):

``transform``
    torchvision ``GeneralizedRCNNTransform``: ImageNet normalisation, resize so the
    short side is ``min_size`` (long side at most ``max_size``), pad into a batch.
``backbone``
    ResNet ``conv1 ... layer3`` (:class:`~.backbone.Res4Trunk`), stride 16 (or 8, dilated).
``rpn``
    torchvision's ``RegionProposalNetwork`` on the single res4 level
    (:class:`~.proposals.SingleLevelRPN`: the same proposals, found with less NMS work).
``roi_align``
    :class:`~personsearch_train.layers.RoIAlign`, 14x14, ``aligned`` explicit.
``box_head`` + ``box_predictor`` (head 1)
    res5 head and a 2-way softmax classifier with class-specific box deltas.
``reid_head`` + ``reid_regressor`` + ``embedding`` (head 2)
    a separate copy of the res5 head on head 1's regressed boxes, a BN-neck box
    regressor and the norm-aware embedding (NAE); optionally pooled over horizontal
    stripes (``embedding_stripes``, our addition; SeqNet pools globally).
The re-id objective is not part of the model: :meth:`SeqNet.forward_train` returns the
detection losses and the embeddings of the RoIs it matched to people
(:class:`~.structures.TrainingOutputs`), and the training method scores them (OIM with a
lookup table and queue for the supervised baseline, ``personsearch_train.methods.seqnet_oim``;
pseudo labels for weakly supervised methods).

Surface: :meth:`SeqNet.forward_train` (``forward`` is the same, so
``DistributedDataParallel(model)(images, targets)`` works), :meth:`SeqNet.predict`
(detections), :meth:`SeqNet.embed_boxes` (query embeddings) and
:meth:`SeqNet.encode_boxes` (the query path with gradients, for methods that train
through it); each has one return type. ``forward_train`` needs training mode and the two
inference methods need eval mode (``model.eval()``), because BatchNorm and the RPN's
proposal counts follow the mode; the methods check it rather than switching it, so no
call changes module state other than BatchNorm running statistics in training.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import clip_boxes_to_image, nms, remove_small_boxes

from personsearch_train.layers.roi_align import RoIAlign
from personsearch_train.models.backbone import Res5Head, build_resnet
from personsearch_train.models.box_coding import BoxCoder
from personsearch_train.models.heads import BNNeckBoxRegressor, NormAwareEmbedding
from personsearch_train.models.proposals import SingleLevelRPN
from personsearch_train.models.registry import register_model
from personsearch_train.models.roi_sampling import RoISampler, SampledRoIs
from personsearch_train.models.structures import Detections, TrainingOutputs

__all__ = ["DEFAULT_LOSS_WEIGHTS", "SeqNet", "seqnet_r18", "seqnet_r50", "seqnet_small", "seqnet_tiny"]

#: Detection loss name -> weight in the total (SeqNet ``SOLVER.LW_*``; methods.md section
#: 1.4). The re-id loss and its weight belong to the training method.
DEFAULT_LOSS_WEIGHTS: dict[str, float] = {
    "loss_rpn_cls": 1.0,
    "loss_rpn_reg": 1.0,
    "loss_proposal_cls": 1.0,
    "loss_proposal_reg": 10.0,
    "loss_box_cls": 1.0,
    "loss_box_reg": 1.0,
}

#: ImageNet statistics the torchvision ResNet weights were trained with (RGB, [0, 1] input).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Boxes narrower or shorter than this (pixels) are dropped at inference.
_MIN_BOX_SIZE = 1e-2


def _json_ready(arguments: Mapping[str, object]) -> dict[str, object]:
    """Constructor arguments as JSON types (tuples become lists, mappings dicts)."""

    def convert(value: object) -> object:
        if isinstance(value, Mapping):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return {name: convert(value) for name, value in arguments.items()}


class SeqNet(nn.Module):
    """Two-head one-step person search network (detector head, then re-id head).

    Args:
        backbone: ResNet to split into trunk and res5 head: ``resnet18``, ``resnet34``,
            ``resnet50`` (paper), ``resnet101``, ``narrow`` (tests) or ``narrow_x2``.
        freeze_stem: Freeze ``conv1`` and the stem BN affine parameters (SeqNet: True).
        embedding_dim: NAE embedding size (SeqNet: 256).
        embedding_learn_shift: Learn the NAE projection BatchNorm biases (SeqNet: True);
            see :class:`~.heads.NormAwareEmbedding`.
        embedding_stripes: Horizontal stripes head 2 max-pools its res4 and res5 maps
            over before the NAE (SeqNet: 1, global pooling); see
            :class:`~.backbone.Res5Head`. Its box regressor always sees the global maximum.
        res4_stride: Output stride of the res4 trunk (SeqNet: 16). 8 dilates ``layer3``
            instead of striding it (:class:`~.backbone.Res4Trunk`): same weights, RoIs
            pooled from a map twice as fine, at four times the ``layer3`` and RPN cost.
        min_size: Short side after resizing (SeqNet: 900).
        max_size: Upper bound of the long side after resizing (SeqNet: 1500).
        image_mean: Per-channel RGB mean subtracted inside the model.
        image_std: Per-channel RGB std divided inside the model.
        anchor_sizes: RPN anchor sizes in pixels (one feature level).
        anchor_ratios: RPN anchor aspect ratios (height / width).
        rpn_fg_iou_thresh: Anchor IoU for an RPN positive (0.7).
        rpn_bg_iou_thresh: Anchor IoU below which an anchor is negative (0.3).
        rpn_batch_size_per_image: Anchors sampled per image for the RPN loss (256).
        rpn_positive_fraction: Largest positive share among them (0.5).
        rpn_pre_nms_top_n_train: Proposals kept before NMS in training (12000).
        rpn_pre_nms_top_n_test: Proposals kept before NMS at inference (6000).
        rpn_post_nms_top_n_train: Proposals kept after NMS in training (2000).
        rpn_post_nms_top_n_test: Proposals kept after NMS at inference (300).
        rpn_nms_thresh: RPN NMS IoU (0.7).
        roi_output_size: RoIAlign output size (14).
        roi_sampling_ratio: RoIAlign samples per bin (2).
        roi_aligned: RoIAlign half-pixel model; SeqNet used the legacy False.
        box_fg_iou_thresh: RoI IoU for a person in both heads (0.5).
        box_bg_iou_thresh: RoI IoU below which a RoI is background (0.5).
        box_batch_size_per_image: RoIs sampled per image for each head (128).
        box_positive_fraction: Largest person share among them (0.5).
        box_score_thresh: Inference score threshold of both stages (0.5).
        box_nms_thresh: Inference NMS IoU after head 1 (0.4).
        reid_nms_thresh: Inference NMS IoU after head 2 (0.5).
        box_detections_per_img: Detections kept per image and stage (300).
        loss_weights: Overrides of :data:`DEFAULT_LOSS_WEIGHTS` entries.

    Attributes:
        constructor_arguments: Every constructor argument by name, as JSON types;
            ``SeqNet(**constructor_arguments)`` (or a builder given them) rebuilds the
            same architecture. Checkpoints store it.
        embed_ground_truth: Training switch, off by default and not part of the
            architecture: when True, :meth:`forward_train` also pools every ground-truth
            box and returns head 2's embeddings of them in ``gt_embeddings`` (they join
            the sampled RoIs in one head-2 batch, so BatchNorm sees them together).
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet50",
        freeze_stem: bool = True,
        embedding_dim: int = 256,
        embedding_learn_shift: bool = True,
        embedding_stripes: int = 1,
        res4_stride: int = 16,
        min_size: int = 900,
        max_size: int = 1500,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_fg_iou_thresh: float = 0.7,
        rpn_bg_iou_thresh: float = 0.3,
        rpn_batch_size_per_image: int = 256,
        rpn_positive_fraction: float = 0.5,
        rpn_pre_nms_top_n_train: int = 12000,
        rpn_pre_nms_top_n_test: int = 6000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_test: int = 300,
        rpn_nms_thresh: float = 0.7,
        roi_output_size: int = 14,
        roi_sampling_ratio: int = 2,
        roi_aligned: bool = False,
        box_fg_iou_thresh: float = 0.5,
        box_bg_iou_thresh: float = 0.5,
        box_batch_size_per_image: int = 128,
        box_positive_fraction: float = 0.5,
        box_score_thresh: float = 0.5,
        box_nms_thresh: float = 0.4,
        reid_nms_thresh: float = 0.5,
        box_detections_per_img: int = 300,
        loss_weights: Mapping[str, float] | None = None,
    ) -> None:
        # Every argument, before any other local exists: a checkpoint stores these so a
        # later change of a builder's defaults cannot change the model it rebuilds.
        self_arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__()
        self.constructor_arguments: dict[str, object] = _json_ready(self_arguments)
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(
                f"unknown loss weight(s) {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}"
            )
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.backbone_name = backbone
        self.embedding_dim = int(embedding_dim)
        self.box_score_thresh = float(box_score_thresh)
        self.box_nms_thresh = float(box_nms_thresh)
        self.reid_nms_thresh = float(reid_nms_thresh)
        self.box_detections_per_img = int(box_detections_per_img)

        self.transform = GeneralizedRCNNTransform(
            min_size=min_size, max_size=max_size, image_mean=list(image_mean), image_std=list(image_std)
        )
        self.backbone, box_head = build_resnet(backbone, freeze_stem=freeze_stem, res4_stride=res4_stride)
        c4, c5 = box_head.in_channels, box_head.out_channels

        anchor_generator = AnchorGenerator(
            sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(anchor_ratios),)
        )
        self.rpn = SingleLevelRPN(
            anchor_generator,
            RPNHead(c4, anchor_generator.num_anchors_per_location()[0]),
            fg_iou_thresh=rpn_fg_iou_thresh,
            bg_iou_thresh=rpn_bg_iou_thresh,
            batch_size_per_image=rpn_batch_size_per_image,
            positive_fraction=rpn_positive_fraction,
            pre_nms_top_n={"training": rpn_pre_nms_top_n_train, "testing": rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": rpn_post_nms_top_n_train, "testing": rpn_post_nms_top_n_test},
            nms_thresh=rpn_nms_thresh,
        )
        self.roi_align = RoIAlign(
            output_size=roi_output_size,
            spatial_scale=1.0 / self.backbone.stride,
            sampling_ratio=roi_sampling_ratio,
            aligned=roi_aligned,
        )
        self.box_head = box_head
        self.box_predictor = FastRCNNPredictor(c5, 2)
        # A separate copy, taken before any training, as SeqNet does after loading ImageNet
        # weights; load_backbone_weights fills both copies.
        self.reid_head = Res5Head(copy.deepcopy(box_head.layer4), in_channels=c4, stripes=embedding_stripes)
        self.reid_regressor = BNNeckBoxRegressor(in_channels=c5, num_classes=2)
        self.embedding = NormAwareEmbedding(
            in_channels=(c4 * embedding_stripes, c5 * embedding_stripes),
            dim=embedding_dim,
            learn_shift=embedding_learn_shift,
        )
        self.box_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.embed_ground_truth = False
        self.roi_sampler = RoISampler(
            fg_iou_thresh=box_fg_iou_thresh,
            bg_iou_thresh=box_bg_iou_thresh,
            batch_size_per_image=box_batch_size_per_image,
            positive_fraction=box_positive_fraction,
            box_coder=self.box_coder,
        )

    # ------------------------------------------------------------------ pieces
    def extract_features(self, batch: Tensor) -> Tensor:
        """Backbone on a normalised, padded batch.

        Args:
            batch: ``[B, 3, H, W]`` float, normalised (output of ``transform``).

        Returns:
            ``[B, C4, H/s, W/s]`` float ``feat_res4``.
        """
        return self.backbone(batch)

    def propose(self, image_list: ImageList, features: Tensor) -> list[Tensor]:
        """RPN proposals for each image (inference settings in eval mode).

        Args:
            image_list: The transformed batch (``tensors`` and resized ``image_sizes``).
            features: ``[B, C4, h, w]`` float ``feat_res4``.

        Returns:
            ``B`` tensors ``[P_b, 4]`` float xyxy in resized-image pixels.
        """
        proposals, _ = self.rpn(image_list, {"feat_res4": features})
        return proposals

    def box_head_outputs(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Head 1 on pooled RoI features.

        Args:
            pooled: ``[K, C4, S, S]`` float RoIAlign output.

        Returns:
            ``class_logits`` ``[K, 2]`` (background, person) and ``box_deltas`` ``[K, 8]``.
        """
        _, feat_res5 = self.box_head(pooled)
        return self.box_predictor(feat_res5)

    def reid_head_outputs(self, pooled: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Head 2 on pooled RoI features.

        Args:
            pooled: ``[K, C4, S, S]`` float RoIAlign output.

        Returns:
            ``embeddings`` ``[K, D]`` unit-norm, ``person_logits`` ``[K]`` (NAE norm
            logit) and ``box_deltas`` ``[K, 8]`` (BN-neck regressor).
        """
        feat_res4, feat_res5 = self.reid_head(pooled)
        embeddings, person_logits = self.embedding(feat_res4, feat_res5)
        stripes = self.reid_head.stripes
        if stripes > 1:
            # Striped vectors are channel-major: the global maximum is a max over the last axis.
            feat_res5 = feat_res5.reshape(feat_res5.shape[0], -1, stripes).amax(dim=2)
        return embeddings, person_logits, self.reid_regressor(feat_res5)

    def decode_person_boxes(self, deltas: Tensor, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Apply the person-class deltas and clip to the image.

        Args:
            deltas: ``[K, 8]`` float (background and person deltas).
            boxes: ``[K, 4]`` float xyxy reference boxes.
            image_size: ``(height, width)`` of the resized image.

        Returns:
            ``[K, 4]`` float xyxy.
        """
        return clip_boxes_to_image(self.box_coder.decode(deltas, boxes)[:, 1], image_size)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_images(images: Sequence[Tensor]) -> None:
        if len(images) == 0:
            raise ValueError("expected at least one image")
        for index, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3 or not image.is_floating_point():
                raise ValueError(
                    f"image {index} must be a float [3, H, W] RGB tensor in [0, 1], "
                    f"got {image.dtype} {tuple(image.shape)}"
                )

    def _check_mode(self, method: str, training: bool) -> None:
        if self.training != training:
            wanted = "model.train()" if training else "model.eval()"
            raise RuntimeError(
                f"SeqNet.{method} needs {wanted} first (BatchNorm and RPN settings follow the mode)"
            )

    # ------------------------------------------------------------------ training
    def forward_train(
        self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]]
    ) -> TrainingOutputs:
        """Detection losses of one training batch and the embeddings of its matched people.

        Args:
            images: ``B`` tensors ``[3, H, W]`` float32 RGB in ``[0, 1]`` (sizes may differ).
            targets: ``B`` dicts with ``boxes`` ``[M, 4]`` float32 xyxy pixels and
                ``pids`` ``[M]`` int64 labels (``-1`` for an unlabelled person); the
                model only passes the labels through to ``person_labels``.

        Returns:
            ``losses`` holds ``loss_rpn_cls``, ``loss_rpn_reg``, ``loss_proposal_cls``,
            ``loss_proposal_reg``, ``loss_box_cls`` and ``loss_box_reg`` (weighted scalar
            float32); ``person_embeddings`` are head 2's embeddings of its sampled RoIs
            that matched a person, for the method's re-id loss.
        """
        self._check_mode("forward_train", training=True)
        self._check_images(images)
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets")
        for index, target in enumerate(targets):
            if "boxes" not in target or "pids" not in target:
                raise ValueError(f"target {index} needs 'boxes' and 'pids', has {sorted(target)}")
            if target["boxes"].shape[0] != target["pids"].shape[0]:
                raise ValueError(
                    f"target {index}: {target['boxes'].shape[0]} boxes but {target['pids'].shape[0]} pids"
                )
        resized_targets = [
            {
                "boxes": t["boxes"].to(torch.float32).reshape(-1, 4),
                "pids": t["pids"].to(torch.long).reshape(-1),
            }
            for t in targets
        ]
        image_list, resized_targets = self.transform(list(images), resized_targets)
        features = self.extract_features(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, {"feat_res4": features}, resized_targets)
        proposals = [p.detach() for p in proposals]
        gt_boxes = [t["boxes"] for t in resized_targets]
        gt_pids = [t["pids"] for t in resized_targets]

        # Head 1: Faster R-CNN classification + regression on sampled proposals.
        first = [self.roi_sampler(p, b, q) for p, b, q in zip(proposals, gt_boxes, gt_pids, strict=True)]
        class_logits, proposal_deltas = self.box_head_outputs(
            self.roi_align(features, [s.boxes for s in first])
        )
        first_is_person = torch.cat([s.is_person for s in first])
        loss_proposal_cls = F.cross_entropy(class_logits, first_is_person.long())
        loss_proposal_reg = self._regression_loss(proposal_deltas, first)

        # Head 2 on head 1's regressed boxes, detached and re-sampled against ground truth.
        regressed = [
            self.decode_person_boxes(deltas.detach(), s.boxes, size)
            for deltas, s, size in zip(
                proposal_deltas.split([s.boxes.shape[0] for s in first]),
                first,
                image_list.image_sizes,
                strict=True,
            )
        ]
        second = [self.roi_sampler(r, b, q) for r, b, q in zip(regressed, gt_boxes, gt_pids, strict=True)]
        pooled = self.roi_align(features, [s.boxes for s in second])
        num_sampled = pooled.shape[0]
        if self.embed_ground_truth:
            pooled = torch.cat([pooled, self.roi_align(features, gt_boxes)])
        embeddings, person_logits, box_deltas = self.reid_head_outputs(pooled)
        gt_embeddings = embeddings[num_sampled:] if self.embed_ground_truth else None
        embeddings, person_logits, box_deltas = (
            embeddings[:num_sampled],
            person_logits[:num_sampled],
            box_deltas[:num_sampled],
        )
        second_is_person = torch.cat([s.is_person for s in second])
        loss_box_cls = F.binary_cross_entropy_with_logits(
            person_logits, second_is_person.to(person_logits.dtype)
        )
        loss_box_reg = self._regression_loss(box_deltas, second)
        image_index = torch.cat([torch.full_like(s.gt_index, i) for i, s in enumerate(second)])

        losses = {
            "loss_rpn_cls": rpn_losses["loss_objectness"],
            "loss_rpn_reg": rpn_losses["loss_rpn_box_reg"],
            "loss_proposal_cls": loss_proposal_cls,
            "loss_proposal_reg": loss_proposal_reg,
            "loss_box_cls": loss_box_cls,
            "loss_box_reg": loss_box_reg,
        }
        return TrainingOutputs(
            losses={name: value.float() * self.loss_weights[name] for name, value in losses.items()},
            person_embeddings=embeddings[second_is_person],
            person_labels=torch.cat([s.pids for s in second])[second_is_person],
            person_image_index=image_index[second_is_person],
            person_box_index=torch.cat([s.gt_index for s in second])[second_is_person],
            gt_embeddings=gt_embeddings,
            background_embeddings=embeddings[~second_is_person],
        )

    def forward(self, images: Sequence[Tensor], targets: Sequence[Mapping[str, Tensor]]) -> TrainingOutputs:
        """Same as :meth:`forward_train`.

        ``nn.Module.__call__`` (and so ``DistributedDataParallel``, which must see the
        call to synchronise gradients) goes through ``forward``; it always means training.
        """
        return self.forward_train(images, targets)

    @staticmethod
    def _regression_loss(deltas: Tensor, sampled: list[SampledRoIs]) -> Tensor:
        """Smooth-L1 (beta 1) of person-class deltas over positives / all sampled RoIs (SeqNet)."""
        is_person = torch.cat([s.is_person for s in sampled])
        targets = torch.cat([s.regression_targets for s in sampled])
        person_deltas = deltas.float().reshape(deltas.shape[0], deltas.shape[1] // 4, 4)[:, 1]
        loss = F.smooth_l1_loss(person_deltas[is_person], targets[is_person].float(), reduction="sum")
        return loss / max(is_person.numel(), 1)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, images: Sequence[Tensor]) -> list[Detections]:
        """Detect people and embed them (the gallery path, methods.md section 1.5 mode 1).

        Head 1 scores and regresses the RPN proposals (score > ``box_score_thresh``, NMS
        ``box_nms_thresh``); those scores are the first classification scores (FCS).
        Head 2 refines the surviving boxes and embeds them; a second NMS at
        ``reid_nms_thresh`` ranks by FCS.

        Args:
            images: ``B`` tensors ``[3, H, W]`` float32 RGB in ``[0, 1]``.

        Returns:
            ``B`` :class:`Detections` in original-image pixels, embeddings unit-norm
            (no CWS applied).
        """
        self._check_mode("predict", training=False)
        self._check_images(images)
        original_sizes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
        image_list, _ = self.transform(list(images))
        features = self.extract_features(image_list.tensors)
        proposals = self.propose(image_list, features)

        class_logits, proposal_deltas = self.box_head_outputs(self.roi_align(features, proposals))
        scores = F.softmax(class_logits, dim=1)[:, 1]
        first_boxes, first_scores = [], []
        for deltas, props, image_scores, size in zip(
            proposal_deltas.split([p.shape[0] for p in proposals]),
            proposals,
            scores.split([p.shape[0] for p in proposals]),
            image_list.image_sizes,
            strict=True,
        ):
            boxes = self.decode_person_boxes(deltas, props, size)
            keep = self._select(boxes, image_scores, self.box_nms_thresh)
            first_boxes.append(boxes[keep])
            first_scores.append(image_scores[keep])

        counts = [b.shape[0] for b in first_boxes]
        if sum(counts) == 0:
            return [Detections.empty(self.embedding_dim, features.device) for _ in images]
        embeddings, _, box_deltas = self.reid_head_outputs(self.roi_align(features, first_boxes))
        results = []
        for boxes, image_scores, image_embeddings, deltas, size, original in zip(
            first_boxes,
            first_scores,
            embeddings.split(counts),
            box_deltas.split(counts),
            image_list.image_sizes,
            original_sizes,
            strict=True,
        ):
            refined = self.decode_person_boxes(deltas, boxes, size)
            keep = self._select(refined, image_scores, self.reid_nms_thresh)
            results.append(
                Detections(
                    self._to_original(refined[keep], size, original).float(),
                    image_scores[keep].float(),
                    image_embeddings[keep].float(),
                )
            )
        return results

    def _select(self, boxes: Tensor, scores: Tensor, nms_thresh: float) -> Tensor:
        """Indices kept by score threshold, minimum size and NMS, best first, capped."""
        keep = torch.nonzero(scores > self.box_score_thresh).squeeze(1)
        keep = keep[remove_small_boxes(boxes[keep], _MIN_BOX_SIZE)]
        order = nms(boxes[keep], scores[keep], nms_thresh)
        return keep[order[: self.box_detections_per_img]]

    @staticmethod
    def _to_original(boxes: Tensor, resized: tuple[int, int], original: tuple[int, int]) -> Tensor:
        """Scale ``[K, 4]`` xyxy boxes from the resized image back to the original one."""
        ratio_h = original[0] / resized[0]
        ratio_w = original[1] / resized[1]
        return boxes * boxes.new_tensor([ratio_w, ratio_h, ratio_w, ratio_h])

    @torch.no_grad()
    def embed_boxes(self, images: Sequence[Tensor], boxes: Sequence[Tensor]) -> list[Tensor]:
        """Embed given person boxes without detection (the query path, section 1.5 mode 2).

        Args:
            images: ``B`` tensors ``[3, H, W]`` float32 RGB in ``[0, 1]``.
            boxes: ``B`` tensors ``[M_b, 4]`` float32 xyxy in original-image pixels
                (``M_b`` may be 0).

        Returns:
            ``B`` tensors ``[M_b, D]`` float32, unit-norm embeddings from head 2.
        """
        self._check_mode("embed_boxes", training=False)
        return [e.float() for e in self.encode_boxes(images, boxes)]

    def encode_boxes(self, images: Sequence[Tensor], boxes: Sequence[Tensor]) -> list[Tensor]:
        """The query path in the current mode, with gradients: what a method trains through.

        :meth:`embed_boxes` is this in eval mode without autograd. Here nothing is
        switched: in training mode BatchNorm normalises with the batch's statistics (and
        updates its running ones), and gradients flow to the backbone and head 2.

        Args:
            images: ``B`` tensors ``[3, H, W]`` float32 RGB in ``[0, 1]``.
            boxes: ``B`` tensors ``[M_b, 4]`` float32 xyxy in original-image pixels
                (``M_b`` may be 0).

        Returns:
            ``B`` tensors ``[M_b, D]`` unit-norm embeddings from head 2 (the autocast
            dtype where autocast is on).
        """
        self._check_images(images)
        if len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but {len(boxes)} box tensors")
        targets = [{"boxes": b.to(torch.float32).reshape(-1, 4)} for b in boxes]
        image_list, targets = self.transform(list(images), targets)
        resized = [t["boxes"] for t in targets]
        counts = [b.shape[0] for b in resized]
        if sum(counts) == 0:
            return [torch.zeros((0, self.embedding_dim), device=images[0].device) for _ in images]
        features = self.extract_features(image_list.tensors)
        embeddings, _, _ = self.reid_head_outputs(self.roi_align(features, resized))
        return list(embeddings.split(counts))

    def encode_crops(self, crops: Tensor) -> Tensor:
        """Embed person crops through the trunk and head 2, without RoIAlign (an instance path).

        The crop is the person already cut out and resized (for example by
        :func:`~personsearch_train.weak_supervision.crop_people`): it is normalised like a
        scene, run through the same trunk, and its whole res4 map goes to head 2 where a
        scene person's RoIAlign output would. Runs in the current mode, with gradients.

        Args:
            crops: ``[N, 3, h, w]`` float RGB in ``[0, 1]``; ``h`` must give head 2 at least
                ``embedding_stripes`` rows (``h >= 2 * stride * stripes``).

        Returns:
            ``[N, D]`` unit-norm embeddings (the autocast dtype where autocast is on).

        Raises:
            ValueError: ``crops`` is not ``[N, 3, h, w]`` float, or too short for the stripes.
        """
        if crops.dim() != 4 or crops.shape[1] != 3 or not crops.is_floating_point():
            raise ValueError(f"crops must be float [N, 3, h, w], got {crops.dtype} {tuple(crops.shape)}")
        rows = crops.shape[2] // (2 * self.backbone.stride)
        if rows < self.reid_head.stripes:
            raise ValueError(
                f"crops {crops.shape[2]} pixels high give head 2 {rows} rows, fewer than its "
                f"{self.reid_head.stripes} stripes; use crops at least "
                f"{2 * self.backbone.stride * self.reid_head.stripes} pixels high"
            )
        if crops.shape[0] == 0:
            return crops.new_zeros((0, self.embedding_dim))
        mean = torch.as_tensor(self.transform.image_mean, dtype=crops.dtype, device=crops.device)
        std = torch.as_tensor(self.transform.image_std, dtype=crops.dtype, device=crops.device)
        normalised = (crops - mean[:, None, None]) / std[:, None, None]
        embeddings, _, _ = self.reid_head_outputs(self.extract_features(normalised))
        return embeddings


# ---------------------------------------------------------------------- builders
@register_model("seqnet_r50")
def seqnet_r50(**overrides: object) -> SeqNet:
    """SeqNet as in the paper: ResNet-50, images resized to 900/1500."""
    return SeqNet(**{"backbone": "resnet50", **overrides})  # type: ignore[arg-type]


@register_model("seqnet_r18")
def seqnet_r18(**overrides: object) -> SeqNet:
    """SeqNet on ResNet-18 (256/512 channels at res4/res5): a CPU-friendly variant."""
    return SeqNet(**{"backbone": "resnet18", **overrides})  # type: ignore[arg-type]


@register_model("seqnet_tiny")
def seqnet_tiny(**overrides: object) -> SeqNet:
    """A narrow SeqNet for tests and instant recipes: small input, few proposals and RoIs.

    Narrow one-block ResNet (8/16/32/64 channels), short side 128 (long side <= 192),
    anchors 16..256, 64-d embedding. Trained from scratch, so unlike the
    paper's ImageNet-initialised model the stem is trained (``freeze_stem=False``: eight
    frozen random 7x7 filters throw away colour) and the NAE projection BatchNorm biases
    stay zero (``embedding_learn_shift=False``): a network that cannot yet tell people
    apart lowers the OIM loss fastest by growing that shared offset until every
    embedding points the same way (issue 3).
    """
    defaults: dict[str, object] = {
        "backbone": "narrow",
        "freeze_stem": False,
        "embedding_learn_shift": False,
        "min_size": 128,
        "max_size": 192,
        "embedding_dim": 64,
        "anchor_sizes": (16, 32, 64, 128, 256),
        "rpn_batch_size_per_image": 64,
        "rpn_pre_nms_top_n_train": 256,
        "rpn_post_nms_top_n_train": 64,
        "rpn_pre_nms_top_n_test": 128,
        "rpn_post_nms_top_n_test": 32,
        "box_batch_size_per_image": 32,
        "box_detections_per_img": 32,
    }
    return SeqNet(**{**defaults, **overrides})  # type: ignore[arg-type]


@register_model("seqnet_small")
def seqnet_small(**overrides: object) -> SeqNet:
    """A small SeqNet for the synthetic benchmark recipe on CPU.

    Narrow one-block ResNet twice as wide as ``seqnet_tiny``'s (16/32/64/128 channels),
    128-d embedding over 6 stripes, 32 RoIs per image and head. Images keep their size
    (short side 480, long side at most 640): the trunk is cheap next to the per-RoI
    heads, and at half that size a synthetic person is about one res4 cell wide, too
    coarse for head 1 to tell a well-placed box from a near miss. Stem trained and NAE
    biases fixed at zero, as in :func:`seqnet_tiny`. Head 2 max-pools over 6 horizontal
    stripes: one block per stage gives ``layer4`` too small a receptive field to relate a
    top to the trousers below it, and globally pooled features lose where a colour was.
    Measured on the synthetic ``small`` CUHK-SYSU-format set after 4 epochs (issue 3
    pilots): this model reaches 66 % detection AP where ``seqnet_tiny`` at the same input
    reaches 48 %, at a similar step time on a shared 2-core CPU; mAP with 1, 2, 3, 4 and
    6 stripes was 18.9, 23.4, 28.7, 28.9 and 33.1 %. At inference the RPN keeps SeqNet's
    6000 / 300 proposals: with ``res4_stride=8`` there are four times as many anchors, and
    a trained model that kept 256 / 64 found 83 % of the CUHK-SYSU-format test people where
    6000 / 300 finds 90 % (mAP 57.9 % against 63.3 %).
    """
    defaults: dict[str, object] = {
        "backbone": "narrow_x2",
        "freeze_stem": False,
        "embedding_learn_shift": False,
        "min_size": 480,
        "max_size": 640,
        "embedding_dim": 128,
        "embedding_stripes": 6,
        "anchor_sizes": (16, 32, 64, 128, 256),
        "rpn_batch_size_per_image": 128,
        "rpn_pre_nms_top_n_train": 512,
        "rpn_post_nms_top_n_train": 128,
        "box_batch_size_per_image": 32,
        "box_detections_per_img": 64,
    }
    return SeqNet(**{**defaults, **overrides})  # type: ignore[arg-type]
