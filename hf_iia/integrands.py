"""Where IIA's integrands live: small pure functions of (representation, gradient).

An *integrand* ``q(r, g)`` takes a representation ``r`` evaluated at one integration
point and the gradient ``g = dy/dr`` of the target logit at that point (same shape),
and returns that point's contribution (same shape). The engine sums contributions
over all points of the iterated integral and divides by their number.

A *fusion* turns the integrated quantities into one 2-D map per image:
:func:`channel_sum` for CNN feature maps, :func:`gradient_rollout` for ViT attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Integrand = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def grad_relu_act(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``dy/dr * relu(r)``: gradient-weighted positive activation (the reference CNN integrand)."""
    return grad * rep.clamp_min(0)


def relu_grad_act(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``relu(dy/dr * r)``: positive part of the gradient x representation product.

    For attention probabilities this is the per-head term of Gradient Rollout.
    """
    return (grad * rep).clamp_min(0)


def grad_act(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``dy/dr * r``: the signed gradient x representation product (IG's integrand x input)."""
    return grad * rep


INTEGRANDS: dict[str, Integrand] = {
    "grad_relu_act": grad_relu_act,
    "relu_grad_act": relu_grad_act,
    "grad_act": grad_act,
}


def channel_sum(integral: torch.Tensor) -> torch.Tensor:
    """Sum an integrated CNN feature map over channels: ``[B, K, h, w] -> [B, h, w]``."""
    return integral.sum(dim=1)


def gradient_rollout(
    blocks: Sequence[torch.Tensor], rows: Sequence[int], first_patch: int
) -> torch.Tensor:
    """Gradient Rollout over integrated per-block attention terms.

    Args:
        blocks: one tensor per transformer block, in forward order, each
            ``[B, heads, T, T]``: the integrated ``relu(dy/dA_b * A_b)``.
        rows: the token rows the classifier reads (e.g. ``[0]`` for the CLS token,
            ``[0, 1]`` for DeiT's CLS + distillation tokens); their rows are averaged.
        first_patch: index of the first patch token; columns before it (special
            tokens) are dropped.

    Returns:
        ``[B, T - first_patch]``: relevance of each patch token.

    Each block is fused over heads by the mean, the identity is added and rows are
    normalised, ``M_b = (G_b + I) / rowsum``; the blocks are multiplied in forward
    order, ``R = M_{B-1} ... M_1 M_0``.
    """
    if not blocks:
        raise ValueError("gradient_rollout needs at least one block")
    batch, _, tokens, _ = blocks[0].shape
    eye = torch.eye(tokens, dtype=blocks[0].dtype, device=blocks[0].device).expand(batch, tokens, tokens)
    rollout = eye
    for block in blocks:
        fused = block.mean(dim=1) + eye  # [B, T, T]
        fused = fused / fused.sum(dim=-1, keepdim=True)
        rollout = fused @ rollout
    return rollout[:, list(rows), first_patch:].mean(dim=1)
