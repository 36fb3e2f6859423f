"""Segmentation scores of saliency maps against object masks (Chefer et al., 2021, ImageNet-segmentation protocol).

Each map is min-max normalised to ``r`` in ``[0, 1]`` (:func:`hf_iia.fusions.min_max`;
a constant map becomes all zeros) and binarised at its own mean: a pixel is predicted
"object" when ``r > mean(r)`` (strictly), "background" otherwise. Against the mask:

* pixel accuracy: share of pixels whose predicted class equals the mask's;
* mIoU: the mean over the two classes (background, object) of ``|pred ∩ true| / |pred ∪ true|``;
* mAP: average precision of the two-class scores ``(1 - r, r)`` against the one-hot labels
  ``(background, object)``, all ``2 * H * W`` scores ranked together (how the authors' code
  flattens its two-channel output before ``sklearn.metrics.average_precision_score``);
* mF1: F1 of the binarised object prediction against the object mask.

Values are per image. The authors' code averages AP and F1 over images too, but pools pixel
accuracy and IoU over the data set (sums of correct pixels / intersections and unions over
all images, then one ratio): for equally sized images the pooled pixel accuracy equals the
mean of the per-image values; the pooled IoU is in general not the mean of per-image IoUs
(:func:`segmentation_scores` returns the counts to pool them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ..fusions import min_max
from .inputs import MetricInputs, maps_and_masks
from .localization import mask_average_precision
from .registry import Metric, register_metric


class SegmentationScores(NamedTuple):
    """Per-image segmentation scores of binarised maps (:func:`segmentation_scores`).

    Attributes:
        pixel_accuracy: ``[B]`` float64 in ``[0, 1]``.
        miou: ``[B]`` float64 in ``[0, 1]``, mean of the background and object IoU.
        map: ``[B]`` float64 in ``(0, 1]``, average precision of the two-class scores.
        mf1: ``[B]`` float64 in ``[0, 1]``, F1 of the object class.
        intersection: ``[B, 2]`` int64 pixel counts of (background, object) predicted and true.
        union: ``[B, 2]`` int64 pixel counts of (background, object) predicted or true.
    """

    pixel_accuracy: torch.Tensor
    miou: torch.Tensor
    map: torch.Tensor
    mf1: torch.Tensor
    intersection: torch.Tensor
    union: torch.Tensor


def segmentation_scores(heatmaps: torch.Tensor | np.ndarray, masks: torch.Tensor | np.ndarray) -> SegmentationScores:
    """Pixel accuracy, mIoU, mAP and mF1 of each map against its object mask (see the module docstring).

    Args:
        heatmaps: ``[B, H, W]`` saliency maps (torch or numpy, finite).
        masks: ``[B, H, W]`` object masks (bool or 0/1), each with at least one object pixel.

    Returns:
        :class:`SegmentationScores`, every field ``[B]`` (counts ``[B, 2]``) on the maps' device.

    Raises:
        MetricInputError: on mismatched shapes, non-binary masks or an empty mask.
    """
    maps, labels = maps_and_masks(heatmaps, masks)
    relevance = min_max(maps)
    predicted = relevance > relevance.mean(dim=(1, 2), keepdim=True)
    pixel_accuracy = (predicted == labels).to(torch.float64).mean(dim=(1, 2))
    classes_predicted = torch.stack([~predicted, predicted], dim=1)
    classes_true = torch.stack([~labels, labels], dim=1)
    intersection = (classes_predicted & classes_true).sum(dim=(2, 3))
    union = (classes_predicted | classes_true).sum(dim=(2, 3))
    # A class absent from both prediction and mask (only the background can be: masks hold an object)
    # is predicted perfectly; count its IoU as 1 instead of 0 / 0.
    iou = torch.where(union > 0, intersection.double() / union.clamp(min=1).double(), 1.0)
    # Ranking the two channels together = one AP over the side-by-side [H, 2W] score and label images.
    two_class_scores = torch.cat([1 - relevance, relevance], dim=2)
    average_precision = mask_average_precision(two_class_scores, torch.cat([~labels, labels], dim=2))
    true_positive = intersection[:, 1].to(torch.float64)
    # F1 = 2 TP / (|predicted object| + |true object|); the mask is never empty, so the denominator is > 0.
    f1 = 2 * true_positive / (predicted.sum(dim=(1, 2)) + labels.sum(dim=(1, 2)))
    return SegmentationScores(
        pixel_accuracy=pixel_accuracy,
        miou=iou.mean(dim=1),
        map=average_precision,
        mf1=f1,
        intersection=intersection,
        union=union,
    )


def _scores(inputs: MetricInputs) -> SegmentationScores:
    """The inputs' :class:`SegmentationScores`, computed once for the four metrics below."""
    return inputs.shared("segmentation", lambda: segmentation_scores(inputs.maps, inputs.need_masks()))


def _field(name: str) -> Callable[[MetricInputs], torch.Tensor]:
    """The metric reading the ``[B]`` field ``name`` of :func:`_scores`."""
    return lambda inputs: getattr(_scores(inputs), name)


register_metric(
    Metric("seg_pixel_accuracy", "pixel acc.", True, _field("pixel_accuracy"), needs_masks=True, protocol="paper")
)
register_metric(Metric("seg_miou", "mIoU", True, _field("miou"), needs_masks=True, protocol="paper"))
register_metric(Metric("seg_map", "mAP", True, _field("map"), needs_masks=True, protocol="paper"))
register_metric(Metric("seg_mf1", "mF1", True, _field("mf1"), needs_masks=True, protocol="paper"))
