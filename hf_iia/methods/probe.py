"""The shape probe: one forward of a blank image that records the shape of every representation an adapter reaches.

:meth:`hf_iia.explainer.IIAExplainer.layers` lists the layers with it, and IIA's default level
(:func:`hf_iia.methods.iia.finest_default`) is chosen from it, so both read the same shapes the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image

from ..adapters import Adapter
from ..adapters.base import evaluation_mode, on_model
from ..errors import IIAError, ImageInputError
from ..imaging import config_input_size

Preprocess = Callable[[Image.Image], torch.Tensor]
"""How one image becomes the model input ``[1, C, H, W]`` (the explainer's preprocessing through its processor)."""

Shapes = list[tuple[str, tuple[int, ...]]]
"""``(tap, shape of its representation for one image)`` in forward order (feature maps channels first)."""

BLANK = Image.new("RGB", (224, 224), (128, 128, 128))
"""The probe image; the processor resizes it to the model's input size."""


class _ShapeRun:
    """A :class:`~hf_iia.adapters.TapRun` that changes nothing and records each representation's shape."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}

    def expand(self, tap: str, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tensors

    def represent(self, tap: str, rep: torch.Tensor) -> torch.Tensor:
        self.shapes[tap] = tuple(rep.shape)
        return rep

    def row_images(self) -> torch.Tensor:
        return torch.zeros(1, dtype=torch.int64)  # one probe image


def can_probe(adapter: Adapter, preprocess: Preprocess | None) -> bool:
    """Whether :func:`layer_shapes` knows an input size: a processor, or the config's ``image_size``."""
    return preprocess is not None or config_input_size(getattr(adapter.model, "config", None)) is not None


def layer_shapes(adapter: Adapter, preprocess: Preprocess | None) -> Shapes:
    """Every tap of ``adapter`` reached by one forward pass, with its representation's shape ``[1, ...]``, in forward
    order: a blank image through ``preprocess`` (``None``: no processor, then a zero input of the config's
    ``image_size``). The caller holds the model's lock.

    Raises:
        ImageInputError: no ``preprocess`` and no usable ``image_size``, or the probe forward fails (the message
            names ``processor=`` and ``layer=``).
    """
    model = adapter.model
    config = getattr(model, "config", None)
    if preprocess is not None:
        pixel_values = preprocess(BLANK)
        what = "a blank image through the processor"
    else:
        size = config_input_size(config)
        if size is None:
            raise ImageInputError(
                f"{type(model).__name__} has no image processor and its config gives no image_size, so the "
                "input size of a probe is unknown; pass processor= (e.g. AutoImageProcessor.from_pretrained(...))"
            )
        channels = getattr(config, "num_channels", 3)
        pixel_values = torch.zeros(1, channels if isinstance(channels, int) and channels > 0 else 3, *size)
        what = f"a zero input of config.image_size {list(size)} (no processor)"
    pixel_values = on_model(model, pixel_values)
    run = _ShapeRun()
    try:
        with evaluation_mode(model), torch.no_grad(), adapter.installed(run, adapter.taps):
            adapter.logits(pixel_values)
    except IIAError:
        raise
    except (RuntimeError, ValueError, ArithmeticError, IndexError, TypeError) as error:
        raise ImageInputError(
            f"{type(model).__name__} fails on {what}, input {list(pixel_values.shape)} "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); pass processor= the "
            "model's image processor, or layer= (which needs no probe) and inputs of the size the model takes"
        ) from error
    return [(tap, run.shapes[tap]) for tap in adapter.taps if tap in run.shapes]
