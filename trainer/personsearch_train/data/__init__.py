"""Dataset readers, the synthetic generator and the shared annotation structures."""

from personsearch_train.data.structures import (
    UNLABELLED,
    GalleryEntry,
    ImageRecord,
    PersonSearchSplit,
    QueryRecord,
)

__all__ = ["UNLABELLED", "GalleryEntry", "ImageRecord", "PersonSearchSplit", "QueryRecord"]
