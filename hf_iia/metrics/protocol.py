"""The evaluation protocol of the ViT-explainability papers (Chefer et al., 2021) that IIA's authors report.

* Positive / negative perturbation (POS / NEG) and their probability variants (DEL / INS):
  :func:`paper_perturbation_auc`, pixels set to black in the unnormalised image
  (:func:`black_fill`).
* Average Drop % and Percentage Increase in Confidence (Chattopadhay et al., 2018, Grad-CAM++;
  Jung & Oh, 2021): :func:`confidence_change`.

Images are the processor's normalised model inputs ``pixel_values`` ``[B, C, H, W]``;
``image_mean`` / ``image_std`` are the processor's per-channel normalisation (``x_norm =
(x - mean) / std`` with ``x`` in ``[0, 1]``), needed because both metrics act on the
unnormalised image. ``forward``, maps and targets follow :mod:`hf_iia.metrics.inputs`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import MetricInputError
from ..fusions import min_max
from .inputs import (
    Forward,
    MetricInputs,
    Score,
    as_pixel_values,
    as_targets,
    batched_scores,
    maps_for,
    normalisation,
)
from .perturbation import DEFAULT_PERTURBATION_FRACTIONS, perturbation_auc
from .registry import Metric, register_metric

min_max_normalise = min_max
"""Each ``[B, H, W]`` map rescaled to ``[0, 1]``, ``(m - min) / (max - min)``; a constant map (no ranking at all)
becomes all zeros rather than 0 / 0: :func:`hf_iia.fusions.min_max`, under the name this module exported first."""


def black_fill(image_mean: Sequence[float], image_std: Sequence[float]) -> torch.Tensor:
    """The normalised value of a black pixel: ``(0 - mean) / std`` per channel.

    Args:
        image_mean: ``[C]`` per-channel mean of the processor's normalisation.
        image_std: ``[C]`` per-channel standard deviation (all non-zero).

    Returns:
        ``[1, C, 1, 1]`` float64 tensor, broadcastable to ``[B, C, H, W]`` (a ``baseline`` for
        :func:`~hf_iia.metrics.perturbation_curve`).

    Raises:
        MetricInputError: if the two are not equally long 1-D sequences or a std is 0.
    """
    mean, std = normalisation(image_mean, image_std)
    return (-mean / std).view(1, -1, 1, 1)


def paper_perturbation_auc(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    positive: bool,
    score: Score = "accuracy",
    batch_size: int = 64,
) -> torch.Tensor:
    """POS / NEG (``score="accuracy"``) or DEL / INS (``score="probability"``) AUC as the papers report it.

    The curve is :func:`~hf_iia.metrics.perturbation_curve` at the ten fractions
    ``0.0, 0.1, ..., 0.9`` with removed pixels set to black in the unnormalised image
    (:func:`black_fill`), most relevant first (``positive=True``: POS, DEL) or least
    relevant first (``positive=False``: NEG, INS). The score at each point is 1 if the
    arg-max class is the target else 0 (``"accuracy"``), or the target's softmax
    probability (``"probability"``). The value is ``100 *`` the trapezoid area over
    those fractions, i.e. ``100 * perturbation_auc(...)``: the x-axis is not rescaled to
    ``[0, 1]``, so values lie in ``[0, 90]``, not ``[0, 100]`` (the papers' convention:
    sklearn ``auc(arange(0, 1, 0.1), curve) * 100``). Lower is better for POS / DEL,
    higher for NEG / INS.

    Args:
        forward: model, see :mod:`hf_iia.metrics.perturbation`.
        pixel_values: ``[B, C, H, W]`` normalised model inputs.
        heatmaps: ``[B, H, W]`` saliency maps at the input resolution.
        targets: ``[B]`` integer target classes.
        image_mean: ``[C]`` processor normalisation mean.
        image_std: ``[C]`` processor normalisation std.
        positive: remove the most relevant pixels first (POS / DEL) or the least relevant (NEG / INS).
        score: ``"accuracy"`` (POS / NEG) or ``"probability"`` (DEL / INS).
        batch_size: perturbed images per forward pass.

    Returns:
        ``[B]`` float64 AUC values in ``[0, 90]``.
    """
    auc = perturbation_auc(
        forward,
        pixel_values,
        heatmaps,
        targets,
        positive=positive,
        fractions=DEFAULT_PERTURBATION_FRACTIONS,
        score=score,
        baseline=black_fill_for(as_pixel_values(pixel_values), image_mean, image_std),
        batch_size=batch_size,
    )
    return 100.0 * auc


class ConfidenceChange(NamedTuple):
    """Target-class confidence on each image and on the image masked by its map (:func:`confidence_change`).

    Attributes:
        original: ``[B]`` float64 softmax probability ``p`` of the target on the image.
        masked: ``[B]`` float64 softmax probability ``p_m`` of the target on the masked image.
    """

    original: torch.Tensor
    masked: torch.Tensor

    @property
    def drop(self) -> torch.Tensor:
        """``[B]`` float64 ``100 * max(0, p - p_m) / p``; its mean is the Average Drop % (lower is better)."""
        return 100.0 * (self.original - self.masked).clamp(min=0) / self.original

    @property
    def increase(self) -> torch.Tensor:
        """``[B]`` float64 ``100`` where ``p_m > p`` else ``0``; its mean is the Increase in Confidence % (higher is
        better)."""
        return 100.0 * (self.masked > self.original).to(torch.float64)

    @property
    def average_drop(self) -> float:
        """ADP: mean of :attr:`drop` over the batch."""
        return float(self.drop.mean())

    @property
    def increase_in_confidence(self) -> float:
        """PIC: mean of :attr:`increase` over the batch."""
        return float(self.increase.mean())


def confidence_change(
    forward: Forward,
    pixel_values: torch.Tensor,
    heatmaps: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray | Sequence[int],
    *,
    image_mean: Sequence[float],
    image_std: Sequence[float],
    batch_size: int = 64,
) -> ConfidenceChange:
    """Confidence of the target on each image and on the image multiplied by its min-max normalised map.

    The masked image is ``x * m`` in unnormalised pixel space, with ``m`` =
    :func:`~hf_iia.fusions.min_max` of the map, then normalised again. Since ``x_norm = (x - mean) / std``
    this equals ``m * x_norm + (1 - m) * black_fill`` in normalised space, which is how it is
    computed (no clipping: a normalised image need not come from ``[0, 1]`` pixels). From the
    result, :attr:`ConfidenceChange.drop` / :attr:`~ConfidenceChange.increase` give the
    per-image ADP / PIC terms (Chattopadhay et al., 2018).

    Args:
        forward: model, see :mod:`hf_iia.metrics.perturbation`.
        pixel_values: ``[B, C, H, W]`` normalised model inputs.
        heatmaps: ``[B, H, W]`` saliency maps at the input resolution.
        targets: ``[B]`` integer target classes.
        image_mean: ``[C]`` processor normalisation mean.
        image_std: ``[C]`` processor normalisation std.
        batch_size: images per forward pass.

    Returns:
        :class:`ConfidenceChange` with ``original`` and ``masked`` ``[B]`` probabilities.
    """
    pixel_values = as_pixel_values(pixel_values)
    num_images, _, height, width = pixel_values.shape
    maps = maps_for(heatmaps, pixel_values)
    target_tensor = as_targets(targets, num_images).to(pixel_values.device)
    fill = black_fill_for(pixel_values, image_mean, image_std)
    weights = min_max(maps).to(dtype=pixel_values.dtype, device=pixel_values.device).unsqueeze(1)
    masked = weights * pixel_values + (1 - weights) * fill
    original_scores = batched_scores(forward, pixel_values, target_tensor, batch_size)
    masked_scores = batched_scores(forward, masked, target_tensor, batch_size)
    return ConfidenceChange(original=original_scores, masked=masked_scores)


def black_fill_for(pixel_values: torch.Tensor, image_mean: Sequence[float], image_std: Sequence[float]) -> torch.Tensor:
    """:func:`black_fill` ``[1, C, 1, 1]`` in the dtype and on the device of ``pixel_values``, channels checked."""
    fill = black_fill(image_mean, image_std)
    if fill.shape[1] != pixel_values.shape[1]:
        raise MetricInputError(
            f"image_mean / image_std have {fill.shape[1]} channels but pixel_values {pixel_values.shape[1]}."
        )
    return fill.to(dtype=pixel_values.dtype, device=pixel_values.device)


def _paper_auc(positive: bool, score: Score) -> Callable[[MetricInputs], torch.Tensor]:
    """The metric computing :func:`paper_perturbation_auc` with ``positive`` and ``score``."""
    return lambda inputs: inputs.call_with_normalisation(paper_perturbation_auc, positive=positive, score=score)


def _change(inputs: MetricInputs) -> ConfidenceChange:
    """The inputs' :class:`ConfidenceChange`, computed once for ADP and PIC."""
    return inputs.shared("confidence_change", lambda: inputs.call_with_normalisation(confidence_change))


def _declare(key: str, title: str, higher_is_better: bool, compute: Callable[[MetricInputs], torch.Tensor]) -> None:
    """Register one metric of this protocol: each runs the model on the unnormalised image's edits."""
    register_metric(
        Metric(key, title, higher_is_better, compute, needs_forward=True, needs_normalisation=True, protocol="paper")
    )


_declare("pos_auc", "POS", False, _paper_auc(True, "accuracy"))
_declare("neg_auc", "NEG", True, _paper_auc(False, "accuracy"))
_declare("del_prob_auc", "DEL (paper)", False, _paper_auc(True, "probability"))
_declare("ins_prob_auc", "INS (paper)", True, _paper_auc(False, "probability"))
_declare("adp", "ADP", False, lambda inputs: _change(inputs).drop)
_declare("pic", "PIC", True, lambda inputs: _change(inputs).increase)
