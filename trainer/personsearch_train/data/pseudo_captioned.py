"""Reader of pseudo-captioned person crops (LUPerson-T layout), for UniPT pre-training.

LUPerson-T (Shao et al., ICCV 2023) pairs unlabelled LUPerson crops with generated
captions; its converter reads a JSON list of ``{"file_path": ..., "captions": [...]}``
(UNIPT ``vilt/utils/write_LUPerson.py``, methods.md 5.1). ``personsearch pseudo-caption``
writes the same list (each entry may also carry the selected ``"attributes"``, ignored
here) as ``captions.json`` in the image folder, with ``file_path`` relative to it.

There are no identities: every image is its own training label, which is what the
pre-training losses (image-text contrast, MLM) assume, and there is no test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from personsearch_train.data.text_person import TextPersonSplit, read_entry_list
from personsearch_train.errors import ConfigError, DatasetFormatError

__all__ = ["DEFAULT_CAPTIONS_FILE", "load_pseudo_captioned"]

#: Name of the caption file inside the image folder (what ``personsearch pseudo-caption`` writes).
DEFAULT_CAPTIONS_FILE = "captions.json"


def load_pseudo_captioned(
    root: str | Path, split: str = "train", *, annotation_file: str | Path | None = None
) -> TextPersonSplit:
    """Read a LUPerson-T style caption list as a training split.

    Args:
        root: The image folder (``file_path`` values are relative to it).
        split: Must be ``"train"``: pseudo-captioned sets are for pre-training only.
        annotation_file: The caption JSON (absolute, or relative to ``root``); default
            ``root/captions.json``.

    Returns:
        A training split whose label ``k`` is image ``k`` (``label_to_pid`` = ``0..N-1``).

    Raises:
        ConfigError: ``split`` is not ``"train"``.
        DatasetFormatError: The file is missing or malformed (the message names the
            entry and key), or an entry has no caption.
    """
    root = Path(root).expanduser().resolve()
    if split != "train":
        raise ConfigError(
            f"{root}: a pseudo-captioned crop set has only a training split (asked for {split!r}); "
            "evaluate the pre-trained model on a text-person test set instead, or set eval.every: 0"
        )
    path = Path(annotation_file) if annotation_file is not None else Path(DEFAULT_CAPTIONS_FILE)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise DatasetFormatError(
            f"{path}: caption file not found; write it with personsearch pseudo-caption --images {root} "
            f"--scorer RUN --out {path}"
        )
    image_paths: list[Path] = []
    captions: list[str] = []
    caption_image: list[int] = []
    for index, entry in enumerate(read_entry_list(path)):
        where = f"{path}: entry {index}"
        if not isinstance(entry, dict):
            raise DatasetFormatError(f"{where} is a {type(entry).__name__}, expected an object.")
        image, entry_captions = entry.get("file_path"), entry.get("captions")
        if not isinstance(image, str) or not image:
            raise DatasetFormatError(f"{where}: 'file_path' must be a non-empty string.")
        if not isinstance(entry_captions, list) or not entry_captions:
            raise DatasetFormatError(f"{where}: 'captions' must be a non-empty list of strings.")
        if not all(isinstance(c, str) and c.strip() for c in entry_captions):
            raise DatasetFormatError(f"{where}: every caption must be a non-empty string.")
        image_index = len(image_paths)
        image_paths.append(root / image)
        for caption in entry_captions:
            captions.append(caption)
            caption_image.append(image_index)
    if not image_paths:
        raise DatasetFormatError(f"{path}: the caption list is empty.")
    labels = np.arange(len(image_paths), dtype=np.int64)
    caption_index = np.asarray(caption_image, dtype=np.int64)
    return TextPersonSplit(
        dataset="luperson_t",
        split="train",
        root=root,
        image_paths=tuple(image_paths),
        image_pids=labels,
        captions=tuple(captions),
        caption_pids=labels[caption_index],
        caption_image=caption_index,
        label_to_pid=labels.copy(),
    )
