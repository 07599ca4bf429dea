"""The training loop: one :class:`Trainer` for every method.

The trainer builds everything from the recipe's method
(:class:`~personsearch_train.methods.base.TrainingMethod`), in this order, each step a
method of its own: the training data (:meth:`Trainer.build_train_data`), the model
(:meth:`Trainer.build_model`), the method's losses (:meth:`Trainer.build_losses`), the
hooks (:meth:`Trainer.build_hooks`), then the optimiser and schedule. A method changes
what these return, never the loop.

What it does per step: move a batch to the device, run ``model.forward_train`` and the
method's losses on its outputs (plus any hook's extra losses) under autocast where the
device supports it, sum the weighted losses, back-propagate (OIM tables update in
backward), clip the global gradient norm, step the optimiser and the per-iteration
schedule. Every ``eval.every`` epochs it runs the method's inference into the method's
evaluator (:func:`~personsearch_train.engine.evaluation.run_evaluation`).

Around that: checkpoints every ``train.checkpoint_every`` epochs (``latest``), the
best evaluation so far (``best``), evaluation every ``eval.every`` epochs writing a
predictions file, tqdm progress bars with ETA and running losses, TensorBoard
scalars, and a JSON-lines log of every step's losses (``train_log.jsonl``).

Resume is exact: the checkpoint stores the position (epoch, step within the epoch),
optimiser, scheduler, gradient-scaler and RNG states, the method's loss state (OIM
lookup table and queue) and hook state. Batches depend only on ``(seed, epoch)`` and
augmentation only on ``(seed, epoch, item)``, so a resumed run skips the steps it
already did and continues with the same batches. On the CPU with
``train.deterministic: true`` the losses match an uninterrupted run bit for bit.

Ctrl-C (SIGINT) finishes the current step, writes a resumable ``latest`` checkpoint
and stops; a second Ctrl-C aborts at once, except while a checkpoint is being written,
which is finished first.

Run folders: a run never writes into a folder that holds another run's output.
Without ``resume`` the folder must hold none of what a run writes (checkpoints,
``config.yaml``, logs, TensorBoard events, predictions; :func:`run_outputs`), and with
``resume`` it must hold a complete ``latest`` checkpoint (:func:`check_run_folder`).
:func:`clear_run_outputs` deletes exactly those files, never anything else
(``personsearch train --overwrite``).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import re
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.engine.checkpoint import (
    CheckpointError,
    CheckpointFiles,
    capture_rng_state,
    load_metadata,
    load_model_weights,
    load_resume_state,
    restore_rng_state,
    save_checkpoint,
    versions,
)
from personsearch_train.engine.config import ExperimentConfig, check_paths, config_to_dict, dump_config
from personsearch_train.engine.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from personsearch_train.engine.evaluation import run_evaluation
from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.engine.host_memory import retain_freed_host_memory
from personsearch_train.engine.optim import build_optimizer, build_scheduler
from personsearch_train.engine.precision import autocast_context, autocast_dtype
from personsearch_train.engine.weight_transfer import InitReport
from personsearch_train.errors import TrainerError
from personsearch_train.methods import MethodLosses, TrainingData, TrainingMethod, build_method

__all__ = ["TrainResult", "Trainer", "check_run_folder", "clear_run_outputs", "run_outputs"]

#: Checkpoints a run writes (``NAME.safetensors``, ``NAME.json``, ``NAME.state.pt``).
_CHECKPOINT_NAMES = ("latest", "best")
_CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".state.pt")
#: Other files a run writes at the top of its folder.
_RUN_FILES = ("config.yaml", "train_log.jsonl", "metrics.jsonl")
#: Sub-folders a run writes into, with the names of the files it puts there.
_RUN_SUBFOLDERS = (("tb", "events.out.tfevents.*"), ("predictions", "epoch_*.npz"))
#: The temporary name ``atomic_replace`` gives a file while writing it: ``.NAME.XXXXXXXX.tmp``.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[^.]+\.tmp$")


def _is_run_file(name: str, patterns: Sequence[str]) -> bool:
    """True for a file a run writes, or the temporary file it left while writing one."""
    match = _TEMPORARY.match(name)
    target = match["target"] if match else name
    return any(fnmatch.fnmatchcase(target, pattern) for pattern in patterns)


def _is_run_config(path: Path) -> bool:
    """True when ``path`` is a resolved config a run wrote (every section of a recipe)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and set(data) == set(config_to_dict(ExperimentConfig()))


