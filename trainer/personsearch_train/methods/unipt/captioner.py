"""Conquer and combine: score attribute phrases against crops, write LUPerson-T captions.

UniPT's pseudo-captions (paper section 3, methods.md 5.4) come from an image-text model
that rates the prompt of every attribute phrase ("A photo of a person wearing a red
long-sleeved top.") against each crop: a required attribute takes its arg-max phrase, an
optional one is kept only when its best phrase is not the absence phrase and its softmax
probability exceeds a threshold (0.9); one template, with synonyms, turns the selection
into a sentence (:mod:`~personsearch_train.methods.unipt.phrase_banks`,
:mod:`~personsearch_train.methods.unipt.caption_templates`).

The paper scores with a frozen CLIP ViT-B/16. No CLIP weights can be had offline, so
:class:`PromptScorer` wraps any dual encoder checkpoint trained here (a text-retrieval
run such as ``irra`` or ``cfam``), or a CLIP model saved in a local Hugging Face folder
(:class:`~personsearch_train.methods.unipt.huggingface_clip.HuggingFaceClip`); its
softmax uses the model's own logit scale (CLIP's learned one, or
``1 / method_args.temperature`` of a checkpoint) unless one is given.

:func:`caption_images` walks a folder of crops and writes the JSON list
``[{"file_path", "captions", "attributes"}]``. It is resumable: every finished batch is
appended to ``OUT.partial.jsonl`` (with the settings it was made with on the first line)
and flushed to disk, a rerun skips what is there, and the final file is written
atomically. Each image's caption draws from its own seed (the run seed and the path),
so an interrupted and resumed run writes exactly what an uninterrupted one would.
Unreadable files are skipped, counted and named, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from personsearch_train.atomic_files import atomic_write_bytes
from personsearch_train.errors import ConfigError, TrainerError
from personsearch_train.methods.unipt.caption_templates import CaptionTemplates, compose_caption
from personsearch_train.methods.unipt.phrase_banks import PhraseBank, select_attributes

__all__ = [
    "IMAGE_SUFFIXES",
    "CaptionDesign",
    "CaptioningSummary",
    "PromptScorer",
    "caption_images",
    "list_images",
]

#: File suffixes taken as images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class CaptionDesign:
    """How selections become captions (the pseudo-text ablation's switches).

    Attributes:
        threshold: Probability an optional attribute's phrase must exceed (paper: 0.9).
        use_optional: Keep optional attributes at all.
        fixed_template: Use the first template only, without synonyms.
        synonym_probability: Chance that each synonym-bearing template word is replaced.
        captions_per_image: Captions written per image (each its own template draw).
        seed: Seed of the template and synonym draws.
    """

    threshold: float = 0.9
    use_optional: bool = True
    fixed_template: bool = False
    synonym_probability: float = 0.5
    captions_per_image: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.synonym_probability <= 1.0:
            raise ConfigError(f"synonym probability must be in [0, 1], got {self.synonym_probability}")
        if self.captions_per_image < 1:
            raise ConfigError(f"captions per image must be at least 1, got {self.captions_per_image}")


class PromptScorer:
    """Cosine similarities between person crops and prompts, from a dual encoder.

    Args:
        model: A model with ``encode_images``, ``encode_texts``, ``tokenizer`` and
            ``image_size`` (:class:`~personsearch_train.models.dual_encoder.DualEncoder`).
        logit_scale: Softmax scale of the attribute probabilities.
        batch_size: Crops (and prompts) per forward pass.
        device: Torch device.
        name: How messages and the partial file name the scorer.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        logit_scale: float,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
        name: str = "scorer",
    ) -> None:
        for attribute in ("encode_images", "encode_texts", "tokenizer", "image_size"):
            if not hasattr(model, attribute):
                raise ConfigError(
                    f"{name}: {type(model).__name__} is not an image-text model (no {attribute}); give the "
                    "run folder of a text-retrieval training (irra, cfam, unipt...)"
                )
        if logit_scale <= 0:
            raise ConfigError(f"logit scale must be positive, got {logit_scale}")
        self.model = model.eval().to(device)
        self.logit_scale = float(logit_scale)
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device)
        self.name = name
        #: SHA-256 of the checkpoint weights (set by :meth:`from_checkpoint`), for resume checks.
        self.weights_sha256 = ""
        self.image_size: tuple[int, int] = tuple(model.image_size)  # type: ignore[assignment]

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, logit_scale: float | None = None, batch_size: int = 64, device: str = "cpu"
    ) -> PromptScorer:
        """Load a text-retrieval run's model (its best checkpoint first) or a local CLIP.

        Args:
            path: Run folder or checkpoint file of a training here, or a Hugging Face
                CLIP folder (:mod:`~personsearch_train.methods.unipt.huggingface_clip`).
            logit_scale: Softmax scale; None takes CLIP's learned scale, or
                ``1 / method_args.temperature`` of the checkpoint, or 50 (CLIP-style
                retrieval training's usual value) without one.
            batch_size: Crops per forward pass.
            device: Torch device.

        Raises:
            ConfigError: The checkpoint is not an image-text model, or a CLIP folder
                that does not load.
            CheckpointError: Missing or damaged checkpoint.
        """
        from personsearch_train.engine.checkpoint import file_sha256, read_checkpoint
        from personsearch_train.methods.unipt.huggingface_clip import (
            HuggingFaceClip,
            is_huggingface_clip_folder,
        )

        if is_huggingface_clip_folder(path):
            clip = HuggingFaceClip(path)
            scorer = cls(
                clip,
                logit_scale=clip.logit_scale if logit_scale is None else logit_scale,
                batch_size=batch_size,
                device=device,
                name=str(path),
            )
            weights = sorted(Path(path).expanduser().glob("*.safetensors")) or sorted(
                Path(path).expanduser().glob("*.bin")
            )
            scorer.weights_sha256 = ",".join(file_sha256(w) for w in weights)
            return scorer
        loaded = read_checkpoint(path)
        if logit_scale is None:
            temperature = (loaded.metadata.get("method_args") or {}).get("temperature")
            logit_scale = 1.0 / float(temperature) if temperature else 50.0
        scorer = cls(
            loaded.model, logit_scale=logit_scale, batch_size=batch_size, device=device, name=str(path)
        )
        scorer.weights_sha256 = loaded.weights_sha256
        return scorer

    @torch.inference_mode()
    def encode_prompts(self, prompts: Sequence[str]) -> np.ndarray:
        """``[P, E]`` float32 unit embeddings of the prompts."""
        rows = []
        for start in range(0, len(prompts), self.batch_size):
            tokens = self.model.tokenizer(list(prompts[start : start + self.batch_size]))
            ids = torch.as_tensor(np.asarray(tokens.input_ids), dtype=torch.int64, device=self.device)
            mask = torch.as_tensor(np.asarray(tokens.attention_mask), dtype=torch.int64, device=self.device)
            rows.append(self.model.encode_texts(ids, mask).float().cpu().numpy())
        return np.concatenate(rows, axis=0)

    @torch.inference_mode()
    def encode_crops(self, crops: np.ndarray) -> np.ndarray:
        """``[N, E]`` float32 unit embeddings of ``[N, 3, H, W]`` float32 RGB crops in ``[0, 1]``."""
        batch = torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32)).to(self.device)
        return self.model.encode_images(batch).float().cpu().numpy()


