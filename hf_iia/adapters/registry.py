"""The family registry: which adapter explains a model, and what each family declares.

A *family* is one kind of representation (convolutional feature maps, global
self-attention, ...). Each family lives in one file of :mod:`hf_iia.adapters`, where it
declares a :class:`~hf_iia.family.Family` (its presets and its default comparison method) beside its
adapter code, and registers an adapter factory for the ``config.model_type`` values it
explains. No other module of the package holds family names.

Adding a family: write ``adapters/<family>.py`` with a ``Family``, an ``Adapter`` subclass
and ``@register_adapter(...)`` factories, and add its import to ``adapters/__init__.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn

    from .base import Adapter, LayerSpec

AdapterFactory = Callable[["nn.Module", "LayerSpec"], "Adapter"]


_ADAPTERS: dict[str, AdapterFactory] = {}
_FALLBACK: list[AdapterFactory] = []

REFUSED: dict[str, str] = {
    "imagegpt": "it classifies colour-cluster token ids (input_ids from k-means quantised pixels), not pixel_values: "
    "the input is discrete, so no gradient with respect to the image exists",
    "shieldgemma2": "it is a vision-language policy classifier: its forward needs a text prompt (input_ids) besides "
    "the image, and its scores are Yes/No token probabilities, not an image-classification head",
    "perceiver": "it reads the image into a latent array by cross-attention: neither a spatial stage nor self-attention "
    "over patch tokens exists to integrate over",
    "dinat": "its neighbourhood attention needs the natten package's 2-D kernels, which no installable natten "
    "release for this torch provides, so it was never run here",
    "pvt": "its position embeddings fix the input size and its last stage (what the head reads) carries a class "
    "token, so that stage has no grid; the first stage's tokens have one, but the encoder reshapes them with the "
    "batch size read once from pixel_values, so that stage cannot carry the integration points' extra rows (the "
    "engine's rows_from_input, every point a batch row from the input, lifts that limit; its stage adapter and its "
    "cost against the floor are not established yet)",
    "pvt_v2": "its hidden_states are reshaped copies no module returns; the token outputs of each stage's "
    "layer_norm equal them after a raster reshape, but the encoder reshapes every stage with the batch size read "
    "once from pixel_values, so a stage cannot carry the integration points' extra rows (the engine's "
    "rows_from_input lifts that limit; its stage adapter and its cost against the floor are not established yet)",
}
"""``config.model_type`` -> why it is refused (unless ``layer=`` names a module to explain as activations)."""


def register_adapter(*model_types: str) -> Callable[[AdapterFactory], AdapterFactory]:
    """Register a factory ``(model, layer) -> Adapter`` for the given ``config.model_type`` values."""

    def decorate(factory: AdapterFactory) -> AdapterFactory:
        for model_type in model_types:
            _ADAPTERS[model_type] = factory
        return factory

    return decorate


def register_fallback(factory: AdapterFactory) -> AdapterFactory:
    """Register the factory used for a model of no registered type when ``layer=`` is given."""
    _FALLBACK[:] = [factory]
    return factory


def supported_model_types() -> tuple[str, ...]:
    """The ``config.model_type`` values that have an adapter."""
    return tuple(sorted(_ADAPTERS))


def adapter_for(model: nn.Module, layer: LayerSpec = None) -> Adapter:
    """The adapter for ``model``: by ``config.model_type``, else the fallback when ``layer=`` is given."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    factory = _ADAPTERS.get(model_type or "") or (_FALLBACK[0] if layer is not None and _FALLBACK else None)
    if factory is not None:
        adapter = factory(model, layer)
        adapter.rebuild = functools.partial(factory, model)  # Adapter.at_levels: the same family at other levels
        return adapter
    if model_type in REFUSED:
        raise UnsupportedModelError(
            f"{type(model).__name__} ({model_type!r}) is not explained by default: {REFUSED[model_type]}. Pass layer= "
            "(a module whose output is a feature map [B, C, h, w]) to explain that layer's activations"
        )
    kind = f"model_type {model_type!r}" if model_type else f"a plain {type(model).__name__}"
    raise UnsupportedModelError(
        f"no IIA adapter for {kind}. Supported model types: {', '.join(supported_model_types())}. "
        "For any other classifier whose forward returns logits, pass layer= (a module or its dotted name, "
        "e.g. layer='layer4') to explain that layer's activations CNN-style"
    )
