"""Localisation metrics: how well saliency maps agree with ground-truth object masks.

Every function takes ``heatmaps`` ``[B, H, W]`` (torch or numpy, finite real values)
and ``masks`` ``[B, H, W]`` (torch or numpy, bool or 0/1 values) of equal shape,
and returns one value per image (``[B]`` tensor on the device of ``heatmaps``).
Each mask must contain at least one ``True`` pixel (and, for :func:`mask_auroc`,
at least one ``False`` pixel); otherwise the metric is undefined and a
:class:`~hf_iia.errors.MetricInputError` is raised (checks: :func:`hf_iia.metrics.inputs.maps_and_masks`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MetricInputError
from .inputs import MetricInputs, maps_and_masks
from .registry import Metric, register_metric


def pointing_game(
    heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, tolerance: int = 0
) -> torch.Tensor:
    """Pointing game (Zhang et al., 2016): does the map's maximum fall on the object?

    A hit for image ``b`` means the arg-max pixel ``(y, x)`` of ``heatmaps[b]`` is within
    Euclidean distance ``tolerance`` of a ``True`` pixel of ``masks[b]``, i.e. lies in the
    mask dilated by a disk of radius ``tolerance`` (``tolerance=0``: the pixel itself must
    be in the mask). If several pixels share the maximum, the first in row-major order
    (smallest ``y * W + x``) is used.

    Args:
        heatmaps: ``[B, H, W]`` saliency maps.
        masks: ``[B, H, W]`` ground-truth object masks.
        tolerance: non-negative integer radius in pixels.

    Returns:
        ``[B]`` bool tensor, ``True`` for a hit.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise MetricInputError(f"tolerance must be a non-negative integer number of pixels; got {tolerance!r}.")
    maps, labels = maps_and_masks(heatmaps, masks)
    _, height, width = maps.shape
    peak = maps.flatten(1).argmax(dim=1)
    peak_y, peak_x = peak // width, peak % width
    span = torch.arange(-tolerance, tolerance + 1, device=maps.device)
    offset_y, offset_x = torch.meshgrid(span, span, indexing="ij")
    in_disk = offset_y**2 + offset_x**2 <= tolerance**2
    offset_y, offset_x = offset_y[in_disk], offset_x[in_disk]
    # Clamping an out-of-image disk point moves it towards the peak, so it stays inside the disk.
    ys = (peak_y[:, None] + offset_y[None, :]).clamp(0, height - 1)
    xs = (peak_x[:, None] + offset_x[None, :]).clamp(0, width - 1)
    batch_index = torch.arange(maps.shape[0], device=maps.device)[:, None]
    return labels[batch_index, ys, xs].any(dim=1)


def energy_pointing_game(heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., 2020, Score-CAM): share of positive map mass on the object.

    ``sum(relu(map) * mask) / sum(relu(map))`` per image, where negative map values are
    clamped to 0. An image whose map has no positive value scores 0.

    It reads the map's values, not only their order: a sharper map with the same order (the map squared) scores
    higher, so compare it between maps of like contrast; :func:`mask_average_precision` reads the order alone.

    Args:
        heatmaps: ``[B, H, W]`` saliency maps.
        masks: ``[B, H, W]`` ground-truth object masks.

    Returns:
        ``[B]`` float64 tensor with values in ``[0, 1]``.
    """
    maps, labels = maps_and_masks(heatmaps, masks)
    positive = maps.clamp(min=0)
    total = positive.sum(dim=(1, 2))
    on_object = (positive * labels).sum(dim=(1, 2))
    return torch.where(total > 0, on_object / total, torch.zeros_like(total))


def object_energy_share(
    heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray, other_masks: torch.Tensor | np.ndarray
) -> torch.Tensor:
    """Share of the positive map mass on two objects that lies on the explained one.

    ``e(masks) / (e(masks) + e(other_masks))`` per image, with ``e(m) = sum(relu(map) * m)``: on an image with two
    class objects, the map of the first object's class should lie on ``masks``, not on the other object's
    ``other_masks``. 1: all of it on the explained object; 0.5: the map does not tell the two apart (a map that
    ignores the class); 0: all on the other object. NaN where neither object has positive map mass.

    Args:
        heatmaps: ``[B, H, W]`` saliency maps of the class of ``masks``.
        masks: ``[B, H, W]`` masks of the objects of the explained class.
        other_masks: ``[B, H, W]`` masks of the other class's objects (disjoint from ``masks``).

    Returns:
        ``[B]`` float64 tensor with values in ``[0, 1]`` or NaN.
    """
    maps, labels = maps_and_masks(heatmaps, masks)
    _, other = maps_and_masks(heatmaps, other_masks)
    if (labels & other).any():
        raise MetricInputError("masks and other_masks must be disjoint (two different objects).")
    positive = maps.clamp(min=0)
    own = (positive * labels).sum(dim=(1, 2))
    both = own + (positive * other).sum(dim=(1, 2))
    return torch.where(both > 0, own / both, torch.full_like(both, float("nan")))


def mask_average_precision(heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Average precision of the map as a per-pixel score for the mask labels.

    With pixels sorted by decreasing map value and ``t`` running over the distinct map
    values (thresholds ``map >= t``): ``AP = sum_t (R_t - R_{t-1}) * P_t``, where ``P_t``
    and ``R_t`` are precision and recall at threshold ``t`` and ``R`` starts at 0. Tied
    pixels enter together, so this equals ``sklearn.metrics.average_precision_score``
    (step-wise, no interpolation).

    Args:
        heatmaps: ``[B, H, W]`` saliency maps (pixel scores).
        masks: ``[B, H, W]`` ground-truth object masks (pixel labels).

    Returns:
        ``[B]`` float64 tensor with values in ``(0, 1]``.
    """
    labels, _, group_end = _ranked_tie_groups(*maps_and_masks(heatmaps, masks))
    true_positives = labels.cumsum(dim=1)
    precision_at_end = true_positives.gather(1, group_end) / (group_end + 1)
    return (labels * precision_at_end).sum(dim=1) / labels.sum(dim=1)


