"""Person-search models, registered by name.

Example:
    >>> from personsearch_train.models import create_model
    >>> model = create_model("seqnet_tiny", num_labelled_ids=50).eval()
    >>> detections = model.predict([image])  # image: [3, H, W] float32 RGB in [0, 1]
"""

from personsearch_train.models import dual_encoder as _dual_encoder  # noqa: F401  (registers the dual encoders)
from personsearch_train.models import seqnet as _seqnet  # noqa: F401  (registers the SeqNet builders)
from personsearch_train.models.registry import create_model as create_model
from personsearch_train.models.registry import list_models as list_models
from personsearch_train.models.registry import register_model as register_model
from personsearch_train.models.seqnet import SeqNet as SeqNet
from personsearch_train.models.structures import Detections as Detections
from personsearch_train.models.weights import BackboneWeightsError as BackboneWeightsError
from personsearch_train.models.weights import load_backbone_weights as load_backbone_weights

__all__ = [
    "BackboneWeightsError",
    "Detections",
    "SeqNet",
    "create_model",
    "list_models",
    "load_backbone_weights",
    "register_model",
]
