"""Performance information curves: SIC and AIC (Kapishnikov et al., 2019 "XRAI" and 2021 "Guided IG").

Not to be confused with PIC, the Percentage Increase in Confidence of :mod:`hf_iia.metrics.protocol`.
The curve asks how much of the model's score is recovered per bit of image information
revealed, most salient pixels first. For each image (all steps follow the PAIR
``saliency`` package, ``saliency.metrics.pic.compute_pic_metric``):

1. The image is quantised to uint8 (``round(clamp(255 * (x_norm * std + mean), 0, 255))``);
   the model only ever sees uint8 images, converted back with ``(v / 255 - mean) / std``.
2. A "bokeh" image keeps the pixels of a random mask (1 % of the pixels by default,
   :func:`random_pixel_masks`) and fills every other pixel by interpolating from the
   kept ones (``reconstruct``).
3. Information = byte length of the lossless WebP encoding (Pillow, ``quality=100``) of a uint8 image.
4. For each threshold ``t`` (fraction of the most salient pixels, ascending) the pixels with
   ``map >= quantile(map, 1 - t)`` (linear-interpolated quantile, as ``numpy.quantile``) and
   the random-mask pixels are kept, the others reconstructed. With ``e`` its information and
   ``s`` its score (softmax probability of the target for SIC, 1/0 top-1 correctness for AIC),
   the point is ``x = clip((e - e_bokeh) / (e_orig - e_bokeh), 0, 1)`` and
   ``y = clip((s - s_bokeh) / (s_orig - s_bokeh), 0, 1)``; with ``keep_monotonous`` ``y`` is
   the running maximum over thresholds.
5. The points plus ``(0, 0)`` and ``(1, 1)`` are sorted by ``x`` (stable, so ties keep this
   order) and linearly interpolated (``numpy.interp``) at ``x = k / num_points`` for
   ``k = 0 .. num_points - 1``; the point ``(1, 1)`` is appended; AUC is the trapezoid area.
6. An image is excluded (``valid`` false, NaN values) when ``s_orig < min_score``, when
   ``e_bokeh >= e_orig`` or when ``s_bokeh >= s_orig`` (the normalisation is undefined);
   ``saliency`` raises ``ComputePicMetricError`` in the same three cases.

The one step not reproduced by default is the bokeh: ``saliency`` interpolates linearly on a
Delaunay triangulation of the kept pixels (``scipy.interpolate.griddata``, Qhull), which has no
torch equivalent (and grid points are co-circular, so the triangulation itself is an
implementation choice of Qhull). The default :func:`gaussian_bokeh` is a normalised Gaussian
convolution of the kept pixels; pass ``reconstruct=`` a function built on
``saliency.metrics.pic.create_blurred_image`` to get the package's curves exactly (the tests do).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import MetricInputError
from .inputs import (
    Forward,
    MetricInputs,
    Score,
    as_fractions,
    as_pixel_values,
    as_targets,
    batched_scores,
    maps_for,
    normalisation,
)
from .registry import Metric, register_metric

Reconstruct = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(images uint8 [N, C, H, W], keep bool [N, H, W]) -> uint8 [N, C, H, W]``: kept pixels unchanged, others filled."""

DEFAULT_PIC_THRESHOLDS: tuple[float, ...] = (
    0.005,
    0.01,
    0.02,
    0.03,
    0.04,
    0.05,
    0.07,
    0.10,
    0.13,
    0.21,
    0.34,
    0.5,
    0.75,
)
"""Fractions of most salient pixels revealed: the example thresholds of ``saliency.metrics.pic``."""


class InformationCurve(NamedTuple):
    """SIC / AIC of a batch (:func:`information_curve`); rows of excluded images are NaN.

    Attributes:
        thresholds: ``[T]`` float64 fractions of most salient pixels revealed.
        information: ``[B, T]`` float64 normalised information ``x`` of each threshold's image.
        performance: ``[B, T]`` float64 normalised score ``y`` (running maximum when monotonous).
        curve_x: ``[P + 1]`` float64 ``k / P`` for ``k = 0 .. P``.
        curve_y: ``[B, P + 1]`` float64 interpolated curve.
        auc: ``[B]`` float64 trapezoid area under ``curve_y`` in ``[0, 1]``; higher is better.
        valid: ``[B]`` bool, false for excluded images.
    """

    thresholds: torch.Tensor
    information: torch.Tensor
    performance: torch.Tensor
    curve_x: torch.Tensor
    curve_y: torch.Tensor
    auc: torch.Tensor
    valid: torch.Tensor