def run_outputs(run_dir: str | Path) -> list[Path]:
    """The files in ``run_dir`` that a training run writes, and nothing else.

    Those are the ``latest`` and ``best`` checkpoints, ``config.yaml`` (when it is a
    resolved config), ``train_log.jsonl``, ``metrics.jsonl``, TensorBoard event files in
    ``tb/``, ``predictions/epoch_*.npz``, and the temporary files of any of these that a
    killed run left behind. Other files (a user's notes, a ``config.yaml`` of another
    program) are never listed.

    Args:
        run_dir: The run folder; a missing one has no outputs.

    Returns:
        The paths, sorted (top-level files first, then each sub-folder's).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    top = [f"{name}{suffix}" for name in _CHECKPOINT_NAMES for suffix in _CHECKPOINT_SUFFIXES]
    top += _RUN_FILES
    found = [
        entry for entry in sorted(run_dir.iterdir()) if entry.is_file() and _is_run_file(entry.name, top)
    ]
    config = run_dir / "config.yaml"
    if config in found and not _is_run_config(config):
        found.remove(config)
    for sub, pattern in _RUN_SUBFOLDERS:
        folder = run_dir / sub
        if folder.is_dir():
            found += [p for p in sorted(folder.iterdir()) if p.is_file() and _is_run_file(p.name, [pattern])]
    return found


def _describe_outputs(run_dir: Path, outputs: Sequence[Path]) -> str:
    """``latest.*, best.*, config.yaml, 3 files in tb/`` for a message."""
    parts: list[str] = []
    for name in _CHECKPOINT_NAMES:
        if any(p.parent == run_dir and p.name.startswith(f"{name}.") for p in outputs):
            parts.append(f"{name}.*")
    parts += [p.name for p in outputs if p.parent == run_dir and p.name in _RUN_FILES]
    for sub, _ in _RUN_SUBFOLDERS:
        count = sum(p.parent == run_dir / sub for p in outputs)
        if count:
            parts.append(f"{count} file{'s' if count > 1 else ''} in {sub}/")
    temporary = sum(p.parent == run_dir and _TEMPORARY.match(p.name) is not None for p in outputs)
    if temporary:
        parts.append(f"{temporary} unfinished temporary file{'s' if temporary > 1 else ''}")
    return ", ".join(parts)


def check_run_folder(run_dir: str | Path, *, resume: bool, overwrite: bool = False) -> None:
    """Refuse a run folder in which training would overwrite or mix with another run.

    Args:
        run_dir: The run folder (``--out``).
        resume: Whether the run continues from the folder's ``latest`` checkpoint.
        overwrite: The caller will delete the folder's run outputs
            (:func:`clear_run_outputs`) before training, so they are no reason to refuse.

    Raises:
        TrainerError: ``run_dir`` is a file; a ``config.yaml`` in it was not written by
            the trainer; without ``resume`` or ``overwrite``, it holds run outputs
            (:func:`run_outputs`); with ``resume``, it has no complete ``latest``
            checkpoint. Each message says what is there and what to do; nothing is
            changed.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainerError(f"run folder {run_dir} is a file, not a folder; give another --out")
    config = run_dir / "config.yaml"
    if config.is_file() and not _is_run_config(config):
        raise TrainerError(
            f"{config} is not a config written by personsearch train, and a run would replace it; "
            "give another --out (nothing was changed)"
        )
    outputs = run_outputs(run_dir)
    latest, best = CheckpointFiles(run_dir, "latest"), CheckpointFiles(run_dir, "best")
    if resume:
        if latest.exists():
            return
        if best.exists():
            raise TrainerError(
                f"--resume: {run_dir} cannot be resumed exactly: its latest checkpoint is missing "
                f"({', '.join(latest.missing())}), and best.* holds the best weights but no optimiser, "
                "schedule or data-order state. Nothing was changed (best.* still works with eval and "
                "export); start a new run with another --out"
            )
        if latest.weights.exists() or latest.metadata.exists():
            raise TrainerError(
                f"--resume: the latest checkpoint in {run_dir} is incomplete "
                f"({', '.join(latest.missing())} missing); restore the missing file from a copy, or start "
                "a new run with another --out (nothing was changed)"
            )
        if outputs:
            raise TrainerError(
                f"--resume: {run_dir} holds no checkpoint to resume, only "
                f"{_describe_outputs(run_dir, outputs)} (the run stopped before its first checkpoint); "
                "start it again with --overwrite, which deletes only these files, or use another --out"
            )
        raise TrainerError(f"--resume: {run_dir} holds no training run; start the run without --resume")
    if outputs and not overwrite:
        choices = ["continue it with --resume"] if latest.exists() else []
        choices += [
            "start a separate run with another --out",
            "start again here with --overwrite, which deletes only these files",
        ]
        raise TrainerError(
            f"{run_dir} already holds a training run's output ({_describe_outputs(run_dir, outputs)}); "
            f"nothing was changed. To go on: {'; or '.join(choices)}"
        )


