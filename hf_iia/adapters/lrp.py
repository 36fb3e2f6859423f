"""Layer-wise Relevance Propagation rules written as modified gradients (AttnLRP, Achtibat et al., ICML 2024).

In the Gradient x Input form of LRP, a rule changes how the gradient flows backward through one
operation, never the forward value; the relevance of the input is then ``x * dy/dx`` under the modified
gradients. Every rule here returns a tensor with the original value (bit for bit) and the rule's gradient,
through :func:`with_gradient_of`. An adapter installs them on its model (forward hooks, its attention
function) for the duration of a run; see :class:`~hf_iia.adapters.base.RelevanceAdapter`.

Rules not written here are the plain gradient: it is LRP's epsilon rule (``epsilon -> 0``) for linear
layers, convolutions and additions, and AttnLRP's rule for the softmax.
"""

from __future__ import annotations

import torch
from torch import nn


def with_gradient_of(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` in the forward pass, the gradient of ``surrogate`` (same shape) in the backward pass."""
    return value.detach() + (surrogate - surrogate.detach())


def uniform_rule(tensor: torch.Tensor, operands: int) -> torch.Tensor:
    """AttnLRP's uniform rule for one operand of a product of ``operands`` activations: its gradient divided
    by ``operands`` (the relevance of the product is shared equally). ``tensor``: any shape."""
    return with_gradient_of(tensor, tensor / operands)


def identity_rule(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook on an element-wise non-linearity ``y = f(x)`` (GELU, ...): AttnLRP's identity rule, the
    relevance passes through unchanged, i.e. the gradient ``f(x) / x`` (0 where ``x = 0``). Any shape."""
    (inputs,) = args
    ratio = torch.where(inputs != 0, output / torch.where(inputs != 0, inputs, 1), 0).detach()
    return with_gradient_of(output, inputs * ratio)


def layer_norm_rule(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
    """Forward hook on an ``nn.LayerNorm``: AttnLRP's identity rule for normalisation, the standard deviation
    taken as a constant (the mean subtraction, the scale and the shift stay linear). ``[..., *normalized_shape]``.
    """
    assert isinstance(module, nn.LayerNorm)
    (inputs,) = args
    dims = tuple(range(-len(module.normalized_shape), 0))
    centred = inputs - inputs.mean(dim=dims, keepdim=True)
    std = (centred.pow(2).mean(dim=dims, keepdim=True) + module.eps).sqrt()
    surrogate = centred / std.detach()
    if module.weight is not None:
        surrogate = surrogate * module.weight
    if module.bias is not None:
        surrogate = surrogate + module.bias
    return with_gradient_of(output, surrogate)
