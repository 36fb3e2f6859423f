"""Where IIA's integrands live: small pure functions of (representation, gradient).

An *integrand* ``q(r, g)`` takes a representation ``r`` evaluated at one integration
point and the gradient ``g = dy/dr`` of the target logit at that point (same shape),
and returns that point's contribution (same shape). The engine sums contributions
over all points of the iterated integral and divides by their number.

A *fusion* turns the integrated quantities into one 2-D map per image:
:func:`channel_sum` for CNN feature maps, :func:`gradient_rollout` and :func:`gae_rollout`
for ViT attention.

The comparison methods of :mod:`hf_iia.methods` are integrands too, mostly evaluated at
the single point ``a = 1``: :func:`gradient` (Integrated Gradients, with
:func:`integrated_gradients`), :func:`gradcam`, :func:`gradcam_plus_plus` and
:func:`attention` (Attention Rollout). Spatial means and sums of the CNN integrands run
over the last two axes ``(h, w)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Integrand = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Rollout = Callable[[Sequence[torch.Tensor], Sequence[int], int], torch.Tensor]


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


def gradient(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``dy/dr``: the plain gradient (Integrated Gradients' integrand)."""
    return grad


def attention(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``r``: the representation itself, gradient unused (attention probabilities for Attention Rollout)."""
    return rep


def gradcam(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) before the channel sum: ``w_k * A_k`` with ``w_k = mean_ij dy/dA_kij``.

    ``rep``, ``grad``: ``[N, K, h, w]`` feature map and its gradient; returns ``[N, K, h, w]``.
    """
    return grad.mean(dim=(-2, -1), keepdim=True) * rep


def gradcam_plus_plus(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19) before the channel sum: ``w_k * A_k``.

    ``w_k = sum_ij alpha_kij relu(g_kij)`` with ``alpha_kij = g^2 / (2 g^2 + (sum_ab A_kab) g^3)``
    (the closed form for an exponentiated score, written with first derivatives only), and
    ``alpha = 0`` where its denominator is zero (e.g. ``g = 0``).

    ``rep``, ``grad``: ``[N, K, h, w]``; returns ``[N, K, h, w]``.
    """
    squared = grad * grad
    denominator = 2 * squared + rep.sum(dim=(-2, -1), keepdim=True) * squared * grad
    alpha = torch.where(denominator != 0, squared / denominator, torch.zeros_like(squared))
    return (alpha * grad.clamp_min(0)).sum(dim=(-2, -1), keepdim=True) * rep


INTEGRANDS: dict[str, Integrand] = {
    "grad_relu_act": grad_relu_act,
    "relu_grad_act": relu_grad_act,
    "grad_act": grad_act,
}


def channel_sum(integral: torch.Tensor) -> torch.Tensor:
    """Sum an integrated CNN feature map over channels: ``[B, K, h, w] -> [B, h, w]``."""
    return integral.sum(dim=1)


def integrated_gradients(mean_gradient: torch.Tensor, inputs: torch.Tensor, baseline: float) -> torch.Tensor:
    """Integrated Gradients from the path-averaged gradient: ``(x - x') * mean_a dy/dx(x' + a (x - x'))``.

    ``mean_gradient``, ``inputs``: ``[B, C, H, W]``; returns ``[B, C, H, W]`` attributions whose
    sum approximates ``f(x) - f(x')`` (completeness).
    """
    return (inputs - baseline) * mean_gradient


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


def gae_rollout(blocks: Sequence[torch.Tensor], rows: Sequence[int], first_patch: int) -> torch.Tensor:
    """Generic Attention-model Explainability (Chefer et al., ICCV 2021) for self-attention.

    Same arguments and result as :func:`gradient_rollout` (``blocks``: per block
    ``[B, heads, T, T]``, the integrated ``relu(dy/dA_b * A_b)``). Starting from ``R = I``,
    each block in forward order adds its head-averaged term propagated through the
    relevance so far, ``R = R + mean_h(G_b) @ R``; rows are not normalised.
    """
    if not blocks:
        raise ValueError("gae_rollout needs at least one block")
    batch, _, tokens, _ = blocks[0].shape
    relevance = torch.eye(tokens, dtype=blocks[0].dtype, device=blocks[0].device).expand(batch, tokens, tokens)
    for block in blocks:
        relevance = relevance + block.mean(dim=1) @ relevance
    return relevance[:, list(rows), first_patch:].mean(dim=1)
