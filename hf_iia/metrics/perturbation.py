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

Conventions shared by every function (inputs: :mod:`hf_iia.metrics.inputs`):

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
from typing import NamedTuple

import numpy as np
import torch

from ..errors import MetricInputError
from ..imaging import gaussian_blur
from .inputs import (
    Forward,
    MetricInputs,
    Score,
    as_fractions,
    as_map_tensor,
    as_pixel_values,
    as_targets,
    target_scores,
)
from .registry import Metric, register_metric

__all__ = [
    "DEFAULT_PERTURBATION_FRACTIONS",
    "Forward",
    "MetricInputError",
    "PerturbationCurve",
    "Score",
    "as_map_tensor",
    "deletion_auc",
    "deletion_curve",
    "gaussian_blur",
    "insertion_auc",
    "insertion_curve",
    "perturbation_auc",
    "perturbation_curve",
]

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
        fractions=as_fractions(fractions),
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
    pixel_values = as_pixel_values(pixel_values)
    num_images, _, height, width = pixel_values.shape
    maps = as_map_tensor(heatmaps)
    if maps.shape != (num_images, height, width):
        raise MetricInputError(
            f"heatmaps must have shape [B, H, W] = {[num_images, height, width]} to match pixel_values "
            f"{list(pixel_values.shape)}; got {list(maps.shape)}. Resize the maps to the input resolution first."
        )
    target_tensor = as_targets(targets, num_images).to(pixel_values.device)
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
            scores[pairs] = target_scores(forward(images), target_tensor[image_index], score)
    return PerturbationCurve(fractions=fractions, scores=scores.view(num_images, num_points))


def _step_fractions(steps: int) -> torch.Tensor:
    """``[steps + 1]`` float64 fractions ``k / steps`` for ``k = 0 .. steps``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise MetricInputError(f"steps must be a positive integer; got {steps!r}.")
    return torch.arange(steps + 1, dtype=torch.float64) / steps


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


def _declared(auc: Callable[..., torch.Tensor]) -> Callable[[MetricInputs], torch.Tensor]:
    """The registered form of :func:`deletion_auc` / :func:`insertion_auc`: ``MetricInputs -> [B]`` AUCs."""

    def compute(inputs: MetricInputs) -> torch.Tensor:
        forward, pixel_values = inputs.need_forward()
        steps, batch_size = inputs.perturbation_steps, inputs.batch_size
        return auc(forward, pixel_values, inputs.maps, inputs.targets, steps=steps, batch_size=batch_size)

    return compute


register_metric(
    Metric("deletion_auc", "DEL", False, _declared(deletion_auc), "deletion AUC", needs_forward=True, model_card=True)
)
register_metric(
    Metric("insertion_auc", "INS", True, _declared(insertion_auc), "insertion AUC", needs_forward=True, model_card=True)
)
