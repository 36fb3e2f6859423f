"""Fusions: integrated quantities -> one 2-D relevance map per image. Small pure functions.

:func:`channel_sum` for feature maps ``[B, K, h, w]``; :data:`LEVEL_FUSIONS` for the channel-summed maps of
several feature-map levels; :func:`gradient_rollout` (IIA's ViT fusion) and :func:`gae_rollout` for per-block
attention terms ``[B, heads, T, T]``; :func:`integrated_gradients` turns IG's path-averaged input gradient into
attributions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Rollout = Callable[[Sequence[torch.Tensor], torch.Tensor, int], torch.Tensor]
"""``(blocks [B, heads, T, T] each, readout weights [T], first patch column) -> [B, T - first_patch]``."""


def channel_sum(integral: torch.Tensor) -> torch.Tensor:
    """Sum an integrated CNN feature map over channels: ``[B, K, h, w] -> [B, h, w]``."""
    return integral.sum(dim=1)


def only_map(maps: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """The one observed level's map: ``[[B, h, w]] -> [B, h, w]`` (``mode`` unused)."""
    (single,) = maps
    return single


def normalised_product(maps: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Levels' maps ``[B, h_l, w_l]`` on the finest grid (``mode``), each min-max normalised, multiplied: ``[B, h, w]``."""
    return torch.stack(_normalised_on_finest_grid(maps, mode)).prod(dim=0)


def normalised_mean(maps: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Levels' maps ``[B, h_l, w_l]`` on the finest grid (``mode``), each min-max normalised, averaged: ``[B, h, w]``."""
    return torch.stack(_normalised_on_finest_grid(maps, mode)).mean(dim=0)


def min_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map over the last two axes of ``[..., h, w]`` rescaled to ``[0, 1]``; a constant map becomes zeros.

    The one min-max of the package (the explainer's :func:`hf_iia.maps.normalise`, the metrics and the benchmark
    build on it). A span below the dtype's smallest normal number is still divided by itself, so the maximum lands
    on 1 for any non-constant map."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / torch.where(span > 0, span, 1.0), 0.0)


def _normalised_on_finest_grid(maps: Sequence[torch.Tensor], mode: str) -> list[torch.Tensor]:
    """Each ``[B, h_l, w_l]`` map resized to the grid with the most cells (``F.interpolate`` ``mode``,
    ``align_corners=False``, as the maps are brought to the input later), then min-max normalised per image
    (a constant map becomes zeros). Normalising after resizing keeps a bicubic overshoot inside ``[0, 1]``."""
    size = max((tuple(m.shape[1:]) for m in maps), key=lambda hw: hw[0] * hw[1])
    normalised = []
    for level in maps:
        if tuple(level.shape[1:]) != size:
            level = F.interpolate(level.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)
        normalised.append(min_max(level))
    return normalised


@dataclass(frozen=True)
class LevelFusion:
    """Where a feature-map IIA map is formed when several levels are interpolated.

    Attributes:
        observe: which of the interpolated levels (forward order) the integrand reads, as a slice of them.
        fuse: ``(channel-summed integrals [B, h_l, w_l] of the observed levels in forward order, upsampling mode)
            -> [B, h, w]``.
    """

    observe: slice
    fuse: Callable[[Sequence[torch.Tensor], str], torch.Tensor]


LEVEL_FUSIONS: dict[str, LevelFusion] = {
    "deepest": LevelFusion(slice(-1, None), only_map),
    "earliest": LevelFusion(slice(0, 1), only_map),
    "product": LevelFusion(slice(None), normalised_product),
    "sum": LevelFusion(slice(None), normalised_mean),
}
"""The ``combine=`` values of feature-map IIA: the deepest level's channel sum (the default); the integrand read at
the earliest level (finer grid; its gradient flows through the later levels' paths); every level's map, normalised
on the finest grid, multiplied or averaged."""


def integrated_gradients(
    mean_gradient: torch.Tensor, inputs: torch.Tensor, baseline: float | torch.Tensor
) -> torch.Tensor:
    """Integrated Gradients from the path-averaged gradient: ``(x - x') * mean_a dy/dx(x' + a (x - x'))``.

    ``mean_gradient``, ``inputs`` and a tensor ``baseline`` (one start per image): ``[B, C, H, W]``; returns ``[B, C, H, W]`` attributions whose
    sum approximates ``f(x) - f(x')`` (completeness).
    """
    return (inputs - baseline) * mean_gradient


def gradient_rollout(blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int) -> torch.Tensor:
    """Gradient Rollout over integrated per-block attention terms.

    Args:
        blocks: one tensor per transformer block, in forward order, each
            ``[B, heads, T, T]``: the integrated ``relu(dy/dA_b * A_b)``.
        readout: ``[T]`` weights of the token rows the classifier reads (one-hot on the CLS token for ViT,
            one half on each of CLS and distillation for DeiT, uniform over the patches for a mean-pooling head).
        first_patch: index of the first patch token; columns before it (special
            tokens) are dropped.

    Returns:
        ``[B, T - first_patch]``: relevance of each patch token.

    Each block is fused over heads by the mean, the identity is added and rows are
    normalised, ``M_b = (G_b + I) / rowsum``; the blocks are multiplied in forward
    order, ``R = M_{B-1} ... M_1 M_0``; the relevance is ``readout @ R`` at the patch columns.
    """
    return _rollout(blocks, readout, first_patch)


def gae_rollout(blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int) -> torch.Tensor:
    """Generic Attention-model Explainability (Chefer et al., ICCV 2021) for self-attention.

    Same arguments and result as :func:`gradient_rollout` (``readout``: ``[T]`` row weights; ``blocks``: per block
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
    return (readout @ relevance)[:, first_patch:]


def normalised_gradient_rollout(
    blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int
) -> torch.Tensor:
    """Gradient Rollout made invariant to the scale of the logit, one scale per block.

    Same arguments and result as :func:`gradient_rollout`. Each head-averaged block term ``G_b`` is divided by its
    mean row sum before the identity is added, ``M_b = (G_b / mean_i sum_j G_b[i, j] + I) / rowsum``, so that
    logits ``c * y`` (a temperature, a re-scaled head) give the same map for every ``c > 0``: in the published
    rule the identity competes with a term whose size follows ``c``. Every block's term then weighs as much as the
    identity, whatever its own size. A block whose term is all zero keeps the identity alone.
    """
    return _rollout(_scaled(blocks, per_block=True), readout, first_patch)


def globally_normalised_gradient_rollout(
    blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int
) -> torch.Tensor:
    """Gradient Rollout made invariant to the scale of the logit, one scale per image.

    Same arguments and result as :func:`gradient_rollout`. Every head-averaged block term ``G_b`` of an image is
    divided by one number, the mean over the blocks of their mean row sums, before the identity is added: logits
    ``c * y`` give the same map for every ``c > 0`` (as :func:`normalised_gradient_rollout`), while a block whose
    term is small stays small next to the others (unlike it).
    """
    return _rollout(_scaled(blocks, per_block=False), readout, first_patch)


def globally_normalised_gae(blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int) -> torch.Tensor:
    """:func:`gae_rollout` over block terms divided by one number per image (as
    :func:`globally_normalised_gradient_rollout`): invariant to the scale of the logit. Same arguments and result."""
    return gae_rollout(_scaled(blocks, per_block=False), readout, first_patch)


def _scaled(blocks: Sequence[torch.Tensor], per_block: bool) -> list[torch.Tensor]:
    """Each ``[B, heads, T, T]`` block divided by its image's mean row sum of the head-averaged term: that block's
    (``per_block``) or the mean of every block's (one number per image). A zero scale leaves the terms as they are
    (all zero)."""
    if not blocks:
        raise ValueError("a rollout needs at least one block")
    sums = torch.stack([block.mean(dim=1).sum(dim=-1).mean(dim=-1) for block in blocks])  # [blocks, B]
    scales = sums if per_block else sums.mean(dim=0, keepdim=True).expand_as(sums)
    tiny = torch.finfo(blocks[0].dtype).tiny
    return [
        torch.where(scale.view(-1, 1, 1, 1) > 0, block / scale.clamp_min(tiny).view(-1, 1, 1, 1), block)
        for block, scale in zip(blocks, scales, strict=True)
    ]


def _rollout(blocks: Sequence[torch.Tensor], readout: torch.Tensor, first_patch: int) -> torch.Tensor:
    """The rollout of :func:`gradient_rollout`."""
    if not blocks:
        raise ValueError("gradient rollout needs at least one block")
    batch, _, tokens, _ = blocks[0].shape
    eye = torch.eye(tokens, dtype=blocks[0].dtype, device=blocks[0].device).expand(batch, tokens, tokens)
    rollout = eye
    for block in blocks:
        fused = block.mean(dim=1) + eye  # [B, T, T]
        fused = fused / fused.sum(dim=-1, keepdim=True)
        rollout = fused @ rollout
    return (readout @ rollout)[:, first_patch:]


ROLLOUTS: dict[str, Rollout] = {
    "gradient_rollout": gradient_rollout,
    "normalised_gradient_rollout": normalised_gradient_rollout,
    "globally_normalised_gradient_rollout": globally_normalised_gradient_rollout,
    "gae": gae_rollout,
    "globally_normalised_gae": globally_normalised_gae,
}
"""The rollouts an attention family's IIA map can use (``fusion=``): the published rule, its logit-scale invariant
variants (one scale per block or per image), and GAE's propagation (Chefer et al.) of IIA's integrated terms, as
published and invariant."""
