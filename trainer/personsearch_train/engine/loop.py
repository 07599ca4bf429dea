"""The training loop: one :class:`Trainer` for every method.

What it does per step: move a batch to the device, run ``model.forward_train`` (plus
any hook's extra losses) under autocast where the device supports it, sum the
weighted losses, back-propagate (OIM tables update in backward), clip the global
gradient norm, step the optimiser and the per-iteration schedule.

Around that: checkpoints every ``train.checkpoint_every`` epochs (``latest``), the
best evaluation so far (``best``), evaluation every ``eval.every`` epochs writing a
predictions file, tqdm progress bars with ETA and running losses, TensorBoard
scalars, and a JSON-lines log of every step's losses (``train_log.jsonl``).

Resume is exact: the checkpoint stores the position (epoch, step within the epoch),
optimiser, scheduler, gradient-scaler and RNG states, hook state, and the model's
buffers (OIM lookup table and queue). Batches depend only on ``(seed, epoch)`` and
augmentation only on ``(seed, epoch, item)``, so a resumed run skips the steps it
already did and continues with the same batches. On the CPU with
``train.deterministic: true`` the losses match an uninterrupted run bit for bit.

Ctrl-C (SIGINT) finishes the current step, writes a resumable ``latest`` checkpoint
and stops; a second Ctrl-C aborts at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
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
from personsearch_train.data.samplers import GroupedBatchSampler
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.torch_dataset import PersonSearchTrainDataset, collate_batch
from personsearch_train.engine.checkpoint import (
    CheckpointFiles,
    capture_rng_state,
    load_metadata,
    load_resume_state,
    load_weights,
    restore_rng_state,
    save_checkpoint,
    versions,
)
from personsearch_train.engine.config import ExperimentConfig, check_paths, config_to_dict, dump_config
from personsearch_train.engine.distributed import DistInfo, all_reduce_mean, barrier, init_distributed
from personsearch_train.engine.hooks import TrainingHook
from personsearch_train.engine.host_memory import retain_freed_host_memory
from personsearch_train.engine.optim import build_optimizer, build_scheduler
from personsearch_train.engine.precision import autocast_context, autocast_dtype
from personsearch_train.errors import TrainerError

__all__ = ["TrainResult", "Trainer", "load_split"]


def load_split(dataset: str, root: str | Path, split: str) -> PersonSearchSplit:
    """Read a split with the reader registered for ``dataset`` (``cuhk_sysu`` or ``prw``)."""
    if dataset == "cuhk_sysu":
        from personsearch_train.data.cuhk_sysu import load_cuhk_sysu

        return load_cuhk_sysu(root, split)
    if dataset == "prw":
        from personsearch_train.data.prw import load_prw

        return load_prw(root, split)
    raise TrainerError(f"data.dataset: no reader for {dataset!r}")


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
    """What DDP wraps: the model's training forward plus hook losses, as ``forward``.

    DDP synchronises gradients of whatever ``forward`` touched, so hook modules (crop
    branches, projection heads) live here too.
    """

    def __init__(self, model: nn.Module, hook_modules: nn.ModuleDict, hooks: Sequence[TrainingHook]) -> None:
        super().__init__()
        self.model = model
        self.hook_modules = hook_modules
        self._hooks = list(hooks)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        losses = dict(self.model.forward_train(images, targets))
        for hook in self._hooks:
            for name, value in hook.extra_losses(self.model, images, targets).items():
                if name in losses:
                    raise TrainerError(
                        f"hook {type(hook).__name__} returned loss {name!r}, which already exists"
                    )
                losses[name] = value
        return losses


class Trainer:
    """Trains a person-search model as a recipe describes.

    Args:
        cfg: The resolved experiment config.
        run_dir: Output folder (checkpoints, ``config.yaml``, logs, predictions, ``tb/``).
        hooks: Method callbacks (see :mod:`personsearch_train.engine.hooks`).
        model: A ready model; built from ``cfg.model`` when None.
        train_split: Training split; read from ``cfg.data`` when None.
        test_split: Test split for evaluation; read from ``cfg.data`` when None and
            ``eval.every > 0``.
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
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.hooks = list(hooks)
        self._model = model
        self._train_split = train_split
        self._test_split = test_split
        self.progress = progress
        self.epoch = 0
        self.iter_in_epoch = 0
        self.global_step = 0
        self.best_value: float | None = None
        self._stop_requested = False
        self.dist: DistInfo | None = None

    # ----------------------------------------------------------------- set-up
    def _model_kwargs(self, split: PersonSearchSplit) -> dict[str, Any]:
        kwargs = dict(self.cfg.model.overrides)
        kwargs.setdefault("num_labelled_ids", max(1, split.num_identities))
        return kwargs

    def setup(self) -> None:
        """Check paths, join the process group, read data, build model and optimiser."""
        cfg = self.cfg
        if self._train_split is None:
            check_paths(cfg)
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

        if self._train_split is None:
            self._train_split = load_split(cfg.data.dataset, cfg.data.root, "train")
        self.train_split = self._train_split
        self.dataset = PersonSearchTrainDataset(
            self.train_split,
            flip_prob=cfg.data.flip_prob,
            seed=cfg.train.seed,
            use_identities=cfg.data.use_identities,
        )
        self.sampler = GroupedBatchSampler(
            num_items=len(self.dataset),
            batch_size=cfg.train.batch_size // self.dist.world_size,
            seed=cfg.train.seed,
            aspect_ratios=self.dataset.aspect_ratios() if cfg.data.aspect_grouping else None,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            max_batches=cfg.train.max_iters_per_epoch,
        )
        self.iters_per_epoch = self.sampler.batches_per_epoch()

        if self._model is None:
            from personsearch_train.models import create_model

            self.model_kwargs = self._model_kwargs(self.train_split)
            self._model = create_model(cfg.model.name, **self.model_kwargs)
            if cfg.model.backbone_weights:
                from personsearch_train.models import load_backbone_weights

                load_backbone_weights(self._model, Path(cfg.model.backbone_weights).expanduser())
        else:
            self.model_kwargs = dict(cfg.model.overrides)
        memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model = self._model.to(self.device, memory_format=memory_format)
        self.model.train()
        self.hook_modules = nn.ModuleDict({k: v for h in self.hooks for k, v in h.modules().items()}).to(
            self.device, memory_format=memory_format
        )
        self.train_module: nn.Module = _TrainForward(self.model, self.hook_modules, self.hooks)
        if self.dist.distributed:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.train_module,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.train.find_unused_parameters,
            )
        params = list(self.model.parameters()) + list(self.hook_modules.parameters())
        self.optimizer = build_optimizer(params, cfg.optim)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.schedule, iters_per_epoch=self.iters_per_epoch, epochs=cfg.train.epochs
        )
        self.amp_dtype = autocast_dtype(self.device, enabled=cfg.train.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # Different ranks draw different RoI samples; rank 0 keeps the seed itself.
        torch.manual_seed(cfg.train.seed + self.dist.rank)

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
            "dataset": {"name": self.cfg.data.dataset, "root": str(self.cfg.data.root)},
            "label_to_pid": self.train_split.label_to_pid.tolist(),
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
            "hook_modules": self.hook_modules.state_dict(),
            "hooks": [h.state_dict() for h in self.hooks],
        }

    def save(
        self, name: str = "latest", *, metrics: dict[str, float] | None = None, resumable: bool = True
    ) -> None:
        """Write checkpoint ``name`` (all ranks must call it; rank 0 writes)."""
        state = self._resume_state() if resumable else None
        if self.dist.is_main:
            save_checkpoint(
                self.run_dir, name, model=self.model, metadata=self._metadata(metrics), resume_state=state
            )
        barrier()

    def _restore(self) -> None:
        files = CheckpointFiles(self.run_dir, "latest")
        if not files.exists():
            raise TrainerError(f"--resume: {self.run_dir} has no latest checkpoint to resume from")
        meta = load_metadata(files)
        if meta.get("model", {}).get("name") != self.cfg.model.name:
            raise TrainerError(
                f"--resume: {files.metadata} is for model {meta.get('model', {}).get('name')!r}, "
                f"the recipe asks for {self.cfg.model.name!r}"
            )
        load_weights(self.model, files)
        state = load_resume_state(files)
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
        self._truncate_log(self.global_step)

    # ------------------------------------------------------------------ logs
    def _truncate_log(self, keep_steps: int) -> None:
        log = self.run_dir / "train_log.jsonl"
        if not self.dist.is_main or not log.is_file():
            return
        # Steps logged after the checkpoint (a crash between checkpoints) are redone.
        lines = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln)["step"] <= keep_steps]
        atomic_write_bytes(log, "".join(ln + "\n" for ln in lines).encode("utf-8"), sync_dir=True)

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
            if self._stop_requested:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt
            self._stop_requested = True
            if self.dist is None or self.dist.is_main:
                tqdm.write(
                    "Interrupted: finishing this step, then writing a resumable checkpoint "
                    "(Ctrl-C again aborts)"
                )

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

        Args:
            resume: Continue from ``run_dir/latest`` (exactly where it stopped).
            max_steps: If > 0, stop after this many optimiser steps *of this call*
                and write a resumable checkpoint (what Ctrl-C does).

        Returns:
            Steps, metrics and whether the run stopped early.
        """
        started = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.setup()
        if resume:
            self._restore()
        if self.dist.is_main:
            dump_config(self.cfg, self.run_dir / "config.yaml")
        for hook in self.hooks:
            hook.before_train(self)
        result = TrainResult(global_step=self.global_step)
        writer = self._open_writer()
        log_file = (
            (self.run_dir / "train_log.jsonl").open("a", encoding="utf-8") if self.dist.is_main else None
        )
        steps_this_call = 0
        try:
            with self._sigint_guard():
                while self.epoch < self.cfg.train.epochs:
                    epoch = self.epoch
                    self.dataset.set_epoch(epoch)
                    self.sampler.set_epoch(epoch, skip=self.iter_in_epoch)
                    for hook in self.hooks:
                        hook.before_epoch(self, epoch)
                    loader = torch.utils.data.DataLoader(
                        self.dataset,
                        batch_sampler=self.sampler,
                        collate_fn=collate_batch,
                        num_workers=self.cfg.data.num_workers,
                        pin_memory=self.device.type == "cuda",
                        # Its own generator: creating the iterator must not draw from the
                        # global RNG, or a resumed epoch would see different RoI samples.
                        generator=torch.Generator().manual_seed(self.cfg.train.seed * 7919 + epoch),
                    )
                    bar = tqdm(
                        total=self.iters_per_epoch,
                        initial=self.iter_in_epoch,
                        desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
                        disable=not (self.progress and self.dist.is_main),
                        dynamic_ncols=True,
                    )
                    running: dict[str, float] = {}
                    for images, targets in loader:
                        lr = self.optimizer.param_groups[0]["lr"]
                        values = self._step(images, targets)
                        self.scheduler.step()
                        self.global_step += 1
                        self.iter_in_epoch += 1
                        steps_this_call += 1
                        record = {"step": self.global_step, "epoch": epoch, "lr": lr, **values}
                        result.steps.append(record)
                        for k, v in values.items():
                            running[k] = v if k not in running else 0.9 * running[k] + 0.1 * v
                        bar.set_postfix(
                            {k: f"{v:.3f}" for k, v in running.items() if k != "grad_norm"}, refresh=False
                        )
                        bar.update(1)
                        if log_file is not None:
                            log_file.write(json.dumps(record) + "\n")
                            log_file.flush()
                        if writer is not None and self.global_step % max(1, self.cfg.train.log_every) == 0:
                            for k, v in values.items():
                                writer.add_scalar(f"train/{k}", v, self.global_step)
                            writer.add_scalar("train/lr", lr, self.global_step)
                        for hook in self.hooks:
                            hook.after_step(self, values)
                        if (max_steps and steps_this_call >= max_steps) or self._should_stop():
                            bar.close()
                            self.save("latest")
                            result.interrupted = True
                            return result
                    bar.close()
                    for hook in self.hooks:
                        hook.after_epoch(self, epoch)
                    self.epoch += 1
                    self.iter_in_epoch = 0
                    last = self.epoch == self.cfg.train.epochs
                    metrics = None
                    every = self.cfg.eval.every
                    if every > 0 and (self.epoch % every == 0 or last):
                        metrics = self.evaluate(writer=writer)
                        result.metrics.append({"epoch": self.epoch, **metrics})
                    every_ckpt = self.cfg.train.checkpoint_every
                    stop = self._should_stop()
                    is_best = metrics is not None and self._update_best(metrics)
                    if last or stop or (every_ckpt > 0 and self.epoch % every_ckpt == 0):
                        self.save("latest", metrics=metrics)
                    if is_best:
                        self.save("best", metrics=metrics, resumable=False)
                    if stop and not last:
                        result.interrupted = True
                        return result
        finally:
            result.global_step = self.global_step
            result.seconds = time.perf_counter() - started
            if log_file is not None:
                log_file.close()
            if writer is not None:
                writer.close()
        return result

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
        """Predict on the test split, write the predictions file and score it (rank 0).

        Returns:
            The scores (broadcast to every rank).
        """
        scores: dict[str, float] = {}
        if self.dist.is_main:
            from personsearch_train.engine.inference import predict_split
            from personsearch_train.evaluation.scoring import score_predictions

            if self._test_split is None:
                self._test_split = load_split(self.cfg.data.dataset, self.cfg.data.root, "test")
            predictions = predict_split(
                self.model,
                self._test_split,
                device=self.device,
                batch_size=self.cfg.eval.batch_size,
                query_context=self.cfg.eval.cbgm,
                progress=self.progress,
            )
            predictions.save(self.run_dir / "predictions" / f"epoch_{self.epoch:03d}.npz")
            scores = score_predictions(
                self._test_split,
                predictions,
                gallery_size=self.cfg.eval.gallery_size,
                multi_view=self.cfg.eval.multi_view,
                cbgm=self.cfg.eval.cbgm,
            )
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
