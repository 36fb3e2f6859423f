"""The package's exceptions: one small hierarchy rooted at :class:`IIAError`.

Every exception of the package lives here. Every error a user can trigger with bad input derives from ``IIAError`` (itself a
``ValueError``), so ``except hf_iia.IIAError`` catches all of them. Each message says
what is wrong and what to do about it.
"""

from __future__ import annotations


class IIAError(ValueError):
    """Base class of every error raised by hf-iia for bad input or an unsupported model."""


class ImageInputError(IIAError):
    """An image has an unsupported type, shape, dtype or value range."""


class TargetError(IIAError):
    """A target is out of range, an unknown label name, or the targets do not match the images."""


class UnsupportedModelError(IIAError):
    """The model's architecture has no adapter, or its output carries no logits."""


class LayerNotFoundError(IIAError):
    """The layer given with ``layer=`` does not exist or is never reached in the forward pass."""


class AttentionNotReachableError(IIAError):
    """A ViT's attention probabilities cannot be reached through transformers' AttentionInterface."""


class UnsafeCheckpointError(IIAError):
    """A checkpoint would need unsafe loading (pickle weights or remote code) that was not opted into."""


class CheckpointError(IIAError):
    """A checkpoint cannot be found, reached or read (no weights file, corrupt weights, unknown Hub id offline)."""


class MethodError(IIAError):
    """An attribution method is unknown, does not apply to the model's family, or got an option it does not use."""


class NumericalError(IIAError):
    """The model produced non-finite logits or gradients, so no faithful map exists."""


class OutputPathError(IIAError):
    """An output name would escape the output folder, or would overwrite a file without ``overwrite=True``."""


class GeometryError(IIAError):
    """How the image processor resized, cropped or padded an image is unknown, so a map cannot be placed on it."""


class DatasetColumnError(IIAError):
    """A dataset lacks a column the call needs, or already has a column the call would add."""


class DatasetLabelError(DatasetColumnError):
    """A dataset's ``ClassLabel`` target names cannot be matched one-to-one to the model's class names."""


class DatasetImageError(ImageInputError):
    """A dataset row has no image, or its image cannot be read or decoded."""


class MetricInputError(IIAError):
    """An input of a metric has the wrong type, shape or value."""


class MetricError(IIAError):
    """A metric declaration clashes with a registered one, or a metric name is not registered."""


class AuditError(IIAError):
    """An audit cannot run: bad settings, or an output folder holding something else."""