@dataclass
class CaptioningSummary:
    """What :func:`caption_images` did.

    Attributes:
        out: The caption file written.
        images: Images found in the folder.
        captioned: Images with captions in the output.
        resumed: Of those, how many an earlier interrupted run had done.
        skipped: Relative paths of unreadable files (not in the output).
    """

    out: Path
    images: int = 0
    captioned: int = 0
    resumed: int = 0
    skipped: list[str] = field(default_factory=list)


def list_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (recursively), as sorted POSIX paths relative to it.

    Raises:
        ConfigError: ``folder`` is not a directory, or holds no image file.
    """
    if not folder.is_dir():
        raise ConfigError(f"--images: {folder} is not a folder of person crops")
    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not names:
        raise ConfigError(f"--images: {folder} holds no image file ({', '.join(IMAGE_SUFFIXES)})")
    return names


def _read_crop(path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """``[3, H, W]`` float32 RGB in ``[0, 1]``, or None for an unreadable file."""
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    if bgr is None or bgr.size == 0:
        return None
    height, width = size
    bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    return rgb.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


def _settings(
    scorer: PromptScorer, bank: PhraseBank, templates: CaptionTemplates, design: CaptionDesign
) -> dict[str, Any]:
    """What the captions depend on; a resumed run must match it exactly."""

    def digest(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return {
        "scorer": scorer.weights_sha256 or scorer.name,
        "logit_scale": scorer.logit_scale,
        "bank": digest(bank.path),
        "templates": digest(templates.path),
        "design": {k: getattr(design, k) for k in design.__dataclass_fields__},
    }


def _image_rng(seed: int, file_path: str) -> np.random.Generator:
    # One stream per image: the captions do not depend on batch boundaries or resumption.
    return np.random.default_rng([seed, zlib.crc32(file_path.encode("utf-8"))])


def _read_partial(path: Path, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Records of an interrupted run (file_path -> record); a torn last line is dropped."""
    if not path.is_file():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
    except json.JSONDecodeError:
        header = None
    if header is None and len(lines) <= 1:
        # The process died while writing the settings line: nothing was captioned yet.
        path.unlink()
        return {}
    if header != {"settings": settings}:
        raise ConfigError(
            f"{path} holds an interrupted run made with other settings (scorer, phrase bank, templates or "
            "design); rerun with the same settings to resume it, or delete the file to start over"
        )
    records: dict[str, dict[str, Any]] = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            # The process died while writing this line; its batch is simply redone.
            continue
        records[record["file_path"]] = record
    return records