def clear_run_outputs(run_dir: str | Path) -> list[Path]:
    """Delete the files a training run wrote in ``run_dir`` (:func:`run_outputs`), nothing else.

    ``tb/`` and ``predictions/`` are removed too when that leaves them empty.

    Args:
        run_dir: The run folder.

    Returns:
        The files deleted.
    """
    run_dir = Path(run_dir)
    outputs = run_outputs(run_dir)
    for path in outputs:
        path.unlink(missing_ok=True)
    for sub, _ in _RUN_SUBFOLDERS:
        folder = run_dir / sub
        # Not empty (a user's file) or already gone (another rank of a torchrun launch
        # cleared it): either way there is nothing more to do.
        with contextlib.suppress(OSError):
            folder.rmdir()
    return outputs


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` did.

    Attributes:
        steps: Per optimiser step of this process's run: ``{"step", "epoch", "lr", <loss>: value, "total"}``
            (losses averaged over ranks).
        metrics: Per evaluation: ``{"epoch": e, <metric>: value}``.
        interrupted: True if stopped early (Ctrl-C or ``max_steps``); ``latest`` is resumable.
        global_step: Optimiser steps done in total, including those before a resume.
        seconds: Wall time of this call.
    """

    steps: list[dict[str, float]] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)
    interrupted: bool = False
    global_step: int = 0
    seconds: float = 0.0


class _TrainForward(nn.Module):
    """What DDP wraps: the model's training forward, the method's losses and hook losses.

    DDP synchronises gradients of whatever ``forward`` touched, so the method's loss
    modules and hook modules (crop branches, projection heads) live here too.
    """

    def __init__(
        self,
        model: nn.Module,
        losses: MethodLosses,
        hook_modules: nn.ModuleDict,
        hooks: Sequence[TrainingHook],
    ) -> None:
        super().__init__()
        self.model = model
        self.losses = losses
        self.hook_modules = hook_modules
        self._hooks = list(hooks)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        for hook in self._hooks:
            hook.before_forward(self.model, images, targets)
        outputs = self.model.forward_train(images, targets)
        # Person-search models return TrainingOutputs, dual encoders PairTrainingOutputs;
        # the loop needs only the model's own loss terms, the method reads the rest.
        if not isinstance(getattr(outputs, "losses", None), dict):
            raise TrainerError(
                f"{type(self.model).__name__}.forward_train returned {type(outputs).__name__}; "
                "a model trained by the engine returns an object with a 'losses' dict "
                "(personsearch_train.models.TrainingOutputs for person-search models)"
            )
        losses = dict(outputs.losses)
        extra = [(type(self.losses).__name__, self.losses(self.model, outputs, images, targets))]
        extra += [(type(h).__name__, h.extra_losses(self.model, images, targets)) for h in self._hooks]
        for owner, terms in extra:
            for name, value in terms.items():
                if name in losses:
                    raise TrainerError(f"{owner} returned loss {name!r}, which already exists")
                losses[name] = value
        return losses


class Trainer:
    """Trains a person-search model as a recipe describes.

    Args:
        cfg: The resolved experiment config.
        run_dir: Output folder (checkpoints, ``config.yaml``, logs, predictions, ``tb/``).
        hooks: Callbacks run after the method's own (see :mod:`personsearch_train.engine.hooks`).
        model: A ready model; built by the method when None.
        train_split: Primary training split; read from ``cfg.data`` when None.
        test_split: Test split for evaluation; built by the method when None and
            ``eval.every > 0``.
        method: A ready method; built from ``cfg.method`` and ``cfg.method_args`` when None.
        progress: Show progress bars (main rank only).

    Example:
        >>> cfg = load_config("synthetic_instant", data_root="synthetic/")  # doctest: +SKIP
        >>> result = Trainer(cfg, run_dir=Path("runs/instant")).fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        run_dir: Path,
        hooks: Sequence[TrainingHook] = (),
        model: nn.Module | None = None,
        train_split: PersonSearchSplit | None = None,
        test_split: PersonSearchSplit | None = None,
        method: TrainingMethod | None = None,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self._extra_hooks = list(hooks)
        self.hooks: list[TrainingHook] = []
        self.method = method if method is not None else build_method(cfg.method, cfg.method_args)
        self._model = model
        self._train_split = train_split
        self._test_split = test_split
        self.progress = progress
        self.epoch = 0
        self.iter_in_epoch = 0
        self.global_step = 0
        self.best_value: float | None = None
        self._stop_requested = False
        #: What ``model.init_from`` loaded (None without it).
        self.init_report: InitReport | None = None
        self._saving = False
        self._abort_after_save = False
        self.dist: DistInfo | None = None

    # ----------------------------------------------------------------- set-up
    def setup(self) -> None:
        """Check paths, join the process group, then build data, model, losses, hooks, optimiser."""
        cfg = self.cfg
        if self._train_split is None:
            check_paths(cfg)
        self._init_process()
        self.data = self.build_train_data()
        self.dataset = self.data.dataset
        self.sampler = self.data.sampler
        self.train_split = self.data.splits[0]
        self.iters_per_epoch = self.sampler.batches_per_epoch()
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model = self.build_model().to(self.device, memory_format=memory_format)
        self.model.train()
        self.losses = self.build_losses().to(self.device)
        self.hooks = self.build_hooks()
        self.hook_modules = nn.ModuleDict({k: v for h in self.hooks for k, v in h.modules().items()}).to(
            self.device, memory_format=memory_format
        )
        self.train_module: nn.Module = _TrainForward(self.model, self.losses, self.hook_modules, self.hooks)
        if self.dist.distributed:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.train_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.train.find_unused_parameters,
            )
        modules = {"model": self.model, "losses": self.losses, "hooks": self.hook_modules}
        params = self.method.parameter_groups(cfg, modules) or [
            p for module in modules.values() for p in module.parameters()
        ]
        self.optimizer = build_optimizer(params, cfg.optim)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, iters_per_epoch=self.iters_per_epoch, epochs=cfg.train.epochs
        )
        self.amp_dtype = autocast_dtype(self.device, enabled=cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # Different ranks draw different RoI samples; rank 0 keeps the seed itself.
        torch.manual_seed(cfg.train.seed + self.dist.rank)

    def _init_process(self) -> None:
        """Join the process group, pick the device, set threads, allocator and seeds."""
        cfg = self.cfg
        self.dist = init_distributed(cfg.train.device)
        if cfg.train.batch_size % self.dist.world_size:
            raise TrainerError(
                f"train.batch_size {cfg.train.batch_size} (global batch) is not divisible by "
                f"{self.dist.world_size} processes"
            )
        self.device = self.dist.device
        if self.device.type == "cpu":
            # Without this every step page-faults its multi-MiB feature maps back in:
            # 1.08x steps/s for seqnet_small on 2 cores with channels-last weights
            # (benchmarks/train_step_memory.py).
            retain_freed_host_memory()
        if cfg.train.cpu_threads > 0:
            torch.set_num_threads(cfg.train.cpu_threads)
        torch.manual_seed(cfg.train.seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False

    def build_train_data(self) -> TrainingData:
        """The method's training data, with this rank's sampler."""
        return self.method.build_train_data(
            self.cfg, rank=self.dist.rank, world_size=self.dist.world_size, train_split=self._train_split
        )

    def build_model(self) -> nn.Module:
        """The method's model (or the one given to the constructor)."""
        if self._model is not None:
            self.model_kwargs = dict(self.cfg.model.overrides)
            return self._model
        self.model_kwargs = self.method.model_arguments(self.cfg, self.data)
        model = self.method.build_model(self.cfg, self.data)
        if self.cfg.model.init_from:
            from personsearch_train.engine.weight_transfer import initialise_from_checkpoint

            self.init_report = initialise_from_checkpoint(model, self.cfg.model.init_from)
            if self.dist is None or self.dist.is_main:
                print(self.init_report.format(), file=sys.stderr, flush=True)
        return model

    def build_losses(self) -> MethodLosses:
        """The method's losses on the model's training outputs."""
        losses = self.method.build_losses(self.cfg, self.model, self.data)
        if not isinstance(losses, nn.Module):
            raise TrainerError(
                f"method {self.method.name!r}: build_losses must return an nn.Module, "
                f"got {type(losses).__name__}"
            )
        return losses

    def build_hooks(self) -> list[TrainingHook]:
        """The method's hooks, then those given to the constructor."""
        return [*self.method.build_hooks(self.cfg, self.model, self.data), *self._extra_hooks]

    # ------------------------------------------------------------ checkpoints
    def _metadata(self, metrics: dict[str, float] | None = None) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            # The full argument list where the model has one, so the checkpoint keeps
            # describing this architecture if a builder's defaults change later.
            "model": {
                "name": self.cfg.model.name,
                "kwargs": getattr(self.model, "constructor_arguments", self.model_kwargs),
            },
            "method": {"name": self.method.name, "args": self.method.settings()},
            "dataset": {"name": self.cfg.data.dataset, "root": str(self.cfg.data.root)},
            "label_to_pid": self.data.label_to_pid.tolist(),
            "epoch": self.epoch,
            "iter_in_epoch": self.iter_in_epoch,
            "global_step": self.global_step,
            "metrics": metrics or {},
            "versions": versions(),
        }

    def _resume_state(self) -> dict[str, Any]:
        rng = capture_rng_state()
        if self.dist.distributed:
            gathered: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(gathered, rng)
            rng_per_rank = gathered
        else:
            rng_per_rank = [rng]
        return {
            "epoch": self.epoch,
            "iter_in_epoch": self.iter_in_epoch,
            "global_step": self.global_step,
            "best_value": self.best_value,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_per_rank,
            "method_losses": self.losses.state_dict(),
            "hook_modules": self.hook_modules.state_dict(),
            "hooks": [h.state_dict() for h in self.hooks],
        }

    def save(
        self, name: str = "latest", *, metrics: dict[str, float] | None = None, resumable: bool = True
    ) -> None:
        """Write checkpoint ``name`` (all ranks must call it; rank 0 writes).

        A Ctrl-C while it writes takes effect once the checkpoint is complete, so an
        impatient second Ctrl-C cannot leave new weights beside old metadata.
        """
        state = self._resume_state() if resumable else None
        self._saving = True
        try:
            if self.dist.is_main:
                save_checkpoint(
                    self.run_dir, name, model=self.model, metadata=self._metadata(metrics), resume_state=state
                )
            barrier()
        finally:
            self._saving = False
        if self._abort_after_save:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

    def _restore(self) -> None:
        # fit() has checked that a complete latest checkpoint is there.
        files = CheckpointFiles(self.run_dir, "latest")
        meta = load_metadata(files)
        saved_model = (meta.get("model") or {}).get("name")
        if saved_model != self.cfg.model.name:
            raise TrainerError(
                f"--resume: {files.metadata} is for model {saved_model!r}, "
                f"the recipe asks for {self.cfg.model.name!r}"
            )
        # Checkpoints older than the method registry name no method: seqnet_oim trained them.
        saved_method = (meta.get("method") or {}).get("name", "seqnet_oim")
        if saved_method != self.method.name:
            raise TrainerError(
                f"--resume: {files.metadata} was trained by method {saved_method!r}, "
                f"the recipe asks for {self.method.name!r}"
            )
        legacy_loss_state = load_model_weights(self.model, files, self.method)
        state = load_resume_state(files)
        try:
            self.losses.load_state_dict(state.get("method_losses", legacy_loss_state))
        except RuntimeError as exc:
            raise TrainerError(
                f"--resume: the method's loss state in {files.folder} does not fit the recipe's "
                f"method_args ({exc}); resume with the settings the run started with"
            ) from None
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.hook_modules.load_state_dict(state["hook_modules"])
            for hook, hook_state in zip(self.hooks, state["hooks"], strict=False):
                hook.load_state_dict(hook_state)
            self.epoch = int(state["epoch"])
            self.iter_in_epoch = int(state["iter_in_epoch"])
            self.global_step = int(state["global_step"])
            self.best_value = state["best_value"]
            rngs = state["rng"]
            restore_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as exc:
            # A state written by another recipe (other hooks or parameter groups), or one
            # whose pieces were edited: the optimiser and torch say so in their own words.
            detail = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise CheckpointError(
                f"--resume: the resume state in {files.state} does not fit this run ({detail}); resume "
                f"with the recipe and settings the run started with ({self.run_dir / 'config.yaml'}), "
                "or start a new run with another --out"
            ) from None
        self._truncate_logs(self.global_step)

    # ------------------------------------------------------------------ logs
    def _truncate_logs(self, keep_steps: int) -> None:
        """Drop log lines written after the checkpoint being resumed, and any torn line.

        Steps (and evaluations) logged after the checkpoint, by a run that crashed or
        was killed between checkpoints, are redone by the resumed run; a line a killed
        process left half-written is not JSON and is dropped too.
        """
        if not self.dist.is_main:
            return
        for name in ("train_log.jsonl", "metrics.jsonl"):
            log = self.run_dir / name
            if not log.is_file():
                continue
            kept = []
            for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    step = json.loads(line).get("step")
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(step, int) and step <= keep_steps:
                    kept.append(line + "\n")
            atomic_write_bytes(log, "".join(kept).encode("utf-8"), sync_dir=True)

    def _open_writer(self) -> Any:
        if not self.dist.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is an optional extra
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tb"), purge_step=self.global_step or None)

    @contextlib.contextmanager
    def _sigint_guard(self) -> Iterator[None]:
        """First Ctrl-C: stop after this step with a checkpoint; second: abort."""
        try:
            previous = signal.getsignal(signal.SIGINT)
        except ValueError:
            previous = None

        def handler(signum: int, frame: Any) -> None:
            main = self.dist is None or self.dist.is_main
            if not self._stop_requested:
                self._stop_requested = True
                if main:
                    tqdm.write(
                        "Interrupted: finishing this step, then writing a resumable checkpoint "
                        "(Ctrl-C again aborts)"
                    )
                return
            if self._saving:
                # Aborting between the renames of a checkpoint's files would leave new
                # weights beside old metadata; save() raises once they are all in place.
                self._abort_after_save = True
                if main:
                    tqdm.write("Aborting as soon as the checkpoint being written is complete")
                return
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt

        installed = False
        try:
            signal.signal(signal.SIGINT, handler)
            installed = True
        except ValueError:  # not the main thread: no signal handling
            pass
        try:
            yield
        finally:
            if installed and previous is not None:
                signal.signal(signal.SIGINT, previous)

    def _should_stop(self) -> bool:
        if not self.dist.distributed:
            return self._stop_requested
        flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    # ------------------------------------------------------------------ step
    def _step(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, float]:
        images = [img.to(self.device, non_blocking=True) for img in images]
        targets = [
            {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in t.items()}
            for t in targets
        ]
        with autocast_context(self.device, self.amp_dtype):
            losses = self.train_module(images, targets)
        total = sum(v.float() for v in losses.values())
        if not math.isfinite(float(total.detach())):
            raise TrainerError(
                f"training diverged: loss is {float(total)} at step {self.global_step + 1} "
                f"({', '.join(f'{k}={float(v):.4g}' for k, v in losses.items())}); "
                "lower optim.lr or check the data"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        grad_norm = float("nan")
        if self.cfg.train.clip_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.train.clip_grad_norm))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = {k: float(v.detach()) for k, v in losses.items()}
        values["total"] = float(total.detach())
        values = all_reduce_mean(values, self.device)
        if math.isfinite(grad_norm):
            values["grad_norm"] = grad_norm
        return values

    # ------------------------------------------------------------------- fit
    def fit(self, *, resume: bool = False, max_steps: int = 0) -> TrainResult:
        """Train to the end of the schedule (or until interrupted).

        The steps, in order: check the run folder (:func:`check_run_folder`),
        :meth:`setup` (build everything), restore ``latest`` when resuming, then per
        epoch :meth:`train_epoch` and :meth:`end_epoch` (hooks, evaluation, checkpoints).

        Args:
            resume: Continue from ``run_dir/latest`` (exactly where it stopped).
            max_steps: If > 0, stop after this many optimiser steps *of this call*
                and write a resumable checkpoint (what Ctrl-C does).

        Returns:
            Steps, metrics and whether the run stopped early.

        Raises:
            TrainerError: The run folder holds another run's output (without
                ``resume``) or no complete ``latest`` checkpoint (with it), a damaged
                checkpoint, a recipe that does not fit the checkpoint, or bad data.
        """
        started = time.perf_counter()
        # Before anything is written (every rank checks before the process group forms,
        # so rank 0 cannot have written yet).
        check_run_folder(self.run_dir, resume=resume)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.setup()
        if resume:
            self._restore()
        if self.dist.is_main:
            dump_config(self.cfg, self.run_dir / "config.yaml")
        for hook in self.hooks:
            hook.before_train(self)
        result = TrainResult(global_step=self.global_step)
        self._writer = self._open_writer()
        self._log_file = (
            (self.run_dir / "train_log.jsonl").open("a", encoding="utf-8") if self.dist.is_main else None
        )
        self._max_steps = max_steps
        self._steps_this_call = 0
        try:
            with self._sigint_guard():
                while self.epoch < self.cfg.train.epochs:
                    if not self.train_epoch(result) or not self.end_epoch(result):
                        result.interrupted = True
                        break
        finally:
            result.global_step = self.global_step
            result.seconds = time.perf_counter() - started
            if self._log_file is not None:
                self._log_file.close()
            if self._writer is not None:
                self._writer.close()
        return result

    def _loader(self, epoch: int) -> torch.utils.data.DataLoader:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch, skip=self.iter_in_epoch)
        return torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            collate_fn=self.data.collate,
            num_workers=self.cfg.data.num_workers,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating the iterator must not draw from the global RNG,
            # or a resumed epoch would see different RoI samples.
            generator=torch.Generator().manual_seed(self.cfg.train.seed * 7919 + epoch),
        )

    def train_epoch(self, result: TrainResult) -> bool:
        """Run the rest of epoch ``self.epoch``: its remaining steps, with logs and hooks.

        Returns:
            False when training stopped inside the epoch (``max_steps`` or Ctrl-C; a
            resumable ``latest`` was written), True when the epoch's last step ran.
        """
        epoch = self.epoch
        for hook in self.hooks:
            hook.before_epoch(self, epoch)
        loader = self._loader(epoch)
        bar = tqdm(
            total=self.iters_per_epoch,
            initial=self.iter_in_epoch,
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            disable=not (self.progress and self.dist.is_main),
            dynamic_ncols=True,
        )
        running: dict[str, float] = {}
        try:
            for images, targets in loader:
                lr = self.optimizer.param_groups[0]["lr"]
                values = self._step(images, targets)
                self.scheduler.step()
                self.global_step += 1
                self.iter_in_epoch += 1
                self._steps_this_call += 1
                record = {"step": self.global_step, "epoch": epoch, "lr": lr, **values}
                result.steps.append(record)
                for k, v in values.items():
                    running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
                bar.set_postfix(
                    {k: f"{v:.3f}" for k, v in running.items() if k != "grad_norm"}, refresh=False
                )
                bar.update(1)
                self._log_step(record, values, lr)
                for hook in self.hooks:
                    hook.after_step(self, values)
                if (self._max_steps and self._steps_this_call >= self._max_steps) or self._should_stop():
                    bar.close()
                    self.save("latest")
                    return False
        finally:
            bar.close()
        return True

    def _log_step(self, record: dict[str, Any], values: dict[str, float], lr: float) -> None:
        if self._log_file is not None:
            self._log_file.write(json.dumps(record) + "\n")
            self._log_file.flush()
        if self._writer is not None and self.global_step % max(1, self.cfg.train.log_every) == 0:
            for k, v in values.items():
                self._writer.add_scalar(f"train/{k}", v, self.global_step)
            self._writer.add_scalar("train/lr", lr, self.global_step)

    def end_epoch(self, result: TrainResult) -> bool:
        """After an epoch's last step: hooks, evaluation when due, checkpoints.

        Returns:
            False when a stop was requested (a resumable ``latest`` was written) and
            epochs remain, True otherwise.
        """
        for hook in self.hooks:
            hook.after_epoch(self, self.epoch)
        self.epoch += 1
        self.iter_in_epoch = 0
        last = self.epoch == self.cfg.train.epochs
        metrics = None
        every = self.cfg.eval.every
        if every > 0 and (self.epoch % every == 0 or last):
            metrics = self.evaluate(writer=self._writer)
            result.metrics.append({"epoch": self.epoch, **metrics})
        every_ckpt = self.cfg.train.checkpoint_every
        stop = self._should_stop()
        is_best = metrics is not None and self._update_best(metrics)
        if last or stop or (every_ckpt > 0 and self.epoch % every_ckpt == 0):
            self.save("latest", metrics=metrics)
        if is_best:
            self.save("best", metrics=metrics, resumable=False)
        return not (stop and not last)

    def _update_best(self, metrics: dict[str, float]) -> bool:
        key = self.cfg.eval.best_metric
        if key not in metrics:
            raise TrainerError(
                f"eval.best_metric: {key!r} is not among the scores ({', '.join(sorted(metrics))})"
            )
        value = float(metrics[key])
        if self.best_value is None or value > self.best_value:
            self.best_value = value
            return True
        return False

    # -------------------------------------------------------------- evaluate
    def evaluate(self, *, writer: Any = None) -> dict[str, float]:
        """Score the model with the method's evaluator on its test data (rank 0).

        The method's ``inference`` output goes through the evaluator's ``reset /
        process / evaluate``; an evaluator with a ``save(path)`` method (the default
        person-search one writes the predictions file) is asked to keep its outputs in
        ``predictions/epoch_NNN.npz``.

        Returns:
            The scores (broadcast to every rank).
        """
        scores: dict[str, float] = {}
        if self.dist.is_main:
            if self._test_split is None:
                self._test_split = self.method.build_test_data(self.cfg)
            evaluator = self.method.build_evaluator(self.cfg, self._test_split)
            scores = run_evaluation(
                self.method,
                self.model,
                self._test_split,
                evaluator,
                self.cfg,
                device=self.device,
                progress=self.progress,
            )
            save = getattr(evaluator, "save", None)
            if callable(save):
                save(self.run_dir / "predictions" / f"epoch_{self.epoch:03d}.npz")
            line = json.dumps({"epoch": self.epoch, "step": self.global_step, **scores})
            with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
            if self.progress:
                tqdm.write(f"epoch {self.epoch}: " + ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
            if writer is not None:
                for k, v in scores.items():
                    writer.add_scalar(f"eval/{k}", v, self.epoch)
        if self.dist.distributed:
            box = [scores]
            dist.broadcast_object_list(box, src=0)
            scores = box[0]
        return scores
