"""Start a run from another run's weights: ``model.init_from``.

Pre-training pays off only if fine-tuning can pick up what it learned, whatever the two
recipes' methods: UniPT pre-trains a dual encoder with contrastive + MLM losses and the
fine-tuning method adds a prototype decoder and classifiers. The transfer is therefore
by parameter *name and shape*, as detectron2's checkpointer and timm's
``load_pretrained`` match weights: every tensor of the new model whose name and shape
also exist in the source is copied, the rest keeps its fresh initialisation, and a
report lists what was loaded, skipped (same name, other shape), newly initialised and
left unused.

A source that fits less than half of the new model's parameters (by element count) is
another architecture (a person-search detector given to a dual encoder, a ResNet-50
tower given to a ResNet-18 one) and raises :class:`~personsearch_train.errors.ConfigError`
instead of silently training from scratch.

Only the model's weights move: the optimiser, schedule and losses (classifiers, memories)
start fresh, which is what a fine-tuning run wants. Resuming a run (``--resume``) restores
its own checkpoint afterwards and so wins over ``init_from``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from personsearch_train.errors import ConfigError

__all__ = ["MIN_LOADED_FRACTION", "InitReport", "initialise_from_checkpoint", "transfer_matching_weights"]

#: Share of the target's parameter elements a source must provide to count as the same model.
MIN_LOADED_FRACTION = 0.5


@dataclass
class InitReport:
    """What :func:`transfer_matching_weights` did.

    Attributes:
        source: Where the weights came from (a checkpoint path, for messages).
        loaded: Names copied from the source.
        skipped: ``(name, target shape, source shape)`` of names present in both with
            different shapes (kept freshly initialised).
        new: Names of the target absent from the source (kept freshly initialised).
        unused: Names of the source absent from the target.
        loaded_elements: Parameter and buffer elements copied.
        total_elements: Parameter and buffer elements of the target.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    loaded_elements: int = 0
    total_elements: int = 0

    @property
    def loaded_fraction(self) -> float:
        """Share of the target's elements that came from the source."""
        return self.loaded_elements / max(self.total_elements, 1)

    def format(self, *, max_names: int = 8) -> str:
        """A short multi-line report for the training log.

        Args:
            max_names: Names listed per category before "... and N more".
        """

        def listing(names: list[str]) -> str:
            shown = ", ".join(names[:max_names])
            more = len(names) - max_names
            return shown + (f", ... and {more} more" if more > 0 else "")

        lines = [
            f"init_from {self.source}: loaded {len(self.loaded)} tensors "
            f"({100.0 * self.loaded_fraction:.1f}% of the model's elements)"
        ]
        if self.skipped:
            skipped = [f"{n} {list(t)} vs {list(s)}" for n, t, s in self.skipped]
            lines.append(f"  skipped (shape differs) {len(skipped)}: {listing(skipped)}")
        if self.new:
            lines.append(f"  newly initialised {len(self.new)}: {listing(_module_prefixes(self.new))}")
        if self.unused:
            lines.append(
                f"  unused from the source {len(self.unused)}: {listing(_module_prefixes(self.unused))}"
            )
        return "\n".join(lines)


def _module_prefixes(names: list[str]) -> list[str]:
    """Collapse parameter names to their two-level module prefixes (``text_tower.encoder``...)."""
    seen: dict[str, int] = {}
    for name in names:
        prefix = ".".join(name.split(".")[:2])
        seen[prefix] = seen.get(prefix, 0) + 1
    return [f"{prefix} ({count})" if count > 1 else prefix for prefix, count in seen.items()]


def transfer_matching_weights(
    model: nn.Module, source: dict[str, torch.Tensor], *, source_name: str = "source"
) -> InitReport:
    """Copy every tensor of ``source`` whose name and shape exist in ``model``.

    Args:
        model: The freshly built model; updated in place.
        source: A state dict (parameters and buffers by name).
        source_name: How the report names the source.

    Returns:
        The report. Nothing is checked against :data:`MIN_LOADED_FRACTION` here.
    """
    target = model.state_dict()
    report = InitReport(source=source_name)
    update: dict[str, torch.Tensor] = {}
    for name, tensor in target.items():
        report.total_elements += tensor.numel()
        if name not in source:
            report.new.append(name)
            continue
        incoming = source[name]
        if tuple(incoming.shape) != tuple(tensor.shape):
            report.skipped.append((name, tuple(tensor.shape), tuple(incoming.shape)))
            continue
        update[name] = incoming.to(dtype=tensor.dtype)
        report.loaded.append(name)
        report.loaded_elements += tensor.numel()
    report.unused = [name for name in source if name not in target]
    model.load_state_dict(update, strict=False)
    return report


def initialise_from_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Initialise ``model`` from the weights of a run folder or checkpoint file.

    Args:
        model: The freshly built model; updated in place.
        path: A run folder (its ``latest`` checkpoint first: the end of pre-training,
            not a checkpoint picked on some other task's test score), a checkpoint file,
            or ``pretrained:NAME``.

    Returns:
        The report of what was loaded.

    Raises:
        ConfigError: The checkpoint is missing or damaged, or fits less than half of
            ``model`` (another architecture).
    """
    from personsearch_train.engine.checkpoint import read_checkpoint
    from personsearch_train.errors import TrainerError

    try:
        loaded = read_checkpoint(path, prefer="latest")
    except TrainerError as exc:
        raise ConfigError(f"model.init_from: {exc}") from None
    meta = loaded.metadata
    source_model = str((meta.get("model") or {}).get("name", "?"))
    method = meta.get("method")
    source_method = str(method.get("name", "?")) if isinstance(method, dict) else str(method or "?")
    report = transfer_matching_weights(
        model,
        loaded.model.state_dict(),
        source_name=f"{loaded.files.weights} ({source_method}, {source_model})",
    )
    if report.loaded_fraction < MIN_LOADED_FRACTION:
        raise ConfigError(
            f"model.init_from: {loaded.files.weights} holds a {source_model!r} model "
            f"(method {source_method!r}) whose weights fit only "
            f"{100.0 * report.loaded_fraction:.1f}% of this run's "
            f"{type(model).__name__} ({len(report.loaded)} tensors by name and shape; "
            f"{len(report.skipped)} with other shapes); pre-train with the same model.name and "
            "model.overrides as this recipe, or drop model.init_from"
        )
    return report
