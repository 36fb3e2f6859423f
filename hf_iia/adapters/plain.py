"""The tapless adapter: any classifier that returns logits, seen at its input only.

For input-space methods (Integrated Gradients), which observe ``pixel_values`` itself
(the engine's ``INPUT_TAP``) and need no representation inside the model, so they work
on every model, with or without a family adapter. Not in the registry: methods pick it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..family import Family
from ..fusions import channel_sum
from .base import Adapter, TapRun

PLAIN = Family(name="plain", description="the input itself; channel sum")


class PlainAdapter(Adapter):
    """No taps; the map is the channel sum of the input-space integral ``[B, C, H, W] -> [B, H, W]``."""

    family = PLAIN
    upsample_mode = "bilinear"  # unused in practice: input-space maps already have the input size

    def __init__(self, model: torch.nn.Module, default_internal_batch_size: int | None = None) -> None:
        """``default_internal_batch_size``: that of the model's family adapter, whose saved activations per point the
        input gradient needs as well (``None``: the package's)."""
        super().__init__(model)
        if default_internal_batch_size is not None:
            self.default_internal_batch_size = default_internal_batch_size

    @property
    def taps(self) -> tuple[str, ...]:
        return ()

    @property
    def levels(self) -> tuple[str, ...]:
        return ()

    def observed(self, levels: Sequence[str]) -> tuple[str, ...]:
        return ()

    def installed(self, run: TapRun, active: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def to_map(self, integrals: dict[str, torch.Tensor], input_size: tuple[int, int]) -> torch.Tensor:
        (integral,) = integrals.values()
        return channel_sum(integral)
