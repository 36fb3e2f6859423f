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
