"""hf-iia: Iterated Integrated Attributions (Barkan et al., ICCV 2023) for Hugging Face image classifiers.

>>> from hf_iia import IIAExplainer
>>> explainer = IIAExplainer("path/or/hub-id")
>>> explanation = explainer("cat.jpg")   # .heatmap, .target, .label, .score, .overlay()
"""

from .engine import IntegralSpec, Path, integrate
from .errors import (
    AttentionNotReachableError,
    CheckpointError,
    IIAError,
    ImageInputError,
    LayerNotFoundError,
    MethodError,
    NumericalError,
    TargetError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from .data import DatasetColumnError, DatasetImageError, explain_batch_fn, explain_dataset
from .explainer import Explanation, IIAExplainer

__all__ = [
    "AttentionNotReachableError",
    "CheckpointError",
    "DatasetColumnError",
    "DatasetImageError",
    "Explanation",
    "IIAError",
    "IIAExplainer",
    "ImageInputError",
    "IntegralSpec",
    "LayerNotFoundError",
    "MethodError",
    "NumericalError",
    "Path",
    "TargetError",
    "UnsafeCheckpointError",
    "UnsupportedModelError",
    "explain_batch_fn",
    "explain_dataset",
    "integrate",
]

__version__ = "0.1.0"
