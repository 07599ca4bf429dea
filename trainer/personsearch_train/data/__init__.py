"""Dataset readers, the synthetic generator and the shared annotation structures.

Nothing here imports torch: the readers return numpy arrays and plain dataclasses.
"""

from personsearch_train.data.cuhk_sysu import load_cuhk_sysu
from personsearch_train.data.detection_sets import load_coco_persons, load_crowdhuman
from personsearch_train.data.prw import load_prw
from personsearch_train.data.registry import (
    available_readers,
    get_reader,
    load_split,
    load_text_split,
    register_reader,
)
from personsearch_train.data.reid_folders import ReidCropSet, load_market1501
from personsearch_train.data.structures import (
    UNLABELLED,
    GalleryEntry,
    ImageRecord,
    PersonSearchSplit,
    QueryRecord,
)
from personsearch_train.data.text_person import TextPersonSplit, load_text_person

__all__ = [
    "UNLABELLED",
    "GalleryEntry",
    "ImageRecord",
    "PersonSearchSplit",
    "QueryRecord",
    "ReidCropSet",
    "TextPersonSplit",
    "available_readers",
    "get_reader",
    "load_coco_persons",
    "load_crowdhuman",
    "load_cuhk_sysu",
    "load_market1501",
    "load_prw",
    "load_split",
    "load_text_person",
    "load_text_split",
    "register_reader",
]
