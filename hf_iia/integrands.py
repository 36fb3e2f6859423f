"""Where IIA's integrands live: small pure functions of (representation, gradient).

An *integrand* ``q(r, g)`` takes a representation ``r`` evaluated at one integration
point and the gradient ``g = dy/dr`` of the target logit at that point (same shape),
and returns that point's contribution (same shape). The engine sums contributions
over all points of the iterated integral and divides by their number (points where an
integrand of :data:`VANISHING_AT_ZERO` is zero by construction count, but are not computed).

The fusions that turn integrated quantities into 2-D maps live in :mod:`hf_iia.fusions`.

The comparison methods of :mod:`hf_iia.methods` are integrands too, mostly evaluated at
the single point ``a = 1``: :func:`gradient` (Integrated Gradients), :func:`gradcam`,
:func:`gradcam_plus_plus`, :func:`layercam` and :func:`attention` (Attention Rollout; the
feature map Score-CAM weighs). Spatial means and sums of the CNN integrands run over the last two axes ``(h, w)``.
"""

from __future__ import annotations

from collections.abc import Callable

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


def layercam(rep: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021) before the channel sum: ``relu(dy/dA_kij) * A_kij``, every location weighted
    by its own positive gradient (not ``relu(g * A)``: a negative activation with a positive gradient counts).

    ``rep``, ``grad``: ``[N, K, h, w]``; returns ``[N, K, h, w]``.
    """
    return grad.clamp_min(0) * rep


VANISHING_AT_ZERO: frozenset[Integrand] = frozenset({grad_relu_act, relu_grad_act, grad_act, attention, layercam})
"""The integrands with ``q(0, g) == 0`` exactly for every finite ``g``: each is ``r`` itself or an elementwise
product with ``r`` (or ``relu(r)``), so a zero representation gives a zero contribution whatever its gradient. The
engine leaves out the points where every observed representation is zero by construction (a level's ``a = 0`` with
baseline 0), without computing them. Not here: :func:`gradient` (``g`` itself), and :func:`gradcam` and
:func:`gradcam_plus_plus`, whose spatial mean / sum of ``g`` can overflow to ``inf`` for finite ``g`` (``inf * 0``
is NaN, not 0)."""

INTEGRANDS: dict[str, Integrand] = {
    "grad_relu_act": grad_relu_act,
    "relu_grad_act": relu_grad_act,
    "grad_act": grad_act,
}