def caption_images(
    images_dir: str | Path,
    out: str | Path,
    *,
    scorer: PromptScorer,
    bank: PhraseBank,
    templates: CaptionTemplates,
    design: CaptionDesign = CaptionDesign(),
    progress: bool = True,
    after_batch: Callable[[int], None] | None = None,
) -> CaptioningSummary:
    """Pseudo-caption every crop under ``images_dir`` into a LUPerson-T style JSON list.

    Args:
        images_dir: Folder of unlabelled person crops (searched recursively).
        out: The caption JSON to write (``file_path`` relative to ``images_dir``).
        scorer: The image-text model that rates the prompts.
        bank: Attribute phrases (divide).
        templates: Sentence templates and synonyms (combine).
        design: Threshold, optional attributes, template and synonym settings.
        progress: Show a progress bar.
        after_batch: Called with the number of images done after each batch is on disk
            (tests interrupt a run through it).

    Returns:
        The summary; unreadable files are listed in ``skipped``.

    Raises:
        ConfigError: Bad folder, or a partial file made with other settings.
    """
    from tqdm import tqdm

    images_dir = Path(images_dir).expanduser().resolve()
    out = Path(out).expanduser()
    names = list_images(images_dir)
    partial = out.with_name(out.name + ".partial.jsonl")
    settings = _settings(scorer, bank, templates, design)
    done = _read_partial(partial, settings)
    summary = CaptioningSummary(out=out, images=len(names), resumed=len(done))
    prompts = bank.prompts()
    prompt_embeddings = scorer.encode_prompts(prompts)
    todo = [n for n in names if n not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if partial.is_file() else "w"
    with (
        partial.open(mode, encoding="utf-8") as handle,
        tqdm(total=len(names), initial=len(done), disable=not progress, desc="captioning", unit="img") as bar,
    ):
        if mode == "w":
            handle.write(json.dumps({"settings": settings}) + "\n")
        elif partial.stat().st_size and not partial.read_bytes().endswith(b"\n"):
            # Close a line torn by the interruption, so the next record starts on its own line.
            handle.write("\n")
        for start in range(0, len(todo), scorer.batch_size):
            batch = todo[start : start + scorer.batch_size]
            crops = [_read_crop(images_dir / name, scorer.image_size) for name in batch]
            readable = [i for i, crop in enumerate(crops) if crop is not None]
            records: list[dict[str, Any]] = [
                {"file_path": name, "skipped": "unreadable"}
                for name, crop in zip(batch, crops, strict=True)
                if crop is None
            ]
            if readable:
                embeddings = scorer.encode_crops(np.stack([crops[i] for i in readable]))
                similarities = embeddings @ prompt_embeddings.T
                selections = select_attributes(
                    similarities,
                    bank,
                    logit_scale=scorer.logit_scale,
                    threshold=design.threshold,
                    use_optional=design.use_optional,
                )
                for i, selection in zip(readable, selections, strict=True):
                    rng = _image_rng(design.seed, batch[i])
                    captions = [
                        compose_caption(
                            selection,
                            bank,
                            templates,
                            rng,
                            fixed_template=design.fixed_template,
                            synonym_probability=design.synonym_probability,
                        )
                        for _ in range(design.captions_per_image)
                    ]
                    records.append({"file_path": batch[i], "captions": captions, "attributes": selection})
            for record in records:
                handle.write(json.dumps(record) + "\n")
                done[record["file_path"]] = record
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
            if after_batch is not None:
                after_batch(len(done))
    entries = []
    for name in names:
        record = done.get(name)
        if record is None:
            raise TrainerError(f"{name} was neither captioned nor skipped; rerun to finish it")
        if "skipped" in record:
            summary.skipped.append(name)
        else:
            entries.append(record)
    if not entries:
        raise ConfigError(
            f"--images: none of the {len(names)} files under {images_dir} could be read as an image"
        )
    atomic_write_bytes(out, (json.dumps(entries, indent=1) + "\n").encode("utf-8"))
    partial.unlink()
    summary.captioned = len(entries)
    return summary
