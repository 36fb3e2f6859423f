"""Perturbation-based faithfulness metrics for saliency maps.

All metrics here share one core: pixels are ranked by a saliency map, a growing
fraction of them is replaced, the perturbed images are classified in batched,
gradient-free forward passes, and the score of the target class is recorded for
every fraction. The resulting curve and its area under the curve (AUC) are
returned.

* Deletion / insertion (Petsiuk et al., 2018, "RISE"): :func:`deletion_curve`,
  :func:`insertion_curve`, :func:`deletion_auc`, :func:`insertion_auc`.
* Positive / negative perturbation (Chefer et al., 2021):
  :func:`perturbation_curve`, :func:`perturbation_auc`.

Conventions shared by every function:

* ``forward`` is any callable mapping pixel values ``[N, C, H, W]`` to logits
  ``[N, num_classes]``, or to an object with a ``.logits`` attribute holding
  them (e.g. a Hugging Face ``...ForImageClassification`` model). It should be
  deterministic (model in ``eval()`` mode) for the metrics to be deterministic.
  It receives tensors on the device and with the dtype of ``pixel_values``.
* Ranking: pixels are ordered by decreasing map value (increasing for negative
  perturbation); ties are broken by the row-major pixel index, lower first.
  A "pixel" covers all channels at one spatial location.
* A fraction ``f`` of the ``H * W`` pixels means the first
  ``floor(f * H * W + 0.5)`` pixels of that ranking.
* AUC is the trapezoid rule over the fractions as x-axis (not normalised by
  their range).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import MetricInputError

Forward = Callable[[torch.Tensor], Any]
"""Maps pixel values ``[N, C, H, W]`` to logits ``[N, num_classes]`` (or an object with ``.logits``)."""

Score = Literal["probability", "accuracy"]

DEFAULT_PERTURBATION_FRACTIONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class PerturbationCurve(NamedTuple):
    """Scores of a perturbation metric at each fraction of perturbed pixels.

    Attributes:
        fractions: ``[F]`` float64, the fractions of pixels perturbed (x-axis).
        scores: ``[B, F]`` float64, the target-class score of each image at each fraction.
    """

    fractions: torch.Tensor
    scores: torch.Tensor

    @property
    def auc(self) -> torch.Tensor:
        """``[B]`` float64: trapezoid-rule area under ``scores`` over ``fractions``."""
        return torch.trapezoid(self.scores, self.fractions.to(self.scores.device), dim=-1)


def as_map_tensor(maps: torch.Tensor | np.ndarray, name: str = "heatmaps") -> torch.Tensor:
    """Validate a batch of 2-D maps and return it as a floating-point tensor.

    Args:
        maps: ``[B, H, W]`` torch tensor or numpy array of finite real values.
        name: argument name used in error messages.

    Returns:
        ``[B, H, W]`` tensor; floating inputs keep their dtype, other dtypes become float64.

    Raises:
        MetricInputError: if ``maps`` is not ``[B, H, W]``, is empty or holds NaN/inf values.
    """
    if not isinstance(maps, (torch.Tensor, np.ndarray)):
        raise MetricInputError(
            f"{name} must be a torch.Tensor or numpy.ndarray of shape [B, H, W]; got {type(maps).__name__}."
        )
    tensor = torch.as_tensor(maps)
    if tensor.ndim != 3:
        raise MetricInputError(
            f"{name} must have shape [B, H, W]; got shape {tuple(tensor.shape)}. "
            "Squeeze channel dimensions or add a batch dimension first."
        )
    if tensor.numel() == 0:
        raise MetricInputError(f"{name} is empty (shape {tuple(tensor.shape)}); pass at least one non-empty map.")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise MetricInputError(f"{name} contains NaN or infinite values; replace them (e.g. torch.nan_to_num) first.")
    return tensor


def gaussian_blur(pixel_values: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Blur each channel with a normalised, separable Gaussian kernel and reflect padding.

    The 1-D kernel is ``g[i] = exp(-(i - kernel_size // 2)**2 / (2 * sigma**2)) / Z``
    for ``i = 0 .. kernel_size - 1`` (``Z`` makes it sum to 1), applied along the
    height and then the width. Borders use reflect padding (``torch.nn.functional.pad``
    mode ``"reflect"``: the edge pixel is not repeated).

    Args:
        pixel_values: ``[B, C, H, W]`` floating tensor.
        kernel_size: odd positive kernel width; ``kernel_size // 2`` must be smaller than ``H`` and ``W``.
        sigma: positive standard deviation of the Gaussian, in pixels.

    Returns:
        ``[B, C, H, W]`` blurred tensor with the dtype and device of ``pixel_values``.

    Raises:
        MetricInputError: on an invalid shape, kernel size or sigma.
    """
    pixel_values = _as_pixel_values(pixel_values)
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise MetricInputError(f"blur_kernel_size must be an odd positive integer; got {kernel_size!r}.")
    if not sigma > 0:
        raise MetricInputError(f"blur_sigma must be positive; got {sigma!r}.")
    batch, channels, height, width = pixel_values.shape
    radius = kernel_size // 2
    if radius >= min(height, width):
        raise MetricInputError(
            f"blur_kernel_size={kernel_size} is too large for {height}x{width} images: reflect padding needs "
            f"kernel_size // 2 < min(H, W). Pass blur_kernel_size <= {2 * min(height, width) - 1}."
        )
    offsets = torch.arange(kernel_size, dtype=torch.float64) - radius
    kernel = torch.exp(-(offsets**2) / (2.0 * float(sigma) ** 2))
    kernel = (kernel / kernel.sum()).to(dtype=pixel_values.dtype, device=pixel_values.device)
    planes = pixel_values.reshape(batch * channels, 1, height, width)
    padded = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, kernel_size, 1))
    blurred = F.conv2d(blurred, kernel.view(1, 1, 1, kernel_size))
    return blurred.reshape(batch, channels, height, width)