def mask_auroc(heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Area under the ROC curve of the map as a per-pixel score for the mask labels.

    Equals the probability that a random object pixel scores higher than a random
    background pixel, ties counting 1/2 (Mann-Whitney U with mid-ranks):
    ``(sum of mid-ranks of object pixels - P (P + 1) / 2) / (P N)`` for ``P`` object and
    ``N`` background pixels. This equals ``sklearn.metrics.roc_auc_score``.

    Args:
        heatmaps: ``[B, H, W]`` saliency maps (pixel scores).
        masks: ``[B, H, W]`` ground-truth object masks (pixel labels); each needs object and background pixels.

    Returns:
        ``[B]`` float64 tensor with values in ``[0, 1]``.
    """
    maps, labels = maps_and_masks(heatmaps, masks)
    full = labels.flatten(1).all(dim=1)
    if full.any():
        raise MetricInputError(
            f"masks {full.nonzero().flatten().tolist()} cover the whole image; ROC AUC needs background pixels."
        )
    sorted_labels, group_start, group_end = _ranked_tie_groups(maps, labels)
    num_pixels = sorted_labels.shape[1]
    # Descending position i has ascending 1-based rank num_pixels - i; a tie group gets the mean rank.
    mid_rank = num_pixels - (group_start + group_end).to(torch.float64) / 2
    num_positive = sorted_labels.sum(dim=1)
    num_negative = num_pixels - num_positive
    rank_sum = (sorted_labels * mid_rank).sum(dim=1)
    return (rank_sum - num_positive * (num_positive + 1) / 2) / (num_positive * num_negative)


def _ranked_tie_groups(maps: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sort pixels by decreasing map value and locate groups of tied values.

    Args:
        maps: ``[B, H, W]`` float pixel scores.
        labels: ``[B, H, W]`` bool pixel labels.

    Returns:
        ``sorted_labels`` ``[B, N]`` float64 labels in sorted order (``N = H * W``), and
        ``group_start`` / ``group_end`` ``[B, N]`` int64: for sorted position ``i`` the first and
        last sorted positions holding the same map value as position ``i``.
    """
    scores = maps.flatten(1)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    sorted_scores = scores.gather(1, order)
    sorted_labels = labels.flatten(1).gather(1, order).to(torch.float64)
    num_pixels = scores.shape[1]
    index = torch.arange(num_pixels, device=scores.device).expand_as(order)
    changes = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    boundary = torch.ones_like(changes[:, :1])
    is_start = torch.cat([boundary, changes], dim=1)
    is_end = torch.cat([changes, boundary], dim=1)
    group_start = torch.where(is_start, index, 0).cummax(dim=1).values
    group_end = torch.where(is_end, index, num_pixels - 1).flip(1).cummin(dim=1).values.flip(1)
    return sorted_labels, group_start, group_end


def _pointing(inputs: MetricInputs) -> torch.Tensor:
    """:func:`pointing_game` of the inputs, ``[B]`` bool."""
    return pointing_game(inputs.maps, inputs.need_masks(), tolerance=inputs.pointing_tolerance)


def _energy(inputs: MetricInputs) -> torch.Tensor:
    """:func:`energy_pointing_game` of the inputs, ``[B]``."""
    return energy_pointing_game(inputs.maps, inputs.need_masks())


def _mask_ap(inputs: MetricInputs) -> torch.Tensor:
    """:func:`mask_average_precision` of the inputs, ``[B]``."""
    return mask_average_precision(inputs.maps, inputs.need_masks())


register_metric(Metric("pointing_game", "pointing game", True, _pointing, needs_masks=True, percent=True, boolean=True))
# The audit stores it as ``object_mass``, beside its other shares of the map's mass (border, corner).
register_metric(
    Metric(
        "energy_pointing_game",
        "energy PG",
        True,
        _energy,
        "mass on object",
        needs_masks=True,
        percent=True,
        aliases=("object_mass",),
    )
)
register_metric(Metric("mask_ap", "mask AP", True, _mask_ap, needs_masks=True, model_card=True))
