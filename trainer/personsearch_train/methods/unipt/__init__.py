"""UniPT: pseudo-captions from images and unified image-text pre-training.

Three steps (Shao et al., ICCV 2023; methods.md 5.4):

1. **caption** unlabelled person crops: :mod:`~personsearch_train.methods.unipt.phrase_banks`
   (divide: attribute phrases), :mod:`~personsearch_train.methods.unipt.captioner`
   (conquer: an image-text model scores every phrase), and
   :mod:`~personsearch_train.methods.unipt.caption_templates` (combine: templates and
   synonyms); ``personsearch pseudo-caption``;
2. **pre-train** both towers on them: ``method: unipt``
   (:mod:`~personsearch_train.methods.unipt.pretraining`);
3. **fine-tune** on a text-person dataset: ``method: unipt_finetune``
   (:mod:`~personsearch_train.methods.unipt.finetuning`) with ``model.init_from``.
"""

from personsearch_train.methods.unipt.finetuning import UniPTFinetune as UniPTFinetune
from personsearch_train.methods.unipt.pretraining import UniPT as UniPT

__all__ = ["UniPT", "UniPTFinetune"]