def random_pixel_masks(
    batch: int, height: int, width: int, fraction: float = 0.01, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """``[batch, height, width]`` bool masks, each with ``int(fraction * height * width)`` random pixels set.

    Deterministic given ``seed`` (a CPU ``torch.Generator``); one independent mask per image,
    as ``saliency`` advises (a fresh random mask per image, shared across the methods compared).
    """
    if not 0 <= fraction <= 1:
        raise MetricInputError(f"fraction must be in [0, 1]; got {fraction!r}.")
    generator = torch.Generator().manual_seed(seed)
    count = int(height * width * fraction)
    order = torch.stack([torch.randperm(height * width, generator=generator) for _ in range(batch)])
    masks = torch.zeros(batch, height * width, dtype=torch.bool)
    masks.scatter_(1, order[:, :count], True)
    return masks.view(batch, height, width).to(device)


def gaussian_bokeh(images: torch.Tensor, keep: torch.Tensor, sigma: float = 5.0) -> torch.Tensor:
    """Fill the pixels outside ``keep`` with a Gaussian-weighted mean of the kept pixels around them.

    The four corner pixels are always kept (as in ``saliency``). For an unkept pixel the value
    is ``sum_j g(d_j) v_j / sum_j g(d_j)`` over kept pixels ``j`` within ``ceil(3 sigma)`` pixels
    (per axis), ``g`` the separable Gaussian; where no kept pixel is that close, the image's mean
    colour (``saliency``'s fill value outside the interpolation's hull). Rounded to uint8.

    Args:
        images: ``[N, C, H, W]`` uint8 images.
        keep: ``[N, H, W]`` bool, the pixels to keep.
        sigma: positive Gaussian standard deviation in pixels.

    Returns:
        ``[N, C, H, W]`` uint8 images.
    """
    if not sigma > 0:
        raise MetricInputError(f"sigma must be positive; got {sigma!r}.")
    keep = keep.clone()
    keep[:, [0, 0, -1, -1], [0, -1, 0, -1]] = True
    values = images.to(torch.float64)
    weights = keep.unsqueeze(1).to(torch.float64)
    radius = math.ceil(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    num, channels, height, width = values.shape
    # Zero padding: pixels outside the image are simply not kept, so the weights renormalise at the border.
    stacked = torch.cat([values * weights, weights], dim=1).reshape(-1, 1, height, width)
    smoothed = F.conv2d(stacked, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    smoothed = F.conv2d(smoothed, kernel.view(1, 1, 1, -1), padding=(0, radius)).view(num, channels + 1, height, width)
    total, weight = smoothed[:, :channels], smoothed[:, channels:]
    mean_colour = values.mean(dim=(2, 3), keepdim=True).expand_as(values)
    filled = torch.where(weight > 1e-12, total / weight.clamp(min=1e-12), mean_colour)
    return torch.where(keep.unsqueeze(1), values, filled).round().clamp(0, 255).to(torch.uint8)


def webp_size(image: torch.Tensor) -> int:
    """Information estimate of a uint8 ``[C, H, W]`` image: bytes of its lossless WebP encoding (quality 100)."""
    array = image.permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(
        buffer, format="webp", lossless=True, quality=100
    )
    return buffer.tell()


def information_curve(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    score: Score = "probability",
    thresholds: Sequence[float] = DEFAULT_PIC_THRESHOLDS,
    random_masks: torch.Tensor | None = None,
    seed: int = 0,
    min_score: float = 0.0,
    keep_monotonous: bool = True,
    num_points: int = 1000,
    reconstruct: Reconstruct = gaussian_bokeh,
    batch_size: int = 64,
) -> InformationCurve:
    """Softmax information curve (``score="probability"``, SIC) or accuracy information curve (``"accuracy"``, AIC).

    See the module docstring for the definition. Model calls are batched over all images and thresholds.

    Args:
        forward: model, see :mod:`hf_iia.metrics.perturbation`.
        pixel_values: ``[B, C, H, W]`` normalised model inputs (quantised to uint8 first).
        heatmaps: ``[B, H, W]`` saliency maps at the input resolution (higher = more salient).
        targets: ``[B]`` integer target classes.
        image_mean: ``[C]`` processor normalisation mean.
        image_std: ``[C]`` processor normalisation std.
        score: ``"probability"`` (SIC) or ``"accuracy"`` (AIC).
        thresholds: ``[T]`` strictly increasing fractions in ``[0, 1]`` (at least 2).
        random_masks: ``[B, H, W]`` bool pixels every bokeh keeps; default :func:`random_pixel_masks` with ``seed``.
        seed: seed of the default random masks.
        min_score: images whose original score is below it are excluded (``saliency``'s
            ``min_pred_value``, 0.8 there; 0 here so that no image is dropped by default).
        keep_monotonous: make the normalised score a running maximum over thresholds (the papers' choice).
        num_points: interpolation points of the curve before the final ``x = 1``.
        reconstruct: the bokeh (default :func:`gaussian_bokeh`), see :data:`Reconstruct`.
        batch_size: images per reconstruction and forward pass.

    Returns:
        :class:`InformationCurve`.
    """
    if score not in ("probability", "accuracy"):
        raise MetricInputError(f"score must be 'probability' or 'accuracy'; got {score!r}.")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 1:
        raise MetricInputError(f"num_points must be a positive integer; got {num_points!r}.")
    pixel_values = as_pixel_values(pixel_values)
    num_images, channels, height, width = pixel_values.shape
    device = pixel_values.device
    maps = maps_for(heatmaps, pixel_values)
    target_tensor = as_targets(targets, num_images).to(device)
    levels = as_fractions(thresholds)
    mean, std = (v.to(device).view(1, -1, 1, 1) for v in normalisation(image_mean, image_std))
    if mean.shape[1] != channels:
        raise MetricInputError(f"image_mean / image_std have {mean.shape[1]} channels but pixel_values {channels}.")
    if random_masks is None:
        random_masks = random_pixel_masks(num_images, height, width, seed=seed, device=device)
    elif not isinstance(random_masks, torch.Tensor) or random_masks.shape != (num_images, height, width):
        raise MetricInputError(f"random_masks must be a bool tensor [B, H, W] = {[num_images, height, width]}.")
    random_masks = random_masks.to(device=device, dtype=torch.bool)

    images = ((pixel_values.to(torch.float64) * std + mean) * 255).clamp(0, 255).round().to(torch.uint8)
    cutoffs = torch.quantile(maps.flatten(1), (1 - levels).to(device), dim=1).T  # [B, T]
    revealed = maps.unsqueeze(1) >= cutoffs.view(num_images, -1, 1, 1)
    # Per image: the bokeh (random mask only), then one image per threshold.
    keep = torch.cat([random_masks.unsqueeze(1), revealed | random_masks.unsqueeze(1)], dim=1)
    steps = keep.shape[1]

    def scores_of(batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model_input = ((batch.to(torch.float64) / 255 - mean) / std).to(pixel_values.dtype)
        return batched_scores(forward, model_input, labels, batch_size, score)

    original_score = scores_of(images, target_tensor)
    original_info = torch.tensor([webp_size(image) for image in images], dtype=torch.float64)
    info = torch.empty(num_images * steps, dtype=torch.float64)
    step_scores = torch.empty(num_images * steps, dtype=torch.float64)
    for pairs in torch.arange(num_images * steps).split(batch_size):
        image_index = pairs // steps
        filled = reconstruct(images[image_index.to(device)], keep.view(-1, height, width)[pairs.to(device)])
        info[pairs] = torch.tensor([webp_size(image) for image in filled], dtype=torch.float64)
        step_scores[pairs] = scores_of(filled, target_tensor[image_index.to(device)]).cpu()
    info, step_scores = info.view(num_images, steps), step_scores.view(num_images, steps)
    original_score = original_score.cpu()

    valid = (original_score >= min_score) & (info[:, 0] < original_info) & (step_scores[:, 0] < original_score)
    information = ((info[:, 1:] - info[:, :1]) / (original_info - info[:, 0]).unsqueeze(1)).clamp(0, 1)
    performance = ((step_scores[:, 1:] - step_scores[:, :1]) / (original_score - step_scores[:, 0]).unsqueeze(1)).clamp(
        0, 1
    )
    if keep_monotonous:
        performance = performance.cummax(dim=1).values
    curve_x = torch.cat(
        [torch.arange(num_points, dtype=torch.float64) / num_points, torch.ones(1, dtype=torch.float64)]
    )
    curve_y = torch.full((num_images, num_points + 1), math.nan, dtype=torch.float64)
    for index in valid.nonzero().flatten().tolist():
        curve_y[index] = _interpolate(information[index], performance[index], curve_x)
    nan = torch.tensor(math.nan, dtype=torch.float64)
    return InformationCurve(
        thresholds=levels,
        information=torch.where(valid.unsqueeze(1), information, nan),
        performance=torch.where(valid.unsqueeze(1), performance, nan),
        curve_x=curve_x,
        curve_y=curve_y,
        auc=torch.trapezoid(curve_y, curve_x, dim=1),
        valid=valid,
    )


def _interpolate(information: torch.Tensor, performance: torch.Tensor, curve_x: torch.Tensor) -> torch.Tensor:
    """``[P + 1]`` curve through ``(information, performance)`` ``[T]`` plus ``(0, 0)``, ``(1, 1)``; the last point
    is 1."""
    x = np.concatenate([information.numpy(), [0.0, 1.0]])
    y = np.concatenate([performance.numpy(), [0.0, 1.0]])
    order = np.argsort(x, kind="stable")  # ties keep the threshold points before the two anchors
    values = np.interp(curve_x[:-1].numpy(), x[order], y[order])
    return torch.from_numpy(np.append(values, 1.0))


def _information_auc(score: Score) -> Callable[[MetricInputs], torch.Tensor]:
    """The metric computing the AUC of :func:`information_curve` with ``score`` (NaN on excluded images)."""
    return lambda inputs: inputs.call_with_normalisation(information_curve, score=score).auc


# SIC / AIC: 26 forward passes and 26 WebP encodings per image, so callers may leave them out (expensive).
register_metric(
    Metric(
        "sic",
        "SIC",
        True,
        _information_auc("probability"),
        needs_forward=True,
        needs_normalisation=True,
        protocol="paper",
        expensive=True,
    )
)
register_metric(
    Metric(
        "aic",
        "AIC",
        True,
        _information_auc("accuracy"),
        needs_forward=True,
        needs_normalisation=True,
        protocol="paper",
        expensive=True,
    )
)
