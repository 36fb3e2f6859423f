"""Map post-processing: raw maps ``[B, h, w]`` -> maps ``[B, H, W]`` in ``[0, 1]`` at the input size.

Pure torch functions. The explainer runs them in float64 (:func:`to_float64`): an attention map is a rollout close
to a constant plus a small contrast, and float32 rounding of that constant, which differs with the batch's shape and
the CPU, would be stretched by the min-max normalisation.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from .fusions import min_max


def to_float64(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (any shape) as float64, on the CPU where its device has no float64 (MPS)."""
    return (tensor.cpu() if tensor.device.type == "mps" else tensor).double()


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """``[B, h, w] -> [B, H, W]`` with ``mode`` (bicubic/bilinear, ``align_corners=False``)."""
    if tuple(maps.shape[1:]) == tuple(size):
        return maps
    return F.interpolate(maps.unsqueeze(1), size=size, mode=mode, align_corners=False).squeeze(1)


def _span(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(low, span, constant)`` of each ``[H, W]`` map of ``[B, H, W]``, each ``[B, 1, 1]``. A span within the
    dtype's rounding of the map's magnitude is rounding noise (e.g. a constant map resampled bicubically), not
    contrast: the map counts as constant, since stretching it to [0, 1] would draw noise as a map."""
    flat = maps.flatten(1)
    low = flat.min(dim=1).values.view(-1, 1, 1)
    high = flat.max(dim=1).values.view(-1, 1, 1)
    span = high - low
    noise = 64 * torch.finfo(maps.dtype).eps * torch.maximum(low.abs(), high.abs())
    return low, span, ~(span > noise) | ~torch.isfinite(span)


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``[H, W]`` map of ``[B, H, W]`` to ``[0, 1]`` (:func:`hf_iia.fusions.min_max`); a
    constant map, or one whose span is rounding noise (:func:`_span`), becomes zeros (with a warning)."""
    constant = _span(maps)[2]
    if constant.any():
        warnings.warn(
            f"{int(constant.sum())} map(s) are constant (the integrand is the same everywhere, e.g. all zero); "
            "returning all-zero maps for them",
            RuntimeWarning,
            stacklevel=3,
        )
    return torch.where(constant, 0.0, min_max(maps)).clamp_(0, 1)


def zero_levels(maps: torch.Tensor) -> torch.Tensor:
    """``[B]``: where 0 of each raw map of ``[B, H, W]`` lands after :func:`normalise` (0 for a constant map)."""
    low, span, constant = _span(maps)
    zero = -low / torch.where(constant, torch.ones_like(span), span)
    return torch.where(constant, torch.zeros_like(zero), zero).flatten()
