"""Online Instance Matching (OIM) loss with a labelled lookup table and an unlabelled queue.

Follows SeqNet's OIM (methods.md section 1.3, after Xiao et al., CVPR 2017):

* ``lut`` ``[L, D]`` holds one running, unit-norm feature per labelled identity;
* ``queue`` ``[Q, D]`` holds the features of the most recent unlabelled people, written
  at ``queue_head`` and wrapping around;
* logits are ``scale * x @ [lut; queue]^T`` and the loss is softmax cross-entropy over
  the ``L + Q`` columns that have been written at least once (the tables start at
  zero); unlabelled samples (label ``-1``) and samples whose identity row is still
  unwritten add no loss term but update the memory.

The memory is updated in the autograd *backward* (once per optimisation step, as SeqNet
does), never in ``forward``: a forward pass alone (evaluation, feature extraction,
gradient-free probes) leaves the tables untouched. The update is sample by sample in
batch order: ``lut[y] <- m * lut[y] + (1 - m) * x`` then re-normalised; an unlabelled
``x`` is written to ``queue[head]`` and ``head`` advances modulo ``Q``.

When ``torch.distributed`` is initialised the backward all-gathers the features and
labels of every rank (in rank order) before updating, so all ranks keep identical
tables, which DistributedDataParallel does not synchronise because they are buffers
that change outside the optimiser.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["OIMLoss", "gather_across_ranks", "update_memory"]

#: Logit given to memory rows not written yet: far below any ``scale * cosine``.
_UNWRITTEN_LOGIT = -1.0e4


def gather_across_ranks(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather variable-length ``features [N, D]`` and ``labels [N]`` (int64), in rank order.

    Returns the inputs unchanged outside a multi-process run.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    world = dist.get_world_size()
    count = torch.tensor([features.size(0)], device=features.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded_x = features.new_zeros((longest, features.size(1)))
    padded_x[: features.size(0)] = features
    padded_y = labels.new_full((longest,), -1)
    padded_y[: labels.size(0)] = labels
    xs = [torch.empty_like(padded_x) for _ in range(world)]
    ys = [torch.empty_like(padded_y) for _ in range(world)]
    dist.all_gather(xs, padded_x)
    dist.all_gather(ys, padded_y)
    return (
        torch.cat([x[:n] for x, n in zip(xs, sizes, strict=True)], dim=0),
        torch.cat([y[:n] for y, n in zip(ys, sizes, strict=True)], dim=0),
    )


@torch.no_grad()
def update_memory(
    features: Tensor, labels: Tensor, lut: Tensor, queue: Tensor, queue_head: Tensor, momentum: float
) -> None:
    """Apply one batch of OIM memory updates in place, with sequential semantics.

    Equivalent to looping over the batch in order; a label seen ``k`` times is
    updated ``k`` times in that order, processed in rounds of unique labels so the
    work is a few vector operations rather than one per sample.

    Args:
        features: ``[N, D]`` float32 embeddings (unit norm), detached.
        labels: ``[N]`` int64; ``0 <= y < L`` labelled, ``-1`` unlabelled.
        lut: ``[L, D]`` float32 lookup table, modified in place.
        queue: ``[Q, D]`` float32 circular queue, modified in place.
        queue_head: ``[]`` int64 index of the next queue slot, modified in place.
        momentum: Weight of the old LUT entry (SeqNet: 0.5).
    """
    features = features.to(lut.dtype)
    labelled = labels >= 0
    if bool(labelled.any()):
        x_lab = features[labelled]
        y_lab = labels[labelled]
        # Rank of each sample among earlier samples with the same label: round r applies
        # the r-th occurrence of every label, which reproduces the sequential loop.
        same = y_lab[:, None] == y_lab[None, :]
        earlier = torch.ones_like(same).tril(diagonal=-1)
        rank = (same & earlier).sum(dim=1)
        for r in range(int(rank.max().item()) + 1):
            pick = rank == r
            ys = y_lab[pick]
            mixed = momentum * lut[ys] + (1.0 - momentum) * x_lab[pick]
            lut[ys] = mixed / mixed.norm(dim=1, keepdim=True).clamp_min(1e-12)
    x_unl = features[~labelled]
    size = queue.size(0)
    n = x_unl.size(0)
    if n > 0 and size > 0:
        head = int(queue_head.item())
        # Only the last ``size`` writes survive a wrap-around; writing them alone is equivalent.
        slots = (head + torch.arange(n, device=queue.device)) % size
        keep = slice(max(0, n - size), n)
        queue[slots[keep]] = x_unl[keep]
        queue_head.fill_((head + n) % size)


class _OIMFunction(torch.autograd.Function):
    """``x @ [lut; queue]^T`` with the memory update done in backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        features: Tensor,
        labels: Tensor,
        lut: Tensor,
        queue: Tensor,
        queue_head: Tensor,
        momentum: float,
    ) -> Tensor:
        ctx.save_for_backward(features, labels)
        ctx.memory = (lut, queue, queue_head)
        ctx.momentum = momentum
        return features @ torch.cat([lut, queue], dim=0).t()

    @staticmethod
    def backward(ctx: Any, grad_logits: Tensor) -> tuple[Tensor | None, None, None, None, None, None]:  # type: ignore[override]
        features, labels = ctx.saved_tensors
        lut, queue, queue_head = ctx.memory
        grad_features = None
        if ctx.needs_input_grad[0]:
            # The memory is a constant of the loss; use it as it was before this update.
            grad_features = grad_logits @ torch.cat([lut, queue], dim=0)
        all_features, all_labels = gather_across_ranks(features.detach(), labels)
        update_memory(all_features, all_labels, lut, queue, queue_head, ctx.momentum)
        return grad_features, None, None, None, None, None


