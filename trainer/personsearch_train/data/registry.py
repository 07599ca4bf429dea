"""The one registry of dataset readers, by name.

Each reader is registered once under a name with its kind:

* ``person_search`` (``cuhk_sysu``, ``prw``, and three hybrid pre-training sources with a
  train split only: ``market1501_scenes``, Market-1501 training crops composed into
  pseudo scenes; ``luperson_scenes``, unlabelled crops composed the same way; and
  ``coco_scenes``, a COCO-layout detection set whose people have no identity):
  ``loader(root, split) -> PersonSearchSplit``; use :func:`load_split`;
* ``text_person`` (``cuhk_pedes``, ``icfg_pedes``, ``rstpreid``, ``ufine6926``,
  ``ufine3c``, and ``luperson_t``, pseudo-captioned crops for pre-training):
  ``loader(root, split) -> TextPersonSplit``; use :func:`load_text_split`;
* ``detection`` (``coco_persons``, ``crowdhuman``) and ``reid`` (``market1501``):
  looked up with :func:`get_reader`, called with their own arguments.

Registering a name twice raises, so two readers can never shadow each other.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personsearch_train.data.cuhk_sysu import load_cuhk_sysu
from personsearch_train.data.detection_sets import load_coco_persons, load_coco_scenes, load_crowdhuman
from personsearch_train.data.prw import load_prw
from personsearch_train.data.pseudo_captioned import load_pseudo_captioned
from personsearch_train.data.reid_folders import load_market1501
from personsearch_train.data.structures import PersonSearchSplit
from personsearch_train.data.text_person import TEXT_PERSON_DATASETS, TextPersonSplit, load_text_person
from personsearch_train.errors import ConfigError

__all__ = [
    "READER_KINDS",
    "DatasetReader",
    "available_readers",
    "get_reader",
    "load_split",
    "load_text_split",
    "register_reader",
]

#: The kinds of reader the registry knows.
READER_KINDS = ("person_search", "text_person", "detection", "reid")


@dataclass(frozen=True)
class DatasetReader:
    """A registered dataset reader.

    Attributes:
        name: Registry name (``"cuhk_sysu"``).
        kind: One of :data:`READER_KINDS`.
        loader: The reading function.
        description: One line for listings.
        has_test_split: Whether the dataset can be evaluated on (False for training-only
            sets such as pseudo-captioned pre-training crops).
    """

    name: str
    kind: str
    loader: Callable[..., Any]
    description: str
    has_test_split: bool = True


_READERS: dict[str, DatasetReader] = {}


def register_reader(
    *, name: str, kind: str, loader: Callable[..., Any], description: str, has_test_split: bool = True
) -> DatasetReader:
    """Add a reader to the registry.

    Args:
        name: Unique name.
        kind: One of :data:`READER_KINDS`.
        loader: The function that reads the dataset.
        description: One line saying what it reads.
        has_test_split: False for training-only datasets (not offered for evaluation).

    Returns:
        The registered entry.

    Raises:
        ValueError: ``name`` is already registered or ``kind`` is unknown.
    """
    if kind not in READER_KINDS:
        raise ValueError(f"reader kind must be one of {READER_KINDS}, got {kind!r}")
    if name in _READERS:
        raise ValueError(f"a dataset reader named {name!r} is already registered")
    reader = DatasetReader(
        name=name, kind=kind, loader=loader, description=description, has_test_split=has_test_split
    )
    _READERS[name] = reader
    return reader


def available_readers(kind: str | None = None, *, evaluable: bool = False) -> tuple[str, ...]:
    """Names of the registered readers, sorted.

    Args:
        kind: Only readers of this kind.
        evaluable: Only readers of datasets with a test split.
    """
    return tuple(
        sorted(
            name
            for name, reader in _READERS.items()
            if (kind is None or reader.kind == kind) and (reader.has_test_split or not evaluable)
        )
    )


def get_reader(name: str, kind: str | None = None) -> DatasetReader:
    """Look a reader up by name.

    Args:
        name: Registry name.
        kind: If given, the reader must be of this kind.

    Returns:
        The registry entry.

    Raises:
        ConfigError: No reader of that name (and kind); the message lists the choices.
    """
    reader = _READERS.get(name)
    if reader is None or (kind is not None and reader.kind != kind):
        choices = ", ".join(available_readers(kind))
        what = f"{kind} dataset" if kind else "dataset"
        raise ConfigError(f"unknown {what} {name!r}; choose one of: {choices}.")
    return reader


def load_split(name: str, root: str | Path, split: str, **options: Any) -> PersonSearchSplit:
    """Read a split of a registered person-search dataset.

    Args:
        name: ``"cuhk_sysu"`` or ``"prw"`` (or another ``person_search`` reader).
        root: Dataset folder.
        split: ``"train"`` or ``"test"``.
        **options: Passed to the reader (e.g. ``gallery_sizes`` for CUHK-SYSU).

    Returns:
        The split.
    """
    return get_reader(name, "person_search").loader(root, split, **options)


def load_text_split(name: str, root: str | Path, split: str, **options: Any) -> TextPersonSplit:
    """Read a split of a registered text-to-image person dataset.

    Args:
        name: One of the ``text_person`` readers (``"cuhk_pedes"``, ...).
        root: Dataset folder.
        split: ``"train"``, ``"test"`` or ``"val"``.
        **options: Passed to the reader (e.g. ``annotation_file``).

    Returns:
        The split.
    """
    return get_reader(name, "text_person").loader(root, split, **options)


register_reader(
    name="cuhk_sysu", kind="person_search", loader=load_cuhk_sysu, description="CUHK-SYSU MATLAB annotations"
)
register_reader(
    name="prw", kind="person_search", loader=load_prw, description="PRW frames, per-frame .mat boxes"
)


def _load_market1501_scenes(root: str | Path, split: str, **options: Any) -> PersonSearchSplit:
    """The ``market1501_scenes`` loader (:func:`.pseudo_scenes.load_market1501_scenes`)."""
    # Imported here so that listing readers (every command's --help) does not load OpenCV.
    from personsearch_train.data.pseudo_scenes import load_market1501_scenes

    return load_market1501_scenes(root, split, **options)


register_reader(
    name="market1501_scenes",
    kind="person_search",
    loader=_load_market1501_scenes,
    description="Market-1501 training crops composed into pseudo scenes, pre-training only",
    has_test_split=False,
)


def _load_luperson_scenes(root: str | Path, split: str, **options: Any) -> PersonSearchSplit:
    """The ``luperson_scenes`` loader (:func:`.pseudo_scenes.load_unlabelled_crop_scenes`)."""
    from personsearch_train.data.pseudo_scenes import load_unlabelled_crop_scenes

    return load_unlabelled_crop_scenes(root, split, **options)


register_reader(
    name="luperson_scenes",
    kind="person_search",
    loader=_load_luperson_scenes,
    description="unlabelled person crops (LUPerson layout) composed into pseudo scenes, pre-training only",
    has_test_split=False,
)
register_reader(
    name="coco_scenes",
    kind="person_search",
    loader=load_coco_scenes,
    description="COCO-layout person boxes as scenes without identities, pre-training only",
    has_test_split=False,
)


def _text_loader(dataset: str) -> Callable[..., TextPersonSplit]:
    """Bind ``load_text_person`` to one dataset name as ``loader(root, split, **options)``."""

    @functools.wraps(load_text_person)
    def loader(root: str | Path, split: str, **options: Any) -> TextPersonSplit:
        return load_text_person(root, dataset, split, **options)

    return loader


for _name in TEXT_PERSON_DATASETS:
    register_reader(
        name=_name, kind="text_person", loader=_text_loader(_name), description=f"{_name} text-person JSON"
    )
register_reader(
    name="luperson_t",
    kind="text_person",
    loader=load_pseudo_captioned,
    description="pseudo-captioned person crops (LUPerson-T JSON), pre-training only",
    has_test_split=False,
)
register_reader(
    name="coco_persons", kind="detection", loader=load_coco_persons, description="COCO json, person boxes"
)
register_reader(name="crowdhuman", kind="detection", loader=load_crowdhuman, description="CrowdHuman .odgt")
register_reader(name="market1501", kind="reid", loader=load_market1501, description="Market-1501-named crops")
