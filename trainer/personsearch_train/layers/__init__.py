"""Small building blocks shared by the trainer's models."""

from personsearch_train.layers.roi_align import RoIAlign as RoIAlign
from personsearch_train.layers.roi_align import roi_align as roi_align
from personsearch_train.layers.roi_align import uses_personsearch_ops as uses_personsearch_ops

__all__ = ["RoIAlign", "roi_align", "uses_personsearch_ops"]