class OIMLoss(nn.Module):
    """OIM softmax loss against a labelled lookup table and an unlabelled queue.

    The tables are buffers, so they travel in ``state_dict`` and checkpoints.

    Args:
        num_features: Embedding size ``D`` (SeqNet: 256).
        num_labelled: Lookup-table rows ``L``: the number of labelled training
            identities (CUHK-SYSU 5532, PRW 482).
        queue_size: Circular-queue rows ``Q`` (CUHK-SYSU 5000, PRW 500).
        scale: Logit multiplier (SeqNet: 30).
        momentum: Weight of the old lookup-table entry in its update (SeqNet: 0.5).
    """

    def __init__(
        self,
        *,
        num_features: int,
        num_labelled: int,
        queue_size: int,
        scale: float = 30.0,
        momentum: float = 0.5,
    ) -> None:
        super().__init__()
        if num_labelled < 1:
            raise ValueError(f"num_labelled must be >= 1, got {num_labelled}")
        if queue_size < 0:
            raise ValueError(f"queue_size must be >= 0, got {queue_size}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.num_features = int(num_features)
        self.num_labelled = int(num_labelled)
        self.queue_size = int(queue_size)
        self.scale = float(scale)
        self.momentum = float(momentum)
        self.register_buffer("lut", torch.zeros(num_labelled, num_features))
        self.register_buffer("queue", torch.zeros(queue_size, num_features))
        self.register_buffer("queue_head", torch.zeros((), dtype=torch.long))

    def logits(self, features: Tensor) -> Tensor:
        """Scaled similarities to every memory entry, without touching the memory.

        Args:
            features: ``[N, D]`` float embeddings.

        Returns:
            ``[N, L + Q]`` float32 ``scale * x @ [lut; queue]^T``.
        """
        return self.scale * (features.float() @ torch.cat([self.lut, self.queue], dim=0).t())

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """OIM loss of a batch; schedules the memory update for the backward pass.

        Args:
            features: ``[N, D]`` float embeddings of positive RoIs (unit norm).
            labels: ``[N]`` int64 identity labels in ``0..L-1``; ``-1`` = unlabelled.

        Returns:
            ``[]`` float32 mean cross-entropy over the labelled samples whose identity
            row has been written (0 if none).

        Raises:
            ValueError: on a label ``>= L`` or ``< -1`` (labels must be contiguous).
        """
        if features.dim() != 2 or features.size(1) != self.num_features:
            raise ValueError(f"OIM expects features [N, {self.num_features}], got {tuple(features.shape)}")
        labels = labels.to(device=features.device, dtype=torch.long)
        if labels.numel() > 0:
            low, high = int(labels.min()), int(labels.max())
            if low < -1 or high >= self.num_labelled:
                raise ValueError(
                    f"OIM labels must be in [-1, {self.num_labelled - 1}] (-1 = unlabelled), "
                    f"got [{low}, {high}]; "
                    "remap training ids to contiguous labels and set num_labelled_ids to their count"
                )
        # Memory rows never written yet (all zero) are left out of the softmax, and a
        # labelled sample whose own row is unwritten adds no loss term (its feature still
        # writes the row in backward). Scoring against zero rows rewards a direction
        # shared by every person: it lifts all written rows, the target's included, above
        # the zeros, so embeddings trained from scratch collapse onto one direction.
        memory_written = torch.cat([self.lut, self.queue], dim=0).ne(0).any(dim=1)
        target_written = memory_written[: self.num_labelled][labels.clamp_min(0)]
        loss_labels = torch.where(target_written, labels, torch.full_like(labels, -1))
        with torch.autocast(device_type=features.device.type, enabled=False):
            raw = _OIMFunction.apply(
                features.float(), labels, self.lut, self.queue, self.queue_head, self.momentum
            )
            # A finite fill: a row with nothing written must not turn into NaN.
            logits = (self.scale * raw).masked_fill(~memory_written, _UNWRITTEN_LOGIT)
            loss = F.cross_entropy(logits, loss_labels, ignore_index=-1, reduction="sum")
        # Sum / count instead of reduction="mean": a batch without scored people gives
        # 0 instead of NaN, with no data-dependent branch.
        return loss / (loss_labels >= 0).sum().clamp_min(1)

    def extra_repr(self) -> str:
        """Settings shown by ``print(model)``."""
        return (
            f"num_features={self.num_features}, num_labelled={self.num_labelled}, "
            f"queue_size={self.queue_size}, scale={self.scale}, momentum={self.momentum}"
        )
