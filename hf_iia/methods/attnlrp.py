"""AttnLRP (Achtibat et al. 2024): ``x * dy/dx`` at the input under the adapter's LRP rules."""

from __future__ import annotations

import contextlib

import torch

from ..adapters import Adapter, RelevanceAdapter
from ..engine import INPUT_TAP, IntegralSpec, Start, make_spec
from ..fusions import channel_sum
from ..integrands import grad_act
from .base import Method, MethodOptions, register_method


@register_method("attnlrp")
class AttnLRP(Method):
    """The input relevance under the LRP rules of a :class:`~hf_iia.adapters.RelevanceAdapter`; channel sum,
    signed (lxt's heatmap)."""

    requires = RelevanceAdapter
    signed = True

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        """``x * dy/dx`` at the input itself (under the gradients that :meth:`run` modifies)."""
        return make_spec((), (INPUT_TAP,), (0,), grad_act)

    def fuse(self, adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """The input relevance summed over channels, signed; already at the input's size."""
        return channel_sum(integrals[INPUT_TAP])

    def installed(self, adapter: Adapter) -> contextlib.AbstractContextManager[object]:
        """The adapter's LRP rules: the gradient at the input becomes relevance per unit of input."""
        assert isinstance(adapter, RelevanceAdapter)  # prepare() admits only these adapters
        return adapter.relevance_rules()
