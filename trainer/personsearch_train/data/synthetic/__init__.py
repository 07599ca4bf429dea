"""Seeded synthetic person-search data written in the real dataset layouts.

``generate_dataset(out_dir, preset, seed)`` draws scenes of articulated people whose
identity is their appearance and writes them as CUHK-SYSU, PRW, CUHK-PEDES, COCO,
Market-1501, UFine6926 and UFine3C folders; the returned :class:`SyntheticManifest` holds the ground truth
of every image. Only numpy, scipy and OpenCV are needed (no torch).
"""

from personsearch_train.data.synthetic.generator import (
    GALLERY_SIZES,
    GENERATOR_VERSION,
    PRESETS,
    UFINE3C_SOURCES,
    Preset,
    SyntheticManifest,
    generate_dataset,
)
from personsearch_train.data.synthetic.identities import Identity, describe_identity
from personsearch_train.data.synthetic.truth import (
    PedesTruth,
    PersonSearchTruth,
    QueryTruth,
    SceneTruth,
    UFineTruth,
)

__all__ = [
    "GALLERY_SIZES",
    "GENERATOR_VERSION",
    "PRESETS",
    "UFINE3C_SOURCES",
    "Identity",
    "PedesTruth",
    "PersonSearchTruth",
    "Preset",
    "QueryTruth",
    "SceneTruth",
    "SyntheticManifest",
    "UFineTruth",
    "describe_identity",
    "generate_dataset",
]
