"""Experiment configuration: typed dataclasses loaded from YAML recipes.

A recipe is a YAML mapping whose keys must match the dataclass fields below; an
unknown key, a value of the wrong type, a non-finite number or one out of range raises
:class:`ConfigError` naming the dotted key, before any training starts. A recipe file
that holds no settings (empty, only comments, ``{}``) is refused rather than read as
"all defaults", which would be a full-size ``seqnet_r50`` run; a partial recipe keeps
the defaults of the keys it leaves out (:func:`describe_config` says which).
Command-line overrides use the same dotted keys (``--set optim.lr=0.01``); their values
are parsed as YAML scalars, so ``--set train.amp=false`` and
``--set schedule.milestones=[8,12]`` work.

The resolved configuration is written beside every run (``config.yaml``), and
checkpoints embed it, so any run can be rebuilt from its folder alone.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.errors import ConfigError, require_choice

__all__ = [
    "DataConfig",
    "DataSourceConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "build_dataclass",
    "check_gallery_size",
    "check_paths",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "dump_config",
    "load_config",
    "read_recipe",
    "resolve_dataset_root",
    "resolve_recipe",
]

#: Seeds every generator accepts (NumPy's legacy seeding takes 32-bit values).
MAX_SEED = 2**32 - 1

#: Folder holding the named recipes (``trainer/recipes`` in a source checkout).
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


@dataclass
class ModelConfig:
    """Which registered model to build and with which constructor overrides.

    Attributes:
        name: Registered builder name (``seqnet_r50``, ``seqnet_r18``, ``seqnet_tiny``).
        overrides: Keyword arguments passed to ``create_model(name, **overrides)``
            (for example ``min_size``, ``max_size``, ``res4_stride``). Settings of the
            training objective (OIM sizes) are the method's, in ``method_args``.
        backbone_weights: Optional torchvision-format ResNet state-dict file; no
            download ever happens.
        init_from: Optional run folder or checkpoint whose weights start this model,
            matched by parameter name and shape (pre-training then fine-tuning;
            :mod:`personsearch_train.engine.weight_transfer`); the run prints what was
            loaded, skipped and newly initialised.
    """

    name: str = "seqnet_r50"
    overrides: dict[str, Any] = field(default_factory=dict)
    backbone_weights: str | None = None
    init_from: str | None = None


@dataclass
class DataSourceConfig:
    """One more training dataset, mixed with ``data.dataset`` by ratio.

    Attributes:
        dataset: Registered reader name (``personsearch_train.data.registry``).
        root: Its folder; empty takes the folder given as ``data.root`` (``--data-root``),
            where a sub-folder with the dataset's conventional name (``COCO``,
            ``Market-1501``, ``LUPerson-synthetic``) is used when there is one.
        ratio: Relative share of batches drawn from it (``data.ratio`` is the primary's).
    """

    dataset: str = ""
    root: str = ""
    ratio: float = 1.0


@dataclass
class DataConfig:
    """Training and test data.

    Attributes:
        dataset: Registered reader name (``cuhk_sysu``, ``prw``, ...); picks the reader
            of the training split and of the test split evaluated.
        root: Dataset folder (the one holding ``Image/`` for CUHK-SYSU or ``frames/``
            for PRW). Relative paths are resolved against the working directory.
        flip_prob: Probability of a horizontal flip of a training image.
        aspect_grouping: Batch portrait and landscape images separately.
        num_workers: DataLoader worker processes per rank.
        use_identities: When False every training box is given the unlabelled id
            ``-1``, i.e. training from boxes only (weakly supervised methods, whose
            ``reads_identities`` is False, get that whatever this says).
        mix: More training datasets; every batch then comes from one source, drawn
            with probability proportional to its ratio
            (:class:`~personsearch_train.data.mixing.RatioBatchSampler`), and each
            source's identities get labels of their own.
        ratio: The primary dataset's share when ``mix`` is set.
    """

    dataset: str = "cuhk_sysu"
    root: str = ""
    flip_prob: float = 0.5
    aspect_grouping: bool = True
    num_workers: int = 0
    use_identities: bool = True
    mix: list[DataSourceConfig] = field(default_factory=list)
    ratio: float = 1.0


@dataclass
class OptimConfig:
    """Optimiser.

    Attributes:
        name: ``sgd``, ``adam`` or ``adamw``.
        lr: Base learning rate (for the global batch).
        momentum: SGD momentum.
        weight_decay: L2 (SGD, Adam) or decoupled (AdamW) weight decay.
        betas: Adam/AdamW betas.
        nesterov: SGD Nesterov momentum.
        eps: Adam/AdamW denominator term (IRRA trains with 1e-3).
    """

    name: str = "sgd"
    lr: float = 0.003
    momentum: float = 0.9
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    nesterov: bool = False
    eps: float = 1e-8


@dataclass
class ScheduleConfig:
    """Learning-rate schedule: linear warm-up, then multi-step or cosine decay.

    Attributes:
        kind: ``multistep`` or ``cosine``.
        warmup_epochs: Length of the linear warm-up in epochs (fractions allowed);
            SeqNet warms up over the whole first epoch.
        warmup_factor: Learning-rate factor at iteration 0 of the warm-up.
        milestones: ``multistep``: epochs at whose start the rate is multiplied by ``gamma``.
        gamma: ``multistep`` decay factor.
        min_lr_factor: ``cosine``: final rate as a fraction of the base rate.
    """

    kind: str = "multistep"
    warmup_epochs: float = 1.0
    warmup_factor: float = 0.001
    milestones: list[int] = field(default_factory=lambda: [16])
    gamma: float = 0.1
    min_lr_factor: float = 0.0


@dataclass
class TrainConfig:
    """The training loop.

    Attributes:
        epochs: Number of epochs.
        batch_size: Images per step summed over all processes (the global batch).
        max_iters_per_epoch: If > 0, cut every epoch to this many steps (instant recipes).
        clip_grad_norm: Global L2 norm for gradient clipping; 0 disables it.
        amp: Mixed precision where the device supports it: bfloat16 on CUDA (float16
            with a gradient scaler on GPUs without bfloat16) and on CPUs with native
            bfloat16 arithmetic (AVX512-BF16 or AMX); float32 on other CPUs, where
            emulated bfloat16 is slower (see ``engine.precision``).
        seed: Seed of every random number generator.
        deterministic: Ask PyTorch for deterministic kernels (bit-exact resume on CPU).
        device: ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
        log_every: Steps between TensorBoard/log-file writes.
        checkpoint_every: Epochs between checkpoints (the last epoch always saves).
        find_unused_parameters: Passed to DistributedDataParallel.
        cpu_threads: If > 0, intra-op threads per process (``torch.set_num_threads``);
            1 avoids OpenMP oversubscription on small or shared CPUs, where it can be
            several times faster than the default.
        channels_last: Keep the model's 4-d weights, and so its feature maps, in
            channels-last (NHWC) memory order. oneDNN's CPU convolutions run faster
            on it (1.25x training steps/s for ``seqnet_small`` on 2 cores) and
            CUDA tensor cores prefer it; the numbers are the same up to float
            rounding. Checkpoints are saved in the ordinary layout either way.
    """

    epochs: int = 20
    batch_size: int = 5
    max_iters_per_epoch: int = 0
    clip_grad_norm: float = 10.0
    amp: bool = True
    seed: int = 1
    deterministic: bool = False
    device: str = "auto"
    log_every: int = 20
    checkpoint_every: int = 1
    find_unused_parameters: bool = True
    cpu_threads: int = 0
    channels_last: bool = False


@dataclass
class EvalConfig:
    """Evaluation during training.

    Attributes:
        every: Evaluate every N epochs (and after the last); 0 disables evaluation.
        gallery_size: CUHK-SYSU gallery size (ignored for PRW).
        multi_view: PRW multi-view protocol.
        cbgm: Context bipartite graph matching.
        cws: Rank by similarity x detection score (confidence-weighted similarity, as
            SeqNet's evaluation does); False ranks by cosine alone.
        batch_size: Images per inference batch.
        best_metric: Metric used to pick the best checkpoint (key of the scores dict).
    """

    every: int = 1
    gallery_size: int = 100
    multi_view: bool = False
    cbgm: bool = False
    cws: bool = True
    batch_size: int = 2
    best_metric: str = "mAP"


@dataclass
class ExperimentConfig:
    """A whole recipe.

    Attributes:
        method: Registered training method (``personsearch train --list-methods``);
            ``seqnet_oim``, the supervised baseline, by default.
        method_args: The method's settings, checked against its ``Args`` dataclass.
    """

    method: str = "seqnet_oim"
    method_args: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        """Check value ranges and choices; raises :class:`ConfigError` naming the key."""
        require_choice("optim.name", self.optim.name, ("sgd", "adam", "adamw"))
        require_choice("schedule.kind", self.schedule.kind, ("multistep", "cosine"))
        require_choice("train.device", self.train.device, ("auto", "cpu", "cuda"))
        _positive("optim.lr", self.optim.lr)
        _positive("train.epochs", self.train.epochs)
        _positive("train.batch_size", self.train.batch_size)
        _positive("eval.batch_size", self.eval.batch_size)
        _positive("schedule.gamma", self.schedule.gamma)
        _in_range("data.flip_prob", self.data.flip_prob, 0.0, 1.0)
        _in_range("optim.momentum", self.optim.momentum, 0.0, 1.0)
        _in_range("schedule.min_lr_factor", self.schedule.min_lr_factor, 0.0, 1.0)
        _in_range("train.seed", self.train.seed, 0, MAX_SEED)
        if self.optim.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.optim.weight_decay}")
        if self.train.clip_grad_norm < 0:
            raise ConfigError(
                f"train.clip_grad_norm must be >= 0 (0 disables clipping), got {self.train.clip_grad_norm}"
            )
        if len(self.optim.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.optim.betas):
            raise ConfigError(f"optim.betas must be two values in [0, 1), got {self.optim.betas}")
        if self.schedule.warmup_epochs < 0 or not 0 < self.schedule.warmup_factor <= 1:
            raise ConfigError("schedule.warmup_epochs must be >= 0 and schedule.warmup_factor in (0, 1]")
        if list(self.schedule.milestones) != sorted(self.schedule.milestones) or any(
            m < 0 for m in self.schedule.milestones
        ):
            raise ConfigError(
                f"schedule.milestones must be increasing epochs >= 0, got {self.schedule.milestones}"
            )
        for name, value in self.model.overrides.items():
            # Free-form constructor arguments, checked by the model when it is built (after
            # the data is read); a NaN or infinity is never meant and is caught here.
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"model.overrides.{name}: expected a finite number, got {value!r}")
        check_gallery_size(self.data.dataset, self.eval.gallery_size, "eval.gallery_size:")
        for name in ("max_iters_per_epoch", "log_every", "checkpoint_every", "num_workers", "cpu_threads"):
            section = self.data if name == "num_workers" else self.train
            if getattr(section, name) < 0:
                raise ConfigError(f"{'data' if section is self.data else 'train'}.{name} must be >= 0")
        if self.eval.every < 0:
            raise ConfigError("eval.every must be >= 0")
        for i, source in enumerate(self.data.mix):
            if source.ratio < 0:
                raise ConfigError(f"data.mix[{i}].ratio must be >= 0, got {source.ratio}")
        if self.data.ratio < 0:
            raise ConfigError(f"data.ratio must be >= 0, got {self.data.ratio}")
        if self.data.mix and self.data.ratio + sum(s.ratio for s in self.data.mix) <= 0:
            raise ConfigError("data.ratio and data.mix[*].ratio are all 0; give some source a positive ratio")
        # Method and settings last: the method may check any of the keys above.
        from personsearch_train.methods import build_method

        build_method(self.method, self.method_args).check_config(self)


def _positive(key: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value}")


def check_gallery_size(dataset: str, gallery_size: int, key: str) -> None:
    """Refuse a CUHK-SYSU gallery size the protocol has no ``TestG{N}.mat`` for.

    Args:
        dataset: Reader name; only ``cuhk_sysu`` has gallery sizes.
        gallery_size: One of the reader's ``GALLERY_SIZES``, or -1 for the full set.
        key: The setting or option that gave it, as the message should name it
            (``"eval.gallery_size:"``, ``"--gallery-size"``).

    Raises:
        ConfigError: Any other size for ``cuhk_sysu``.
    """
    from personsearch_train.data.cuhk_sysu import GALLERY_SIZES

    sizes = (*GALLERY_SIZES, -1)
    if dataset == "cuhk_sysu" and gallery_size not in sizes:
        raise ConfigError(
            f"{key} {gallery_size} is not a CUHK-SYSU gallery size; choose one of "
            f"{', '.join(map(str, sizes))} (-1 = full set)"
        )


def _in_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key} must be in [{low}, {high}], got {value}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it in canonical form."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of settings, got {type(value).__name__}")
        return build_dataclass(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            # YAML reads .nan and .inf as floats; no setting means anything by them.
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported setting type {_type_name(tp)}")


def build_dataclass(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value type.

    Args:
        cls: A dataclass whose field annotations are the accepted types.
        data: Parsed settings.
        prefix: Dotted key of ``data`` in the recipe, used in error messages.

    Returns:
        The instance.

    Raises:
        ConfigError: Unknown key (the message lists the valid ones) or wrong type.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown setting '{dotted}'; valid keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], dotted)
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any]) -> ExperimentConfig:
    """Build and validate a config from a nested mapping (a parsed recipe).

    Raises:
        ConfigError: On an unknown key, a value of the wrong type or a bad choice.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"a recipe must be a YAML mapping, got {type(data).__name__}")
    from personsearch_train.methods import get_method

    method = data.get("method", ExperimentConfig.method)
    if not isinstance(method, str):
        raise ConfigError(f"method: expected a method name, got {type(method).__name__} {method!r}")
    data = get_method(method).migrate_recipe(yaml.safe_load(yaml.safe_dump(dict(data))))
    cfg = build_dataclass(ExperimentConfig, data, "")
    cfg.validate()
    return cfg


def config_to_dict(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as plain nested dicts/lists/scalars (YAML and JSON safe)."""
    return dataclasses.asdict(cfg)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides to a parsed recipe (values parsed as YAML).

    ``model.overrides.KEY=V`` sets a model constructor argument; every other key must
    name a config field (checked when the result is turned into a config).

    Args:
        data: Parsed recipe; not modified.
        overrides: Strings ``"dotted.key=value"``.

    Returns:
        A new nested mapping.

    Raises:
        ConfigError: If an override has no ``=`` or an empty key.
    """
    out = yaml.safe_load(yaml.safe_dump(dict(data))) or {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=0.01), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {exc}") from None
        _set_dotted(out, key, value)
    return out


def resolve_recipe(recipe: str | Path) -> Path:
    """Find a recipe given as a path or as a name in ``trainer/recipes``.

    Raises:
        ConfigError: When neither exists (the message lists the known recipe names),
            or the path is a folder.
    """
    path = Path(recipe)
    if path.is_file():
        return path
    if path.is_dir():
        raise ConfigError(
            f"recipe {recipe!r} is a folder; give a recipe file (.yaml) or a recipe name "
            f"({', '.join(_known_recipes()) or 'none'})"
        )
    for candidate in (RECIPES_DIR / f"{recipe}.yaml", RECIPES_DIR / str(recipe)):
        if candidate.is_file():
            return candidate
    known = ", ".join(_known_recipes()) or "none"
    raise ConfigError(f"recipe {recipe!r} not found (not a file; known recipe names: {known})")


def _known_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")) if RECIPES_DIR.is_dir() else []


def read_recipe(recipe: str | Path) -> tuple[Path, dict[str, Any]]:
    """Read a recipe file (or named recipe) as a mapping, refusing one without settings.

    Args:
        recipe: Path to a YAML recipe or the name of one in ``trainer/recipes``.

    Returns:
        ``(path, settings)``: where it was found and its parsed, non-empty mapping.

    Raises:
        ConfigError: A missing, unreadable or invalid file; one that is not a mapping;
            or one that holds no settings (empty, only comments, ``{}``), which would
            otherwise train the full-size default model with no word said.
    """
    path = resolve_recipe(recipe)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"recipe {path}: cannot read it ({exc}); give a readable YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    example = RECIPES_DIR / "synthetic_instant.yaml"
    if data is None or data == {}:
        raise ConfigError(
            f"recipe {path} is empty (no settings); it would train the default full-size "
            f"{ModelConfig.name} for {TrainConfig.epochs} epochs. Copy a recipe such as {example} and "
            f"edit it, or pass a recipe name ({', '.join(_known_recipes())})"
        )
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{path}: a recipe must be a YAML mapping of settings (like {example}), "
            f"got a {type(data).__name__}"
        )
    return path, dict(data)


def load_config(
    recipe: str | Path, overrides: Sequence[str] = (), *, data_root: str | Path | None = None
) -> ExperimentConfig:
    """Load a recipe file (or named recipe), apply overrides and validate.

    Args:
        recipe: Path to a YAML recipe or the name of one in ``trainer/recipes``.
        overrides: ``a.b=c`` strings applied after the file.
        data_root: If given, replaces ``data.root``. A folder that holds the dataset
            under its conventional name (``CUHK-SYSU``/``PRW``, as written by
            ``personsearch synth``) is accepted too.

    Raises:
        ConfigError: For a missing, unreadable or empty recipe, unknown keys, wrong
            types or values out of range.
    """
    path, data = read_recipe(recipe)
    data = apply_overrides(data, overrides)
    try:
        cfg = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if data_root is not None:
        cfg.data.root = str(data_root)
    given_root = cfg.data.root
    cfg.data.root = _dataset_folder(cfg.data.dataset, given_root)
    for source in cfg.data.mix:
        # An empty root means "beside the primary": the folder given as data.root, where
        # `personsearch synth --subtask-sets` writes every source under its own name.
        source.root = _dataset_folder(source.dataset, source.root or given_root)
    return cfg


#: The settings :func:`describe_config` names when a recipe leaves them to their defaults.
_KEY_SETTINGS = ("method", "model.name", "data.dataset", "train.epochs", "train.batch_size", "optim.lr")


def _plural(count: float, noun: str) -> str:
    return f"{count:g} {noun}{'' if count == 1 else 's'}"


def describe_config(cfg: ExperimentConfig, given: Mapping[str, Any] | None = None) -> list[str]:
    """The settings that decide what a run costs and does, for the start of a run.

    Args:
        cfg: The resolved config.
        given: The recipe's own settings with the overrides applied (``read_recipe``
            then ``apply_overrides``); when given, the key settings it leaves out are
            named, since they take defaults meant for the full-size model.

    Returns:
        One line with the method, model, data, schedule length, batch, learning rate,
        device and evaluation; then, with ``given``, a line naming the key settings
        the recipe leaves at their defaults, if any.
    """
    t = cfg.train
    steps = f", at most {_plural(t.max_iters_per_epoch, 'step')} each" if t.max_iters_per_epoch else ""
    lines = [
        f"method {cfg.method}, model {cfg.model.name}, dataset {cfg.data.dataset} at "
        f"{cfg.data.root or '(not set)'}; {_plural(t.epochs, 'epoch')}{steps}, batch {t.batch_size}, "
        f"lr {cfg.optim.lr:g}, device {t.device}, evaluation "
        + (f"every {_plural(cfg.eval.every, 'epoch')}" if cfg.eval.every else "off")
    ]
    if given is not None:
        resolved = config_to_dict(cfg)
        defaulted = []
        for key in _KEY_SETTINGS:
            node: Any = given
            for part in key.split("."):
                node = node.get(part) if isinstance(node, Mapping) else None
            if node is None:
                value: Any = resolved
                for part in key.split("."):
                    value = value[part]
                defaulted.append(f"{key}={value}")
        if defaulted:
            lines.append(f"not set by the recipe, so at their defaults: {', '.join(defaulted)}")
    return lines


#: Conventional folder names of each dataset (the first is what ``personsearch synth`` writes).
_FOLDER_NAMES = {
    "cuhk_sysu": ("CUHK-SYSU", "cuhk_sysu", "cuhk-sysu"),
    "prw": ("PRW", "prw", "PRW-v16.04.20"),
    "cuhk_pedes": ("PEDES", "CUHK-PEDES", "cuhk_pedes"),
    "icfg_pedes": ("ICFG-PEDES", "ICFG_PEDES", "icfg_pedes"),
    "rstpreid": ("RSTPReid", "rstpreid"),
    "ufine6926": ("UFine6926", "ufine6926"),
    "ufine3c": ("UFine3C", "ufine3c"),
    "market1501_scenes": ("Market-1501", "Market-1501-v15.09.15", "market1501"),
    "luperson_scenes": ("LUPerson-synthetic", "LUPerson", "luperson"),
    "coco_scenes": ("COCO", "coco"),
}


def _dataset_folder(dataset: str, root: str) -> str:
    """Accept a parent folder that holds the dataset under its conventional name."""
    if not root:
        return ""
    path = Path(root).expanduser()
    if root and path.is_dir():
        for name in _FOLDER_NAMES.get(dataset, ()):
            if (path / name).is_dir():
                return str((path / name).resolve())
        return str(path.resolve())
    return str(path)


def _folder_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a dataset folder, or None when it is a folder."""
    if path.is_dir():
        return None
    if path.exists():
        return "is a file, not a folder"
    return "does not exist"


def resolve_dataset_root(dataset: str, root: str | Path, option: str = "--root") -> Path:
    """Check a dataset folder given on the command line, accepting its parent too.

    Args:
        dataset: Registered reader name (``cuhk_sysu``, ``prw``, ...).
        root: The folder given, or one holding the dataset under its conventional name
            (``CUHK-SYSU``/``PRW``, as ``personsearch synth`` writes them).
        option: The option's name, for the message.

    Returns:
        The dataset folder.

    Raises:
        ConfigError: ``root`` does not exist or is a file.
    """
    path = Path(root).expanduser()
    problem = _folder_problem(path)
    if problem:
        raise ConfigError(
            f"{option} {root} {problem}; give the {dataset} dataset folder "
            "(e.g. <synth_out>/CUHK-SYSU or <synth_out>/PRW)"
        )
    return Path(_dataset_folder(dataset, str(path)))


def check_paths(cfg: ExperimentConfig) -> None:
    """Check every path the run needs exists, before any training starts.

    Raises:
        ConfigError: Naming the key and the missing path.
    """
    if not cfg.data.root:
        raise ConfigError("data.root is not set; pass --data-root DIR or --set data.root=DIR")
    problem = _folder_problem(Path(cfg.data.root))
    if problem:
        raise ConfigError(
            f"data.root: dataset folder {cfg.data.root} {problem}; pass --data-root with the dataset "
            "folder (or the folder personsearch synth wrote)"
        )
    for i, source in enumerate(cfg.data.mix):
        if not source.root:
            raise ConfigError(f"data.mix[{i}].root is not set; give the folder of {source.dataset or 'it'}")
        problem = _folder_problem(Path(source.root))
        if problem:
            raise ConfigError(f"data.mix[{i}].root: dataset folder {source.root} {problem}")
    weights = cfg.model.backbone_weights
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise ConfigError(f"model.backbone_weights: file {weights} {what}; give a ResNet state-dict file")
    init_from = cfg.model.init_from
    shipped = str(init_from).startswith("pretrained:")
    if init_from and not shipped and not Path(init_from).expanduser().exists():
        raise ConfigError(
            f"model.init_from: {init_from} does not exist; give the run folder or checkpoint file of a "
            "pre-training run"
        )


def dump_config(cfg: ExperimentConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_bytes(Path(path), text.encode("utf-8"), sync_dir=True)
