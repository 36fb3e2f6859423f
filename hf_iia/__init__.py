"""hf-iia: Iterated Integrated Attributions (Barkan et al., ICCV 2023) for Hugging Face image classifiers.

>>> from hf_iia import IIAExplainer
>>> explainer = IIAExplainer("path/to/checkpoint-folder")
>>> explanation = explainer("cat.jpg")   # .heatmap, .target, .label, .score, .overlay()

Public names are imported on first use, so ``import hf_iia`` (and the command line's
``--help``) stays fast and does not import torch, transformers, datasets or accelerate.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    AttentionNotReachableError,
    AuditError,
    CheckpointError,
    DatasetColumnError,
    DatasetImageError,
    DatasetLabelError,
    GeometryError,
    IIAError,
    ImageInputError,
    LayerNotFoundError,
    MethodError,
    MetricInputError,
    NumericalError,
    OutputPathError,
    TargetError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)

if TYPE_CHECKING:
    from .data import explain_batch_fn, explain_dataset
    from .engine import IntegralSpec, Path, integrate
    from .explainer import IIAExplainer
    from .explanation import Explanation
    from .pipelines import register_pipelines

_LAZY = {
    "IIAExplainer": "explainer",
    "Explanation": "explanation",
    "IntegralSpec": "engine",
    "Path": "engine",
    "integrate": "engine",
    "explain_batch_fn": "data",
    "explain_dataset": "data",
    "register_pipelines": "pipelines",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "AttentionNotReachableError",
    "AuditError",
    "CheckpointError",
    "DatasetColumnError",
    "DatasetImageError",
    "DatasetLabelError",
    "GeometryError",
    "Explanation",
    "IIAError",
    "IIAExplainer",
    "ImageInputError",
    "IntegralSpec",
    "LayerNotFoundError",
    "MethodError",
    "MetricInputError",
    "NumericalError",
    "OutputPathError",
    "Path",
    "TargetError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "explain_batch_fn",
    "explain_dataset",
    "integrate",
    "register_pipelines",
]

__version__ = "0.1.0"
