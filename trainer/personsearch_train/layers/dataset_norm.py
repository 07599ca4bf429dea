"""Dataset-specific batch norm: the intra-task alignment module of hybrid pre-training.

PPS (Tian et al., "Divide and Conquer: Hybrid Pre-training for Person Search", AAAI 2024)
pre-trains one person-search model on several datasets per sub-task at once (detection
scenes, re-id crops composed into scenes, ...). What is known here of its "intra-task
alignment module" is only its purpose: it reduces the discrepancy between datasets of
the same sub-task. The paper body is not available, so the design below is ours.

What we chose, and why:

* **Separate normalisation statistics per source.** Datasets differ first in low-level
  statistics (cameras, resolution, colour, crop versus scene framing). Giving every source
  its own running mean and variance in each batch-norm layer (as in domain-specific batch
  norm) lets those differences be normalised away layer by layer, instead of every
  running estimate drifting to a mixture that fits no dataset.
* **Shared affine parameters.** ``weight`` and ``bias`` (and every other layer) are shared,
  so all sources are mapped into one feature space; only the centring and scaling differ.
* **Folded away at the end.** :func:`fold_dataset_norm` turns each layer back into a plain
  ``nn.BatchNorm1d``/``nn.BatchNorm2d`` holding either the statistics of the source that
  matches the target domain or the pooled statistics of all sources, so the pre-trained
  checkpoint is a plain model whose state-dict keys and shapes are the original's and
  that the fine-tuning methods load by name and shape without knowing about this module.

Which source a batch comes from is set for the whole model, not passed through
``forward``: the multi-dataset sampler (:class:`~personsearch_train.data.mixing.
RatioBatchSampler`) draws every global batch from one source, so one index per batch is
enough and the model's forward signatures stay untouched::

    model = convert_to_dataset_norm(model, num_sources=len(mixed.dataset_sizes))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02)  # build it after converting
    for images, targets in loader:
        with active_source(model, targets[0]["source"]):
            losses = model.forward_train(images, targets)
        ...
    model = fold_dataset_norm(model, source=None)  # or source=k for the target's statistics

Limits: the statistics are those of this process's batch (like ``nn.BatchNorm``, not
``nn.SyncBatchNorm``; ``SyncBatchNorm`` layers are not converted). Convert after loading
pre-trained weights: a converted layer's ``[S, C]`` buffers do not load a plain ``[C]``
checkpoint.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DatasetSpecificBatchNorm",
    "active_source",
    "convert_to_dataset_norm",
    "fold_dataset_norm",
    "set_active_source",
]

# Exact types only: a subclass may change forward, and folding could only give back the
# base class, so a subclass is left alone rather than silently turned into its parent.
# FrozenBatchNorm2d (no running updates, no batch statistics) and SyncBatchNorm are not
# among them.
_PLAIN_TYPES: tuple[type[nn.BatchNorm1d] | type[nn.BatchNorm2d], ...] = (nn.BatchNorm1d, nn.BatchNorm2d)
# Input ranks each plain type accepts, as its own ``_check_input_dim`` does.
_INPUT_DIMS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,)}


def _copy_affine(source: nn.Module, target: nn.Module) -> None:
    """Copy ``weight`` and ``bias`` (values and ``requires_grad``) between two affine norms."""
    for name in ("weight", "bias"):
        value, into = getattr(source, name), getattr(target, name)
        assert value is not None and into is not None
        into.copy_(value)
        into.requires_grad_(value.requires_grad)


class DatasetSpecificBatchNorm(nn.Module):
    """Batch norm with one set of running statistics per data source and one shared affine.

    In training the input is normalised with the batch statistics (exactly as
    ``nn.BatchNorm``) and the *active* source's running mean and variance are updated with
    the batch-norm rule ``running = (1 - momentum) * running + momentum * batch`` (the batch
    variance unbiased), or with a cumulative average when ``momentum is None``. In eval the
    active source's running statistics normalise the input. The active source is set with
    :func:`active_source` / :func:`set_active_source` (or the :attr:`active_source`
    property); a forward without one raises.

    Build it from an existing layer with :meth:`from_batch_norm` (what
    :func:`convert_to_dataset_norm` does) and turn it back into a plain layer with
    :meth:`to_batch_norm` (what :func:`fold_dataset_norm` does).

    Args:
        num_features: Channels ``C``.
        num_sources: Data sources ``S`` (>= 1), each with its own statistics.
        eps: Added to the variance for stability, as in ``nn.BatchNorm``.
        momentum: Running-statistics update factor; ``None`` keeps a cumulative average
            of each source's batches.
        affine: Whether there is a (shared) learnable ``weight`` and ``bias``.
        plain_type: ``nn.BatchNorm1d`` (inputs ``[N, C]`` or ``[N, C, L]``) or
            ``nn.BatchNorm2d`` (inputs ``[N, C, H, W]``): which inputs are accepted and
            what :meth:`to_batch_norm` builds.
        layer_name: Qualified name in the model (for error messages); ``""`` if unknown.
        device: Device of the parameters and buffers.
        dtype: Floating dtype of the parameters and statistics (float32 by default).

    Attributes:
        weight: ``[C]`` shared scale (``None`` without ``affine``).
        bias: ``[C]`` shared shift (``None`` without ``affine``).
        running_mean: ``[S, C]`` buffer, one running mean per source.
        running_var: ``[S, C]`` buffer, one running (unbiased) variance per source.
        num_batches_tracked: ``[S]`` int64 buffer, training batches seen per source since
            conversion.

    Raises:
        ValueError: If ``num_sources < 1`` or ``plain_type`` is not BatchNorm1d/2d.
    """

    def __init__(
        self,
        num_features: int,
        num_sources: int,
        *,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        plain_type: type[nn.BatchNorm1d] | type[nn.BatchNorm2d] = nn.BatchNorm2d,
        layer_name: str = "",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if num_sources < 1:
            raise ValueError(f"num_sources must be >= 1; got {num_sources}")
        if plain_type not in _PLAIN_TYPES:
            raise ValueError(f"plain_type must be nn.BatchNorm1d or nn.BatchNorm2d; got {plain_type!r}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = int(num_features)
        self.num_sources = int(num_sources)
        self.eps = float(eps)
        self.momentum = momentum
        self.affine = bool(affine)
        self.plain_type = plain_type
        self.layer_name = layer_name
        if self.affine:
            self.weight: nn.Parameter | None = nn.Parameter(torch.ones(num_features, **factory))
            self.bias: nn.Parameter | None = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_sources, num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_sources, num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.zeros(num_sources, dtype=torch.long, device=device))
        self.running_mean: Tensor
        self.running_var: Tensor
        self.num_batches_tracked: Tensor
        # Plain attribute, not a buffer: which source is active is run-time state, not part
        # of the checkpoint.
        self._active_source: int | None = None

    @classmethod
    def from_batch_norm(
        cls, bn: nn.BatchNorm1d | nn.BatchNorm2d, num_sources: int, *, layer_name: str = ""
    ) -> DatasetSpecificBatchNorm:
        """Build a layer that starts where ``bn`` is, for every source.

        The shared ``weight``/``bias`` are copies of ``bn``'s (``requires_grad`` kept) and
        every source's running mean and variance start from ``bn``'s. Each source's
        ``num_batches_tracked`` starts at 0: it counts that source's own batches, which is
        what pooled folding weighs by, and with ``momentum=None`` the cumulative average is
        then over that source's data only (the original statistics describe other data).
        The new layer is on ``bn``'s device and dtype and in its train/eval mode.

        Args:
            bn: An ``nn.BatchNorm1d`` or ``nn.BatchNorm2d`` (exact type) with
                ``track_running_stats=True``.
            num_sources: Data sources ``S`` (>= 1).
            layer_name: Qualified name in the model, for error messages.

        Returns:
            The new layer; ``bn`` is left unchanged.

        Raises:
            TypeError: If ``bn`` is not exactly ``nn.BatchNorm1d`` or ``nn.BatchNorm2d``.
            ValueError: If ``bn`` does not track running statistics (it always normalises
                with batch statistics, so there is nothing per source to keep).
        """
        if type(bn) not in _PLAIN_TYPES:
            raise TypeError(f"expected nn.BatchNorm1d or nn.BatchNorm2d; got {type(bn).__name__}")
        if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
            raise ValueError(
                f"batch norm {layer_name or bn!r} has track_running_stats=False: "
                "it has no statistics to keep per source"
            )
        layer = cls(
            bn.num_features,
            num_sources,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            plain_type=type(bn),
            layer_name=layer_name,
            device=bn.running_mean.device,
            dtype=bn.running_mean.dtype,
        )
        with torch.no_grad():
            if bn.affine:
                _copy_affine(bn, layer)
            layer.running_mean.copy_(bn.running_mean.unsqueeze(0).expand_as(layer.running_mean))
            layer.running_var.copy_(bn.running_var.unsqueeze(0).expand_as(layer.running_var))
        layer.train(bn.training)
        return layer

    @property
    def active_source(self) -> int | None:
        """Index of the source whose statistics the next forward uses/updates, or ``None``."""
        return self._active_source

    @active_source.setter
    def active_source(self, index: int | None) -> None:
        self._active_source = None if index is None else self._check_source(index)

    def _describe(self) -> str:
        name = f"'{self.layer_name}'" if self.layer_name else f"({self.num_features} features)"
        return f"DatasetSpecificBatchNorm {name} with {self.num_sources} sources"

    def _check_source(self, index: object) -> int:
        """Return ``index`` as an int in ``[0, S)`` or raise ValueError naming the layer."""
        if isinstance(index, bool):  # bool is an int subclass; True as "source 1" is a bug
            raise ValueError(f"{self._describe()}: source index must be an int; got {index!r}")
        try:
            value = operator.index(index)  # ints, numpy ints and 0-d integer tensors
        except TypeError:
            raise ValueError(f"{self._describe()}: source index must be an int; got {index!r}") from None
        if not 0 <= value < self.num_sources:
            raise ValueError(f"{self._describe()}: source index {value} out of range [0, {self.num_sources})")
        return value

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``input`` with the batch (training) or the active source's (eval) statistics.

        Args:
            input: ``[N, C]`` or ``[N, C, L]`` (BatchNorm1d kind) or ``[N, C, H, W]``
                (BatchNorm2d kind), floating, on the layer's device.

        Returns:
            Tensor of ``input``'s shape and dtype.

        Raises:
            RuntimeError: If no source is active.
            ValueError: If ``input`` has the wrong number of dimensions.
        """
        if input.dim() not in _INPUT_DIMS[self.plain_type]:
            raise ValueError(
                f"{self._describe()} ({self.plain_type.__name__} kind) expects "
                f"{' or '.join(f'{d}D' for d in _INPUT_DIMS[self.plain_type])} input; got {input.dim()}D"
            )
        source = self._active_source
        if source is None:
            raise RuntimeError(
                f"{self._describe()} has no active source; run the forward inside "
                f"`with active_source(model, index):` with index in [0, {self.num_sources})"
            )
        # Row views: F.batch_norm updates them in place, which writes straight into this
        # source's row of the [S, C] buffers and leaves the other sources untouched.
        running_mean = self.running_mean[source]
        running_var = self.running_var[source]
        factor = 0.0
        if self.training:
            self.num_batches_tracked[source].add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm does
                factor = 1.0 / float(self.num_batches_tracked[source])
            else:
                factor = self.momentum
        return F.batch_norm(
            input, running_mean, running_var, self.weight, self.bias, self.training, factor, self.eps
        )

    def pooled_statistics(self, weights: Sequence[float] | Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mean and variance of the mixture of all sources' running statistics.

        With normalised weights ``p_s`` the mixture has mean ``m = sum_s p_s mean_s`` and
        variance ``sum_s p_s (var_s + mean_s^2) - m^2`` (law of total variance): the
        statistics of the union of the sources' data when ``p_s`` is each source's share of
        it. Computed in float64 to keep the subtraction from cancelling.

        Args:
            weights: ``S`` non-negative numbers, not all zero. ``None`` weighs by
                ``num_batches_tracked`` (how often each source was trained on since
                conversion); if no source was trained they all still hold the original
                statistics and equal weights are used.

        Returns:
            ``(mean, var)``, each ``[C]`` in the buffers' dtype and device.

        Raises:
            ValueError: If ``weights`` has the wrong length, a negative or non-finite entry,
                or sums to zero.
        """
        if weights is None:
            w = self.num_batches_tracked.to(torch.float64)
            if float(w.sum()) == 0.0:
                w = torch.ones_like(w)
        else:
            w = torch.as_tensor(weights, dtype=torch.float64, device=self.running_mean.device).flatten()
            if w.numel() != self.num_sources:
                raise ValueError(
                    f"{self._describe()}: need {self.num_sources} weights, one per source; got {w.numel()}"
                )
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0.0:
                raise ValueError(
                    f"{self._describe()}: weights must be finite, non-negative and not all zero; "
                    f"got {w.tolist()}"
                )
        p = (w / w.sum()).unsqueeze(1)  # [S, 1]
        mean64 = self.running_mean.to(torch.float64)
        var64 = self.running_var.to(torch.float64)
        mean = (p * mean64).sum(0)
        second_moment = (p * (var64 + mean64.square())).sum(0)
        # Rounding can push a (near) zero variance slightly negative.
        var = (second_moment - mean.square()).clamp_min(0.0)
        dtype = self.running_mean.dtype
        return mean.to(dtype), var.to(dtype)

    def to_batch_norm(
        self, source: int | None = None, weights: Sequence[float] | Tensor | None = None
    ) -> nn.BatchNorm1d | nn.BatchNorm2d:
        """A plain layer of the original type with one source's or the pooled statistics.

        Args:
            source: Keep this source's running statistics; ``None`` pools all sources (see
                :meth:`pooled_statistics`).
            weights: Mixture weights for pooling (only with ``source=None``).

        Returns:
            A new ``nn.BatchNorm1d``/``nn.BatchNorm2d`` with the same ``eps``, ``momentum``,
            ``affine``, device, dtype and train/eval mode, the shared weight and bias (copied,
            ``requires_grad`` kept), the chosen ``running_mean``/``running_var`` ``[C]`` and
            ``num_batches_tracked`` = that source's count (pooled: the sum of all counts).

        Raises:
            ValueError: If ``source`` is out of range, or ``weights`` is given with a
                ``source`` or is invalid.
        """
        if source is not None and weights is not None:
            raise ValueError(f"{self._describe()}: weights are only used when pooling (source=None)")
        if source is None:
            mean, var = self.pooled_statistics(weights)
            count = self.num_batches_tracked.sum()
        else:
            index = self._check_source(source)
            mean, var = self.running_mean[index], self.running_var[index]
            count = self.num_batches_tracked[index]
        bn = self.plain_type(
            self.num_features,
            eps=self.eps,
            momentum=self.momentum,
            affine=self.affine,
            track_running_stats=True,
            device=self.running_mean.device,
            dtype=self.running_mean.dtype,
        )
        with torch.no_grad():
            if self.affine:
                _copy_affine(self, bn)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
        bn.train(self.training)
        return bn

    def extra_repr(self) -> str:
        """Settings shown by ``print(model)``."""
        return (
            f"{self.num_features}, num_sources={self.num_sources}, eps={self.eps}, "
            f"momentum={self.momentum}, affine={self.affine}, plain_type={self.plain_type.__name__}"
        )


def _dataset_norm_layers(model: nn.Module) -> list[DatasetSpecificBatchNorm]:
    return [m for m in model.modules() if isinstance(m, DatasetSpecificBatchNorm)]


def set_active_source(model: nn.Module, index: int | None) -> int:
    """Make source ``index`` active in every :class:`DatasetSpecificBatchNorm` of ``model``.

    Every index is checked against every layer before any layer changes, so a bad index
    leaves the model as it was. A model without such layers is left alone, so a training
    loop can set the source whether or not the model was converted.

    Args:
        model: Any module (itself included in the search).
        index: Source index in ``[0, S)``; ``None`` clears it (forwards then raise).

    Returns:
        How many layers were set.

    Raises:
        ValueError: If ``index`` is not an int in range for some layer (the message names
            the layer and its number of sources).
    """
    layers = _dataset_norm_layers(model)
    checked = [None if index is None else layer._check_source(index) for layer in layers]
    for layer, value in zip(layers, checked, strict=True):
        layer._active_source = value
    return len(layers)


@contextlib.contextmanager
def active_source(model: nn.Module, index: int | None) -> Iterator[nn.Module]:
    """Context manager: source ``index`` is active inside, each layer's previous one after.

    Args:
        model: Any module; see :func:`set_active_source`.
        index: Source index in ``[0, S)`` (e.g. ``targets[0]["source"]``), or ``None``.

    Yields:
        ``model``.

    Raises:
        ValueError: As :func:`set_active_source`, on entry.
    """
    layers = _dataset_norm_layers(model)
    previous = [layer._active_source for layer in layers]
    set_active_source(model, index)
    try:
        yield model
    finally:
        # Per layer, so nested uses and layers set by hand come back exactly as they were.
        for layer, value in zip(layers, previous, strict=True):
            layer._active_source = value


def _replace(
    model: nn.Module, should_replace: type | tuple[type, ...], build: Callable[[nn.Module, str], nn.Module]
) -> nn.Module:
    """Swap every submodule whose exact type is in ``should_replace`` for ``build(module, name)``.

    A module reachable under several names (shared) is replaced by one new module everywhere.
    Returns the new root if ``model`` itself is replaced, else ``model``.
    """
    types = should_replace if isinstance(should_replace, tuple) else (should_replace,)
    if type(model) in types:
        return build(model, "")
    replaced: dict[int, nn.Module] = {}
    # Collect first: assigning children while named_modules() walks them is unsafe.
    parents = list(model.named_modules(remove_duplicate=False))
    for parent_name, parent in parents:
        # _modules, not named_children(): the latter skips a child listed twice in one parent.
        for child_name, child in list(parent._modules.items()):
            if child is None or type(child) not in types:
                continue
            if id(child) not in replaced:
                qualified = f"{parent_name}.{child_name}" if parent_name else child_name
                replaced[id(child)] = build(child, qualified)
            setattr(parent, child_name, replaced[id(child)])
    return model


def convert_to_dataset_norm(model: nn.Module, num_sources: int) -> nn.Module:
    """Replace every ``nn.BatchNorm1d``/``nn.BatchNorm2d`` by a :class:`DatasetSpecificBatchNorm`.

    In place and recursive; each new layer starts from the old one's affine and statistics
    for every source (:meth:`DatasetSpecificBatchNorm.from_batch_norm`) and remembers its
    type for :func:`fold_dataset_norm`. Only those exact types are converted:
    ``FrozenBatchNorm2d``, ``SyncBatchNorm``, GroupNorm, LayerNorm, subclasses and batch
    norms without running statistics are left as they are. Build the optimiser after
    converting (the affine parameters are new ``Parameter`` objects).

    Args:
        model: Module to convert (may itself be a batch-norm layer).
        num_sources: Data sources ``S`` (>= 1).

    Returns:
        ``model``, converted; a new layer if ``model`` itself was a batch-norm layer.

    Raises:
        ValueError: If ``num_sources < 1``.
    """
    if num_sources < 1:
        raise ValueError(f"num_sources must be >= 1; got {num_sources}")

    def build(bn: nn.Module, name: str) -> nn.Module:
        if not bn.track_running_stats:  # always batch statistics: nothing to specialise
            return bn
        return DatasetSpecificBatchNorm.from_batch_norm(bn, num_sources, layer_name=name)

    return _replace(model, _PLAIN_TYPES, build)


def fold_dataset_norm(
    model: nn.Module, source: int | None = None, weights: Sequence[float] | Tensor | None = None
) -> nn.Module:
    """Replace every :class:`DatasetSpecificBatchNorm` by the plain batch norm it came from.

    In place and recursive. Each layer becomes an ``nn.BatchNorm1d``/``nn.BatchNorm2d``
    (the type it was converted from) with the shared weight and bias and either source
    ``source``'s running statistics (use the source closest to the deployment domain) or,
    with ``source=None``, the pooled statistics of all sources weighted by ``weights`` or
    by each source's ``num_batches_tracked`` (see
    :meth:`DatasetSpecificBatchNorm.pooled_statistics`). The result's state-dict keys and
    shapes are those of the model before conversion.

    Args:
        model: Module holding converted layers (may itself be one).
        source: Source whose statistics to keep, or ``None`` to pool.
        weights: ``S`` mixture weights for pooling; only with ``source=None``.

    Returns:
        ``model``, folded; a new layer if ``model`` itself was a converted layer.

    Raises:
        ValueError: If ``source`` is out of range for a layer, or ``weights`` is given with
            a ``source`` or has the wrong length / invalid entries.
    """

    def build(layer: nn.Module, name: str) -> nn.Module:
        return layer.to_batch_norm(source=source, weights=weights)

    if source is not None and weights is not None:
        raise ValueError("weights are only used when pooling (source=None)")
    # Validate on every layer before changing any, so an error leaves the model usable.
    for layer in _dataset_norm_layers(model):
        if source is not None:
            layer._check_source(source)
        elif weights is not None:
            layer.pooled_statistics(weights)
    return _replace(model, DatasetSpecificBatchNorm, build)
