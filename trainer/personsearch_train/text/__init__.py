"""Text side of text-to-image person retrieval: tokenisation and text towers."""

from personsearch_train.text.pretrained_text import check_text_model_dir as check_text_model_dir
from personsearch_train.text.pretrained_text import minilm_model_dir as minilm_model_dir
from personsearch_train.text.text_towers import ClipTextTower as ClipTextTower
from personsearch_train.text.text_towers import HuggingFaceTextTower as HuggingFaceTextTower
from personsearch_train.text.text_towers import TowerOutput as TowerOutput
from personsearch_train.text.tokenization import TextTokenizer as TextTokenizer
from personsearch_train.text.tokenization import TokenBatch as TokenBatch

__all__ = [
    "ClipTextTower",
    "HuggingFaceTextTower",
    "TextTokenizer",
    "TokenBatch",
    "TowerOutput",
    "check_text_model_dir",
    "minilm_model_dir",
]
