"""Model families: one file each, registering its adapter factories and declaring its :class:`Family`.

The import line below is the registry's list of families: a new family is one new file
here plus its name on that line.
"""

from ..family import Family
from . import cnn, naflex, stages, timm, vit  # noqa: F401  (each module registers its family's adapters)
from .base import Adapter, AttentionAdapter, FeatureMapAdapter, RelevanceAdapter, TapRun
from .registry import adapter_for, register_adapter, supported_model_types

__all__ = [
    "Adapter",
    "AttentionAdapter",
    "Family",
    "FeatureMapAdapter",
    "RelevanceAdapter",
    "TapRun",
    "adapter_for",
    "register_adapter",
    "supported_model_types",
]