def deletion_curve(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    steps: int = 100,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> PerturbationCurve:
    """Deletion curve (Petsiuk et al., 2018).

    For ``k = 0 .. steps`` the top ``k / steps`` fraction of pixels ranked by
    decreasing map value (all channels) is set to ``baseline``; the score is the
    softmax probability of the target class. A faithful map makes the curve
    drop fast (low AUC is better).

    Args:
        forward: model, see module docstring.
        pixel_values: ``[B, C, H, W]`` floating model inputs (already normalised).
        heatmaps: ``[B, H, W]`` saliency maps (torch or numpy), same ``H, W`` as the images.
        targets: ``[B]`` integer target classes.
        steps: number of deletion steps; the curve has ``steps + 1`` points.
        baseline: value of deleted pixels, in normalised input space: a float or a
            tensor broadcastable to ``[B, C, H, W]`` (e.g. ``[C, 1, 1]`` per channel).
        batch_size: number of perturbed images per forward pass.

    Returns:
        :class:`PerturbationCurve` with ``fractions`` ``[steps + 1]`` = ``k / steps`` and ``scores`` ``[B, steps + 1]``.
    """
    fractions = _step_fractions(steps)
    return _curve(
        forward,
        pixel_values,
        heatmaps,
        targets,
        fractions=fractions,
        most_relevant_first=True,
        score="probability",
        batch_size=batch_size,
        start_and_fill=lambda images: (images, _broadcast_baseline(baseline, images)),
    )


def deletion_auc(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    steps: int = 100,
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Deletion AUC: trapezoid area under :func:`deletion_curve` over fractions in ``[0, 1]``.

    Arguments are those of :func:`deletion_curve`. Returns ``[B]`` float64 values in ``[0, 1]``; lower is better.
    """
    return deletion_curve(
        forward, pixel_values, heatmaps, targets, steps=steps, baseline=baseline, batch_size=batch_size
    ).auc


def insertion_curve(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    steps: int = 100,
    blur_kernel_size: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> PerturbationCurve:
    """Insertion curve (Petsiuk et al., 2018).

    Starts from ``gaussian_blur(pixel_values, blur_kernel_size, blur_sigma)``; for
    ``k = 0 .. steps`` the top ``k / steps`` fraction of pixels ranked by
    decreasing map value (all channels) is restored to its original value; the
    score is the softmax probability of the target class. A faithful map makes
    the curve rise fast (high AUC is better).

    Args:
        forward: model, see module docstring.
        pixel_values: ``[B, C, H, W]`` floating model inputs (already normalised).
        heatmaps: ``[B, H, W]`` saliency maps (torch or numpy), same ``H, W`` as the images.
        targets: ``[B]`` integer target classes.
        steps: number of insertion steps; the curve has ``steps + 1`` points.
        blur_kernel_size: odd width of the Gaussian kernel (see :func:`gaussian_blur`).
        blur_sigma: standard deviation of the Gaussian kernel, in pixels.
        batch_size: number of perturbed images per forward pass.

    Returns:
        :class:`PerturbationCurve` with ``fractions`` ``[steps + 1]`` = ``k / steps`` and ``scores`` ``[B, steps + 1]``.
    """
    fractions = _step_fractions(steps)
    return _curve(
        forward,
        pixel_values,
        heatmaps,
        targets,
        fractions=fractions,
        most_relevant_first=True,
        score="probability",
        batch_size=batch_size,
        start_and_fill=lambda images: (gaussian_blur(images, blur_kernel_size, blur_sigma), images),
    )


def insertion_auc(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    steps: int = 100,
    blur_kernel_size: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Insertion AUC: trapezoid area under :func:`insertion_curve` over fractions in ``[0, 1]``.

    Arguments are those of :func:`insertion_curve`. Returns ``[B]`` float64 values in ``[0, 1]``; higher is better.
    """
    return insertion_curve(
        forward,
        pixel_values,
        heatmaps,
        targets,
        steps=steps,
        blur_kernel_size=blur_kernel_size,
        blur_sigma=blur_sigma,
        batch_size=batch_size,
    ).auc


def perturbation_curve(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    positive: bool = True,
    fractions: Sequence[float] = DEFAULT_PERTURBATION_FRACTIONS,
    score: Score = "accuracy",
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> PerturbationCurve:
    """Positive / negative perturbation curve (Chefer et al., 2021).

    For each fraction ``f`` the first ``f`` of the pixels are set to ``baseline``,
    most relevant first (``positive=True``, decreasing map value) or least
    relevant first (``positive=False``, increasing map value). The score is
    ``1.0`` if ``argmax(logits) == target`` else ``0.0`` (``score="accuracy"``)
    or the softmax probability of the target (``score="probability"``).
    A faithful map gives a low positive and a high negative AUC.

    Args:
        forward: model, see module docstring.
        pixel_values: ``[B, C, H, W]`` floating model inputs (already normalised).
        heatmaps: ``[B, H, W]`` saliency maps (torch or numpy), same ``H, W`` as the images.
        targets: ``[B]`` integer target classes.
        positive: remove the most relevant pixels first (``True``) or the least relevant first (``False``).
        fractions: ``[F]`` strictly increasing fractions in ``[0, 1]``, ``F >= 2``
            (default ``0.0, 0.1, ..., 0.9``).
        score: ``"accuracy"`` or ``"probability"``.
        baseline: value of removed pixels, a float or a tensor broadcastable to ``[B, C, H, W]``.
        batch_size: number of perturbed images per forward pass.

    Returns:
        :class:`PerturbationCurve` with ``fractions`` ``[F]`` and ``scores`` ``[B, F]``.
    """
    return _curve(
        forward,
        pixel_values,
        heatmaps,
        targets,
        fractions=_as_fractions(fractions),
        most_relevant_first=positive,
        score=score,
        batch_size=batch_size,
        start_and_fill=lambda images: (images, _broadcast_baseline(baseline, images)),
    )


def perturbation_auc(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    positive: bool = True,
    fractions: Sequence[float] = DEFAULT_PERTURBATION_FRACTIONS,
    score: Score = "accuracy",
    baseline: float | torch.Tensor = 0.0,
    batch_size: int = 64,
) -> torch.Tensor:
    """Positive / negative perturbation AUC: trapezoid area under :func:`perturbation_curve`.

    Arguments are those of :func:`perturbation_curve`. Returns ``[B]`` float64 values in
    ``[0, fractions[-1] - fractions[0]]`` (``[0, 0.9]`` by default); lower is better for
    ``positive=True``, higher for ``positive=False``.
    """
    return perturbation_curve(
        forward,
        pixel_values,
        heatmaps,
        targets,
        positive=positive,
        fractions=fractions,
        score=score,
        baseline=baseline,
        batch_size=batch_size,
    ).auc


def _curve(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    fractions: torch.Tensor,
    most_relevant_first: bool,
    score: Score,
    batch_size: int,
    start_and_fill: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> PerturbationCurve:
    """Shared core of every perturbation metric.

    ``start_and_fill(pixel_values)`` returns the ``[B, C, H, W]`` start image and the
    ``[B, C, H, W]`` fill image. At fraction ``f`` the first ``floor(f * H * W + 0.5)``
    ranked pixels take their value from the fill image, all others from the start image.
    """
    if score not in ("probability", "accuracy"):
        raise MetricInputError(f"score must be 'probability' or 'accuracy'; got {score!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MetricInputError(f"batch_size must be a positive integer; got {batch_size!r}.")
    pixel_values = _as_pixel_values(pixel_values)
    num_images, _, height, width = pixel_values.shape
    maps = as_map_tensor(heatmaps)
    if maps.shape != (num_images, height, width):
        raise MetricInputError(
            f"heatmaps must have shape [B, H, W] = {[num_images, height, width]} to match pixel_values "
            f"{list(pixel_values.shape)}; got {list(maps.shape)}. Resize the maps to the input resolution first."
        )
    target_tensor = _as_targets(targets, num_images).to(pixel_values.device)
    start, fill = start_and_fill(pixel_values)

    flat_maps = maps.reshape(num_images, height * width).to(pixel_values.device)
    order = torch.argsort(flat_maps, dim=1, descending=most_relevant_first, stable=True)
    position = torch.empty_like(order)
    position.scatter_(1, order, torch.arange(height * width, device=order.device).expand_as(order))
    fractions = fractions.to(pixel_values.device)
    counts = torch.floor(fractions * (height * width) + 0.5).to(torch.long)

    num_points = counts.numel()
    scores = torch.empty(num_images * num_points, dtype=torch.float64, device=pixel_values.device)
    with torch.no_grad():
        for pairs in torch.arange(num_images * num_points, device=pixel_values.device).split(batch_size):
            image_index = pairs // num_points
            replaced = position[image_index] < counts[pairs % num_points].unsqueeze(1)
            images = torch.where(replaced.view(-1, 1, height, width), fill[image_index], start[image_index])
            scores[pairs] = _target_scores(forward(images), target_tensor[image_index], score)
    return PerturbationCurve(fractions=fractions, scores=scores.view(num_images, num_points))


def _target_scores(output: Any, targets: torch.Tensor, score: Score) -> torch.Tensor:
    """Score ``[N]`` float64 of ``targets`` ``[N]`` given a forward output holding logits ``[N, K]``."""
    logits = output if isinstance(output, torch.Tensor) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise MetricInputError(
            "forward must return a logits tensor [N, num_classes] or an object with a .logits tensor; "
            f"got {type(output).__name__}."
        )
    if logits.ndim != 2 or logits.shape[0] != targets.shape[0]:
        raise MetricInputError(
            f"forward returned logits of shape {list(logits.shape)} for {targets.shape[0]} images; "
            f"expected [{targets.shape[0]}, num_classes]."
        )
    if int(targets.max()) >= logits.shape[1]:
        raise MetricInputError(
            f"targets contain class {int(targets.max())} but the model only has {logits.shape[1]} classes."
        )
    if score == "accuracy":
        return (logits.argmax(dim=1) == targets).to(torch.float64)
    probabilities = logits.to(torch.float64).softmax(dim=1)
    return probabilities.gather(1, targets.unsqueeze(1)).squeeze(1)


def _as_pixel_values(pixel_values: torch.Tensor) -> torch.Tensor:
    """Check that ``pixel_values`` is a floating ``[B, C, H, W]`` tensor."""
    if not isinstance(pixel_values, torch.Tensor):
        raise MetricInputError(f"pixel_values must be a torch.Tensor [B, C, H, W]; got {type(pixel_values).__name__}.")
    if pixel_values.ndim != 4 or pixel_values.numel() == 0:
        raise MetricInputError(
            f"pixel_values must be a non-empty [B, C, H, W] tensor; got shape {list(pixel_values.shape)}. "
            "Add a batch dimension with pixel_values.unsqueeze(0) for a single image."
        )
    if not pixel_values.is_floating_point():
        raise MetricInputError(
            f"pixel_values must be floating point (normalised model inputs); got dtype {pixel_values.dtype}."
        )
    return pixel_values


def _as_targets(targets: torch.Tensor | np.ndarray | Sequence[int], num_images: int) -> torch.Tensor:
    """Return ``targets`` as an int64 ``[num_images]`` tensor of non-negative class indices."""
    tensor = torch.as_tensor(targets)
    if tensor.shape != (num_images,):
        raise MetricInputError(
            f"targets must have shape [B] = [{num_images}] (one class index per image); got {list(tensor.shape)}."
        )
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise MetricInputError(f"targets must be integer class indices; got dtype {tensor.dtype}.")
    if (tensor < 0).any():
        raise MetricInputError(f"targets must be non-negative class indices; got {tensor.tolist()}.")
    return tensor.to(torch.long)


def _step_fractions(steps: int) -> torch.Tensor:
    """``[steps + 1]`` float64 fractions ``k / steps`` for ``k = 0 .. steps``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MetricInputError(f"steps must be a positive integer; got {steps!r}.")
    return torch.arange(steps + 1, dtype=torch.float64) / steps


def _as_fractions(fractions: Sequence[float]) -> torch.Tensor:
    """Validate user fractions and return them as a float64 ``[F]`` tensor."""
    tensor = torch.as_tensor(fractions, dtype=torch.float64)
    if tensor.ndim != 1 or tensor.numel() < 2:
        raise MetricInputError(f"fractions must be a 1-D sequence of at least 2 values; got {fractions!r}.")
    if (tensor < 0).any() or (tensor > 1).any() or (tensor.diff() <= 0).any():
        raise MetricInputError(f"fractions must be strictly increasing values in [0, 1]; got {tensor.tolist()}.")
    return tensor


def _broadcast_baseline(baseline: float | torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """Broadcast ``baseline`` (float or tensor) to the ``[B, C, H, W]`` shape of ``pixel_values``."""
    value = torch.as_tensor(baseline, dtype=pixel_values.dtype, device=pixel_values.device)
    try:
        return value.expand_as(pixel_values)
    except RuntimeError as error:
        raise MetricInputError(
            f"baseline of shape {list(value.shape)} cannot be broadcast to pixel_values {list(pixel_values.shape)}; "
            "pass a float or a tensor such as [C, 1, 1]."
        ) from error
