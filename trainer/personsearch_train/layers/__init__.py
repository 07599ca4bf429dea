"""Small building blocks shared by the trainer's models."""

from personsearch_train.layers.dataset_norm import DatasetSpecificBatchNorm as DatasetSpecificBatchNorm
from personsearch_train.layers.dataset_norm import active_source as active_source
from personsearch_train.layers.dataset_norm import convert_to_dataset_norm as convert_to_dataset_norm
from personsearch_train.layers.dataset_norm import fold_dataset_norm as fold_dataset_norm
from personsearch_train.layers.dataset_norm import set_active_source as set_active_source
from personsearch_train.layers.roi_align import RoIAlign as RoIAlign
from personsearch_train.layers.roi_align import roi_align as roi_align
from personsearch_train.layers.roi_align import uses_personsearch_ops as uses_personsearch_ops

__all__ = [
    "DatasetSpecificBatchNorm",
    "RoIAlign",
    "active_source",
    "convert_to_dataset_norm",
    "fold_dataset_norm",
    "roi_align",
    "set_active_source",
    "uses_personsearch_ops",
]
