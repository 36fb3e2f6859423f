"""The attention-rollout methods, each at ``a = 1`` of every block: Attention Rollout (Abnar & Zuidema 2020),
Gradient Rollout (IIA's ViT integrand at the input only) and GAE (Chefer et al. 2021)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..adapters import Adapter, AttentionAdapter
from ..engine import IntegralSpec, Start
from ..fusions import gae_rollout
from ..integrands import Integrand, attention, relu_grad_act
from .base import Method, MethodOptions, at_input, input_size, register_method


class Rollout(Method):
    """:attr:`integrand` at ``a = 1`` on every block's attention; the adapter's rollout of ``(A + I) / 2``."""

    requires = AttentionAdapter
    integrand: ClassVar[Integrand]

    def spec(self, adapter: Adapter, options: MethodOptions, start: Start | None) -> IntegralSpec:
        return at_input(adapter, type(self).integrand)


@register_method("attention_rollout")
class AttentionRollout(Rollout):
    """Every block's attention at ``a = 1``, rolled out. It reads no gradient: the engine's one backward pass at
    ``a = 1`` is computed and left unused (cheap next to the forward pass, and it keeps one code path)."""

    integrand = attention


@register_method("gradient_rollout")
class GradientRollout(Rollout):
    """IIA's ViT integrand (``relu(dy/dA) * A``) at ``a = 1`` only, rolled out."""

    integrand = relu_grad_act


@register_method("gae")
class GAE(Rollout):
    """IIA's ViT integrand at ``a = 1``, propagated by :func:`~hf_iia.fusions.gae_rollout` (Chefer et al. 2021)."""

    integrand = relu_grad_act

    def fuse(self, adapter: Adapter, integrals: dict[str, torch.Tensor], pixel_values: torch.Tensor) -> torch.Tensor:
        """Chefer et al.'s relevance propagation over the per-block terms, on the ViT adapter's token layout."""
        assert isinstance(adapter, AttentionAdapter)  # prepare() admits only attention adapters
        return adapter.rollout_map(integrals, input_size(pixel_values), gae_rollout)
